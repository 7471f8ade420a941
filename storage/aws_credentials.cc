#include "storage/aws_credentials.h"

#include <curl/curl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "storage/s3_store.h"

namespace nvfp4::storage {
namespace {

class StaticProvider : public AwsCredentialsProvider {
 public:
  explicit StaticProvider(AwsCredentials c) : creds_(std::move(c)) {}
  absl::StatusOr<AwsCredentials> Get() override { return creds_; }
  std::string Describe() const override {
    return creds_.session_token.empty() ? "static keys" : "static keys with a session token";
  }

 private:
  const AwsCredentials creds_;
};

size_t AppendToString(char* ptr, size_t size, size_t nmemb, void* userdata) {
  static_cast<std::string*>(userdata)->append(ptr, size * nmemb);
  return size * nmemb;
}

// An unsigned form POST (AssumeRoleWithWebIdentity needs no AWS signature: the token is the
// credential).
absl::StatusOr<HttpReply> CurlPostForm(const std::string& url, const std::string& body,
                                       absl::Duration timeout) {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  CURL* curl = curl_easy_init();
  if (!curl) return absl::InternalError("curl_easy_init failed");
  struct curl_slist* headers = nullptr;
  headers = curl_slist_append(headers, "Content-Type: application/x-www-form-urlencoded");
  headers = curl_slist_append(headers, "Accept: application/xml");
  HttpReply reply;
  char curl_error[CURL_ERROR_SIZE] = "";
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_error);
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_POST, 1L);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS,
                   static_cast<long>(absl::ToInt64Milliseconds(timeout)));
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, AppendToString);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &reply.body);
  CURLcode rc = curl_easy_perform(curl);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &reply.http_code);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  if (rc != CURLE_OK) {
    return absl::UnavailableError(absl::StrCat(curl_easy_strerror(rc), curl_error[0] ? " (" : "",
                                               curl_error, curl_error[0] ? ")" : ""));
  }
  return reply;
}

absl::StatusOr<absl::Time> ParseIsoTime(const std::string& text) {
  absl::Time t;
  std::string err;
  // RFC 3339 with optional fractional seconds: "2019-11-09T13:34:41Z", "...41.123Z", "+00:00".
  if (absl::ParseTime(absl::RFC3339_full, text, &t, &err)) return t;
  return absl::InternalError(absl::StrCat("Expiration '", text, "' is not an RFC 3339 time"));
}

}  // namespace

std::string XmlText(absl::string_view xml, absl::string_view tag, size_t* pos) {
  std::string open = absl::StrCat("<", tag, ">");
  std::string close = absl::StrCat("</", tag, ">");
  size_t start = xml.find(open, pos ? *pos : 0);
  if (start == absl::string_view::npos) {
    if (pos) *pos = absl::string_view::npos;
    return "";
  }
  start += open.size();
  size_t end = xml.find(close, start);
  if (end == absl::string_view::npos) {
    if (pos) *pos = absl::string_view::npos;
    return "";
  }
  if (pos) *pos = end + close.size();
  return absl::StrReplaceAll(
      xml.substr(start, end - start),
      {{"&quot;", "\""}, {"&apos;", "'"}, {"&lt;", "<"}, {"&gt;", ">"}, {"&amp;", "&"}});
}

std::unique_ptr<AwsCredentialsProvider> StaticCredentialsProvider(AwsCredentials credentials) {
  return std::make_unique<StaticProvider>(std::move(credentials));
}

absl::StatusOr<AwsCredentials> ParseStsCredentials(absl::string_view xml) {
  const std::string block = XmlText(xml, "Credentials");
  if (block.empty()) return absl::InternalError("STS response has no <Credentials>");
  AwsCredentials c;
  c.access_key_id = XmlText(block, "AccessKeyId");
  c.secret_access_key = XmlText(block, "SecretAccessKey");
  c.session_token = XmlText(block, "SessionToken");
  const std::string expiration = XmlText(block, "Expiration");
  for (const auto& [name, value] :
       {std::pair<const char*, const std::string*>{"AccessKeyId", &c.access_key_id},
        {"SecretAccessKey", &c.secret_access_key},
        {"SessionToken", &c.session_token},
        {"Expiration", &expiration}}) {
    if (value->empty()) return absl::InternalError(absl::StrCat("STS response has no ", name));
  }
  absl::StatusOr<absl::Time> t = ParseIsoTime(std::string(absl::StripAsciiWhitespace(expiration)));
  if (!t.ok()) return absl::InternalError(absl::StrCat("STS response: ", t.status().message()));
  c.expiration = *t;
  return c;
}

