// Strict JSON parsing shared by the checkpoint readers (internal to formats/).
#ifndef NVFP4_FORMATS_JSON_UTIL_H_
#define NVFP4_FORMATS_JSON_UTIL_H_

#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace nvfp4::formats {

// Parses `text` as one JSON value (surrounding whitespace allowed). Unlike nlohmann's default,
// which silently keeps the last of repeated keys, a key repeated within one object is an error:
// "duplicate tensor name 'x'" for keys at nesting depth `tensor_name_depth` (1: keys of the
// top-level object, as in a safetensors header; 2: as in an index's weight_map), "duplicate key
// 'x'" elsewhere. Errors are INVALID_ARGUMENT prefixed with `what` (usually the file name).
absl::StatusOr<nlohmann::json> ParseJsonRejectingDuplicates(std::string_view text,
                                                            std::string_view what,
                                                            int tensor_name_depth);

}  // namespace nvfp4::formats

#endif  // NVFP4_FORMATS_JSON_UTIL_H_
