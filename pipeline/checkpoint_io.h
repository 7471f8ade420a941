// Opening a safetensors checkpoint (single file or sharded with an index) and its config.json from
// an storage::InputDirectory, so the same code reads local directories and object stores.
#ifndef NVFP4_PIPELINE_CHECKPOINT_IO_H_
#define NVFP4_PIPELINE_CHECKPOINT_IO_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "formats/sharded.h"
#include "nlohmann/json.hpp"
#include "storage/directory.h"

namespace nvfp4::pipeline {

struct OpenedCheckpoint {
  std::unique_ptr<formats::CheckpointReader> reader;
  // The files that make up the checkpoint: the index (if any) and the shards.
  std::vector<std::string> files;
};

// Opens the checkpoint in `dir`: model.safetensors.index.json when present, else
// model.safetensors, else the only *.safetensors file at the top level. Every shard is validated
// (formats::CheckpointReader). NOT_FOUND when the directory holds no checkpoint.
absl::StatusOr<OpenedCheckpoint> OpenCheckpoint(storage::InputDirectory& dir);

// config.json parsed with its key order kept, or nullopt when absent. INVALID_ARGUMENT (naming the
// file) when it is not a JSON object.
absl::StatusOr<std::optional<nlohmann::ordered_json>> ReadConfigJson(
    storage::InputDirectory& dir, const std::string& name = "config.json");

}  // namespace nvfp4::pipeline

#endif  // NVFP4_PIPELINE_CHECKPOINT_IO_H_
