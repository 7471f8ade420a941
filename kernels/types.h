// Public types of the NVFP4 numerics library: methods, objectives, options, tensor views,
// calibration data, results and metrics. Knows nothing of gRPC, files or jobs.
//
// The numerical contract is docs/NUMERICS.md.
#ifndef NVFP4_KERNELS_TYPES_H_
#define NVFP4_KERNELS_TYPES_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/hd.h"

namespace nvfp4 {

// Element type of a source tensor.
enum class DType { kF32, kF16, kBF16 };
// Bytes per element of `dtype`.
int DTypeSize(DType dtype);
// "F32" | "F16" | "BF16" (safetensors spelling).
std::string_view DTypeName(DType dtype);
// Accepts the safetensors spelling (case-insensitive) and "float32", "fp16", "bfloat16", ...
absl::StatusOr<DType> ParseDType(std::string_view name);

// Scale-selection method (docs/NUMERICS.md section 3). kGptq is error feedback (docs/NUMERICS.md,
// "GPTQ"): block scales chosen by GptqOptions::block_scales, codes by GPTQ's column sweep.
enum class Method { kRtn, kFourOverSix, kScaleSweep, kSoar, kGptq };
std::string_view MethodName(Method m);  // "rtn" | "4over6" | "scalesweep" | "soar" | "gptq"
// Whether a block-scale method searches under QuantizeOptions::objective (scalesweep, soar);
// the others always minimize the squared error.
inline bool UsesObjective(Method m) { return m == Method::kScaleSweep || m == Method::kSoar; }
absl::StatusOr<Method> ParseMethod(std::string_view name);

// Objective minimized by scalesweep and soar (docs/NUMERICS.md 3.5).
enum class Objective { kMse, kWmse, kHessian };
std::string_view ObjectiveName(Objective o);  // "mse" | "wmse" | "hessian"
absl::StatusOr<Objective> ParseObjective(std::string_view name);

// Four Over Six block error rule (docs/NUMERICS.md 3.2).
enum class ErrorRule { kMse, kMae, kAbsMax };
std::string_view ErrorRuleName(ErrorRule r);  // "mse" | "mae" | "absmax"
absl::StatusOr<ErrorRule> ParseErrorRule(std::string_view name);

// GPTQ column order: natural (left to right) or static act-order (descending Gram diagonal; each
// column keeps its 16-column scale group, whose scale is then fixed before the sweep).
enum class GptqOrder { kNatural, kStatic };
std::string_view GptqOrderName(GptqOrder o);  // "natural" | "static"
absl::StatusOr<GptqOrder> ParseGptqOrder(std::string_view name);

// GPTQ global scale: `amax` = the block-scale method's A/2688 (rtn) or A/1536 (the others);
// `cjso` = the alpha SOAR's CJSO refit converges to on the same weight without error feedback.
enum class GptqGlobalScale { kAmax, kCjso };
std::string_view GptqGlobalScaleName(GptqGlobalScale g);  // "amax" | "cjso"
absl::StatusOr<GptqGlobalScale> ParseGptqGlobalScale(std::string_view name);

struct GptqOptions {
  // Candidates of the 16-column block scales: rtn | 4over6 | scalesweep | soar (not gptq).
  Method block_scales = Method::kSoar;
  // Dampening added to the Gram diagonal, as a fraction of its mean (GPTQ's percdamp).
  double dampening = 0.01;
  // Columns per lazy batch update (a multiple of 16).
  int block_size = 128;
  GptqOrder order = GptqOrder::kNatural;
  GptqGlobalScale global_scale = GptqGlobalScale::kAmax;  // as accurate as cjso, far cheaper (docs/BENCHMARKS.md)
};

// Validates GptqOptions (INVALID_ARGUMENT naming the option and its allowed range).
absl::Status ValidateGptqOptions(const GptqOptions& o);

struct QuantizeOptions {
  Method method = Method::kSoar;
  Objective objective = Objective::kMse;
  ErrorRule four_over_six_rule = ErrorRule::kMse;
  int soar_max_iterations = 15;     // CJSO+DSS outer iterations after the scalesweep start.
  double soar_rel_tolerance = 1e-3;  // stop when (E_old - E_new) / E_old < tolerance.
  // Compute the metrics (nmse, rtn nmse, ...). Cheap; on by default.
  bool compute_metrics = true;
  // Method::kGptq only. `objective` then chooses the block scales.
  GptqOptions gptq;
};

// The dequantization scales of an FP8 (E4M3 "fn") weight [N, K] (docs/NUMERICS.md section 7), on
// a grid of block_rows x block_cols tiles: [ceil(N/block_rows), ceil(K/block_cols)] fp32 values,
// row-major (`grid_cols` per row). DeepSeek-V3 block FP8: 128 x 128; per channel: 1 x K; per
// tensor: N x K. Edge tiles are partial. The scales are the *dequantization* multipliers
// (DeepSeek's `weight_scale_inv`, compressed-tensors' and ModelOpt's `weight_scale`), converted
// exactly to fp32 when stored as BF16/F16. Element (r, c) is DequantFp8(code, at(r, c))
// (kernels/tensor_prep.h).
struct Fp8Scales {
  const float* scale = nullptr;
  int64_t block_rows = 0;
  int64_t block_cols = 0;
  int64_t grid_cols = 0;
  NVFP4_HD float at(int64_t row, int64_t col) const {
    return scale[(row / block_rows) * grid_cols + col / block_cols];
  }
};

// A read-only, host-resident source tensor. Shapes of rank 1 are treated as [1, K]; rank > 2 has
// its leading dimensions folded into N (docs/NUMERICS.md section 5).
struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // numel * DTypeSize(dtype) bytes, little-endian, row-major.
  // An FP8 source: when set, `data` holds numel E4M3 codes (one byte each) standing for the fp32
  // values DequantFp8(code, fp8->at(r, c)), `dtype` must be kF32 (the type of those values) and
  // the shape of rank 2. The CUDA backend uploads the codes and dequantizes on the device; the CPU
  // backend and GPTQ dequantize on the host first (WidenFp8Views, kernels/tensor_prep.h).
  const Fp8Scales* fp8 = nullptr;
};

