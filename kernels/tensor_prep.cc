#include "kernels/tensor_prep.h"

#include <algorithm>
#include <span>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "kernels/parallel.h"

namespace nvfp4 {

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<Matrix2D> FoldShape(const TensorView& t) {
  const std::string where = absl::StrCat("tensor '", t.name, "' with shape ", ShapeString(t.shape));
  if (t.shape.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": a scalar cannot be block-quantized (need [N, K] with K % 16 == 0)"));
  }
  Matrix2D m;
  m.cols = t.shape.back();
  m.rows = 1;
  for (size_t i = 0; i < t.shape.size(); ++i) {
    if (t.shape[i] < 0) return absl::InvalidArgumentError(absl::StrCat(where, ": negative dimension"));
    if (i + 1 < t.shape.size()) {
      if (t.shape[i] != 0 && m.rows > (int64_t{1} << 40) / t.shape[i]) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": too many elements"));
      }
      m.rows *= t.shape[i];
    }
  }
  if (m.rows == 0 || m.cols == 0) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": tensor is empty"));
  }
  if (m.cols % 16 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": the last dimension K = ", m.cols,
        " is not a multiple of 16 (NVFP4 blocks are 16 elements along K; loaders require "
        "K % 16 == 0)"));
  }
  if (m.cols > (int64_t{1} << 40) / m.rows) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": too many elements"));
  }
  if (t.data == nullptr) return absl::InvalidArgumentError(absl::StrCat(where, ": no data"));
  if (t.fp8 != nullptr) {
    const Fp8Scales& f = *t.fp8;
    if (t.shape.size() != 2 || t.dtype != DType::kF32 || f.scale == nullptr ||
        f.block_rows <= 0 || f.block_cols <= 0 ||
        f.grid_cols != (m.cols + f.block_cols - 1) / f.block_cols) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": inconsistent FP8 view (need rank 2, dtype F32, scales on a grid of ",
          f.block_rows, " x ", f.block_cols, " tiles with ceil(K / ", f.block_cols,
          ") columns, got ", f.grid_cols, ")"));
    }
  }
  return m;
}

absl::Status NonFiniteError(const TensorView& t, const Matrix2D& m, int64_t index, float value) {
  return absl::InvalidArgumentError(absl::StrCat(
      "tensor '", t.name, "' with shape ", ShapeString(t.shape), ": ",
      value != value ? "NaN" : (value > 0 ? "+Inf" : "-Inf"), " at flat index ", index,
      " (row ", index / m.cols, ", column ", index % m.cols,
      "); NVFP4 cannot represent non-finite values"));
}

void ConvertToFloat(const void* data, DType dtype, int64_t count, float* out) {
  const int64_t full = count / 16;
  for (int64_t b = 0; b < full; ++b) LoadBlock(data, dtype, b * 16, out + b * 16);
  for (int64_t i = full * 16; i < count; ++i) {
    switch (dtype) {
      case DType::kF32: out[i] = static_cast<const float*>(data)[i]; break;
      case DType::kBF16: out[i] = Bf16ToFloat(static_cast<const uint16_t*>(data)[i]); break;
      case DType::kF16: out[i] = F16ToFloat(static_cast<const uint16_t*>(data)[i]); break;
    }
  }
}

void DequantizeFp8Rows(const uint8_t* codes, int64_t cols, const Fp8Scales& scales,
                       int64_t row_begin, int64_t row_end, float* out) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* src = codes + (r - row_begin) * cols;
    float* dst = out + (r - row_begin) * cols;
    const float* row_scales = scales.scale + (r / scales.block_rows) * scales.grid_cols;
    for (int64_t c0 = 0; c0 < cols; c0 += scales.block_cols) {
      const float s = row_scales[c0 / scales.block_cols];
      const int64_t c1 = std::min(cols, c0 + scales.block_cols);
      for (int64_t c = c0; c < c1; ++c) dst[c] = DequantFp8(src[c], s);
    }
  }
}

void ViewToFloat(const TensorView& t, int64_t first, int64_t count, float* out) {
  if (t.fp8 == nullptr) {
    ConvertToFloat(static_cast<const uint8_t*>(t.data) + first * DTypeSize(t.dtype), t.dtype,
                   count, out);
    return;
  }
  const uint8_t* codes = static_cast<const uint8_t*>(t.data);
  const int64_t cols = t.shape.back();
  for (int64_t i = 0; i < count; ++i) {
    const int64_t e = first + i;
    out[i] = DequantFp8(codes[e], t.fp8->at(e / cols, e % cols));
  }
}

void DequantizeFp8(const uint8_t* codes, int64_t rows, int64_t cols, const Fp8Scales& scales,
                   int threads, float* out) {
  constexpr int64_t kSlab = 128;  // rows per task
  HostParallelFor((rows + kSlab - 1) / kSlab, threads, [&](int64_t i) {
    const int64_t r0 = i * kSlab, r1 = std::min(rows, r0 + kSlab);
    DequantizeFp8Rows(codes + r0 * cols, cols, scales, r0, r1, out + r0 * cols);
  });
}

absl::StatusOr<std::vector<TensorView>> WidenFp8Views(std::span<const TensorView> tensors,
                                                      int threads,
                                                      std::vector<std::vector<float>>* storage) {
  std::vector<TensorView> out(tensors.begin(), tensors.end());
  for (TensorView& v : out) {
    if (v.fp8 == nullptr) continue;
    ASSIGN_OR_RETURN(const Matrix2D m, FoldShape(v));  // rank 2 and a consistent scale grid
    const int64_t n = m.rows, k = m.cols;
    std::vector<float>& values = storage->emplace_back(static_cast<size_t>(n * k));
    DequantizeFp8(static_cast<const uint8_t*>(v.data), n, k, *v.fp8, threads, values.data());
    v.data = values.data();
    v.dtype = DType::kF32;
    v.fp8 = nullptr;
  }
  return out;
}

}  // namespace nvfp4
