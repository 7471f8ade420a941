#include "storage/s3_store.h"

#include <curl/curl.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <future>
#include <mutex>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/sha256.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "base/status_macros.h"

namespace nvfp4::storage {
namespace {

constexpr int64_t kMinPartSize = 5ll << 20;

S3ObjectStore::Request MakeRequest(std::string op, std::string method, std::string bucket,
                                   std::string key = "") {
  S3ObjectStore::Request r;
  r.op = std::move(op);
  r.method = std::move(method);
  r.bucket = std::move(bucket);
  r.key = std::move(key);
  return r;
}

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

void GlobalInitCurl() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string XmlEscape(absl::string_view s) {
  return absl::StrReplaceAll(s, {{"&", "&amp;"}, {"<", "&lt;"}, {">", "&gt;"}, {"\"", "&quot;"}});
}

size_t WriteToString(char* ptr, size_t size, size_t nmemb, void* userdata) {
  static_cast<std::string*>(userdata)->append(ptr, size * nmemb);
  return size * nmemb;
}

struct SinkState {
  char* dst;
  int64_t cap;
  int64_t len = 0;
  std::string overflow;  // error bodies
};

size_t WriteToSink(char* ptr, size_t size, size_t nmemb, void* userdata) {
  auto* s = static_cast<SinkState*>(userdata);
  size_t n = size * nmemb;
  if (s->len + static_cast<int64_t>(n) <= s->cap) {
    std::memcpy(s->dst + s->len, ptr, n);
  } else {
    s->overflow.append(ptr, n);
  }
  s->len += static_cast<int64_t>(n);
  return n;
}

size_t CollectHeader(char* buffer, size_t size, size_t nitems, void* userdata) {
  auto* headers = static_cast<std::vector<std::pair<std::string, std::string>>*>(userdata);
  absl::string_view line(buffer, size * nitems);
  size_t colon = line.find(':');
  if (colon != absl::string_view::npos) {
    headers->emplace_back(absl::AsciiStrToLower(absl::StripAsciiWhitespace(line.substr(0, colon))),
                          std::string(absl::StripAsciiWhitespace(line.substr(colon + 1))));
  }
  return size * nitems;
}

absl::Status S3ErrorStatus(const std::string& op, const std::string& what, long http,
                           const std::string& code, const std::string& message) {
  std::string msg = absl::StrCat("S3 ", op, " ", what, ": HTTP ", http, code.empty() ? "" : " ",
                                 code, message.empty() ? "" : ": ", message);
  if (http == 404 || code == "NoSuchKey" || code == "NoSuchBucket" || code == "NoSuchUpload") {
    return absl::NotFoundError(msg);
  }
  if (code == "SignatureDoesNotMatch" || code == "InvalidAccessKeyId" ||
      code == "InvalidClientTokenId" || code == "ExpiredToken") {
    return absl::UnauthenticatedError(msg);
  }
  if (http == 403) return absl::PermissionDeniedError(msg);
  if (http == 416) return absl::OutOfRangeError(msg);
  if (http == 409) return absl::AlreadyExistsError(msg);
  if (http >= 500 || code == "SlowDown") return absl::UnavailableError(msg);
  if (http >= 400) return absl::InvalidArgumentError(msg);
  return absl::InternalError(msg);
}

// A multipart upload sends up to S3Config::upload_concurrency parts at once (each on a thread of
// its own, holding its part's bytes): one connection to S3 carries far less than a node's
// bandwidth. Append returns once the part it filled is on its way; an error of an earlier part is
// returned by a later Append or by Commit, and the upload is aborted.
class S3Writer : public ObjectWriter {
 public:
  S3Writer(S3ObjectStore* store, std::string bucket, std::string key)
      : store_(store), bucket_(std::move(bucket)), key_(std::move(key)) {}
  ~S3Writer() override { Abort(); }

