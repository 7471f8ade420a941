// cuBLAS loaded at run time (dlopen), so binaries start without libcublas and fall back to the host
// reference for the output-space metric. Only the few entry points the backend uses.
#ifndef NVFP4_KERNELS_CUDA_CUBLAS_LOADER_H_
#define NVFP4_KERNELS_CUDA_CUBLAS_LOADER_H_

#include <cublas_v2.h>

namespace nvfp4::cuda {

struct CublasApi {
  cublasStatus_t (*create)(cublasHandle_t*) = nullptr;
  cublasStatus_t (*destroy)(cublasHandle_t) = nullptr;
  cublasStatus_t (*set_stream)(cublasHandle_t, cudaStream_t) = nullptr;
  cublasStatus_t (*set_math_mode)(cublasHandle_t, cublasMath_t) = nullptr;
  cublasStatus_t (*sgemm)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                          const float*, const float*, int, const float*, int, const float*, float*,
                          int) = nullptr;
};

// The loaded API, or nullptr when no libcublas could be opened (thread-safe, loaded once).
const CublasApi* LoadCublas();

}  // namespace nvfp4::cuda

#endif  // NVFP4_KERNELS_CUDA_CUBLAS_LOADER_H_
