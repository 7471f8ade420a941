#include "server/auth.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <sys/stat.h>

#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/log.h"

namespace nvfp4::server {
namespace {

std::array<unsigned char, 32> Sha256(absl::string_view s) {
  std::array<unsigned char, 32> d;
  SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), d.data());
  return d;
}

int64_t MtimeNs(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

}  // namespace

absl::StatusOr<std::vector<TokenAuthenticator::Digest>> TokenAuthenticator::Load(
    const std::string& path, struct stat* st) {
  if (::stat(path.c_str(), st) != 0) {
    return absl::NotFoundError(absl::StrCat("auth tokens file ", path, ": cannot stat"));
  }
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("auth tokens file ", path, ": cannot open"));
  std::vector<Digest> digests;
  std::string line;
  while (std::getline(in, line)) {
    absl::string_view t = absl::StripAsciiWhitespace(line);
    if (t.empty() || absl::StartsWith(t, "#")) continue;
    digests.push_back(Sha256(t));
  }
  if (digests.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("auth tokens file ", path, " holds no token"));
  }
  return digests;
}

absl::StatusOr<std::unique_ptr<TokenAuthenticator>> TokenAuthenticator::FromFile(
    const std::string& path) {
  struct stat st;
  absl::StatusOr<std::vector<Digest>> digests = Load(path, &st);
  if (!digests.ok()) return digests.status();
  std::unique_ptr<TokenAuthenticator> a(new TokenAuthenticator());
  a->path_ = path;
  absl::MutexLock lock(&a->mu_);
  a->digests_ = *std::move(digests);
  a->mtime_ns_ = MtimeNs(st);
  a->size_ = st.st_size;
  a->last_check_ = absl::Now();
  return a;
}

std::unique_ptr<TokenAuthenticator> TokenAuthenticator::FromTokens(
    const std::vector<std::string>& tokens) {
  std::unique_ptr<TokenAuthenticator> a(new TokenAuthenticator());
  absl::MutexLock lock(&a->mu_);
  for (const std::string& t : tokens) a->digests_.push_back(Sha256(t));
  return a;
}

size_t TokenAuthenticator::token_count() const {
  absl::MutexLock lock(&mu_);
  return digests_.size();
}

void TokenAuthenticator::MaybeReload() {
  if (path_.empty()) return;
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  if (now - last_check_ < absl::Seconds(1)) return;
  last_check_ = now;
  struct stat st;
  if (::stat(path_.c_str(), &st) != 0) return;  // keep the last good tokens
  if (MtimeNs(st) == mtime_ns_ && st.st_size == size_) return;
  absl::StatusOr<std::vector<Digest>> digests = Load(path_, &st);
  if (!digests.ok()) {
    LogLine("auth: keeping the previous tokens: ", digests.status().ToString());
    return;
  }
  digests_ = *std::move(digests);
  mtime_ns_ = MtimeNs(st);
  size_ = st.st_size;
  LogLine("auth: reloaded ", digests_.size(), " token(s) from ", path_);
}

grpc::Status TokenAuthenticator::CheckHeader(const std::string& authorization) {
  if (authorization.empty()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "missing credentials: send 'authorization: Bearer <token>'");
  }
  constexpr absl::string_view kScheme = "bearer ";
  if (authorization.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(absl::string_view(authorization).substr(0, kScheme.size()),
                              kScheme)) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "unsupported authorization scheme: expected 'Bearer <token>'");
  }
  const Digest presented =
      Sha256(absl::StripAsciiWhitespace(absl::string_view(authorization).substr(kScheme.size())));
  MaybeReload();
  bool match = false;
  {
    absl::MutexLock lock(&mu_);
    for (const Digest& d : digests_) {
      // No early exit: the time does not depend on which token (if any) matched.
      match |= CRYPTO_memcmp(d.data(), presented.data(), d.size()) == 0;
    }
  }
  if (!match) return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "invalid bearer token");
  return grpc::Status::OK;
}

grpc::Status TokenAuthenticator::Check(const grpc::ServerContext& context) {
  const auto& md = context.client_metadata();
  auto it = md.find("authorization");
  std::string value = it == md.end() ? "" : std::string(it->second.data(), it->second.size());
  return CheckHeader(value);
}

}  // namespace nvfp4::server
