// Turns a request's calibration data into the per-block objective data of the block core
// (importance for wmse, 16x16 Gram diagonal blocks for hessian) and computes the output-space
// error metric. The objective data is prepared on the host by both backends, so they search with
// identical numbers.
#ifndef NVFP4_KERNELS_CALIBRATION_H_
#define NVFP4_KERNELS_CALIBRATION_H_

#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/block_core.h"
#include "kernels/tensor_prep.h"
#include "kernels/types.h"

namespace nvfp4 {

struct ObjectiveData {
  BlockErrorKind kind = BlockErrorKind::kSquared;
  std::vector<float> importance;      // [K] for kWeightedSquared
  std::vector<float> hessian_blocks;  // [K/16][16*16] for kHessian

  // The block objective for block column j (= flat block index % (K/16)).
  BlockObjective ForBlockColumn(int64_t j) const {
    BlockObjective o;
    o.kind = kind;
    if (!importance.empty()) o.importance = importance.data() + j * 16;
    if (!hessian_blocks.empty()) o.hessian = hessian_blocks.data() + j * 256;
    return o;
  }
};

// Builds the objective data of `objective` for tensor `t` ([N, K] = m). wmse takes
// calibration.importance, else diag(gram), else sum_t x_tk^2 over the activations; hessian takes the
// diagonal blocks of gram, else X_j^T X_j over the activations (fp32, sequential over tokens).
// INVALID_ARGUMENT when the data is missing, mis-sized, negative (importance) or non-finite.
absl::StatusOr<ObjectiveData> PrepareObjective(const TensorView& t, const Matrix2D& m,
                                               Objective objective, const Calibration* calibration);

// Checks calibration sizes against K (importance [K], gram [K*K], activations [tokens, K]).
absl::Status ValidateCalibration(const TensorView& t, const Matrix2D& m, const Calibration& c);

// W_hat as fp32 [N*K] (what any NVFP4 loader computes: E2M1 * E4M3 * g).
std::vector<float> Dequantize(const QuantizedTensor& q);

// ||X W^T - X W_hat^T||^2 / ||X W^T||^2 from the Gram matrix (preferred) or the raw activations;
// nullopt without either. Host reference (fp64 accumulation).
std::optional<double> OutputSpaceNmse(const TensorView& w, const Matrix2D& m,
                                      const QuantizedTensor& q, const Calibration* calibration);

}  // namespace nvfp4

#endif  // NVFP4_KERNELS_CALIBRATION_H_
