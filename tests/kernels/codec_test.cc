// The codec against the rules of docs/NUMERICS.md sections 1-2, with independent reference formulas.
#include "kernels/codec.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/hd.h"
#include "kernels/testing/synthetic.h"

namespace nvfp4 {
namespace {

// Independent E4M3 decode: (-1)^s 2^(e-7) (1 + m/8); subnormal 2^-6 m/8.
double ReferenceE4M3(int code) {
  const int s = code >> 7, e = (code >> 3) & 15, m = code & 7;
  const double mag = e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1.0 + m / 8.0, e - 7);
  return s ? -mag : mag;
}

TEST(E4M3Test, All256CodesDecodeAsSpecified) {
  for (int code = 0; code < 256; ++code) {
    const float v = DecodeE4M3(code);
    if ((code & 0x7F) == 0x7F) {
      EXPECT_TRUE(std::isnan(v)) << code;
    } else {
      EXPECT_EQ(static_cast<double>(v), ReferenceE4M3(code)) << "code " << code;
    }
  }
  EXPECT_EQ(DecodeE4M3(0x7E), 448.0f);
  EXPECT_EQ(DecodeE4M3(0x01), 0.001953125f);
  EXPECT_EQ(DecodeE4M3(0x38), 1.0f);
}

TEST(E4M3Test, EncodeRoundTripsEveryFinitePositiveCode) {
  for (int code = 1; code <= 126; ++code) {
    EXPECT_EQ(EncodeE4M3Scale(DecodeE4M3(code)), static_cast<uint32_t>(code));
  }
}

TEST(E4M3Test, BitPatternOrderIsValueOrder) {
  for (int code = 1; code < 126; ++code) EXPECT_LT(DecodeE4M3(code), DecodeE4M3(code + 1));
}

TEST(E4M3Test, TiesRoundToEvenAndNeighboursRoundToNearest) {
  for (int code = 1; code < 126; ++code) {
    const float lo = DecodeE4M3(code), hi = DecodeE4M3(code + 1);
    const float mid = (lo + hi) / 2;  // exact in fp32
    const int even = (code % 2 == 0) ? code : code + 1;
    EXPECT_EQ(EncodeE4M3Scale(mid), static_cast<uint32_t>(even)) << "tie between " << code;
    EXPECT_EQ(EncodeE4M3Scale(std::nextafter(mid, 0.0f)), static_cast<uint32_t>(code));
    EXPECT_EQ(EncodeE4M3Scale(std::nextafter(mid, 1e9f)), static_cast<uint32_t>(code + 1));
  }
}

TEST(E4M3Test, ClampsBeforeRounding) {
  EXPECT_EQ(EncodeE4M3Scale(0.0f), 0x01u);          // below 2^-9 -> smallest subnormal
  EXPECT_EQ(EncodeE4M3Scale(1e-30f), 0x01u);
  EXPECT_EQ(EncodeE4M3Scale(-3.0f), 0x01u);
  EXPECT_EQ(EncodeE4M3Scale(449.0f), 0x7Eu);        // a plain cast would give 448 here ...
  EXPECT_EQ(EncodeE4M3Scale(464.0f), 0x7Eu);        // ... and NaN from 464 up: we saturate
  EXPECT_EQ(EncodeE4M3Scale(1e30f), 0x7Eu);
  EXPECT_EQ(EncodeE4M3Scale(INFINITY), 0x7Eu);
  EXPECT_EQ(EncodeE4M3Scale(std::nanf("")), 0x01u);
}

TEST(E2M1Test, ThresholdTableOfTheSpec) {
  struct Case { float y; uint32_t code; };
  const Case cases[] = {
      {0.0f, 0}, {0.25f, 0}, {0.2500001f, 1}, {0.5f, 1}, {0.7499999f, 1}, {0.75f, 2},
      {1.0f, 2}, {1.25f, 2}, {1.2500001f, 3}, {1.5f, 3}, {1.7499999f, 3}, {1.75f, 4},
      {2.0f, 4}, {2.5f, 4}, {2.5000002f, 5}, {3.0f, 5}, {3.4999998f, 5}, {3.5f, 6},
      {4.0f, 6}, {5.0f, 6}, {5.0000005f, 7}, {6.0f, 7}, {100.0f, 7}, {INFINITY, 7}};
  for (const Case& c : cases) {
    EXPECT_EQ(EncodeE2M1(c.y), c.code) << c.y;
    EXPECT_EQ(EncodeE2M1(-c.y), c.y == 0.0f ? 0u : (c.code | 8u)) << -c.y;
  }
}

TEST(E2M1Test, RoundsToNearestWithTiesToEvenCode) {
  const float values[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
  // Exhaustive check on a dense grid: nearest value, ties to the even code.
  for (int i = 0; i <= 80000; ++i) {
    const float y = i * 0.0001f;
    int best = 0;
    for (int c = 1; c < 8; ++c) {
      const float d = std::fabs(y - values[c]), db = std::fabs(y - values[best]);
      if (d < db || (d == db && c % 2 == 0)) best = c;
    }
    ASSERT_EQ(EncodeE2M1(y), static_cast<uint32_t>(best)) << y;
  }
}

TEST(E2M1Test, SignOfTinyNegativesIsKeptButNegativeZeroIsZero) {
  EXPECT_EQ(EncodeE2M1(-0.1f), 0x8u);
  EXPECT_EQ(EncodeE2M1(-0.0f), 0x0u);
  EXPECT_EQ(EncodeE2M1(-6.0f), 0xFu);
  EXPECT_EQ(DecodeE2M1(0x8), 0.0f);
}

TEST(E2M1Test, DecodeAllCodes) {
  const float values[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
  for (uint32_t c = 0; c < 16; ++c) {
    EXPECT_EQ(DecodeE2M1(c), (c & 8) ? -values[c & 7] : values[c & 7]);
  }
}

TEST(E2M1Test, FastRoundValueEqualsDecodeOfEncode) {
  // The search hot path rounds by add/subtract; it must equal the code path bit for bit. Every
  // 7th bit pattern over all 2^32 floats (both signs, NaN, Inf, subnormals), plus the ties.
  auto check = [](uint32_t bits) {
    const float y = BitsToFloat(bits);
    const float fast = E2M1RoundValue(y);
    const float slow = DecodeE2M1(EncodeE2M1(y));
    return FloatBits(fast) == FloatBits(slow);
  };
  uint64_t mismatches = 0;
  for (uint64_t b = 0; b < (uint64_t{1} << 32); b += 7) mismatches += !check(static_cast<uint32_t>(b));
  EXPECT_EQ(mismatches, 0u);
  for (float t : {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f, 6.0f, 1e30f}) {
    for (float y : {t, -t, std::nextafter(t, 0.0f), std::nextafter(t, 100.0f)}) {
      EXPECT_TRUE(check(FloatBits(y))) << y;
    }
  }
}

TEST(PackingTest, EvenElementInLowNibble) {
  EXPECT_EQ(PackPair(0x1, 0x2), 0x21);
  EXPECT_EQ(PackPair(0xF, 0x0), 0x0F);
  EXPECT_EQ(PackPair(0x0, 0x8), 0x80);
}

TEST(SourceConversionTest, Bf16AndF16AreExact) {
  EXPECT_EQ(Bf16ToFloat(0x3F80), 1.0f);
  EXPECT_EQ(Bf16ToFloat(0xC040), -3.0f);
  EXPECT_EQ(F16ToFloat(0x3C00), 1.0f);
  EXPECT_EQ(F16ToFloat(0xC500), -5.0f);
  EXPECT_EQ(F16ToFloat(0x0001), 5.9604644775390625e-08f);  // smallest subnormal
  EXPECT_EQ(F16ToFloat(0x7BFF), 65504.0f);
  EXPECT_TRUE(std::isinf(F16ToFloat(0x7C00)));
  EXPECT_TRUE(std::isnan(F16ToFloat(0x7E00)));
  for (float f : {0.1f, -2.5f, 1e-6f, 300.0f}) {
    EXPECT_EQ(Bf16ToFloat(testing::FloatToBf16(f)), Bf16ToFloat(testing::FloatToBf16(f)));
    EXPECT_NEAR(F16ToFloat(testing::FloatToF16(f)), f, std::fabs(f) * 1e-3 + 1e-7);
  }
}

}  // namespace
}  // namespace nvfp4
