// The S3 store's pieces that need no server: SigV4 URI encoding, payload hashes and the
// configuration checks. Requests against a real S3 API (moto) are in tests/integration.
#include "storage/s3_store.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace nvfp4::storage {
namespace {

using ::nvfp4::testing::IsOk;
using ::nvfp4::testing::StatusIs;
using ::testing::HasSubstr;

// AWS SigV4 canonical URI encoding: unreserved characters stay, every other byte is %XX (upper
// case), '/' stays only in paths.
TEST(AwsUriEncodeTest, UnreservedStayEverythingElseIsPercentEncoded) {
  EXPECT_EQ(AwsUriEncode("AZaz09-_.~", false), "AZaz09-_.~");
  EXPECT_EQ(AwsUriEncode("a b+c=d&e", false), "a%20b%2Bc%3Dd%26e");
  EXPECT_EQ(AwsUriEncode("models/llama 3/model.safetensors", true),
            "models/llama%203/model.safetensors");
  EXPECT_EQ(AwsUriEncode("prefix/", false), "prefix%2F");
  EXPECT_EQ(AwsUriEncode("*", false), "%2A");
  EXPECT_EQ(AwsUriEncode("\xC3\xA9", false), "%C3%A9");  // UTF-8 bytes, each encoded
  EXPECT_EQ(AwsUriEncode("", true), "");
}

TEST(Sha256HexTest, EmptyPayloadHash) {
  // x-amz-content-sha256 of a request without a body.
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(S3ObjectStoreTest, CreateChecksTheConfiguration) {
  S3Config c;
  c.access_key_id = "AKIDEXAMPLE";
  c.secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
  EXPECT_THAT(S3ObjectStore::Create(c),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no endpoint")));
  c.endpoint = "http://127.0.0.1:1/";
  c.part_size = 1 << 20;
  EXPECT_THAT(S3ObjectStore::Create(c),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("5 MiB")));
  c.part_size = 5 << 20;
  auto store = S3ObjectStore::Create(c);
  ASSERT_THAT(store, IsOk());
  EXPECT_EQ((*store)->config().endpoint, "http://127.0.0.1:1") << "trailing '/' dropped";
  c.secret_access_key.clear();
  EXPECT_THAT(S3ObjectStore::Create(c),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no credentials")));
}

}  // namespace
}  // namespace nvfp4::storage
