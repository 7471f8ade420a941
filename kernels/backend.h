// The quantizer backend interface: the CPU reference and the CUDA backend implement it and return
// the same bytes for the same input. Callers pick a backend with MakeBackend("cpu"|"cuda:N"|"auto").
#ifndef NVFP4_KERNELS_BACKEND_H_
#define NVFP4_KERNELS_BACKEND_H_

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/types.h"

namespace nvfp4 {

class QuantizerBackend {
 public:
  virtual ~QuantizerBackend() = default;

  // "cpu" or "cuda:N".
  virtual std::string name() const = 0;

  // Quantizes a fused group of weights that share one global scale (q/k/v, gate/up, expert w1/w3):
  // the tensor amax is taken over the whole group and, for soar, alpha is optimized over the group.
  // A single weight is a group of one. `calibration` is empty or has one entry per tensor (entries
  // may be null). Errors: INVALID_ARGUMENT naming the tensor, its shape and the reason.
  virtual absl::StatusOr<std::vector<QuantizedTensor>> QuantizeGroup(
      std::span<const TensorView> tensors, const QuantizeOptions& options,
      std::span<const Calibration* const> calibration) = 0;

  // Convenience: a group of one.
  absl::StatusOr<QuantizedTensor> Quantize(const TensorView& tensor, const QuantizeOptions& options,
                                           const Calibration* calibration = nullptr);
};

// CPU reference backend; `threads` <= 0 uses all hardware threads.
std::unique_ptr<QuantizerBackend> MakeCpuBackend(int threads = 0);

// True when this binary was built with the CUDA backend.
bool CudaCompiledIn();
// Number of visible CUDA devices (0 without CUDA, without a driver, or without a GPU).
int CudaDeviceCount();

// "cpu", "cuda" (= cuda:0), "cuda:N", or "auto" (first GPU when present, else cpu).
// Errors: INVALID_ARGUMENT for a malformed spec, NOT_FOUND/UNAVAILABLE when the device is absent.
absl::StatusOr<std::unique_ptr<QuantizerBackend>> MakeBackend(std::string_view device_spec);

}  // namespace nvfp4

#endif  // NVFP4_KERNELS_BACKEND_H_
