// ObjectStore over an S3-compatible API (AWS S3, MinIO, moto) through libcurl's SigV4 signer.
//
// Path-style URLs against an explicit endpoint (`<endpoint>/<bucket>/<key>`). Every request sends
// `x-amz-content-sha256` (hex sha256 of the body), query parameters are sorted and URI-encoded with
// valueless ones written `name=` (libcurl 7.88 signs the query string as given), and bodies carry a
// Content-Type. Large objects use multipart upload (parts of `part_size` bytes, >= 5 MiB, up to
// `upload_concurrency` of them in flight at once), aborted on failure. 5xx, SlowDown and transport errors are retried with exponential backoff; signature
// and other 4xx errors are not. Positioned reads are ranged GETs.
#ifndef NVFP4_STORAGE_S3_STORE_H_
#define NVFP4_STORAGE_S3_STORE_H_

#include <functional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "storage/aws_credentials.h"
#include "storage/object_store.h"

namespace nvfp4::storage {

struct S3Config {
  std::string endpoint;  // e.g. "http://127.0.0.1:5000" or "https://s3.us-east-1.amazonaws.com"
  std::string region = "us-east-1";
  std::string access_key_id;
  std::string secret_access_key;   // never logged
  std::string session_token;       // optional
  // Temporary credentials by STS web identity, used when the static keys above are empty and
  // web_identity.token_file or web_identity.role_arn is set (storage/aws_credentials.h). An empty
  // sts_endpoint becomes https://sts.<region>.amazonaws.com.
  WebIdentityOptions web_identity;
  // Where the signer's credentials come from; Create() builds it from the fields above when null
  // (static keys first, then web identity). Tests inject one.
  std::shared_ptr<AwsCredentialsProvider> credentials;
  int64_t part_size = 64ll << 20;  // multipart part size (>= 5 MiB)
  // Parts of one multipart upload sent at once (>= 1). Memory: a writer holds up to this many
  // parts in flight plus the one it fills.
  int upload_concurrency = 4;
  int max_attempts = 5;            // per request, for retryable errors
  absl::Duration initial_backoff = absl::Milliseconds(100);
  absl::Duration request_timeout = absl::Minutes(10);
  // Called after each HTTP attempt: op ("get", "put", ...), seconds, and an error code ("" on
  // success; the S3 error code such as "SlowDown", "http_503" or "transport").
  std::function<void(absl::string_view op, double seconds, absl::string_view error)> observer;
};

// Fills credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, the web
// identity from AWS_WEB_IDENTITY_TOKEN_FILE / AWS_ROLE_ARN / AWS_ROLE_SESSION_NAME with the STS
// endpoint from AWS_ENDPOINT_URL_STS (else AWS_ENDPOINT_URL, else the regional STS endpoint) and,
// when the arguments are empty, the endpoint from AWS_ENDPOINT_URL and the region from AWS_REGION
// (or AWS_DEFAULT_REGION, else us-east-1).
S3Config S3ConfigFromEnv(std::string endpoint, std::string region);

class S3ObjectStore : public ObjectStore {
 public:
  // INVALID_ARGUMENT without an endpoint or credentials (static keys or a web identity), for an
  // unreadable web identity token file, or a part size below 5 MiB.
  static absl::StatusOr<std::unique_ptr<S3ObjectStore>> Create(S3Config config);

  absl::StatusOr<int64_t> Size(absl::string_view uri) override;
  absl::Status ReadAt(absl::string_view uri, int64_t offset, int64_t length, char* dst) override;
  absl::StatusOr<std::vector<ObjectInfo>> List(absl::string_view prefix_uri) override;
  absl::StatusOr<std::unique_ptr<ObjectWriter>> OpenWrite(absl::string_view uri) override;
  absl::Status Delete(absl::string_view uri) override;
  // CopyObject (server-side) for objects up to 5 GiB, S3's limit for one copy; larger ones stream
  // through this process as a multipart upload (ObjectStore::Copy).
  absl::Status Copy(absl::string_view from, absl::string_view to) override;

  // Low-level request; public for the writer and tests.
  struct Response {
    long http_code = 0;
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;  // lowercase names
    std::string Header(absl::string_view name) const;
  };
  struct Request {
    std::string op;      // metric label
    std::string method;  // GET, PUT, POST, HEAD, DELETE
    std::string bucket;
    std::string key;
    std::vector<std::pair<std::string, std::string>> query;
    std::vector<std::string> headers;  // "Name: value"
    absl::string_view body;
    std::string content_type;  // for PUT/POST bodies
    char* sink = nullptr;      // GET: write the body here instead of Response::body
    int64_t sink_size = 0;
  };
  absl::StatusOr<Response> Send(const Request& request);

  const S3Config& config() const { return config_; }
  // Where the credentials come from, without secrets (for the startup log).
  std::string DescribeCredentials() const { return config_.credentials->Describe(); }
  std::string Describe() const override {
    return absl::StrCat("endpoint ", config_.endpoint, " region ", config_.region,
                        " credentials: ", DescribeCredentials());
  }

 private:
  explicit S3ObjectStore(S3Config config) : config_(std::move(config)) {}
  absl::StatusOr<Response> SendOnce(const Request& request, bool* retryable);
  S3Config config_;
};

// AWS SigV4 URI encoding: every byte except A-Za-z0-9-_.~ becomes %XX; '/' is kept when
// `keep_slash`.
std::string AwsUriEncode(absl::string_view s, bool keep_slash);
// Lowercase hex sha256.
std::string Sha256Hex(absl::string_view data);

}  // namespace nvfp4::storage

#endif  // NVFP4_STORAGE_S3_STORE_H_
