// The NVFP4 codec (docs/NUMERICS.md sections 1-2): E2M1 element codes, E4M3 block scales, nibble
// packing. Header-only and compiled for host and device so both backends share the exact rules.
#ifndef NVFP4_KERNELS_CODEC_H_
#define NVFP4_KERNELS_CODEC_H_

#include <cmath>
#include <cstdint>

#include "kernels/hd.h"

namespace nvfp4 {

inline constexpr float kE2M1Max = 6.0f;
inline constexpr float kE4M3Max = 448.0f;
inline constexpr float kE4M3MinSubnormal = 0.001953125f;  // 2^-9
inline constexpr uint8_t kE4M3One = 0x38;                 // 1.0
inline constexpr uint8_t kE4M3MaxCode = 0x7E;             // 448
inline constexpr uint8_t kE4M3MinCode = 0x01;             // 2^-9

// |y| -> E2M1 magnitude code 0..7, round to nearest, ties to even code, saturating at 6.
// Thresholds from docs/NUMERICS.md 2: [0,.25]->0 (.25,.75)->.5 [.75,1.25]->1 (1.25,1.75)->1.5
// [1.75,2.5]->2 (2.5,3.5)->3 [3.5,5]->4 (5,inf)->6. Compares only (Hopper has no FP4 convert).
NVFP4_HD uint32_t E2M1MagnitudeCode(float a) {
  return static_cast<uint32_t>(a > 0.25f) + static_cast<uint32_t>(a >= 0.75f) +
         static_cast<uint32_t>(a > 1.25f) + static_cast<uint32_t>(a >= 1.75f) +
         static_cast<uint32_t>(a > 2.5f) + static_cast<uint32_t>(a >= 3.5f) +
         static_cast<uint32_t>(a > 5.0f);
}

// fp32 -> 4-bit E2M1 code. The sign bit is set for y < 0 (a tiny negative value gives 0x8,
// as ModelOpt does; -0.0 gives 0x0).
NVFP4_HD uint32_t EncodeE2M1(float y) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 1000 && \
    (defined(__CUDA_ARCH_SPECIFIC__) || defined(__CUDA_ARCH_FAMILY_SPECIFIC__))
  // Blackwell (sm_100a+): the hardware convert (round to nearest even, saturating at +-6). Same
  // codes as the compare path: NaN gives 0 (the compares are all false), and +0.0f is added first
  // so that -0.0 encodes as 0x0 while a tiny negative value keeps its sign (0x8).
  if (y != y) return 0u;
  const float z = y + 0.0f;
  unsigned short storage;
  asm("{ .reg .b8 t;\n"
      " cvt.rn.satfinite.e2m1x2.f32 t, %2, %1;\n"
      " mov.b16 %0, {t, 0}; }\n"
      : "=h"(storage)
      : "f"(z), "f"(0.0f));
  return static_cast<uint32_t>(storage) & 0xFu;
#else
  return E2M1MagnitudeCode(std::fabs(y)) | (static_cast<uint32_t>(y < 0.0f) << 3);
#endif
}

// The fp32 value of E2M1's nearest rounding of y, i.e. DecodeE2M1(EncodeE2M1(y)) bit for bit
// (including the sign of zero and NaN -> +0), without forming the code: the candidate-search hot
// path. |y| < 2 is rounded on the 0.5 grid, [2, 4) on the 1 grid, [4, 8) on the 2 grid, each by
// adding and subtracting 2^(22 + max(0, exponent)) (round to nearest even = the E2M1 tie rule);
// |y| > 5 saturates to 6; fmax(NaN, 0) = 0. Checked against the code path for all 2^32 inputs
// (tests/kernels/cuda/cuda_backend_test.cc, E2M1RoundValueExhaustive).
NVFP4_HD float E2M1RoundValue(float y) {
  const float a = std::fabs(y);
  uint32_t e = FloatBits(y) & 0x7F800000u;
  e = e < 0x3F800000u ? 0x3F800000u : e;
  const float c = BitsToFloat(e + 0x0B000000u);  // 2^(22 + max(0, exponent(y)))
  float r = std::fmax((a + c) - c, 0.0f);
  r = a > 5.0f ? 6.0f : r;
  return y < 0.0f ? -r : r;
}

// Magnitude of an E2M1 code 0..7: 0, .5, 1, 1.5, 2, 3, 4, 6.
NVFP4_HD float E2M1MagnitudeValue(uint32_t code3) {
  const uint32_t e = code3 >> 1;
  const uint32_t m = code3 & 1u;
  // e == 0: 0 or 0.5 (subnormal); else 2^(e-1) * (1 + m/2).
  return e == 0 ? (m ? 0.5f : 0.0f) : BitsToFloat(((e + 126u) << 23) | (m << 22));
}

// 4-bit E2M1 code -> fp32 (0x8 decodes as -0.0, which equals 0).
NVFP4_HD float DecodeE2M1(uint32_t code) {
  const float v = E2M1MagnitudeValue(code & 7u);
  return (code & 8u) ? -v : v;
}

// E4M3 ("fn") byte -> fp32. 0x7F/0xFF are NaN; there is no Inf.
NVFP4_HD float DecodeE4M3(uint32_t code) {
  const uint32_t s = (code >> 7) & 1u;
  const uint32_t e = (code >> 3) & 0xFu;
  const uint32_t m = code & 7u;
  float v;
  if (e == 15 && m == 7) {
    v = BitsToFloat(0x7FC00000u);
  } else if (e == 0) {
    v = static_cast<float>(m) * kE4M3MinSubnormal;
  } else {
    v = BitsToFloat(((e + 120u) << 23) | (m << 20));
  }
  return s ? -v : v;
}

// Positive fp32 -> E4M3 block-scale byte: clamp to [2^-9, 448], then round to nearest even.
// (A plain cast does not saturate: always clamp first.) NaN clamps to 2^-9.
NVFP4_HD uint32_t EncodeE4M3Scale(float v) {
  v = std::fmin(std::fmax(v, kE4M3MinSubnormal), kE4M3Max);
  if (v < 0.015625f) {  // below 2^-6: subnormal grid of step 2^-9; 8 rounds up to code 0x08 (2^-6).
    return static_cast<uint32_t>(std::rint(v * 512.0f));
  }
  const uint32_t bits = FloatBits(v);
  const uint32_t exp = (bits >> 23) - 120u;  // E4M3 biased exponent, 1..15
  const uint32_t mant = bits & 0x7FFFFFu;
  const uint32_t keep = mant >> 20;
  const uint32_t rem = mant & 0xFFFFFu;
  uint32_t code = (exp << 3) | keep;
  if (rem > 0x80000u || (rem == 0x80000u && (keep & 1u))) code += 1;  // carry moves the exponent
  return code;
}

// Byte j of a packed row holds element 2j in the low nibble and 2j+1 in the high nibble.
NVFP4_HD uint8_t PackPair(uint32_t even_code, uint32_t odd_code) {
  return static_cast<uint8_t>((even_code & 0xFu) | ((odd_code & 0xFu) << 4));
}

}  // namespace nvfp4

#endif  // NVFP4_KERNELS_CODEC_H_
