// GPTQ error feedback with NVFP4 block scales (Frantar et al. 2022, arXiv 2210.17323;
// docs/NUMERICS.md, "GPTQ"): the backend-neutral flow. A fused group is stacked into one
// [sum N_i, K] weight that shares the group's input Gram H, its factor and one global scale.
//
//   1. H in fp64 from the calibration: the fp32 input_gram symmetrized (built where the device
//      factors it: GptqDevice::FactorGram), else X^T X of input_activations (on the host). Dead
//      inputs (H[i][i] == 0) get H[i][i] = 1 (their column is quantized without feedback).
//   2. Dampening lambda = dampening * mean(diag H) on the diagonal; when the Cholesky factor does
//      not exist the dampening grows tenfold (up to 8 times) and the one used is reported in
//      TensorMetrics::gptq_dampening. Never NaN: a Gram that stays indefinite is an error.
//   3. Column order: natural, or static act-order (descending diag H, stable); each column keeps
//      its 16-column scale group, so the layout is the standard NVFP4 one.
//   4. U = upper Cholesky factor of (P H P^T)^-1 in fp32 (the device's FactorGram or Factor).
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
#include "kernels/parallel.h"
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

// The group's Gram as given (calibration input_gram, fp32 [k, k]) with what the flow derives from
// its diagonal, describing the fp64 matrix that is factored (with dampening `damp`):
//   h[a][b] = a == b ? diag[a] + damp : 0.5 * (double(gram[pa][pb]) + double(gram[pb][pa]))
// with pa = perm[a] (pa = a when perm is nullptr): symmetrized, rows and columns in processing
// order. A device can build it in its own memory: no host copy of k^2 doubles.
struct GptqGram {
  const float* gram = nullptr;     // [k, k] row-major
  int64_t k = 0;
  const int32_t* perm = nullptr;   // [k] processing position -> column; nullptr = natural
  const double* diag = nullptr;    // [k] the diagonal in processing order, dead inputs set to 1
};

// What a backend provides to the GPTQ flow, called in this order for one group: LoadWeights,
// Factor or FactorGram (possibly several times, with growing dampening), Sweep, then Metrics
// for each member tensor.
class GptqDevice {
 public:
  virtual ~GptqDevice() = default;
  // The group's stacked weight as fp32 [sum rows, K] (members' rows in order), kept for Sweep and
  // Metrics; returns max |w|, or NonFiniteError naming the first member with a NaN/Inf at its
  // smallest flat index.
  virtual absl::StatusOr<float> LoadWeights(std::span<const TensorView> tensors,
                                            std::span<const Matrix2D> m) = 0;
  // U (fp32, row-major [k, k], zero below the diagonal) with h^-1 = U^T U for the symmetric
  // fp64 matrix h. Returns false when h is not (numerically) positive definite. A device that
  // keeps U in its own memory for the next Sweep may leave *u empty.
  virtual absl::StatusOr<bool> Factor(const std::vector<double>& h, int64_t k,
                                      std::vector<float>* u) = 0;
  // Factor of the matrix that `gram` and `damp` describe (GptqGram), likewise. The default
  // builds it on the host (BuildGptqGram) and calls Factor.
  virtual absl::StatusOr<bool> FactorGram(const GptqGram& gram, double damp,
                                          std::vector<float>* u);
  // The column sweep over the loaded weight (original column order) with factor u (of the
  // permuted Gram; empty: the one the device kept from its last factor). Writes codes (one E2M1
  // code per byte, [rows, cols]) and scales ([rows, cols/16] E4M3).
  virtual absl::Status Sweep(const GptqSweepInput& in, const std::vector<float>& u,
                             std::vector<uint8_t>* codes, std::vector<uint8_t>* scales) = 0;
  // The metrics of member `member` (rows [row0, row0 + m.rows) of the loaded weight) quantized
  // as q: nmse, max |err|, the rtn baseline with rtn's global scale g_rtn (GptqHostMetrics'
  // definition, bit for bit), and output_nmse with `calibration` (none without a Gram or
  // activations). The default: GptqHostMetrics and the host OutputSpaceNmse.
  virtual absl::StatusOr<TensorMetrics> Metrics(size_t member, int64_t row0,
                                                const TensorView& t, const Matrix2D& m,
                                                const QuantizedTensor& q, float g_rtn,
                                                const Calibration* calibration);
};

// The host implementation (the CPU backend; the reference in the CUDA backend's tests): the
// weight in host memory, factor and sweep on `threads` host threads.
class HostGptqDevice : public GptqDevice {
 public:
  explicit HostGptqDevice(int threads) : threads_(threads) {}
  absl::StatusOr<float> LoadWeights(std::span<const TensorView> tensors,
                                    std::span<const Matrix2D> m) override;
  absl::StatusOr<bool> Factor(const std::vector<double>& h, int64_t k,
                              std::vector<float>* u) override;
  absl::Status Sweep(const GptqSweepInput& in, const std::vector<float>& u,
                     std::vector<uint8_t>* codes, std::vector<uint8_t>* scales) override;

 protected:
  int threads() const { return threads_; }
  const std::vector<float>& weights() const { return w_; }

 private:
  int threads_;
  std::vector<float> w_;  // the stacked fp32 weight (LoadWeights)
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
// The matrix GptqGram describes with dampening `damp`, row-major [k, k].
void BuildGptqGram(const GptqGram& gram, double damp, std::vector<double>* h, int threads);
// The sweep over w ([rows, cols] fp32, original column order; not modified).
absl::Status HostGptqSweep(const GptqSweepInput& in, const std::vector<float>& w,
                           const std::vector<float>& u, std::vector<uint8_t>* codes,
                           std::vector<uint8_t>* scales, int threads);
// nmse, max |err| and the rtn baseline (rtn global scale g_rtn) of q against its source t:
// GptqMetricBlock per block, fp64 sums per row in block order, then across rows in row order.
TensorMetrics GptqHostMetrics(const TensorView& t, const Matrix2D& m, const QuantizedTensor& q,
                              float g_rtn, int threads);
// The totals of per-row sums (fp64 in row order) as GptqHostMetrics' result.
TensorMetrics GptqMetricsFromRows(std::span<const double> sq_err, std::span<const double> x_sq,
                                  std::span<const double> rtn_sq, std::span<const float> max_err);


}  // namespace nvfp4

#endif  // NVFP4_KERNELS_GPTQ_H_
