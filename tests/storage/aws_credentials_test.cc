// The S3 client's credentials: STS AssumeRoleWithWebIdentity responses parsed, the request it
// sends, and when the web identity provider refreshes (an injected clock and a fake STS). The real
// exchange with an STS server (moto) is in tests/integration/s3_web_identity_test.py.
#include "storage/aws_credentials.h"

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/s3_store.h"
#include "tests/testing/files.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace nvfp4::storage {
namespace {

using ::nvfp4::testing::IsOk;
using ::nvfp4::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::Not;

// What AWS documents for AssumeRoleWithWebIdentity (trimmed).
constexpr char kAwsResponse[] = R"(<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:nvfp4:nvfp4d</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::111122223333:assumed-role/nvfp4d-s3/nvfp4d</Arn>
      <AssumedRoleId>AROACLKWSDQRAOEXAMPLE:nvfp4d</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>AQoDYXdzEE0a8ANXXXXX&amp;plus/more==</SessionToken>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>
      <Expiration>2014-10-24T23:00:23Z</Expiration>
      <AccessKeyId>ASgeIAIOSFODNN7EXAMPLE</AccessKeyId>
    </Credentials>
    <Provider>www.amazon.com</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>)";

std::string Response(absl::Time expiration, const std::string& key = "ASIAKEY") {
  return absl::StrCat(
      "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>"
      "<AccessKeyId>", key, "</AccessKeyId><SecretAccessKey>secret-", key,
      "</SecretAccessKey><SessionToken>token-", key, "</SessionToken><Expiration>",
      absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", expiration, absl::UTCTimeZone()),
      "</Expiration></Credentials></AssumeRoleWithWebIdentityResult>"
      "</AssumeRoleWithWebIdentityResponse>");
}

TEST(ParseStsCredentialsTest, AwsDocumentedResponse) {
  absl::StatusOr<AwsCredentials> c = ParseStsCredentials(kAwsResponse);
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->access_key_id, "ASgeIAIOSFODNN7EXAMPLE");
  EXPECT_EQ(c->secret_access_key, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY");
  EXPECT_EQ(c->session_token, "AQoDYXdzEE0a8ANXXXXX&plus/more==") << "entities decoded";
  EXPECT_EQ(c->expiration, absl::FromUnixSeconds(1414191623));  // 2014-10-24T23:00:23Z
}

TEST(ParseStsCredentialsTest, FractionalSecondsAndOffsets) {
  // moto writes milliseconds; RFC 3339 offsets are accepted too.
  const absl::Time t = absl::FromUnixMillis(1700000000123);
  absl::StatusOr<AwsCredentials> c = ParseStsCredentials(Response(t));
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->expiration, t);
  std::string xml = Response(t);
  xml.replace(xml.find(".123Z"), 5, ".123+01:00");
  c = ParseStsCredentials(xml);
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->expiration, t - absl::Hours(1));
}

TEST(ParseStsCredentialsTest, MissingFieldsAreErrors) {
  EXPECT_THAT(ParseStsCredentials("<ErrorResponse/>"),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("no <Credentials>")));
  for (const char* field : {"AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"}) {
    std::string xml = Response(absl::FromUnixSeconds(1700000000));
    const size_t a = xml.find(absl::StrCat("<", field, ">"));
    const size_t b = xml.find(absl::StrCat("</", field, ">"));
    xml.erase(a, b + std::string(field).size() + 3 - a);
    EXPECT_THAT(ParseStsCredentials(xml),
                StatusIs(absl::StatusCode::kInternal, HasSubstr(absl::StrCat("no ", field))))
        << field;
  }
  std::string xml = Response(absl::FromUnixSeconds(1700000000));
  xml.replace(xml.find("<Expiration>") + 12, 10, "tomorrow!!");
  EXPECT_THAT(ParseStsCredentials(xml),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("not an RFC 3339 time")));
}