absl::StatusOr<std::unique_ptr<WebIdentityCredentialsProvider>>
WebIdentityCredentialsProvider::Create(WebIdentityOptions options) {
  if (options.role_arn.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "S3 credentials: AWS_WEB_IDENTITY_TOKEN_FILE is set (", options.token_file,
        ") but AWS_ROLE_ARN is not: web identity needs the role to assume"));
  }
  if (options.token_file.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("S3 credentials: AWS_ROLE_ARN is set (", options.role_arn,
                     ") but AWS_WEB_IDENTITY_TOKEN_FILE is not: web identity needs the token"));
  }
  if (options.sts_endpoint.empty()) {
    return absl::InvalidArgumentError("S3 credentials: no STS endpoint for web identity");
  }
  while (options.sts_endpoint.back() == '/') options.sts_endpoint.pop_back();
  std::ifstream in(options.token_file);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("S3 credentials: cannot read AWS_WEB_IDENTITY_TOKEN_FILE ",
                     options.token_file, ": ", std::strerror(errno)));
  }
  if (options.session_name.empty()) options.session_name = "nvfp4d";
  if (!options.clock) options.clock = [] { return absl::Now(); };
  if (!options.http_post) options.http_post = CurlPostForm;
  options.max_attempts = std::max(1, options.max_attempts);
  return std::unique_ptr<WebIdentityCredentialsProvider>(
      new WebIdentityCredentialsProvider(std::move(options)));
}

WebIdentityCredentialsProvider::WebIdentityCredentialsProvider(WebIdentityOptions options)
    : options_(std::move(options)) {}

std::string WebIdentityCredentialsProvider::Describe() const {
  return absl::StrCat("web identity: role ", options_.role_arn, " via STS ",
                      options_.sts_endpoint, ", token ", options_.token_file);
}

int64_t WebIdentityCredentialsProvider::refreshes() const {
  absl::MutexLock lock(&mu_);
  return refreshes_;
}

bool WebIdentityCredentialsProvider::Invalidate() {
  absl::MutexLock lock(&mu_);
  refresh_at_ = absl::InfinitePast();
  retry_at_ = absl::InfinitePast();
  if (have_) creds_.expiration = absl::InfinitePast();  // no longer served while refreshing
  return true;
}

absl::StatusOr<AwsCredentials> WebIdentityCredentialsProvider::Get() {
  mu_.Lock();
  while (true) {
    const absl::Time now = options_.clock();
    const bool valid = have_ && now < creds_.expiration;
    if (valid && now < refresh_at_) break;                        // fresh
    if (valid && (refreshing_ || now < retry_at_)) break;        // stale but usable
    if (!valid && !refreshing_ && now < retry_at_) {             // failed moments ago
      absl::Status s = last_error_;
      mu_.Unlock();
      return s;
    }
    if (!refreshing_) {
      refreshing_ = true;
      mu_.Unlock();
      absl::StatusOr<AwsCredentials> fresh = Fetch();
      mu_.Lock();
      refreshing_ = false;
      ++refreshes_;
      const absl::Time after = options_.clock();
      if (fresh.ok()) {
        creds_ = *std::move(fresh);
        have_ = true;
        const absl::Duration lifetime = creds_.expiration - after;
        refresh_at_ = creds_.expiration - std::min(options_.refresh_before, lifetime / 2);
        retry_at_ = absl::InfinitePast();
        last_error_ = absl::OkStatus();
        if (options_.log) {
          options_.log(absl::StrCat("S3 credentials from STS for ", options_.role_arn,
                                    ": key ", creds_.access_key_id, " expires ",
                                    absl::FormatTime(absl::RFC3339_sec, creds_.expiration, absl::UTCTimeZone()),
                                    ", refresh at ", absl::FormatTime(absl::RFC3339_sec, refresh_at_, absl::UTCTimeZone())));
        }
        break;
      }
      last_error_ = fresh.status();
      retry_at_ = after + options_.retry_after_failure;
      if (have_ && after < creds_.expiration) {
        if (options_.log) {
          options_.log(absl::StrCat("S3 credentials refresh failed, keeping the current ones until ",
                                    absl::FormatTime(absl::RFC3339_sec, creds_.expiration, absl::UTCTimeZone()), ": ",
                                    fresh.status().ToString()));
        }
        break;
      }
      mu_.Unlock();
      return fresh.status();
    }
    // Another thread is refreshing and there is nothing valid to use: wait for it.
    mu_.Await(absl::Condition(
        +[](bool* refreshing) { return !*refreshing; }, &refreshing_));
  }
  AwsCredentials c = creds_;
  mu_.Unlock();
  return c;
}

