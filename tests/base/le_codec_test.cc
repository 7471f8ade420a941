#include "base/le_codec.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "gtest/gtest.h"

namespace nvfp4 {
namespace {

TEST(LeCodecTest, FixedWidthIsLittleEndian) {
  LeWriter w;
  w.U8(0xAB);
  w.U32(0x01020304u);
  w.U64(0x1122334455667788ull);
  EXPECT_EQ(w.data(), std::string("\xAB\x04\x03\x02\x01\x88\x77\x66\x55\x44\x33\x22\x11", 13));
}

TEST(LeCodecTest, RoundTripsEveryField) {
  LeWriter w;
  w.U8(7);
  w.U32(0xFFFFFFFFu);
  w.U64(42);
  w.I64(-5);
  w.F32(-0.0f);
  w.F64(std::numeric_limits<double>::infinity());
  w.F32(std::numeric_limits<float>::quiet_NaN());
  w.Str("name");
  w.Str("");
  w.Raw("tail");
  const std::string bytes = w.Take();

  LeReader r(bytes);
  EXPECT_EQ(r.U8(), 7);
  EXPECT_EQ(r.U32(), 0xFFFFFFFFu);
  EXPECT_EQ(r.U64(), 42u);
  EXPECT_EQ(r.I64(), -5);
  const float negzero = r.F32();
  EXPECT_TRUE(negzero == 0.0f && std::signbit(negzero));
  EXPECT_EQ(r.F64(), std::numeric_limits<double>::infinity());
  EXPECT_TRUE(std::isnan(r.F32()));
  EXPECT_EQ(r.Str(), "name");
  EXPECT_EQ(r.StrView(), "");
  EXPECT_EQ(r.Rest(), "tail");
  EXPECT_TRUE(r.ok());
  EXPECT_TRUE(r.done());
}

TEST(LeCodecTest, ShortInputFailsAndStaysFailed) {
  LeReader r(std::string_view("\x01\x02\x03", 3));
  EXPECT_EQ(r.U32(), 0u);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.U8(), 0) << "reads after a failure return zero";
  EXPECT_EQ(r.Str(), "");
}

TEST(LeCodecTest, StringLongerThanInputFails) {
  LeWriter w;
  w.U32(100);
  w.Raw("short");
  const std::string bytes = w.Take();
  LeReader r(bytes);
  EXPECT_EQ(r.StrView(), "");
  EXPECT_FALSE(r.ok());
}

TEST(LeCodecTest, CountRejectsWhatTheInputCannotHold) {
  LeWriter w;
  w.U32(3);
  w.Raw(std::string(3 * 8, 'x'));
  const std::string bytes = w.Take();
  LeReader ok(bytes);
  EXPECT_EQ(ok.Count(8), 3u);
  EXPECT_TRUE(ok.ok());
  LeReader bad(bytes);
  EXPECT_EQ(bad.Count(9), 0u);
  EXPECT_FALSE(bad.ok());
}

}  // namespace
}  // namespace nvfp4