// A fake STS: answers from `next` (or a fresh hour-long credential), records each request.
struct FakeSts {
  absl::Time now = absl::FromUnixSeconds(1700000000);
  absl::Duration lifetime = absl::Hours(1);
  std::vector<std::string> bodies;
  std::vector<absl::StatusOr<HttpReply>> next;  // consumed front first
  int calls = 0;

  void Install(WebIdentityOptions* o) {
    o->clock = [this] { return now; };
    o->http_post = [this](const std::string& url, const std::string& body,
                          absl::Duration) -> absl::StatusOr<HttpReply> {
      EXPECT_EQ(url, "http://sts.test:1234/");
      bodies.push_back(body);
      ++calls;
      if (!next.empty()) {
        absl::StatusOr<HttpReply> r = next.front();
        next.erase(next.begin());
        return r;
      }
      return HttpReply{200, Response(now + lifetime, absl::StrCat("ASIA", calls))};
    };
    o->initial_backoff = absl::ZeroDuration();
  }
};

class WebIdentityTest : public ::testing::Test {
 protected:
  WebIdentityOptions Options() {
    WebIdentityOptions o;
    o.token_file = tmp_.Path("token");
    o.role_arn = "arn:aws:iam::111122223333:role/nvfp4d-s3";
    o.sts_endpoint = "http://sts.test:1234/";
    sts_.Install(&o);
    return o;
  }
  std::unique_ptr<WebIdentityCredentialsProvider> Make(WebIdentityOptions o) {
    auto p = WebIdentityCredentialsProvider::Create(std::move(o));
    EXPECT_THAT(p, IsOk());
    return p.ok() ? *std::move(p) : nullptr;
  }
  void SetUp() override { testing::WriteFile(tmp_.Path("token"), "eyJhbGciOi.first+token/=\n"); }

  testing::TempDir tmp_;
  FakeSts sts_;
};

TEST_F(WebIdentityTest, CreateNamesWhatIsMissing) {
  WebIdentityOptions o = Options();
  o.role_arn.clear();
  EXPECT_THAT(WebIdentityCredentialsProvider::Create(o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("AWS_ROLE_ARN is not")));
  o = Options();
  o.token_file.clear();
  EXPECT_THAT(WebIdentityCredentialsProvider::Create(o),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("AWS_WEB_IDENTITY_TOKEN_FILE is not")));
  o = Options();
  o.token_file = tmp_.Path("missing");
  EXPECT_THAT(WebIdentityCredentialsProvider::Create(o),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("cannot read AWS_WEB_IDENTITY_TOKEN_FILE " + tmp_.Path("missing"))));
  EXPECT_EQ(sts_.calls, 0) << "no STS call before the first request";
}

TEST_F(WebIdentityTest, SendsTheAssumeRoleWithWebIdentityForm) {
  WebIdentityOptions o = Options();
  o.session_name = "pod a";
  auto p = Make(o);
  absl::StatusOr<AwsCredentials> c = p->Get();
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->access_key_id, "ASIA1");
  EXPECT_EQ(c->secret_access_key, "secret-ASIA1");
  EXPECT_EQ(c->session_token, "token-ASIA1");
  ASSERT_EQ(sts_.bodies.size(), 1u);
  EXPECT_EQ(sts_.bodies[0],
            "Action=AssumeRoleWithWebIdentity&Version=2011-06-15"
            "&RoleArn=arn%3Aaws%3Aiam%3A%3A111122223333%3Arole%2Fnvfp4d-s3"
            "&RoleSessionName=pod%20a&DurationSeconds=3600"
            "&WebIdentityToken=eyJhbGciOi.first%2Btoken%2F%3D");
  EXPECT_THAT(p->Describe(), HasSubstr("role arn:aws:iam::111122223333:role/nvfp4d-s3"));
  EXPECT_THAT(p->Describe(), Not(HasSubstr("secret")));
}

