// String concatenation that accepts std::string_view, and UTF-8 validation and escaping.
//
// Debian's abseil is built with ABSL_OPTION_USE_STD_STRING_VIEW 0, so absl::string_view is its own
// type and absl::StrCat rejects std::string_view arguments. nvfp4::StrCat forwards to
// absl::StrCat after converting std::string_view; everything else (std::string, const char*,
// integers, floating point) passes through unchanged.
//
//   using ::nvfp4::StrCat;  // or, inside namespace nvfp4::..., plain StrCat
//   return absl::NotFoundError(StrCat(path_view, ": no tensor '", name, "' (", n, " tensors)"));
#ifndef NVFP4_BASE_STR_UTIL_H_
#define NVFP4_BASE_STR_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace nvfp4 {
namespace str_internal {

inline absl::string_view Piece(std::string_view s) { return absl::string_view(s.data(), s.size()); }
inline absl::string_view Piece(const std::string& s) { return s; }
inline absl::string_view Piece(const char* s) { return s; }
inline absl::string_view Piece(absl::string_view s) { return s; }
template <typename T>
requires std::is_arithmetic_v<T> &&(!std::is_same_v<T, bool>) const T& Piece(const T& v) {
  return v;
}

}  // namespace str_internal

// absl::StrCat that also takes std::string_view.
template <typename... Args>
std::string StrCat(const Args&... args) {
  return absl::StrCat(str_internal::Piece(args)...);
}

// Length of the valid UTF-8 sequence that starts at s[i] (its code point in *cp), or 0 when the
// byte at s[i] starts none: a stray continuation byte, a truncated sequence, an overlong form, a
// surrogate or a code point above U+10FFFF. `i` < s.size().
size_t Utf8SequenceAt(std::string_view s, size_t i, uint32_t* cp);

// True when `s` is valid UTF-8 (what protobuf requires of a proto3 string field).
bool IsValidUtf8(std::string_view s);

// `s` with every byte that is not part of a valid UTF-8 sequence written as `\xNN` (two
// lowercase hex digits), e.g. "w\xff\xfe.weight"; valid UTF-8 is returned unchanged. The one
// escaping of names and messages that reach a proto string field or the job journal (server/
// log_format.h builds the log's escaping on Utf8SequenceAt too).
std::string EscapeInvalidUtf8(std::string_view s);

}  // namespace nvfp4

#endif  // NVFP4_BASE_STR_UTIL_H_
