#include "tests/kernels/cuda/e2m1_exhaustive.h"

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/codec.h"
#include "kernels/cuda/cuda_kernels.h"

namespace nvfp4::cuda::test_hooks {
namespace {

__global__ void E2M1ExhaustiveKernel(unsigned long long* mismatches) {
  unsigned long long bad = 0;
  const uint64_t stride = static_cast<uint64_t>(gridDim.x) * blockDim.x;
  for (uint64_t u = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       u <= 0xFFFFFFFFull; u += stride) {
    const float y = __uint_as_float(static_cast<uint32_t>(u));
    const float ref = DecodeE2M1(EncodeE2M1(y));
    const float got = E2M1RoundValue(y);
    bad += __float_as_uint(ref) != __float_as_uint(got) ? 1 : 0;
  }
  if (bad) atomicAdd(mismatches, bad);
}

}  // namespace

cudaError_t LaunchE2M1Exhaustive(unsigned long long* mismatches, cudaStream_t stream) {
  E2M1ExhaustiveKernel<<<SmCount() * 16, 256, 0, stream>>>(mismatches);
  return cudaGetLastError();
}

}  // namespace nvfp4::cuda::test_hooks
