// cuSOLVER loaded at run time (dlopen), like cuBLAS (cublas_loader.h): binaries start without
// libcusolver, and the GPTQ factor falls back to the host reference. Only the few entry points
// the GPTQ factor uses.
#ifndef NVFP4_KERNELS_CUDA_CUSOLVER_LOADER_H_
#define NVFP4_KERNELS_CUDA_CUSOLVER_LOADER_H_

#include <cusolverDn.h>

namespace nvfp4::cuda {

struct CusolverApi {
  cusolverStatus_t (*create)(cusolverDnHandle_t*) = nullptr;
  cusolverStatus_t (*destroy)(cusolverDnHandle_t) = nullptr;
  cusolverStatus_t (*set_stream)(cusolverDnHandle_t, cudaStream_t) = nullptr;
  // Optional (nullptr when the library lacks it): results are deterministic by default.
  cusolverStatus_t (*set_deterministic_mode)(cusolverDnHandle_t,
                                             cusolverDeterministicMode_t) = nullptr;
  cusolverStatus_t (*dpotrf_buffer_size)(cusolverDnHandle_t, cublasFillMode_t, int, double*, int,
                                         int*) = nullptr;
  cusolverStatus_t (*dpotrf)(cusolverDnHandle_t, cublasFillMode_t, int, double*, int, double*, int,
                             int*) = nullptr;
  cusolverStatus_t (*xtrtri_buffer_size)(cusolverDnHandle_t, cublasFillMode_t, cublasDiagType_t,
                                         int64_t, cudaDataType, void*, int64_t, size_t*,
                                         size_t*) = nullptr;
  cusolverStatus_t (*xtrtri)(cusolverDnHandle_t, cublasFillMode_t, cublasDiagType_t, int64_t,
                             cudaDataType, void*, int64_t, void*, size_t, void*, size_t,
                             int*) = nullptr;
};

// The loaded API, or nullptr when no libcusolver could be opened (thread-safe, loaded once).
const CusolverApi* LoadCusolver();

}  // namespace nvfp4::cuda

#endif  // NVFP4_KERNELS_CUDA_CUSOLVER_LOADER_H_
