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

}  // namespace
}  // namespace nvfp4