  absl::Status Append(absl::string_view data) override {
    if (done_) return absl::FailedPreconditionError("writer is closed");
    const int64_t part = store_->config().part_size;
    while (!data.empty()) {
      size_t take = std::min<size_t>(data.size(), static_cast<size_t>(part) - buffer_.size());
      buffer_.append(data.data(), take);
      data.remove_prefix(take);
      written_ += static_cast<int64_t>(take);
      if (static_cast<int64_t>(buffer_.size()) >= part) {
        absl::Status s = FlushPart();
        if (!s.ok()) {
          Abort();
          return s;
        }
      }
    }
    return absl::OkStatus();
  }

  absl::Status Commit() override {
    if (done_) return absl::FailedPreconditionError("writer is closed");
    absl::Status s;
    if (upload_id_.empty()) {
      auto r = MakeRequest("put", "PUT", bucket_, key_);
      r.body = buffer_;
      r.content_type = "application/octet-stream";
      s = store_->Send(r).status();
    } else {
      if (!buffer_.empty()) s = FlushPart();
      while (s.ok() && !in_flight_.empty()) s = WaitOldestPart();
      if (s.ok()) s = Complete();
    }
    if (!s.ok()) {
      Abort();
      return s;
    }
    done_ = true;
    buffer_.clear();
    return absl::OkStatus();
  }

  void Abort() override {
    if (done_) return;
    done_ = true;
    buffer_.clear();
    while (!in_flight_.empty()) (void)WaitOldestPart();  // their outcome no longer matters
    if (!upload_id_.empty()) {
      auto r = MakeRequest("abort_multipart", "DELETE", bucket_, key_);
      r.query = {{"uploadId", upload_id_}};
      (void)store_->Send(r);  // best effort
      upload_id_.clear();
    }
  }

  int64_t bytes_written() const override { return written_; }

 private:
  // Starts the upload of `buffer_` as the next part; waits first while the most parts are in
  // flight.
  absl::Status FlushPart() {
    if (upload_id_.empty()) {
      auto r = MakeRequest("create_multipart", "POST", bucket_, key_);
      r.query = {{"uploads", ""}};
      r.content_type = "application/octet-stream";
      ASSIGN_OR_RETURN(S3ObjectStore::Response resp, store_->Send(r));
      upload_id_ = XmlText(resp.body, "UploadId");
      if (upload_id_.empty()) {
        return absl::InternalError(absl::StrCat("S3 create_multipart s3://", bucket_, "/", key_,
                                                ": no UploadId in response"));
      }
    }
    const size_t limit = static_cast<size_t>(std::max(1, store_->config().upload_concurrency));
    while (in_flight_.size() >= limit) RETURN_IF_ERROR(WaitOldestPart());
    const int part_number = static_cast<int>(etags_.size()) + 1;
    etags_.emplace_back();
    auto r = MakeRequest("upload_part", "PUT", bucket_, key_);
    r.query = {{"partNumber", std::to_string(part_number)}, {"uploadId", upload_id_}};
    r.content_type = "application/octet-stream";
    in_flight_.push_back(Part{
        part_number,
        std::async(std::launch::async,
                   [store = store_, r = std::move(r), body = std::move(buffer_)]() mutable
                   -> absl::StatusOr<std::string> {
                     r.body = body;
                     ASSIGN_OR_RETURN(S3ObjectStore::Response resp, store->Send(r));
                     std::string etag = resp.Header("etag");
                     if (etag.empty()) {
                       return absl::InternalError("S3 upload_part: no ETag in response");
                     }
                     return etag;
                   })});
    buffer_ = std::string();
    buffer_.reserve(static_cast<size_t>(store_->config().part_size));
    return absl::OkStatus();
  }

  // Waits for the oldest part in flight and records its ETag.
  absl::Status WaitOldestPart() {
    Part p = std::move(in_flight_.front());
    in_flight_.pop_front();
    ASSIGN_OR_RETURN(std::string etag, p.etag.get());
    etags_[static_cast<size_t>(p.number - 1)] = std::move(etag);
    return absl::OkStatus();
  }

