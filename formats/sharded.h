// Checkpoints made of one or several safetensors files.
//
// A sharded checkpoint is `model-00001-of-0000N.safetensors` ... plus
// `model.safetensors.index.json`:
//   {"metadata": {"total_size": <bytes of all tensors>}, "weight_map": {"<tensor>": "<shard
//   file>"}}
// CheckpointReader opens either form and validates that the index and the shards agree: every
// shard the index names exists and is a valid safetensors file, every tensor of the index is in the
// shard it is mapped to, and no tensor appears twice (in two shards, or in a shard but not the
// index). ShardedCheckpointWriter splits tensors into shards of at most a maximum size (default
// 5 GB, as Hugging Face) and writes the index; each shard is streamed (see SafetensorsWriter).
#ifndef NVFP4_FORMATS_SHARDED_H_
#define NVFP4_FORMATS_SHARDED_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "formats/random_access_source.h"
#include "formats/safetensors.h"

namespace nvfp4::formats {

inline constexpr std::string_view kIndexFileName = "model.safetensors.index.json";
inline constexpr std::string_view kSingleFileName = "model.safetensors";
inline constexpr uint64_t kDefaultMaxShardSize = 5'000'000'000;  // "5GB" as transformers counts

// A parsed `*.safetensors.index.json`.
struct ShardIndex {
  uint64_t total_size = 0;                        // metadata.total_size (0 when absent)
  std::map<std::string, std::string> weight_map;  // tensor -> shard file name
  std::vector<std::string> shard_files;           // distinct shard names, sorted
};

// Parses and validates index JSON text. `file` names it in errors. Rejected: invalid JSON, a
// missing or non-object weight_map, non-string shard names, shard names that are not plain file
// names (empty, "..", containing '/' or '\'), duplicate tensor names, a non-integer total_size.
absl::StatusOr<ShardIndex> ParseShardIndex(std::string_view json, std::string_view file);

// Opens a shard by its file name (as written in the index) relative to the index's location.
using ShardOpener =
    std::function<absl::StatusOr<std::unique_ptr<RandomAccessSource>>(const std::string& name)>;

// Where a tensor lives in a checkpoint.
struct TensorLocation {
  const TensorInfo* info;  // owned by the shard's reader
  int shard;               // index into CheckpointReader::shards()
};

// Reads a single-file or sharded checkpoint. Tensors are read one at a time. Thread-safe for reads.
class CheckpointReader {
 public:
  // `path` is a .safetensors file, an index .json file, or a directory holding
  // model.safetensors.index.json or model.safetensors (in that order of preference).
  static absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenLocal(const std::string& path);

  // A sharded checkpoint from the index text; `index_name` names it in errors; `open_shard` opens
  // each shard (NOT_FOUND from it is reported as a missing shard naming a tensor mapped to it).
  static absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenSharded(
      std::string_view index_json, std::string index_name, const ShardOpener& open_shard);

  // A single-file checkpoint.
  static absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenSingle(
      std::unique_ptr<RandomAccessSource> source);

  // True when opened from an index.
  bool sharded() const { return sharded_; }
  // The shard readers (one for a single file), in shard-name order.
  const std::vector<std::unique_ptr<SafetensorsReader>>& shards() const { return shards_; }
  // Every tensor, shard by shard, in file order within a shard.
  const std::vector<TensorLocation>& tensors() const { return tensors_; }
  // Sum of all tensors' byte sizes.
  uint64_t total_size() const { return total_size_; }

  // The tensor called `name`, or nullptr.
  const TensorLocation* Find(std::string_view name) const;
  // Reads a tensor by name. NOT_FOUND when absent.
  absl::StatusOr<std::vector<uint8_t>> ReadTensor(std::string_view name) const;
  // Reads a tensor into `out` (exactly its byte size).
  absl::Status ReadTensor(const TensorLocation& location, std::span<uint8_t> out) const;

 private:
  CheckpointReader() = default;
  void IndexTensors();

  bool sharded_ = false;
  std::vector<std::unique_ptr<SafetensorsReader>> shards_;
  std::vector<TensorLocation> tensors_;
  std::unordered_map<std::string_view, size_t> by_name_;
  uint64_t total_size_ = 0;
};

// File name of shard `index` (0-based) of `count`: "model-00001-of-00003.safetensors".
std::string ShardFileName(int index, int count, std::string_view base_name = "model");

// Splits tensors (in the given order) into shards: a new shard starts when adding the next tensor
// would exceed `max_shard_size` bytes; a tensor larger than the maximum gets a shard of its own.
// Returns, per shard, the indices of its tensors. INVALID_ARGUMENT for a bad spec or a zero max.
absl::StatusOr<std::vector<std::vector<size_t>>> PlanShards(std::span<const TensorSpec> specs,
                                                            uint64_t max_shard_size);

// Streams a checkpoint into a directory. When everything fits one shard it writes
// `model.safetensors` and no index (as transformers does) unless `always_index` is set; otherwise
// `model-0000i-of-0000N.safetensors` plus `model.safetensors.index.json`. Shards are written to
// temporary files and renamed by Finish(), which writes the index last.
class ShardedCheckpointWriter {
 public:
  struct Options {
    uint64_t max_shard_size = kDefaultMaxShardSize;
    std::string base_name =
        "model";  // "model" -> model-00001-of-00002.safetensors, model.safetensors
    bool always_index = false;
    std::map<std::string, std::string> metadata;  // added to every shard's __metadata__
    bool sync = true;                             // fdatasync each file before renaming
    bool sha256 = false;  // hash each shard while writing (SafetensorsWriter::Options::sha256)
  };

  // `dir` must exist. `specs` gives every tensor; their order decides the split into shards.
  static absl::StatusOr<std::unique_ptr<ShardedCheckpointWriter>> Create(
      const std::string& dir, std::vector<TensorSpec> specs, Options options);

  // Shard file names (relative to the directory), in order.
  const std::vector<std::string>& shard_files() const { return shard_files_; }
  // The shard each tensor goes to, by name.
  const std::map<std::string, std::string>& weight_map() const { return weight_map_; }

  // As SafetensorsWriter::WriteTensor / AppendTensorData, routed to the tensor's shard.
  absl::Status WriteTensor(std::string_view name, std::span<const uint8_t> data);
  absl::Status AppendTensorData(std::string_view name, std::span<const uint8_t> chunk);
  // Finishes every shard, then writes the index (when sharded).
  absl::Status Finish();
  // After Finish() with Options::sha256: shard file -> lowercase hex sha256.
  std::map<std::string, std::string> Sha256s() const;

 private:
  ShardedCheckpointWriter() = default;
  absl::StatusOr<SafetensorsWriter*> WriterFor(std::string_view name);

  std::string dir_;
  Options options_;
  std::vector<std::string> shard_files_;
  std::vector<std::unique_ptr<SafetensorsWriter>> writers_;
  std::unordered_map<std::string, size_t> shard_of_;
  std::map<std::string, std::string> weight_map_;
  uint64_t total_size_ = 0;
  bool write_index_ = false;
};

}  // namespace nvfp4::formats

#endif  // NVFP4_FORMATS_SHARDED_H_
