// Host/device qualifiers and bit casts shared by code compiled for both the CPU and CUDA.
#ifndef NVFP4_KERNELS_HD_H_
#define NVFP4_KERNELS_HD_H_

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define NVFP4_HD __host__ __device__ __forceinline__
#else
#define NVFP4_HD inline
#endif

namespace nvfp4 {

NVFP4_HD uint32_t FloatBits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
#endif
}

NVFP4_HD float BitsToFloat(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
#endif
}

// Source element conversions (exact: bf16/fp16 -> fp32 is lossless).
NVFP4_HD float Bf16ToFloat(uint16_t h) { return BitsToFloat(static_cast<uint32_t>(h) << 16); }

NVFP4_HD float F16ToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  const uint32_t man = h & 0x3FFu;
  if (exp == 0) {
    // Zero or subnormal: man * 2^-24, exact in fp32.
    const float mag = static_cast<float>(man) * 5.9604644775390625e-08f;
    return BitsToFloat(FloatBits(mag) | sign);
  }
  if (exp == 31) return BitsToFloat(sign | 0x7F800000u | (man << 13));  // Inf / NaN
  return BitsToFloat(sign | ((exp + 112u) << 23) | (man << 13));
}

}  // namespace nvfp4

#endif  // NVFP4_KERNELS_HD_H_
