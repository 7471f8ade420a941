#include "pipeline/checkpoint_io.h"

#include "base/status_macros.h"
#include "base/str_util.h"

namespace nvfp4::pipeline {

absl::StatusOr<OpenedCheckpoint> OpenCheckpoint(storage::InputDirectory& dir) {
  OpenedCheckpoint out;
  const std::string index(formats::kIndexFileName);
  const std::string single(formats::kSingleFileName);
  if (dir.Exists(index)) {
    ASSIGN_OR_RETURN(std::string text, dir.ReadSmallFile(index));
    const std::string index_name = StrCat(dir.Describe(), "/", index);
    ASSIGN_OR_RETURN(out.reader, formats::CheckpointReader::OpenSharded(
                                     text, index_name, [&dir](const std::string& name) {
                                       return dir.OpenFile(name);
                                     }));
    ASSIGN_OR_RETURN(formats::ShardIndex parsed, formats::ParseShardIndex(text, index_name));
    out.files.push_back(index);
    for (const std::string& shard : parsed.shard_files) out.files.push_back(shard);
    return out;
  }
  std::string file;
  if (dir.Exists(single)) {
    file = single;
  } else {
    ASSIGN_OR_RETURN(std::vector<std::string> files, dir.ListFiles());
    for (const std::string& f : files) {
      if (f.find('/') == std::string::npos && f.size() > 12 &&
          f.substr(f.size() - 12) == ".safetensors") {
        if (!file.empty()) {
          return absl::InvalidArgumentError(StrCat(dir.Describe(),
                                                   ": several .safetensors files ('", file, "', '",
                                                   f, "') but no ", index));
        }
        file = f;
      }
    }
  }
  if (file.empty()) {
    return absl::NotFoundError(StrCat(dir.Describe(), ": no safetensors checkpoint (neither ",
                                      index, " nor a .safetensors file)"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<formats::RandomAccessSource> src, dir.OpenFile(file));
  ASSIGN_OR_RETURN(out.reader, formats::CheckpointReader::OpenSingle(std::move(src)));
  out.files.push_back(file);
  return out;
}

absl::StatusOr<std::optional<nlohmann::ordered_json>> ReadConfigJson(storage::InputDirectory& dir,
                                                                     const std::string& name) {
  if (!dir.Exists(name)) return std::optional<nlohmann::ordered_json>();
  ASSIGN_OR_RETURN(std::string text, dir.ReadSmallFile(name));
  nlohmann::ordered_json j =
      nlohmann::ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(
        StrCat(dir.Describe(), "/", name, ": not a valid JSON object"));
  }
  return std::optional<nlohmann::ordered_json>(std::move(j));
}

}  // namespace nvfp4::pipeline
