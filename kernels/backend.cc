// Backend selection (target nvfp4_kernels, above the CPU and CUDA backends): MakeBackend.
#include "kernels/backend.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

#if NVFP4_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace nvfp4 {

bool CudaCompiledIn() { return NVFP4_HAVE_CUDA != 0; }

int CudaDeviceCount() {
#if NVFP4_HAVE_CUDA
  return CudaVisibleDeviceCount();
#else
  return 0;
#endif
}

absl::StatusOr<std::unique_ptr<QuantizerBackend>> MakeBackend(std::string_view spec) {
  if (spec == "cpu") return MakeCpuBackend();
  if (spec == "auto") {
    if (CudaDeviceCount() > 0) return MakeBackend("cuda:0");
    return MakeCpuBackend();
  }
  int ordinal = 0;
  if (spec == "cuda") {
    ordinal = 0;
  } else if (spec.substr(0, 5) == "cuda:" && absl::SimpleAtoi(std::string(spec.substr(5)), &ordinal) &&
             ordinal >= 0) {
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("bad device '", std::string(spec), "' (expected cpu, cuda, cuda:N or auto)"));
  }
#if NVFP4_HAVE_CUDA
  return MakeCudaBackend(ordinal);
#else
  return absl::UnavailableError(absl::StrCat(
      "device '", std::string(spec), "' requested but this build has no CUDA backend (use --device cpu)"));
#endif
}

}  // namespace nvfp4
