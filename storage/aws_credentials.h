// AWS credentials for the S3 client's SigV4 signer: static keys, or temporary credentials from STS
// `AssumeRoleWithWebIdentity` (a projected Kubernetes service account token exchanged for a role's
// credentials: IRSA, or any cluster whose OIDC issuer is registered with IAM).
//
//   WebIdentityOptions o;
//   o.token_file = "/var/run/secrets/sts.amazonaws.com/serviceaccount/token";
//   o.role_arn = "arn:aws:iam::111122223333:role/nvfp4d-s3";
//   o.sts_endpoint = "https://sts.us-east-1.amazonaws.com";
//   ASSIGN_OR_RETURN(auto provider, WebIdentityCredentialsProvider::Create(o));
//   ASSIGN_OR_RETURN(AwsCredentials c, provider->Get());   // cached; refreshed before expiry
//
// The web identity provider caches the credentials and refreshes them (re-reading the token file,
// which the kubelet rotates) `refresh_before` ahead of their expiration, or halfway through their
// lifetime when that is shorter. One caller refreshes while the others keep signing with the
// still-valid credentials; when a refresh fails and the old credentials are still valid, they are
// kept and the refresh is retried after `retry_after_failure`. Thread-safe.
#ifndef NVFP4_STORAGE_AWS_CREDENTIALS_H_
#define NVFP4_STORAGE_AWS_CREDENTIALS_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace nvfp4::storage {

struct AwsCredentials {
  std::string access_key_id;
  std::string secret_access_key;  // never logged
  std::string session_token;      // sent as x-amz-security-token when not empty
  absl::Time expiration = absl::InfiniteFuture();
};

class AwsCredentialsProvider {
 public:
  virtual ~AwsCredentialsProvider() = default;
  // Credentials valid now. Thread-safe.
  virtual absl::StatusOr<AwsCredentials> Get() = 0;
  // The server rejected the credentials as expired: drop the cached ones. True when the next Get()
  // may return different credentials (so that retrying the request can help).
  virtual bool Invalidate() { return false; }
  // For logs, without secrets: "static keys", "web identity: role ... via ...".
  virtual std::string Describe() const = 0;
};

std::unique_ptr<AwsCredentialsProvider> StaticCredentialsProvider(AwsCredentials credentials);

// One HTTP exchange (the STS call). http_code 0 never comes back: transport errors are statuses.
struct HttpReply {
  long http_code = 0;
  std::string body;
};
using HttpPostFn = std::function<absl::StatusOr<HttpReply>(
    const std::string& url, const std::string& form_body, absl::Duration timeout)>;

struct WebIdentityOptions {
  std::string token_file;  // AWS_WEB_IDENTITY_TOKEN_FILE
  std::string role_arn;    // AWS_ROLE_ARN
  std::string session_name = "nvfp4d";  // AWS_ROLE_SESSION_NAME
  // AWS_ENDPOINT_URL_STS, else AWS_ENDPOINT_URL, else https://sts.<region>.amazonaws.com.
  std::string sts_endpoint;
  absl::Duration duration = absl::Hours(1);  // DurationSeconds asked for
  absl::Duration refresh_before = absl::Minutes(5);
  absl::Duration retry_after_failure = absl::Seconds(10);
  int max_attempts = 3;  // per refresh, for transport errors, 5xx and throttling
  absl::Duration initial_backoff = absl::Milliseconds(200);
  absl::Duration request_timeout = absl::Seconds(30);
  // Injected for tests; defaults: absl::Now and a libcurl POST.
  std::function<absl::Time()> clock;
  HttpPostFn http_post;
  // Told of refreshes and of failed refreshes that keep the old credentials (optional).
  std::function<void(const std::string&)> log;
};

class WebIdentityCredentialsProvider : public AwsCredentialsProvider {
 public:
  // INVALID_ARGUMENT when the role, the endpoint or the token file is missing or the file is
  // unreadable (checked now, so that a misconfiguration fails at startup). No STS call yet.
  static absl::StatusOr<std::unique_ptr<WebIdentityCredentialsProvider>> Create(
      WebIdentityOptions options);

  absl::StatusOr<AwsCredentials> Get() override;
  bool Invalidate() override;
  std::string Describe() const override;

  // STS calls made so far (for tests and metrics).
  int64_t refreshes() const;

 private:
  explicit WebIdentityCredentialsProvider(WebIdentityOptions options);
  // One AssumeRoleWithWebIdentity exchange (with retries), reading the token file afresh.
  absl::StatusOr<AwsCredentials> Fetch();
  absl::Status StsError(absl::string_view what) const;

  const WebIdentityOptions options_;
  mutable absl::Mutex mu_;
  bool have_ ABSL_GUARDED_BY(mu_) = false;
  AwsCredentials creds_ ABSL_GUARDED_BY(mu_);
  absl::Time refresh_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool refreshing_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time retry_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Status last_error_ ABSL_GUARDED_BY(mu_);
  int64_t refreshes_ ABSL_GUARDED_BY(mu_) = 0;
};

// Parses an AssumeRoleWithWebIdentity (or AssumeRole) response's <Credentials>. INTERNAL when a
// field is missing or the Expiration is not an ISO 8601 / RFC 3339 time.
absl::StatusOr<AwsCredentials> ParseStsCredentials(absl::string_view xml);

// Text of the first <tag>...</tag> in `xml` after `*pos` (empty when absent), entity-decoded; when
// `pos` is given it is advanced past the element, or set to npos when there is none.
std::string XmlText(absl::string_view xml, absl::string_view tag, size_t* pos = nullptr);

}  // namespace nvfp4::storage

#endif  // NVFP4_STORAGE_AWS_CREDENTIALS_H_
