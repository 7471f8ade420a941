// Bearer-token authentication of nvfp4.v1.Quantizer calls.
//
// Tokens come from a file (a mounted Secret): one token per line; blank lines and lines starting
// with '#' are ignored, surrounding whitespace is trimmed. The file is re-read when its
// modification time or size changes (checked at most once a second), so rotating the Secret
// needs no restart. A call must carry `authorization: Bearer <token>`; the presented token is
// compared with every configured one in constant time (sha256 digests, CRYPTO_memcmp, no early
// exit). Missing or wrong tokens get UNAUTHENTICATED. Tokens are never logged. The health service
// (and server reflection) are not behind this check: the handlers of the Quantizer service call
// Check() themselves.
#ifndef NVFP4_SERVER_AUTH_H_
#define NVFP4_SERVER_AUTH_H_

#include <array>
#include <sys/stat.h>

#include <ctime>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/server_context.h"

namespace nvfp4::server {

class TokenAuthenticator {
 public:
  // Reads `path`. INVALID_ARGUMENT when it holds no token, NOT_FOUND when missing.
  static absl::StatusOr<std::unique_ptr<TokenAuthenticator>> FromFile(const std::string& path);
  // From tokens in memory (tests).
  static std::unique_ptr<TokenAuthenticator> FromTokens(const std::vector<std::string>& tokens);

  // OK, or UNAUTHENTICATED (the message says whether the token was missing or wrong).
  grpc::Status Check(const grpc::ServerContext& context);
  // The same for a raw `authorization` header value ("" when absent).
  grpc::Status CheckHeader(const std::string& authorization);

  size_t token_count() const;

 private:
  using Digest = std::array<unsigned char, 32>;
  TokenAuthenticator() = default;
  void MaybeReload();
  static absl::StatusOr<std::vector<Digest>> Load(const std::string& path, struct stat* st);

  std::string path_;  // empty: fixed tokens
  mutable absl::Mutex mu_;
  std::vector<Digest> digests_ ABSL_GUARDED_BY(mu_);
  absl::Time last_check_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  int64_t mtime_ns_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t size_ ABSL_GUARDED_BY(mu_) = -1;
};

}  // namespace nvfp4::server

#endif  // NVFP4_SERVER_AUTH_H_
