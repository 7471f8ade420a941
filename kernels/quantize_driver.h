// The backend-neutral quantization flow (docs/NUMERICS.md section 3): validation, tensor amax, the
// global scale of each method, the block passes, SOAR's CJSO+DSS iterations with acceptance,
// and the metrics. Backends supply a PassExecutor that runs block passes on their hardware;
// because the flow and the block core are shared, the backends produce the same bytes.
#ifndef NVFP4_KERNELS_QUANTIZE_DRIVER_H_
#define NVFP4_KERNELS_QUANTIZE_DRIVER_H_

#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/block_core.h"
#include "kernels/calibration.h"
#include "kernels/tensor_prep.h"
#include "kernels/types.h"

namespace nvfp4 {

// One tensor of a group, validated and ready for the executor.
struct PreparedTensor {
  const TensorView* view = nullptr;
  Matrix2D matrix;
  ObjectiveData objective;            // of the request's objective (empty for mse)
  const Calibration* calibration = nullptr;
};

// Canonical (bit-reproducible) totals of one block pass over one tensor.
struct PassTotals {
  double obj_err = 0, sq_err = 0, rtn_sq_err = 0, x_sq = 0, s1 = 0, s2 = 0;
  float max_abs_err = 0;
};

struct TensorScan {
  float amax = 0;
  int64_t first_non_finite = -1;  // flat index, -1 when all finite
  float non_finite_value = 0;
};

// Runs the passes of one group on one device. Each tensor has two code/scale slots (0 and 1) so
// SOAR can keep the accepted solution while computing the next.
class PassExecutor {
 public:
  virtual ~PassExecutor() = default;
  // max |x| and the first non-finite element of tensor i.
  virtual absl::StatusOr<TensorScan> Scan(int i) = 0;
  // One block pass over tensor i: reads slot `src` (kSoarRefine only), writes slot `dst`.
  virtual absl::StatusOr<PassTotals> RunPass(int i, const BlockPassParams& params, int src,
                                             int dst) = 0;
  // Copies slot `slot` of tensor i into out->packed and out->scales.
  virtual absl::Status Fetch(int i, int slot, QuantizedTensor* out) = 0;
  // The output-space error metric; the default is the host reference.
  virtual absl::StatusOr<std::optional<double>> OutputNmse(int i, const QuantizedTensor& q);

 protected:
  explicit PassExecutor(std::span<const PreparedTensor> tensors) : tensors_(tensors) {}
  std::span<const PreparedTensor> tensors_;
};

using ExecutorFactory = std::function<absl::StatusOr<std::unique_ptr<PassExecutor>>(
    std::span<const PreparedTensor>)>;

// The pass parameters of the first pass of `options` with global scale g (and rtn scale g_rtn).
BlockPassParams FirstPassParams(const QuantizeOptions& options, float g, float g_rtn);
// g for tensor (group) amax A: A/(6*448) for rtn, A/(6*256) otherwise; 1 for an all-zero tensor.
float InitialGlobalScale(Method method, float amax);

// Quantizes a group with the executors of `make_executor`. FP8 views (TensorView::fp8) reach the
// executor as they are when `executor_reads_fp8` (the CUDA executor uploads their codes);
// otherwise they are dequantized on the host's threads first (WidenFp8Views).
absl::StatusOr<std::vector<QuantizedTensor>> RunQuantizeGroup(
    std::span<const TensorView> tensors, const QuantizeOptions& options,
    std::span<const Calibration* const> calibration, const ExecutorFactory& make_executor,
    bool executor_reads_fp8 = false);

}  // namespace nvfp4

#endif  // NVFP4_KERNELS_QUANTIZE_DRIVER_H_
