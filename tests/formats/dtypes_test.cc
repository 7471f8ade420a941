#include "formats/dtypes.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/hd.h"

namespace nvfp4::formats {
namespace {

using ::testing::ElementsAre;

TEST(DTypesTest, Sizes) {
  EXPECT_EQ(SafetensorsDTypeSize("BF16"), 2);
  EXPECT_EQ(SafetensorsDTypeSize("F32"), 4);
  EXPECT_EQ(SafetensorsDTypeSize("F8_E4M3"), 1);
  EXPECT_EQ(SafetensorsDTypeSize("I64"), 8);
  EXPECT_EQ(SafetensorsDTypeSize("BOOL"), 1);
  EXPECT_FALSE(SafetensorsDTypeSize("F4").has_value());
  EXPECT_FALSE(SafetensorsDTypeSize("bf16").has_value());  // the format is case-sensitive
}

TEST(DTypesTest, KernelDTypes) {
  EXPECT_EQ(ToKernelDType("BF16"), DType::kBF16);
  EXPECT_EQ(ToKernelDType("F16"), DType::kF16);
  EXPECT_EQ(ToKernelDType("F32"), DType::kF32);
  EXPECT_FALSE(ToKernelDType("U8").has_value());
  EXPECT_TRUE(IsQuantizableDType("BF16"));
  EXPECT_FALSE(IsQuantizableDType("F8_E4M3"));
}

TEST(DTypesTest, DecodeToFloat32) {
  // bf16 1.0 = 0x3F80, -2.0 = 0xC000; f16 1.0 = 0x3C00, 0.5 = 0x3800.
  const std::vector<uint8_t> bf16 = {0x80, 0x3F, 0x00, 0xC0};
  EXPECT_THAT(*DecodeToFloat32("BF16", bf16), ElementsAre(1.0f, -2.0f));
  const std::vector<uint8_t> f16 = {0x00, 0x3C, 0x00, 0x38};
  EXPECT_THAT(*DecodeToFloat32("F16", f16), ElementsAre(1.0f, 0.5f));
  float f = 3.25f;
  std::vector<uint8_t> f32(4);
  std::memcpy(f32.data(), &f, 4);
  EXPECT_THAT(*DecodeToFloat32("F32", f32), ElementsAre(3.25f));
  EXPECT_FALSE(DecodeToFloat32("U8", f32).ok());
  EXPECT_FALSE(DecodeToFloat32("F32", std::vector<uint8_t>(3)).ok());
}

TEST(DTypesTest, FloatToBf16RoundsToNearestEven) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3F80);
  EXPECT_EQ(FloatToBf16(-2.0f), 0xC000);
  // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1.0078125: ties to even (1.0).
  EXPECT_EQ(FloatToBf16(1.00390625f), 0x3F80);
  // 1 + 3 * 2^-8 is halfway between 0x3F81 and 0x3F82: ties to even (0x3F82).
  EXPECT_EQ(FloatToBf16(1.01171875f), 0x3F82);
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(std::nanf("")))));
}

template <typename T>
std::vector<uint8_t> LeBytes(const std::vector<T>& values) {
  std::vector<uint8_t> out(values.size() * sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), values.data(), out.size());
  return out;
}

TEST(DTypesTest, CountNonFiniteByDType) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::nanf("");
  EXPECT_EQ(CountNonFinite("F32", LeBytes<float>({1.0f, inf, -inf, nan, 3e38f, -0.0f})), 3);
  EXPECT_EQ(CountNonFinite("F64", LeBytes<double>({1.0, std::nan(""), 1e308})), 1);
  // bf16: +Inf 0x7F80, NaN 0xFFC1, max finite 0x7F7F; f16: -Inf 0xFC00, NaN 0x7E00, 65504 0x7BFF.
  EXPECT_EQ(CountNonFinite("BF16", LeBytes<uint16_t>({0x7F80, 0xFFC1, 0x7F7F, 0x3F80})), 2);
  EXPECT_EQ(CountNonFinite("F16", LeBytes<uint16_t>({0xFC00, 0x7E00, 0x7BFF})), 2);
  // Not floating point (or no Inf): not scanned.
  EXPECT_EQ(CountNonFinite("U8", std::vector<uint8_t>(8, 0xFF)), 0);
  EXPECT_EQ(CountNonFinite("I32", LeBytes<int32_t>({0x7F800000})), 0);
  EXPECT_EQ(CountNonFinite("F8_E4M3", std::vector<uint8_t>(4, 0x7F)), 0);
  EXPECT_EQ(CountNonFinite("F32", std::vector<uint8_t>(3, 0xFF)), 0);  // a partial element
}

}  // namespace
}  // namespace nvfp4::formats
