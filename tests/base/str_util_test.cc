#include "base/str_util.h"

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/strings/string_view.h"
#include "gtest/gtest.h"

namespace nvfp4 {
namespace {

TEST(StrCatTest, MixesStringKinds) {
  const std::string s = "std";
  const std::string_view sv = "view";
  const absl::string_view av = "absl";
  EXPECT_EQ(StrCat(s, "|", sv, "|", av, "|", "literal"), "std|view|absl|literal");
}

TEST(StrCatTest, Numbers) {
  EXPECT_EQ(StrCat(int64_t{-3}, " ", uint64_t{18446744073709551615u}, " ", 0.5, " ", 1.0f),
            "-3 18446744073709551615 0.5 1");
}

TEST(StrCatTest, StringViewIsNotNulTerminated) {
  const std::string text = "abcdef";
  EXPECT_EQ(StrCat(std::string_view(text).substr(1, 3), "!"), "bcd!");
}

TEST(StrCatTest, Empty) { EXPECT_EQ(StrCat(), ""); }

TEST(Utf8Test, ValidTextIsUnchanged) {
  for (const char* s : {"", "model.layers.0.weight", "caf\xc3\xa9", "\xe2\x82\xac \xf0\x9f\x98\x80",
                        "tab\tand\\backslash"}) {
    EXPECT_TRUE(IsValidUtf8(s)) << s;
    EXPECT_EQ(EscapeInvalidUtf8(s), s);
  }
}

TEST(Utf8Test, InvalidBytesAreEscaped) {
  EXPECT_FALSE(IsValidUtf8("w\xff\xfe.weight"));
  EXPECT_EQ(EscapeInvalidUtf8("w\xff\xfe.weight"), "w\\xff\\xfe.weight");
  EXPECT_EQ(EscapeInvalidUtf8("\xc3"), "\\xc3");                             // truncated sequence
  EXPECT_EQ(EscapeInvalidUtf8("\xc0\xaf"), "\\xc0\\xaf");                    // overlong '/'
  EXPECT_EQ(EscapeInvalidUtf8("\xed\xa0\x80"), "\\xed\\xa0\\x80");           // a surrogate
  EXPECT_EQ(EscapeInvalidUtf8("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");  // > U+10FFFF
  EXPECT_EQ(EscapeInvalidUtf8("ok \xc3\xa9 \x80"), "ok \xc3\xa9 \\x80");     // valid kept
  for (const char* s : {"w\xff\xfe", "\xc3", "\xed\xa0\x80",
                        "a\x80"
                        "b"}) {
    EXPECT_TRUE(IsValidUtf8(EscapeInvalidUtf8(s))) << s;
  }
}

TEST(Utf8Test, SequenceLengths) {
  uint32_t cp = 0;
  EXPECT_EQ(Utf8SequenceAt("a", 0, &cp), 1u);
  EXPECT_EQ(cp, 'a');
  EXPECT_EQ(Utf8SequenceAt("\xe2\x82\xac", 0, &cp), 3u);
  EXPECT_EQ(cp, 0x20acu);
  EXPECT_EQ(Utf8SequenceAt("\xe2\x82", 0, &cp), 0u);
  EXPECT_EQ(Utf8SequenceAt("\xff", 0, &cp), 0u);
}

}  // namespace
}  // namespace nvfp4