  absl::Status Complete() {
    std::string xml = "<CompleteMultipartUpload>";
    for (size_t i = 0; i < etags_.size(); ++i) {
      absl::StrAppend(&xml, "<Part><PartNumber>", i + 1, "</PartNumber><ETag>",
                      XmlEscape(etags_[i]), "</ETag></Part>");
    }
    xml += "</CompleteMultipartUpload>";
    auto r = MakeRequest("complete_multipart", "POST", bucket_, key_);
    r.query = {{"uploadId", upload_id_}};
    r.body = xml;
    r.content_type = "application/xml";
    ASSIGN_OR_RETURN(S3ObjectStore::Response resp, store_->Send(r));
    // S3 may report a failure inside a 200 response.
    if (absl::StrContains(resp.body, "<Error>")) {
      return S3ErrorStatus("complete_multipart", absl::StrCat("s3://", bucket_, "/", key_), 200,
                           XmlText(resp.body, "Code"), XmlText(resp.body, "Message"));
    }
    upload_id_.clear();
    return absl::OkStatus();
  }

  struct Part {
    int number = 0;
    std::future<absl::StatusOr<std::string>> etag;
  };

  S3ObjectStore* store_;
  std::string bucket_, key_;
  std::string buffer_;
  std::string upload_id_;
  std::vector<std::string> etags_;  // by part number - 1 ("" while in flight)
  std::deque<Part> in_flight_;      // oldest first
  int64_t written_ = 0;
  bool done_ = false;
};

}  // namespace

std::string AwsUriEncode(absl::string_view s, bool keep_slash) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' ||
        (keep_slash && c == '/')) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

std::string Sha256Hex(absl::string_view data) {
  return Sha256::Hex(std::string_view(data.data(), data.size()));
}

S3Config S3ConfigFromEnv(std::string endpoint, std::string region) {
  S3Config c;
  c.endpoint = endpoint.empty() ? Env("AWS_ENDPOINT_URL") : std::move(endpoint);
  if (region.empty()) region = Env("AWS_REGION");
  if (region.empty()) region = Env("AWS_DEFAULT_REGION");
  if (!region.empty()) c.region = std::move(region);
  c.access_key_id = Env("AWS_ACCESS_KEY_ID");
  c.secret_access_key = Env("AWS_SECRET_ACCESS_KEY");
  c.session_token = Env("AWS_SESSION_TOKEN");
  c.web_identity.token_file = Env("AWS_WEB_IDENTITY_TOKEN_FILE");
  c.web_identity.role_arn = Env("AWS_ROLE_ARN");
  if (std::string name = Env("AWS_ROLE_SESSION_NAME"); !name.empty()) {
    c.web_identity.session_name = std::move(name);
  }
  c.web_identity.sts_endpoint = Env("AWS_ENDPOINT_URL_STS");
  if (c.web_identity.sts_endpoint.empty()) c.web_identity.sts_endpoint = Env("AWS_ENDPOINT_URL");
  return c;
}

std::string S3ObjectStore::Response::Header(absl::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (k == name) return v;
  }
  return "";
}

absl::StatusOr<std::unique_ptr<S3ObjectStore>> S3ObjectStore::Create(S3Config config) {
  if (config.endpoint.empty()) {
    return absl::InvalidArgumentError("S3: no endpoint (--s3_endpoint or AWS_ENDPOINT_URL)");
  }
  while (!config.endpoint.empty() && config.endpoint.back() == '/') config.endpoint.pop_back();
  if (config.part_size < kMinPartSize) {
    return absl::InvalidArgumentError("S3: multipart part size must be at least 5 MiB");
  }
  if (config.upload_concurrency < 1 || config.upload_concurrency > 64) {
    return absl::InvalidArgumentError(absl::StrCat(
        "S3: upload concurrency must be in [1, 64] parts, got ", config.upload_concurrency));
  }
  if (config.credentials == nullptr) {
    if (!config.access_key_id.empty() && !config.secret_access_key.empty()) {
      config.credentials = StaticCredentialsProvider(
          {config.access_key_id, config.secret_access_key, config.session_token});
    } else if (config.access_key_id.empty() && config.secret_access_key.empty() &&
               (!config.web_identity.token_file.empty() || !config.web_identity.role_arn.empty())) {
      WebIdentityOptions o = config.web_identity;
      if (o.sts_endpoint.empty()) {
        o.sts_endpoint = absl::StrCat("https://sts.", config.region, ".amazonaws.com");
      }
      ASSIGN_OR_RETURN(config.credentials, WebIdentityCredentialsProvider::Create(std::move(o)));
    } else {
      return absl::InvalidArgumentError(
          "S3: no credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or "
          "AWS_WEB_IDENTITY_TOKEN_FILE / AWS_ROLE_ARN)");
    }
  }
  GlobalInitCurl();
  return std::unique_ptr<S3ObjectStore>(new S3ObjectStore(std::move(config)));
}

