#include "formats/json_util.h"

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "base/str_util.h"

namespace nvfp4::formats {

absl::StatusOr<nlohmann::json> ParseJsonRejectingDuplicates(std::string_view text,
                                                            std::string_view what,
                                                            int tensor_name_depth) {
  using Json = nlohmann::json;
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  int duplicate_depth = 0;
  auto callback = [&](int depth, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
        open_objects.emplace_back();
        break;
      case Json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case Json::parse_event_t::key:
        if (!open_objects.empty() && duplicate.empty() &&
            !open_objects.back().insert(parsed.get<std::string>()).second) {
          duplicate = parsed.get<std::string>();
          duplicate_depth = depth;
        }
        break;
      default:
        break;
    }
    return true;
  };
  // JSON text is UTF-8 (RFC 8259): name the string that is not, escaped, rather than let the
  // parser's message quote the raw bytes.
  if (!IsValidUtf8(text)) {
    size_t bad = 0;
    uint32_t cp = 0;
    while (bad < text.size()) {
      const size_t n = Utf8SequenceAt(text, bad, &cp);
      if (n == 0) break;
      bad += n;
    }
    size_t begin = text.rfind('"', bad);
    begin = begin == std::string_view::npos ? 0 : begin + 1;
    size_t end = text.find('"', bad);
    if (end == std::string_view::npos) end = text.size();
    constexpr size_t kMaxQuoted = 200;
    const std::string_view quoted = text.substr(begin, std::min(end - begin, kMaxQuoted));
    return absl::InvalidArgumentError(
        StrCat(what, ": not valid UTF-8: byte ", bad, " in the string \"",
               EscapeInvalidUtf8(quoted), end - begin > kMaxQuoted ? "...\"" : "\"",
               " (a JSON text must be UTF-8; invalid bytes shown as \\xNN)"));
  }
  Json parsed;
  try {
    parsed = Json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/true,
                         /*ignore_comments=*/false);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(StrCat(what, ": invalid JSON: ", e.what()));
  }
  if (!duplicate.empty()) {
    return absl::InvalidArgumentError(StrCat(
        what,
        duplicate_depth == tensor_name_depth ? ": duplicate tensor name '" : ": duplicate key '",
        duplicate, "'"));
  }
  return parsed;
}

}  // namespace nvfp4::formats
