// The shared test library itself: TempDir and the status matchers.
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace nvfp4::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(TempDirTest, FreshAndRemovedWithItsContents) {
  std::filesystem::path kept;
  {
    TempDir a, b;
    ASSERT_TRUE(std::filesystem::is_directory(a.path()));
    EXPECT_NE(a.path(), b.path());
    EXPECT_TRUE(std::filesystem::is_empty(a.path()));
    EXPECT_EQ(a.Path("x/y.bin"), (a.path() / "x" / "y.bin").string());
    std::filesystem::create_directories(a.path() / "x");
    std::ofstream(a.Path("x/y.bin")) << "data";
    kept = a.path();
  }
  EXPECT_FALSE(std::filesystem::exists(kept));
}

TEST(StatusIsTest, MatchesStatusAndStatusOr) {
  EXPECT_THAT(absl::OkStatus(), IsOk());
  EXPECT_THAT(absl::StatusOr<int>(3), IsOk());
  EXPECT_THAT(absl::NotFoundError("no file x"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(absl::StatusOr<int>(absl::NotFoundError("no file x")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("file x")));
  EXPECT_THAT(absl::NotFoundError("no file x"), Not(IsOk()));
  EXPECT_THAT(absl::NotFoundError("no file x"), Not(StatusIs(absl::StatusCode::kInternal)));
  EXPECT_THAT(absl::NotFoundError("no file x"),
              Not(StatusIs(absl::StatusCode::kNotFound, HasSubstr("directory"))));
}

TEST(StatusIsTest, ExplainsAMismatchWithTheWholeStatus) {
  const ::testing::Matcher<absl::Status> m = StatusIs(absl::StatusCode::kCancelled);
  ::testing::StringMatchResultListener listener;
  EXPECT_FALSE(m.MatchAndExplain(absl::InternalError("disk on fire"), &listener));
  EXPECT_THAT(listener.str(), HasSubstr("INTERNAL: disk on fire"));
}

}  // namespace
}  // namespace nvfp4::testing