absl::StatusOr<S3ObjectStore::Response> S3ObjectStore::Send(const Request& request) {
  absl::Duration backoff = config_.initial_backoff;
  absl::Status last;
  for (int attempt = 1; attempt <= std::max(1, config_.max_attempts); ++attempt) {
    bool retryable = false;
    absl::StatusOr<Response> r = SendOnce(request, &retryable);
    if (r.ok() || !retryable) return r;
    last = r.status();
    if (attempt < config_.max_attempts) {
      absl::SleepFor(backoff);
      backoff *= 2;
    }
  }
  // Say that it was retried, so that a persistent fault reads as one.
  return absl::Status(last.code(), absl::StrCat(last.message(), " (gave up after ",
                                                std::max(1, config_.max_attempts), " attempts)"));
}

absl::StatusOr<S3ObjectStore::Response> S3ObjectStore::SendOnce(const Request& request,
                                                                bool* retryable) {
  *retryable = false;
  std::string path = absl::StrCat("/", request.bucket);
  if (!request.key.empty()) absl::StrAppend(&path, "/", AwsUriEncode(request.key, true));
  std::vector<std::pair<std::string, std::string>> query;
  for (const auto& [k, v] : request.query) {
    // '/' stays literal: libcurl 7.88 encodes it itself when it builds the canonical query, and an
    // already-encoded %2F would be signed differently from what the server canonicalizes.
    query.emplace_back(AwsUriEncode(k, false), AwsUriEncode(v, true));
  }
  std::sort(query.begin(), query.end());
  std::string url = config_.endpoint + path;
  if (!query.empty()) {
    url += "?";
    url += absl::StrJoin(query, "&", [](std::string* out, const auto& kv) {
      absl::StrAppend(out, kv.first, "=", kv.second);
    });
  }
  const std::string what = absl::StrCat("s3://", request.bucket, "/", request.key);
  // Before anything else: a web identity refresh may take a round trip to STS.
  absl::StatusOr<AwsCredentials> creds = config_.credentials->Get();
  if (!creds.ok()) {
    if (config_.observer) config_.observer(request.op, 0.0, "credentials");
    return absl::Status(creds.status().code(),
                        absl::StrCat("S3 ", request.op, " ", what, ": ", creds.status().message()));
  }

  CURL* curl = curl_easy_init();
  if (!curl) return absl::InternalError("curl_easy_init failed");
  struct curl_slist* headers = nullptr;
  auto add_header = [&](const std::string& h) { headers = curl_slist_append(headers, h.c_str()); };
  add_header(absl::StrCat("x-amz-content-sha256: ", Sha256Hex(request.body)));
  if (!creds->session_token.empty()) {
    add_header(absl::StrCat("x-amz-security-token: ", creds->session_token));
  }
  if (!request.content_type.empty())
    add_header(absl::StrCat("Content-Type: ", request.content_type));
  // No "Expect:" removal header: libcurl 7.88 signs every header in the list, including that
  // empty one it never sends, which breaks the signature. Keep the 100-continue wait short instead.
  for (const std::string& h : request.headers) add_header(h);

  std::string sigv4 = absl::StrCat("aws:amz:", config_.region, ":s3");
  std::string userpwd = absl::StrCat(creds->access_key_id, ":", creds->secret_access_key);
  Response resp;
  SinkState sink{request.sink, request.sink_size, 0, {}};
  char curl_error[CURL_ERROR_SIZE] = "";  // details, e.g. "Recv failure: Connection reset by peer"
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_error);
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_AWS_SIGV4, sigv4.c_str());
  curl_easy_setopt(curl, CURLOPT_USERPWD, userpwd.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_EXPECT_100_TIMEOUT_MS, 200L);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS,
                   static_cast<long>(absl::ToInt64Milliseconds(config_.request_timeout)));
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, CollectHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &resp.headers);
  if (request.sink != nullptr) {
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, WriteToSink);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &sink);
  } else {
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, WriteToString);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &resp.body);
  }
  if (request.method == "HEAD") {
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  } else if (request.method == "PUT" || request.method == "POST") {
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, request.body.data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE,
                     static_cast<curl_off_t>(request.body.size()));
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, request.method.c_str());
  } else if (request.method != "GET") {
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, request.method.c_str());
  }

  absl::Time start = absl::Now();
  CURLcode rc = curl_easy_perform(curl);
  double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &resp.http_code);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);

  if (rc != CURLE_OK) {
    if (config_.observer) config_.observer(request.op, seconds, "transport");
    *retryable = true;
    return absl::UnavailableError(absl::StrCat("S3 ", request.op, " ", what, ": ",
                                               curl_easy_strerror(rc), curl_error[0] ? " (" : "",
                                               curl_error, curl_error[0] ? ")" : ""));
  }
  if (resp.http_code >= 200 && resp.http_code < 300) {
    if (request.sink != nullptr && sink.len != request.sink_size) {
      if (config_.observer) config_.observer(request.op, seconds, "short_read");
      *retryable = true;
      return absl::DataLossError(absl::StrCat("S3 ", request.op, " ", what, ": got ", sink.len,
                                              " bytes, expected ", request.sink_size));
    }
    if (config_.observer) config_.observer(request.op, seconds, "");
    return resp;
  }
  const std::string& body = request.sink != nullptr ? sink.overflow : resp.body;
  std::string code = XmlText(body, "Code");
  std::string message = XmlText(body, "Message");
  if (config_.observer) {
    config_.observer(request.op, seconds,
                     code.empty() ? absl::StrCat("http_", resp.http_code) : code);
  }
  *retryable = resp.http_code >= 500 || code == "SlowDown" || code == "RequestTimeout";
  // Temporary credentials that expired early (or a clock skew): refresh them and try again.
  if (code == "ExpiredToken" && config_.credentials->Invalidate()) *retryable = true;
  if (request.sink != nullptr && body.empty() && resp.http_code != 404) {
    code = absl::StrCat("HTTP ", resp.http_code);
  }
  return S3ErrorStatus(request.op, what, resp.http_code, code, message);
}

