#include "formats/json_util.h"

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