TEST_F(WebIdentityTest, RefreshesBeforeExpiryWithTheRotatedToken) {
  auto p = Make(Options());
  const absl::Time t0 = sts_.now;
  ASSERT_THAT(p->Get(), IsOk());
  // Cached until 5 minutes before the hour is up.
  sts_.now = t0 + absl::Minutes(54);
  ASSERT_THAT(p->Get(), IsOk());
  EXPECT_EQ(sts_.calls, 1);
  // The kubelet rotated the token meanwhile: the refresh sends the new one.
  testing::WriteFile(tmp_.Path("token"), "second-token");
  sts_.now = t0 + absl::Minutes(55);
  absl::StatusOr<AwsCredentials> c = p->Get();
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(sts_.calls, 2);
  EXPECT_EQ(c->access_key_id, "ASIA2");
  EXPECT_THAT(sts_.bodies[1], HasSubstr("&WebIdentityToken=second-token"));
  EXPECT_EQ(p->refreshes(), 2);
}

TEST_F(WebIdentityTest, ShortLivedCredentialsRefreshHalfway) {
  sts_.lifetime = absl::Minutes(4);
  auto p = Make(Options());
  const absl::Time t0 = sts_.now;
  ASSERT_THAT(p->Get(), IsOk());
  sts_.now = t0 + absl::Seconds(119);
  ASSERT_THAT(p->Get(), IsOk());
  EXPECT_EQ(sts_.calls, 1);
  sts_.now = t0 + absl::Seconds(120);
  ASSERT_THAT(p->Get(), IsOk());
  EXPECT_EQ(sts_.calls, 2);
}

TEST_F(WebIdentityTest, FailedRefreshKeepsValidCredentialsAndRetriesLater) {
  WebIdentityOptions o = Options();
  o.max_attempts = 1;
  auto p = Make(o);
  const absl::Time t0 = sts_.now;
  ASSERT_THAT(p->Get(), IsOk());
  sts_.now = t0 + absl::Minutes(56);
  sts_.next = {absl::UnavailableError("Connection refused")};
  absl::StatusOr<AwsCredentials> c = p->Get();
  ASSERT_THAT(c, IsOk()) << "the old credentials are valid for 4 more minutes";
  EXPECT_EQ(c->access_key_id, "ASIA1");
  EXPECT_EQ(sts_.calls, 2);
  sts_.now += absl::Seconds(9);
  ASSERT_THAT(p->Get(), IsOk());
  EXPECT_EQ(sts_.calls, 2) << "no retry within retry_after_failure";
  sts_.now += absl::Seconds(1);
  c = p->Get();
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(sts_.calls, 3);
  EXPECT_EQ(c->access_key_id, "ASIA3");
}

TEST_F(WebIdentityTest, ExpiredCredentialsAndFailingStsIsAClearError) {
  WebIdentityOptions o = Options();
  o.max_attempts = 2;
  auto p = Make(o);
  sts_.next = {HttpReply{503, "<ErrorResponse><Error><Code>ServiceUnavailable</Code>"
                              "</Error></ErrorResponse>"},
               HttpReply{400, "<ErrorResponse><Error><Type>Sender</Type>"
                              "<Code>InvalidIdentityToken</Code><Message>Incorrect token "
                              "audience</Message></Error></ErrorResponse>"}};
  absl::StatusOr<AwsCredentials> c = p->Get();
  EXPECT_THAT(c, StatusIs(absl::StatusCode::kUnauthenticated,
                          HasSubstr("STS AssumeRoleWithWebIdentity at http://sts.test:1234 for "
                                    "role arn:aws:iam::111122223333:role/nvfp4d-s3: HTTP 400 "
                                    "InvalidIdentityToken: Incorrect token audience")));
  EXPECT_EQ(sts_.calls, 2) << "503 retried, InvalidIdentityToken not";
  // Within retry_after_failure the same error comes back without another STS call.
  EXPECT_THAT(p->Get(), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_EQ(sts_.calls, 2);
  sts_.next = {HttpReply{403, "<ErrorResponse><Error><Code>AccessDenied</Code><Message>Not "
                              "authorized to perform sts:AssumeRoleWithWebIdentity</Message>"
                              "</Error></ErrorResponse>"}};
  sts_.now += absl::Seconds(10);
  EXPECT_THAT(p->Get(), StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("AccessDenied")));
  sts_.now += absl::Seconds(10);
  testing::WriteFile(tmp_.Path("token"), "");
  EXPECT_THAT(p->Get(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                 HasSubstr("AWS_WEB_IDENTITY_TOKEN_FILE " + tmp_.Path("token") +
                                           " is empty")));
}

