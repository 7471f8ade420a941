// GPTQ error feedback with NVFP4 block scales (Frantar et al. 2022, arXiv 2210.17323;
// docs/NUMERICS.md, "GPTQ"): the backend-neutral flow. A fused group is stacked into one
// [sum N_i, K] weight that shares the group's input Gram H, its factor and one global scale.
//
//   1. H from the calibration (input_gram, else X^T X of input_activations; fp64 on the host).
//      Dead inputs (H[i][i] == 0) get H[i][i] = 1 (their column is quantized without feedback).
//   2. Dampening lambda = dampening * mean(diag H) on the diagonal; when the Cholesky factor does
//      not exist the dampening grows tenfold (up to 8 times) and the one used is reported in
//      TensorMetrics::gptq_dampening. Never NaN: a Gram that stays indefinite is an error.
//   3. Column order: natural, or static act-order (descending diag H, stable); each column keeps
//      its 16-column scale group, so the layout is the standard NVFP4 one.
//   4. U = upper Cholesky factor of (P H P^T)^-1 in fp32 (the device's Factor).
//   5. The global scale: `amax` (the block-scale method's A/2688 or A/1536) or `cjso` (the alpha
//      of SOAR on the same group without error feedback).
//   6. The sweep (the device's Sweep; gptq_core.h).
//   7. Metrics as for every method (nmse against the source weight, the rtn baseline, and
//      output_nmse with the full Gram).
#ifndef NVFP4_KERNELS_GPTQ_H_
#define NVFP4_KERNELS_GPTQ_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/gptq_core.h"
#include "kernels/tensor_prep.h"
#include "kernels/types.h"

namespace nvfp4 {

// One sweep's inputs (host memory).
struct GptqSweepInput {
  int64_t rows = 0;
  int64_t cols = 0;
  int block_size = 128;
  float g = 1.0f;
  const int32_t* perm = nullptr;  // [cols] processing position -> column; nullptr = natural
  bool static_scales = false;     // choose every block scale from the source values first
  GptqScaleParams scale;          // importance/hessian point at host arrays
  int64_t importance_size = 0;    // floats behind scale.importance
  int64_t hessian_size = 0;       // floats behind scale.hessian
};

// What a backend provides to the GPTQ flow.
class GptqDevice {
 public:
  virtual ~GptqDevice() = default;
  // U (fp32, row-major [k, k], zero below the diagonal) with h^-1 = U^T U for the symmetric
  // fp64 matrix h. Returns false when h is not (numerically) positive definite.
  virtual absl::StatusOr<bool> Factor(const std::vector<double>& h, int64_t k,
                                      std::vector<float>* u) = 0;
  // The column sweep over w ([rows, cols] fp32, original column order, overwritten) with
  // factor u (of the permuted Gram). Writes codes (one E2M1 code per byte, [rows, cols]) and
  // scales ([rows, cols/16] E4M3).
  virtual absl::Status Sweep(const GptqSweepInput& in, std::vector<float>& w,
                             const std::vector<float>& u, std::vector<uint8_t>* codes,
                             std::vector<uint8_t>* scales) = 0;
  // The output-space metric (default: the host reference, OutputSpaceNmse).
  virtual absl::StatusOr<std::optional<double>> OutputNmse(const TensorView& w,
                                                           const Matrix2D& m,
                                                           const QuantizedTensor& q,
                                                           const Calibration* calibration);
};

// The backend's quantization without error feedback (for the cjso global scale).
using GroupQuantizer = std::function<absl::StatusOr<std::vector<QuantizedTensor>>(
    std::span<const TensorView>, const QuantizeOptions&, std::span<const Calibration* const>)>;

// GPTQ for one fused group (options.method == Method::kGptq). Every tensor needs a calibration
// entry with input_gram or input_activations of size K (the group shares tensor 0's).
// INVALID_ARGUMENT naming the tensor when it is missing, mis-sized, or not usable.
absl::StatusOr<std::vector<QuantizedTensor>> RunGptqGroup(
    std::span<const TensorView> tensors, const QuantizeOptions& options,
    std::span<const Calibration* const> calibration, GptqDevice& device,
    const GroupQuantizer& without_feedback);

// The host reference implementations (the CPU backend; also the CUDA backend's tests).
// Factor in fp64: Cholesky of the reversed matrix, triangular inverse, reversed back (that is the
// upper Cholesky factor of h^-1 by uniqueness), rounded to fp32.
bool HostGptqFactor(const std::vector<double>& h, int64_t k, std::vector<float>* u, int threads);
absl::Status HostGptqSweep(const GptqSweepInput& in, std::vector<float>& w,
                           const std::vector<float>& u, std::vector<uint8_t>* codes,
                           std::vector<uint8_t>* scales, int threads);

// Runs fn(i) for i in [0, count) on up to `threads` threads (dynamic schedule).
void HostParallelFor(int64_t count, int threads, const std::function<void(int64_t)>& fn);

}  // namespace nvfp4

#endif  // NVFP4_KERNELS_GPTQ_H_
