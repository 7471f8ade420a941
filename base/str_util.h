// String concatenation that accepts std::string_view.
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

}  // namespace nvfp4

#endif  // NVFP4_BASE_STR_UTIL_H_