TEST_F(WebIdentityTest, InvalidateForcesARefresh) {
  auto p = Make(Options());
  ASSERT_THAT(p->Get(), IsOk());
  EXPECT_TRUE(p->Invalidate());
  absl::StatusOr<AwsCredentials> c = p->Get();
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->access_key_id, "ASIA2");
}

TEST_F(WebIdentityTest, ConcurrentSignersShareOneRefresh) {
  WebIdentityOptions o = Options();
  std::atomic<int> calls{0};
  const absl::Time now = sts_.now;
  o.http_post = [&](const std::string&, const std::string&,
                    absl::Duration) -> absl::StatusOr<HttpReply> {
    ++calls;
    absl::SleepFor(absl::Milliseconds(50));  // other threads arrive meanwhile
    return HttpReply{200, Response(now + absl::Hours(1))};
  };
  auto p = Make(o);
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      for (int j = 0; j < 20; ++j) {
        if (p->Get().ok()) ++ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 160);
  EXPECT_EQ(calls.load(), 1);
}

TEST(S3ConfigWebIdentityTest, CreateBuildsTheProviderFromTheConfig) {
  testing::TempDir tmp;
  testing::WriteFile(tmp.Path("token"), "t");
  S3Config c;
  c.endpoint = "http://127.0.0.1:1";
  c.region = "eu-west-3";
  c.web_identity.token_file = tmp.Path("token");
  EXPECT_THAT(S3ObjectStore::Create(c),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("AWS_ROLE_ARN is not")));
  c.web_identity.role_arn = "arn:aws:iam::1:role/r";
  auto store = S3ObjectStore::Create(c);
  ASSERT_THAT(store, IsOk());
  EXPECT_THAT((*store)->DescribeCredentials(),
              HasSubstr("via STS https://sts.eu-west-3.amazonaws.com"));
  // Static keys win over a web identity (as in the AWS SDKs' chain).
  c.access_key_id = "AKID";
  c.secret_access_key = "secret";
  store = S3ObjectStore::Create(c);
  ASSERT_THAT(store, IsOk());
  EXPECT_EQ((*store)->DescribeCredentials(), "static keys");
}

TEST(S3ConfigWebIdentityTest, StsUnreachableFailsTheRequestNamingTheEndpoint) {
  testing::TempDir tmp;
  testing::WriteFile(tmp.Path("token"), "t");
  S3Config c;
  c.endpoint = "http://127.0.0.1:1";
  c.max_attempts = 1;
  c.web_identity.token_file = tmp.Path("token");
  c.web_identity.role_arn = "arn:aws:iam::1:role/r";
  c.web_identity.sts_endpoint = "http://127.0.0.1:1";
  c.web_identity.max_attempts = 1;
  auto store = S3ObjectStore::Create(c);
  ASSERT_THAT(store, IsOk());
  EXPECT_THAT((*store)->Size("s3://bucket/key"),
              StatusIs(absl::StatusCode::kUnavailable,
                       HasSubstr("S3 head s3://bucket/key: S3 credentials: STS "
                                 "AssumeRoleWithWebIdentity at http://127.0.0.1:1 for role "
                                 "arn:aws:iam::1:role/r")));
}

}  // namespace
}  // namespace nvfp4::storage
