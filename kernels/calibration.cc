#include "kernels/calibration.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/codec.h"
#include "kernels/parallel.h"

namespace nvfp4 {
namespace {

std::string Where(const TensorView& t) {
  return absl::StrCat("calibration for tensor '", t.name, "' (shape ", ShapeString(t.shape), ")");
}

absl::Status CheckFinite(const TensorView& t, const char* what, const std::vector<float>& v,
                         bool non_negative) {
  // A Gram of K = 14336 is 205M values: scan chunks in parallel (bit tests, no branches), then
  // find the first offending index in the first chunk that has one.
  constexpr int64_t kChunk = int64_t{1} << 20;
  const int64_t n = static_cast<int64_t>(v.size());
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<uint8_t> bad(static_cast<size_t>(chunks), 0);
  const int threads = HostThreadCount();
  HostParallelFor(chunks, threads, [&](int64_t c) {
    const float* p = v.data() + c * kChunk;
    const int64_t len = std::min(kChunk, n - c * kChunk);
    uint32_t any = 0;
    for (int64_t i = 0; i < len; ++i) {
      uint32_t u;
      std::memcpy(&u, p + i, sizeof(u));
      any |= static_cast<uint32_t>((u & 0x7F800000u) == 0x7F800000u) |
             static_cast<uint32_t>(non_negative && u > 0x80000000u);  // NaN/Inf; < 0
    }
    bad[static_cast<size_t>(c)] = any != 0;
  });
  for (int64_t c = 0; c < chunks; ++c) {
    if (!bad[static_cast<size_t>(c)]) continue;
    for (int64_t i = c * kChunk; i < std::min(n, (c + 1) * kChunk); ++i) {
      if (!std::isfinite(v[i]) || (non_negative && v[i] < 0)) {
        return absl::InvalidArgumentError(absl::StrCat(
            Where(t), ": ", what, "[", i, "] = ", v[i],
            non_negative ? " (must be finite and >= 0)" : " (must be finite)"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateCalibration(const TensorView& t, const Matrix2D& m, const Calibration& c) {
  const size_t k = static_cast<size_t>(m.cols);
  if (!c.importance.empty() && c.importance.size() != k) {
    return absl::InvalidArgumentError(absl::StrCat(Where(t), ": input_sq has ", c.importance.size(),
                                                   " values, expected K = ", k));
  }
  if (!c.gram.empty() && c.gram.size() != k * k) {
    return absl::InvalidArgumentError(absl::StrCat(Where(t), ": input_gram has ", c.gram.size(),
                                                   " values, expected K*K = ", k * k));
  }
  if (c.activations != nullptr && c.tokens <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(Where(t), ": input_activations has no tokens (expected [tokens, ", k, "])"));
  }
  if (auto s = CheckFinite(t, "input_sq", c.importance, /*non_negative=*/true); !s.ok()) return s;
  return CheckFinite(t, "input_gram", c.gram, /*non_negative=*/false);
}

absl::StatusOr<ObjectiveData> PrepareObjective(const TensorView& t, const Matrix2D& m,
                                               Objective objective,
                                               const Calibration* calibration) {
  ObjectiveData d;
  if (objective == Objective::kMse) return d;
  const char* name = objective == Objective::kWmse ? "wmse" : "hessian";
  if (calibration == nullptr || calibration->empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "objective ", name, " needs calibration data for tensor '", t.name,
        "' (", objective == Objective::kWmse ? "input_sq, input_gram or input_activations"
                                             : "input_gram or input_activations", ")"));
  }
  const Calibration& c = *calibration;
  if (auto s = ValidateCalibration(t, m, c); !s.ok()) return s;
  const int64_t k = m.cols;
  std::vector<float> acts;
  if (c.activations != nullptr && c.gram.empty() &&
      (objective == Objective::kHessian || c.importance.empty())) {
    acts.resize(static_cast<size_t>(c.tokens * k));
    ConvertToFloat(c.activations, c.activations_dtype, c.tokens * k, acts.data());
    for (size_t i = 0; i < acts.size(); ++i) {
      if (!std::isfinite(acts[i])) {
        return absl::InvalidArgumentError(absl::StrCat(Where(t), ": input_activations has a ",
                                                       "non-finite value at flat index ", i));
      }
    }
  }
  if (objective == Objective::kWmse) {
    d.kind = BlockErrorKind::kWeightedSquared;
    if (!c.importance.empty()) {
      d.importance = c.importance;
    } else if (!c.gram.empty()) {
      d.importance.resize(k);
      for (int64_t i = 0; i < k; ++i) d.importance[i] = c.gram[i * k + i];
      if (auto s = CheckFinite(t, "diag(input_gram)", d.importance, true); !s.ok()) return s;
    } else {
      d.importance.assign(k, 0.0f);
      for (int64_t tok = 0; tok < c.tokens; ++tok) {
        const float* row = acts.data() + tok * k;
        for (int64_t i = 0; i < k; ++i) d.importance[i] += row[i] * row[i];
      }
    }
    return d;
  }
  d.kind = BlockErrorKind::kHessian;
  d.hessian_blocks.assign(static_cast<size_t>(k / 16 * 256), 0.0f);
  if (!c.gram.empty()) {
    for (int64_t j = 0; j < k / 16; ++j)
      for (int a = 0; a < 16; ++a)
        for (int b = 0; b < 16; ++b)
          d.hessian_blocks[j * 256 + a * 16 + b] = c.gram[(j * 16 + a) * k + (j * 16 + b)];
  } else if (!acts.empty()) {
    for (int64_t tok = 0; tok < c.tokens; ++tok) {
      const float* row = acts.data() + tok * k;
      for (int64_t j = 0; j < k / 16; ++j) {
        float* h = d.hessian_blocks.data() + j * 256;
        const float* xr = row + j * 16;
        for (int a = 0; a < 16; ++a)
          for (int b = 0; b < 16; ++b) h[a * 16 + b] += xr[a] * xr[b];
      }
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "objective hessian needs input_gram or input_activations for tensor '", t.name,
        "' (input_sq only carries the diagonal; use wmse)"));
  }
  return d;
}

std::vector<float> Dequantize(const QuantizedTensor& q) {
  std::vector<float> out(static_cast<size_t>(q.rows * q.cols));
  const int64_t nb = q.cols / 16;
  for (int64_t r = 0; r < q.rows; ++r) {
    for (int64_t c = 0; c < q.cols; ++c) {
      const uint8_t byte = q.packed[(r * q.cols + c) / 2];
      const uint32_t code = (c % 2 == 0) ? (byte & 0xFu) : (byte >> 4);
      const float s = DecodeE4M3(q.scales[r * nb + c / 16]);
      out[r * q.cols + c] = DecodeE2M1(code) * s * q.global_scale;
    }
  }
  return out;
}

std::optional<double> OutputSpaceNmse(const TensorView& w, const Matrix2D& m,
                                      const QuantizedTensor& q, const Calibration* calibration) {
  if (calibration == nullptr || (calibration->gram.empty() && calibration->activations == nullptr)) {
    return std::nullopt;
  }
  const int64_t n = m.rows, k = m.cols;
  std::vector<float> wf(static_cast<size_t>(n * k));
  ViewToFloat(w, 0, n * k, wf.data());
  const std::vector<float> wh = Dequantize(q);
  double num = 0, den = 0;
  if (!calibration->gram.empty()) {
    const std::vector<float>& h = calibration->gram;
    std::vector<double> e(k), ww(k);
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t i = 0; i < k; ++i) {
        ww[i] = wf[r * k + i];
        e[i] = ww[i] - wh[r * k + i];
      }
      for (int64_t i = 0; i < k; ++i) {
        double he = 0, hw = 0;
        for (int64_t j = 0; j < k; ++j) {
          he += h[i * k + j] * e[j];
          hw += h[i * k + j] * ww[j];
        }
        num += e[i] * he;
        den += ww[i] * hw;
      }
    }
  } else {
    std::vector<float> x(static_cast<size_t>(calibration->tokens * k));
    ConvertToFloat(calibration->activations, calibration->activations_dtype,
                   calibration->tokens * k, x.data());
    for (int64_t t = 0; t < calibration->tokens; ++t) {
      const float* xr = x.data() + t * k;
      for (int64_t r = 0; r < n; ++r) {
        double y = 0, yh = 0;
        for (int64_t i = 0; i < k; ++i) {
          y += static_cast<double>(xr[i]) * wf[r * k + i];
          yh += static_cast<double>(xr[i]) * wh[r * k + i];
        }
        num += (y - yh) * (y - yh);
        den += y * y;
      }
    }
  }
  return den > 0 ? num / den : 0.0;
}

}  // namespace nvfp4
