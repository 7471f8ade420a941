// Test hook of cuda_backend_test: the device build of E2M1RoundValue against
// DecodeE2M1(EncodeE2M1(y)) for all 2^32 float bit patterns.
#ifndef NVFP4_TESTS_KERNELS_CUDA_E2M1_EXHAUSTIVE_H_
#define NVFP4_TESTS_KERNELS_CUDA_E2M1_EXHAUSTIVE_H_

#include <cuda_runtime_api.h>

namespace nvfp4::cuda::test_hooks {

// *mismatches (device memory, zeroed by the caller) counts the differences.
cudaError_t LaunchE2M1Exhaustive(unsigned long long* mismatches, cudaStream_t stream);

}  // namespace nvfp4::cuda::test_hooks

#endif  // NVFP4_TESTS_KERNELS_CUDA_E2M1_EXHAUSTIVE_H_
