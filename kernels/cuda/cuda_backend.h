// The CUDA backend (kernels/cuda/*.cu): the same PassExecutor flow and block core as the CPU
// reference, on a GPU. Only compiled when the build has CUDA (NVFP4_HAVE_CUDA).
#ifndef NVFP4_KERNELS_CUDA_CUDA_BACKEND_H_
#define NVFP4_KERNELS_CUDA_CUDA_BACKEND_H_

#include <memory>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace nvfp4 {

// Visible CUDA devices (CUDA_VISIBLE_DEVICES honored); 0 when there is no driver or GPU.
int CudaVisibleDeviceCount();

// A backend bound to device `ordinal`. NOT_FOUND when it does not exist.
absl::StatusOr<std::unique_ptr<QuantizerBackend>> MakeCudaBackend(int ordinal);

}  // namespace nvfp4

#endif  // NVFP4_KERNELS_CUDA_CUDA_BACKEND_H_
