// QuantizerBackend's shared method (target nvfp4_kernels_core; the backends derive from it).
#include <span>
#include <utility>
#include <vector>

#include "base/status_macros.h"
#include "kernels/backend.h"

namespace nvfp4 {

absl::StatusOr<QuantizedTensor> QuantizerBackend::Quantize(const TensorView& tensor,
                                                           const QuantizeOptions& options,
                                                           const Calibration* calibration) {
  const Calibration* calib[1] = {calibration};
  ASSIGN_OR_RETURN(std::vector<QuantizedTensor> out,
                   QuantizeGroup(std::span<const TensorView>(&tensor, 1), options,
                                 calibration ? std::span<const Calibration* const>(calib, 1)
                                             : std::span<const Calibration* const>()));
  return std::move(out[0]);
}

}  // namespace nvfp4