// Calibration statistics for one weight of shape [N, K] (all optional).
//  - importance: [K] per-input-channel weights for `wmse` (usually diag(X^T X)).
//  - gram: [K*K] row-major X^T X, for `hessian` (its 16x16 diagonal blocks) and for the
//    output-space error metric; its diagonal also serves `wmse` when `importance` is empty.
//  - activations: raw [tokens, K] activations; the backend forms X^T X from them when needed.
struct Calibration {
  std::vector<float> importance;
  std::vector<float> gram;
  const void* activations = nullptr;
  DType activations_dtype = DType::kF32;
  int64_t tokens = 0;

  bool empty() const { return importance.empty() && gram.empty() && activations == nullptr; }
};

// Per-tensor quality metrics (docs/NUMERICS.md section 4).
struct TensorMetrics {
  double nmse = 0;          // ||W - W_hat||^2 / ||W||^2 (0 for an all-zero tensor)
  double sqnr_db = 0;       // -10 log10(nmse); +inf when nmse == 0
  double max_abs_err = 0;   // max |W - W_hat|
  double rtn_nmse = 0;      // nmse of the rtn baseline on the same tensor
  double nmse_vs_rtn = 1;   // nmse / rtn_nmse (1 when rtn_nmse == 0)
  std::optional<double> output_nmse;  // ||X W^T - X W_hat^T||^2 / ||X W^T||^2 with calibration
  int iterations = 0;       // soar: accepted CJSO+DSS iterations
  // gptq: the dampening actually used, as a fraction of the mean Gram diagonal (larger than the
  // requested one when the damped Gram was not positive definite); 0 for the other methods.
  double gptq_dampening = 0;
};

// Standard NVFP4 output for one [N, K] weight.
struct QuantizedTensor {
  std::string name;
  int64_t rows = 0;            // N (after folding)
  int64_t cols = 0;            // K
  std::vector<int64_t> source_shape;  // the shape before folding
  std::vector<uint8_t> packed;  // [N, K/2]: element 2j in the low nibble of byte j
  std::vector<uint8_t> scales;  // [N, K/16] E4M3 bytes
  float global_scale = 1.0f;    // decode-form g (ModelOpt weight_scale_2)
  TensorMetrics metrics;
};

}  // namespace nvfp4

#endif  // NVFP4_KERNELS_TYPES_H_