absl::StatusOr<int64_t> S3ObjectStore::Size(absl::string_view uri) {
  ASSIGN_OR_RETURN(StorageUri u, ParseStorageUri(uri));
  if (u.scheme != StorageUri::Scheme::kS3) return absl::InvalidArgumentError("not an s3:// URI");
  auto r = MakeRequest("head", "HEAD", u.bucket, u.path);
  ASSIGN_OR_RETURN(Response resp, Send(r));
  int64_t size = 0;
  if (!absl::SimpleAtoi(resp.Header("content-length"), &size)) {
    return absl::InternalError(absl::StrCat("S3 head ", uri, ": no Content-Length"));
  }
  return size;
}

absl::Status S3ObjectStore::ReadAt(absl::string_view uri, int64_t offset, int64_t length,
                                   char* dst) {
  if (length == 0) return absl::OkStatus();
  ASSIGN_OR_RETURN(StorageUri u, ParseStorageUri(uri));
  if (u.scheme != StorageUri::Scheme::kS3) return absl::InvalidArgumentError("not an s3:// URI");
  auto r = MakeRequest("get", "GET", u.bucket, u.path);
  r.headers.push_back(absl::StrCat("Range: bytes=", offset, "-", offset + length - 1));
  r.sink = dst;
  r.sink_size = length;
  return Send(r).status();
}

