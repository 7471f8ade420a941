// Shape folding, input validation and source-element loading shared by the backends
// (docs/NUMERICS.md section 5: 1-D -> [1, K], rank > 2 folds leading dims into N, K % 16 == 0).
#ifndef NVFP4_KERNELS_TENSOR_PREP_H_
#define NVFP4_KERNELS_TENSOR_PREP_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/codec.h"
#include "kernels/hd.h"
#include "kernels/types.h"

namespace nvfp4 {

struct Matrix2D {
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t blocks() const { return rows * (cols / 16); }
};

// "[4096, 14336]"
std::string ShapeString(const std::vector<int64_t>& shape);

// Validates the view's shape and pointer and folds it to [N, K]. INVALID_ARGUMENT (naming the
// tensor and shape) for rank 0, empty tensors, negative dims, K % 16 != 0, or a null data pointer.
absl::StatusOr<Matrix2D> FoldShape(const TensorView& t);

// The error for a NaN/Inf at flat element `index` (names tensor, shape, [row, col] and value).
absl::Status NonFiniteError(const TensorView& t, const Matrix2D& m, int64_t index, float value);

// Loads 16 source elements starting at flat element `first` as fp32.
NVFP4_HD void LoadBlock(const void* data, DType dtype, int64_t first, float* x) {
  switch (dtype) {
    case DType::kF32: {
      const float* p = static_cast<const float*>(data) + first;
      for (int i = 0; i < 16; ++i) x[i] = p[i];
      break;
    }
    case DType::kBF16: {
      const uint16_t* p = static_cast<const uint16_t*>(data) + first;
      for (int i = 0; i < 16; ++i) x[i] = Bf16ToFloat(p[i]);
      break;
    }
    case DType::kF16: {
      const uint16_t* p = static_cast<const uint16_t*>(data) + first;
      for (int i = 0; i < 16; ++i) x[i] = F16ToFloat(p[i]);
      break;
    }
  }
}

// Converts `count` source elements to fp32 (host helper for calibration activations).
void ConvertToFloat(const void* data, DType dtype, int64_t count, float* out);

// ---- FP8 sources (docs/NUMERICS.md section 7; the scales: Fp8Scales, kernels/types.h) ----
// One FP8 element as fp32: DecodeE4M3(code) * scale, a single fp32 multiply rounded to nearest
// even (the E4M3 value and the scale are exact in fp32). NaN codes (0x7F, 0xFF) stay NaN.
// The same expression on the host and the device gives the same bits (FP contraction is off).
NVFP4_HD float DequantFp8(uint8_t code, float scale) { return DecodeE4M3(code) * scale; }

// Dequantizes rows [row_begin, row_end) of an FP8 weight with `cols` columns: `codes` holds
// those rows' (row_end - row_begin) * cols E4M3 bytes, `out` receives as many fp32 values.
void DequantizeFp8Rows(const uint8_t* codes, int64_t cols, const Fp8Scales& scales,
                       int64_t row_begin, int64_t row_end, float* out);

// Source elements [first, first + count) of `t` (flat indices) as fp32: ConvertToFloat of its
// dtype, or the dequantized values of an FP8 view.
void ViewToFloat(const TensorView& t, int64_t first, int64_t count, float* out);

// Dequantizes a whole FP8 weight [rows, cols] into `out` (rows * cols fp32 values) in 128-row
// slabs on `threads` host threads (each element alone: the thread count cannot change a bit).
void DequantizeFp8(const uint8_t* codes, int64_t rows, int64_t cols, const Fp8Scales& scales,
                   int threads, float* out);

// `tensors` with every FP8 view replaced by an F32 view of its dequantized values, held by
// `storage` (dequantized on `threads` host threads; each element alone, so the thread count
// cannot change a bit). Views that are not FP8 are returned as they are. INVALID_ARGUMENT
// (FoldShape) for an inconsistent FP8 view.
absl::StatusOr<std::vector<TensorView>> WidenFp8Views(std::span<const TensorView> tensors,
                                                      int threads,
                                                      std::vector<std::vector<float>>* storage);

}  // namespace nvfp4

#endif  // NVFP4_KERNELS_TENSOR_PREP_H_
