// Incremental SHA-256 (OpenSSL's EVP interface) with lowercase hex digests: output checksums,
// resume-journal digests, SigV4 payload hashes.
#ifndef NVFP4_BASE_SHA256_H_
#define NVFP4_BASE_SHA256_H_

#include <openssl/evp.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace nvfp4 {

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(const void* data, size_t n) { EVP_DigestUpdate(ctx_, data, n); }
  void Update(std::span<const uint8_t> data) { Update(data.data(), data.size()); }
  void Update(std::string_view data) { Update(data.data(), data.size()); }
  // Lowercase hex of the digest; call once.
  std::string HexDigest() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_, md, &len);
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    out.reserve(2 * len);
    for (unsigned int i = 0; i < len; ++i) {
      out.push_back(kHex[md[i] >> 4]);
      out.push_back(kHex[md[i] & 15]);
    }
    return out;
  }
  // One-shot hex digest of `data`.
  static std::string Hex(std::string_view data) {
    Sha256 h;
    h.Update(data);
    return h.HexDigest();
  }

 private:
  EVP_MD_CTX* ctx_;
};

}  // namespace nvfp4

#endif  // NVFP4_BASE_SHA256_H_