absl::StatusOr<std::vector<ObjectInfo>> S3ObjectStore::List(absl::string_view prefix_uri) {
  ASSIGN_OR_RETURN(StorageUri u, ParseStorageUri(prefix_uri));
  if (u.scheme != StorageUri::Scheme::kS3) return absl::InvalidArgumentError("not an s3:// URI");
  std::string prefix = u.path;
  if (!prefix.empty() && prefix.back() != '/') prefix += '/';
  std::vector<ObjectInfo> out;
  std::string token;
  while (true) {
    auto r = MakeRequest("list", "GET", u.bucket);
    r.query = {{"list-type", "2"}, {"prefix", prefix}};
    if (!token.empty()) r.query.emplace_back("continuation-token", token);
    ASSIGN_OR_RETURN(Response resp, Send(r));
    size_t pos = 0;
    while (true) {
      std::string contents = XmlText(resp.body, "Contents", &pos);
      if (pos == std::string::npos) break;
      std::string key = XmlText(contents, "Key");
      int64_t size = 0;
      (void)absl::SimpleAtoi(XmlText(contents, "Size"), &size);
      if (absl::StartsWith(key, prefix) && key.size() > prefix.size()) {
        out.push_back({key.substr(prefix.size()), size});
      }
    }
    if (XmlText(resp.body, "IsTruncated") != "true") break;
    token = XmlText(resp.body, "NextContinuationToken");
    if (token.empty()) break;
  }
  std::sort(out.begin(), out.end(),
            [](const ObjectInfo& a, const ObjectInfo& b) { return a.name < b.name; });
  return out;
}

absl::StatusOr<std::unique_ptr<ObjectWriter>> S3ObjectStore::OpenWrite(absl::string_view uri) {
  ASSIGN_OR_RETURN(StorageUri u, ParseStorageUri(uri));
  if (u.scheme != StorageUri::Scheme::kS3) return absl::InvalidArgumentError("not an s3:// URI");
  if (u.path.empty()) return absl::InvalidArgumentError(absl::StrCat("'", uri, "' has no key"));
  return std::unique_ptr<ObjectWriter>(new S3Writer(this, u.bucket, u.path));
}

absl::Status S3ObjectStore::Delete(absl::string_view uri) {
  ASSIGN_OR_RETURN(StorageUri u, ParseStorageUri(uri));
  if (u.scheme != StorageUri::Scheme::kS3) return absl::InvalidArgumentError("not an s3:// URI");
  if (u.path.empty()) return absl::InvalidArgumentError(absl::StrCat("'", uri, "' has no key"));
  absl::Status s = Send(MakeRequest("delete", "DELETE", u.bucket, u.path)).status();
  return absl::IsNotFound(s) ? absl::OkStatus() : s;
}

absl::Status S3ObjectStore::Copy(absl::string_view from, absl::string_view to) {
  ASSIGN_OR_RETURN(StorageUri src, ParseStorageUri(from));
  ASSIGN_OR_RETURN(StorageUri dst, ParseStorageUri(to));
  if (src.scheme != StorageUri::Scheme::kS3 || dst.scheme != StorageUri::Scheme::kS3) {
    return absl::InvalidArgumentError("not an s3:// URI");
  }
  if (dst.path.empty()) return absl::InvalidArgumentError(absl::StrCat("'", to, "' has no key"));
  ASSIGN_OR_RETURN(int64_t size, Size(from));
  if (size > (5ll << 30)) return ObjectStore::Copy(from, to);
  auto r = MakeRequest("copy", "PUT", dst.bucket, dst.path);
  r.headers.push_back(
      absl::StrCat("x-amz-copy-source: ", AwsUriEncode(absl::StrCat("/", src.bucket, "/", src.path),
                                                       /*keep_slash=*/true)));
  r.content_type = "application/octet-stream";
  ASSIGN_OR_RETURN(Response resp, Send(r));
  // S3 may report a failure inside a 200 response.
  if (absl::StrContains(resp.body, "<Error>")) {
    return S3ErrorStatus("copy", absl::StrCat(from, " to ", to), 200, XmlText(resp.body, "Code"),
                         XmlText(resp.body, "Message"));
  }
  return absl::OkStatus();
}

}  // namespace nvfp4::storage
