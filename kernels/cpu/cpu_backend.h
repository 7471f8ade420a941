// The CPU reference backend: runs the shared block core over 1024-block chunks on a pool of
// threads. Results do not depend on the thread count (each chunk is reduced on its own and the
// chunk sums are combined in a fixed order).
#ifndef NVFP4_KERNELS_CPU_CPU_BACKEND_H_
#define NVFP4_KERNELS_CPU_CPU_BACKEND_H_

#include <memory>

#include "kernels/backend.h"

namespace nvfp4 {

class CpuBackend : public QuantizerBackend {
 public:
  explicit CpuBackend(int threads);
  std::string name() const override { return "cpu"; }
  absl::StatusOr<std::vector<QuantizedTensor>> QuantizeGroup(
      std::span<const TensorView> tensors, const QuantizeOptions& options,
      std::span<const Calibration* const> calibration) override;
  int threads() const { return threads_; }

 private:
  int threads_;
};

}  // namespace nvfp4

#endif  // NVFP4_KERNELS_CPU_CPU_BACKEND_H_
