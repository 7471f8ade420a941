// Little-endian binary records: fixed-width integers, bit-exact floats (NaN payloads and infinities
// kept) and u32-length-prefixed strings. The one codec of the on-disk records: the resume
// journal's units (pipeline/resume.cc) and the job journal's frames (server/job_journal.cc).
//
//   LeWriter w;
//   w.U32(7);
//   w.Str("name");
//   std::string bytes = w.Take();
//
//   LeReader r(bytes);
//   const uint32_t v = r.U32();
//   std::string name = r.Str();
//   if (!r.ok() || !r.done()) return absl::DataLossError("malformed record");
//
// A reader never reads past its input: a short input makes ok() false and every later read
// returns zero or empty, so a record is decoded field by field and checked once at the end.
#ifndef NVFP4_BASE_LE_CODEC_H_
#define NVFP4_BASE_LE_CODEC_H_

#include <bit>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace nvfp4 {

class LeWriter {
 public:
  void U8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void U32(uint32_t v) { Fixed(v, 4); }
  void U64(uint64_t v) { Fixed(v, 8); }
  void I64(int64_t v) { U64(static_cast<uint64_t>(v)); }
  void F32(float v) { U32(std::bit_cast<uint32_t>(v)); }
  void F64(double v) { U64(std::bit_cast<uint64_t>(v)); }
  // u32 length, then the bytes.
  void Str(std::string_view s) {
    U32(static_cast<uint32_t>(s.size()));
    Raw(s);
  }
  // The bytes, without a length.
  void Raw(std::string_view s) { out_.append(s.data(), s.size()); }

  const std::string& data() const { return out_; }
  std::string Take() { return std::move(out_); }

 private:
  void Fixed(uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
  }
  std::string out_;
};

class LeReader {
 public:
  explicit LeReader(std::string_view in) : in_(in) {}

  // False once a read ran past the end (or Count() rejected a count).
  bool ok() const { return ok_; }
  // True when every byte was read.
  bool done() const { return at_ == in_.size(); }
  size_t remaining() const { return in_.size() - at_; }

  uint8_t U8() { return static_cast<uint8_t>(Fixed(1)); }
  uint32_t U32() { return static_cast<uint32_t>(Fixed(4)); }
  uint64_t U64() { return Fixed(8); }
  int64_t I64() { return static_cast<int64_t>(U64()); }
  float F32() { return std::bit_cast<float>(U32()); }
  double F64() { return std::bit_cast<double>(U64()); }
  // A u32-length-prefixed string (a view into the input).
  std::string_view StrView() {
    const uint32_t n = U32();
    return Raw(n);
  }
  std::string Str() { return std::string(StrView()); }
  // The next `n` bytes (a view into the input).
  std::string_view Raw(size_t n) {
    if (!ok_ || n > in_.size() - at_) {
      ok_ = false;
      return {};
    }
    std::string_view s = in_.substr(at_, n);
    at_ += n;
    return s;
  }
  // Everything not read yet.
  std::string_view Rest() { return Raw(remaining()); }
  // A u32 count of items of at least `min_item_bytes` each: a count the rest of the input cannot
  // hold makes ok() false and returns 0 (no huge allocation for a corrupt count).
  uint32_t Count(size_t min_item_bytes) {
    const uint32_t n = U32();
    if (ok_ && static_cast<uint64_t>(n) * min_item_bytes > in_.size() - at_) ok_ = false;
    return ok_ ? n : 0;
  }

 private:
  uint64_t Fixed(int bytes) {
    if (!ok_ || in_.size() - at_ < static_cast<size_t>(bytes)) {
      ok_ = false;
      return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) {
      v |= static_cast<uint64_t>(static_cast<uint8_t>(in_[at_ + i])) << (8 * i);
    }
    at_ += bytes;
    return v;
  }
  std::string_view in_;
  size_t at_ = 0;
  bool ok_ = true;
};

}  // namespace nvfp4

#endif  // NVFP4_BASE_LE_CODEC_H_
