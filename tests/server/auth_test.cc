// Bearer-token authentication (server/auth.h) without a server: the header forms, the tokens
// file format, and a rotated file picked up without a restart.
#include "server/auth.h"

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace nvfp4::server {
namespace {

using ::nvfp4::testing::StatusIs;
using ::nvfp4::testing::TempDir;
using ::testing::HasSubstr;

void WriteTokens(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::trunc) << text;
}

TEST(TokenAuthenticatorTest, AcceptsOnlyAConfiguredBearerToken) {
  auto a = TokenAuthenticator::FromTokens({"alpha", "beta"});
  EXPECT_EQ(a->token_count(), 2u);
  EXPECT_TRUE(a->CheckHeader("Bearer alpha").ok());
  EXPECT_TRUE(a->CheckHeader("Bearer beta").ok());
  EXPECT_TRUE(a->CheckHeader("bearer alpha").ok()) << "the scheme is case-insensitive";
  EXPECT_TRUE(a->CheckHeader("Bearer  alpha ").ok()) << "the token is trimmed";
  EXPECT_FALSE(a->CheckHeader("Bearer ALPHA").ok()) << "the token is not";

  const grpc::Status wrong = a->CheckHeader("Bearer gamma");
  EXPECT_EQ(wrong.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(wrong.error_message(), "invalid bearer token");

  const grpc::Status missing = a->CheckHeader("");
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(missing.error_message(), HasSubstr("missing credentials"));

  for (const char* bad : {"Basic alpha", "Bearer", "Bearer ", "alpha"}) {
    const grpc::Status s = a->CheckHeader(bad);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << bad;
    EXPECT_THAT(s.error_message(), HasSubstr("scheme")) << bad;
  }
}

TEST(TokenAuthenticatorTest, TokensFileSkipsCommentsAndBlankLines) {
  TempDir tmp;
  const std::string path = tmp.Path("tokens");
  WriteTokens(path, "# rotated 2026-01-01\n\n  alpha  \n\tbeta\n#gamma\n");
  auto a = TokenAuthenticator::FromFile(path);
  ASSERT_THAT(a, ::nvfp4::testing::IsOk());
  EXPECT_EQ((*a)->token_count(), 2u);
  EXPECT_TRUE((*a)->CheckHeader("Bearer alpha").ok());
  EXPECT_TRUE((*a)->CheckHeader("Bearer beta").ok());
  EXPECT_FALSE((*a)->CheckHeader("Bearer gamma").ok());
  EXPECT_FALSE((*a)->CheckHeader("Bearer #gamma").ok());
}

TEST(TokenAuthenticatorTest, FileErrors) {
  TempDir tmp;
  EXPECT_THAT(TokenAuthenticator::FromFile(tmp.Path("absent")),
              StatusIs(absl::StatusCode::kNotFound));
  WriteTokens(tmp.Path("empty"), "# nothing here\n\n");
  EXPECT_THAT(TokenAuthenticator::FromFile(tmp.Path("empty")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("holds no token")));
}

// The file is re-checked at most once a second: a rotated Secret is picked up without a restart,
// and a broken rotation (no token) keeps the previous tokens.
TEST(TokenAuthenticatorTest, RotatedFileIsReloaded) {
  TempDir tmp;
  const std::string path = tmp.Path("tokens");
  WriteTokens(path, "old\n");
  auto a = TokenAuthenticator::FromFile(path);
  ASSERT_THAT(a, ::nvfp4::testing::IsOk());
  WriteTokens(path, "new-token\nsecond\n");
  absl::SleepFor(absl::Milliseconds(1100));
  EXPECT_TRUE((*a)->CheckHeader("Bearer new-token").ok());
  EXPECT_FALSE((*a)->CheckHeader("Bearer old").ok());
  EXPECT_EQ((*a)->token_count(), 2u);

  WriteTokens(path, "# emptied by mistake\n");
  absl::SleepFor(absl::Milliseconds(1100));
  EXPECT_TRUE((*a)->CheckHeader("Bearer new-token").ok()) << "the last good tokens are kept";
}

}  // namespace
}  // namespace nvfp4::server