absl::Status WebIdentityCredentialsProvider::StsError(absl::string_view what) const {
  return absl::UnavailableError(absl::StrCat(
      "S3 credentials: STS AssumeRoleWithWebIdentity at ", options_.sts_endpoint, " for role ",
      options_.role_arn, ": ", what));
}

absl::StatusOr<AwsCredentials> WebIdentityCredentialsProvider::Fetch() {
  absl::Duration backoff = options_.initial_backoff;
  absl::Status last;
  for (int attempt = 1; attempt <= options_.max_attempts; ++attempt) {
    if (attempt > 1) {
      absl::SleepFor(backoff);
      backoff *= 2;
    }
    // Read afresh every time: the kubelet replaces the token well before it expires.
    std::string token;
    {
      std::ifstream in(options_.token_file, std::ios::binary);
      if (!in) {
        return absl::FailedPreconditionError(
            absl::StrCat("S3 credentials: cannot read AWS_WEB_IDENTITY_TOKEN_FILE ",
                         options_.token_file, ": ", std::strerror(errno)));
      }
      std::ostringstream ss;
      ss << in.rdbuf();
      token = std::string(absl::StripAsciiWhitespace(ss.str()));
    }
    if (token.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "S3 credentials: AWS_WEB_IDENTITY_TOKEN_FILE ", options_.token_file, " is empty"));
    }
    const std::string body = absl::StrCat(
        "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=",
        AwsUriEncode(options_.role_arn, false),
        "&RoleSessionName=", AwsUriEncode(options_.session_name, false),
        "&DurationSeconds=", absl::ToInt64Seconds(options_.duration),
        "&WebIdentityToken=", AwsUriEncode(token, false));
    absl::StatusOr<HttpReply> reply =
        options_.http_post(options_.sts_endpoint + "/", body, options_.request_timeout);
    if (!reply.ok()) {
      last = StsError(reply.status().message());  // transport: retry
      continue;
    }
    if (reply->http_code >= 200 && reply->http_code < 300) {
      absl::StatusOr<AwsCredentials> c = ParseStsCredentials(reply->body);
      if (!c.ok()) return StsError(c.status().message());
      return c;
    }
    const std::string code = XmlText(reply->body, "Code");
    const std::string message = XmlText(reply->body, "Message");
    const std::string what =
        absl::StrCat("HTTP ", reply->http_code, code.empty() ? "" : " ", code,
                     message.empty() ? "" : ": ", message);
    last = StsError(what);
    const bool retryable = reply->http_code >= 500 || code == "IDPCommunicationError" ||
                           code == "Throttling" || code == "ThrottlingException";
    if (retryable) continue;
    // The token, the role or its trust policy is wrong: retrying will not help.
    if (code == "AccessDenied" || reply->http_code == 403) {
      return absl::PermissionDeniedError(last.message());
    }
    return absl::UnauthenticatedError(last.message());
  }
  return absl::Status(last.code(), absl::StrCat(last.message(), " (gave up after ",
                                                options_.max_attempts, " attempts)"));
}

}  // namespace nvfp4::storage
