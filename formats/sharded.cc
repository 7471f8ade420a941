#include "formats/sharded.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>

#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "base/str_util.h"
#include "formats/json_util.h"
#include "nlohmann/json.hpp"

namespace nvfp4::formats {
namespace {

namespace fs = std::filesystem;

bool IsPlainFileName(std::string_view name) {
  return !name.empty() && name != "." && name != ".." &&
         name.find_first_of("/\\") == std::string_view::npos &&
         name.find('\0') == std::string_view::npos;
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return absl::NotFoundError(StrCat(path, ": no such file"));
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::PermissionDeniedError(StrCat("cannot open ", path));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return absl::InternalError(StrCat("cannot read ", path));
  return buffer.str();
}

}  // namespace

absl::StatusOr<ShardIndex> ParseShardIndex(std::string_view json, std::string_view file) {
  ASSIGN_OR_RETURN(nlohmann::json root,
                   ParseJsonRejectingDuplicates(json, file, /*tensor_name_depth=*/2));
  if (!root.is_object()) {
    return absl::InvalidArgumentError(
        StrCat(file, ": index is a JSON ", root.type_name(), ", not an object"));
  }
  ShardIndex index;
  auto meta = root.find("metadata");
  if (meta != root.end() && !meta->is_null()) {
    if (!meta->is_object()) {
      return absl::InvalidArgumentError(StrCat(file, ": 'metadata' must be an object"));
    }
    auto total = meta->find("total_size");
    if (total != meta->end()) {
      // Some writers store total_size as a float (e.g. 1.2e10); accept integral values.
      if (total->is_number_unsigned()) {
        index.total_size = total->get<uint64_t>();
      } else if (total->is_number_float() && total->get<double>() >= 0 &&
                 total->get<double>() < 18446744073709551616.0 &&  // 2^64: the cast is defined
                 total->get<double>() ==
                     static_cast<double>(static_cast<uint64_t>(total->get<double>()))) {
        index.total_size = static_cast<uint64_t>(total->get<double>());
      } else {
        return absl::InvalidArgumentError(StrCat(
            file, ": metadata.total_size must be a non-negative integer, got ", total->dump()));
      }
    }
  }
  auto map = root.find("weight_map");
  if (map == root.end()) {
    return absl::InvalidArgumentError(StrCat(file, ": missing 'weight_map'"));
  }
  if (!map->is_object()) {
    return absl::InvalidArgumentError(StrCat(file, ": 'weight_map' must be an object"));
  }
  std::set<std::string> shards;
  for (const auto& [tensor, shard] : map->items()) {
    if (!shard.is_string()) {
      return absl::InvalidArgumentError(StrCat(
          file, ": tensor '", tensor, "': shard must be a file name string, got ", shard.dump()));
    }
    const std::string name = shard.get<std::string>();
    if (!IsPlainFileName(name)) {
      return absl::InvalidArgumentError(
          StrCat(file, ": tensor '", tensor, "': shard '", name,
                 "' is not a plain file name in the checkpoint directory"));
    }
    index.weight_map[tensor] = name;
    shards.insert(name);
  }
  index.shard_files.assign(shards.begin(), shards.end());
  return index;
}

absl::StatusOr<std::unique_ptr<CheckpointReader>> CheckpointReader::OpenLocal(
    const std::string& path) {
  std::error_code ec;
  fs::path p(path);
  if (!fs::exists(p, ec)) return absl::NotFoundError(StrCat(path, ": no such file or directory"));
  if (fs::is_directory(p, ec)) {
    if (fs::exists(p / kIndexFileName, ec)) return OpenLocal((p / kIndexFileName).string());
    if (fs::exists(p / kSingleFileName, ec)) return OpenLocal((p / kSingleFileName).string());
    return absl::NotFoundError(
        StrCat(path, ": directory has neither ", kIndexFileName, " nor ", kSingleFileName));
  }
  if (p.extension() == ".json") {
    ASSIGN_OR_RETURN(std::string text, ReadSmallFile(path));
    const fs::path dir = p.parent_path();
    return OpenSharded(text, path, [dir](const std::string& name) {
      return absl::StatusOr<std::unique_ptr<RandomAccessSource>>(
          LocalFileSource::Open((dir / name).string()));
    });
  }
  ASSIGN_OR_RETURN(std::unique_ptr<LocalFileSource> source, LocalFileSource::Open(path));
  return OpenSingle(std::move(source));
}

absl::StatusOr<std::unique_ptr<CheckpointReader>> CheckpointReader::OpenSingle(
    std::unique_ptr<RandomAccessSource> source) {
  ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsReader> reader,
                   SafetensorsReader::Open(std::move(source)));
  std::unique_ptr<CheckpointReader> checkpoint(new CheckpointReader());
  checkpoint->shards_.push_back(std::move(reader));
  checkpoint->IndexTensors();
  return checkpoint;
}

absl::StatusOr<std::unique_ptr<CheckpointReader>> CheckpointReader::OpenSharded(
    std::string_view index_json, std::string index_name, const ShardOpener& open_shard) {
  ASSIGN_OR_RETURN(ShardIndex index, ParseShardIndex(index_json, index_name));
  std::unique_ptr<CheckpointReader> checkpoint(new CheckpointReader());
  checkpoint->sharded_ = true;
  // One tensor mapped to each shard, for messages.
  std::map<std::string, std::string> example_tensor;
  for (const auto& [tensor, shard] : index.weight_map) example_tensor.emplace(shard, tensor);

  for (const std::string& shard : index.shard_files) {
    auto source = open_shard(shard);
    if (!source.ok()) {
      const std::string msg =
          StrCat(index_name, ": shard '", shard, "' (holding tensor '", example_tensor[shard],
                 "') cannot be opened: ", source.status().message());
      if (absl::IsNotFound(source.status())) return absl::InvalidArgumentError(msg);
      return absl::Status(source.status().code(), msg);
    }
    ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsReader> reader,
                     SafetensorsReader::Open(std::move(*source)));
    checkpoint->shards_.push_back(std::move(reader));
  }
  // Cross-check index and shard headers.
  std::map<std::string, std::string> found_in;  // tensor -> shard where it was found
  for (size_t s = 0; s < index.shard_files.size(); ++s) {
    const std::string& shard = index.shard_files[s];
    for (const TensorInfo& t : checkpoint->shards_[s]->tensors()) {
      auto [it, inserted] = found_in.emplace(t.name, shard);
      if (!inserted) {
        return absl::InvalidArgumentError(StrCat(index_name, ": tensor '", t.name,
                                                 "' appears in two shards: '", it->second,
                                                 "' and '", shard, "'"));
      }
    }
  }
  for (size_t s = 0; s < index.shard_files.size(); ++s) {
    const std::string& shard = index.shard_files[s];
    for (const TensorInfo& t : checkpoint->shards_[s]->tensors()) {
      auto mapped = index.weight_map.find(t.name);
      if (mapped == index.weight_map.end()) {
        return absl::InvalidArgumentError(StrCat(index_name, ": tensor '", t.name,
                                                 "' is in shard '", shard,
                                                 "' but not in the index's weight_map"));
      }
      if (mapped->second != shard) {
        return absl::InvalidArgumentError(
            StrCat(index_name, ": tensor '", t.name, "' is in shard '", shard,
                   "' but the index maps it to '", mapped->second, "'"));
      }
    }
  }
  for (const auto& [tensor, shard] : index.weight_map) {
    if (!found_in.contains(tensor)) {
      return absl::InvalidArgumentError(StrCat(index_name, ": tensor '", tensor,
                                               "' is mapped to shard '", shard,
                                               "' but that shard does not contain it"));
    }
  }
  checkpoint->IndexTensors();
  return checkpoint;
}

void CheckpointReader::IndexTensors() {
  total_size_ = 0;
  for (size_t s = 0; s < shards_.size(); ++s) {
    for (const TensorInfo& t : shards_[s]->tensors()) {
      tensors_.push_back(TensorLocation{&t, static_cast<int>(s)});
      total_size_ += t.size;
    }
  }
  for (size_t i = 0; i < tensors_.size(); ++i) by_name_[tensors_[i].info->name] = i;
}

const TensorLocation* CheckpointReader::Find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<std::vector<uint8_t>> CheckpointReader::ReadTensor(std::string_view name) const {
  const TensorLocation* location = Find(name);
  if (location == nullptr) {
    return absl::NotFoundError(StrCat("checkpoint has no tensor named '", name, "'"));
  }
  return shards_[location->shard]->ReadTensor(*location->info);
}

absl::Status CheckpointReader::ReadTensor(const TensorLocation& location,
                                          std::span<uint8_t> out) const {
  return shards_[location.shard]->ReadTensor(*location.info, out);
}

std::string ShardFileName(int index, int count, std::string_view base_name) {
  return absl::StrFormat("%s-%05d-of-%05d.safetensors", base_name, index + 1, count);
}

absl::StatusOr<std::vector<std::vector<size_t>>> PlanShards(std::span<const TensorSpec> specs,
                                                            uint64_t max_shard_size) {
  if (max_shard_size == 0) return absl::InvalidArgumentError("max shard size must be positive");
  std::vector<std::vector<size_t>> shards;
  uint64_t current = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    ASSIGN_OR_RETURN(const uint64_t size, TensorByteSize(specs[i]));
    uint64_t grown;
    const bool overflows = __builtin_add_overflow(current, size, &grown);
    if (shards.empty() || (!shards.back().empty() && (overflows || grown > max_shard_size))) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(i);
    current += size;
  }
  if (shards.empty()) shards.emplace_back();  // an empty checkpoint is one empty file
  return shards;
}

absl::StatusOr<std::unique_ptr<ShardedCheckpointWriter>> ShardedCheckpointWriter::Create(
    const std::string& dir, std::vector<TensorSpec> specs, Options options) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(StrCat(dir, ": output directory does not exist"));
  }
  ASSIGN_OR_RETURN(auto plan, PlanShards(specs, options.max_shard_size));
  std::unique_ptr<ShardedCheckpointWriter> writer(new ShardedCheckpointWriter());
  writer->dir_ = dir;
  writer->options_ = options;
  writer->write_index_ = plan.size() > 1 || options.always_index;
  const int count = static_cast<int>(plan.size());
  for (int s = 0; s < count; ++s) {
    const std::string file = writer->write_index_ ? ShardFileName(s, count, options.base_name)
                                                  : StrCat(options.base_name, ".safetensors");
    std::vector<TensorSpec> shard_specs;
    for (size_t i : plan[s]) {
      if (!writer->shard_of_.emplace(specs[i].name, s).second) {
        return absl::InvalidArgumentError(StrCat("duplicate tensor name '", specs[i].name, "'"));
      }
      writer->weight_map_[specs[i].name] = file;
      writer->total_size_ += *TensorByteSize(specs[i]);
      shard_specs.push_back(specs[i]);
    }
    SafetensorsWriter::Options shard_options;
    shard_options.metadata = options.metadata;
    shard_options.sync = options.sync;
    shard_options.sha256 = options.sha256;
    ASSIGN_OR_RETURN(auto shard_writer,
                     SafetensorsWriter::Create((fs::path(dir) / file).string(),
                                               std::move(shard_specs), std::move(shard_options)));
    writer->shard_files_.push_back(file);
    writer->writers_.push_back(std::move(shard_writer));
  }
  return writer;
}

absl::StatusOr<SafetensorsWriter*> ShardedCheckpointWriter::WriterFor(std::string_view name) {
  auto it = shard_of_.find(std::string(name));
  if (it == shard_of_.end()) {
    return absl::InvalidArgumentError(
        StrCat(dir_, ": tensor '", name, "' was not declared when the writer was created"));
  }
  return writers_[it->second].get();
}

absl::Status ShardedCheckpointWriter::WriteTensor(std::string_view name,
                                                  std::span<const uint8_t> data) {
  ASSIGN_OR_RETURN(SafetensorsWriter * writer, WriterFor(name));
  return writer->WriteTensor(name, data);
}

absl::Status ShardedCheckpointWriter::AppendTensorData(std::string_view name,
                                                       std::span<const uint8_t> chunk) {
  ASSIGN_OR_RETURN(SafetensorsWriter * writer, WriterFor(name));
  return writer->AppendTensorData(name, chunk);
}

std::map<std::string, std::string> ShardedCheckpointWriter::Sha256s() const {
  return FinishedSha256s(shard_files_, writers_);
}

absl::Status ShardedCheckpointWriter::Finish() {
  for (auto& writer : writers_) RETURN_IF_ERROR(writer->Finish());
  if (!write_index_) return absl::OkStatus();
  nlohmann::ordered_json index;
  index["metadata"] = {{"total_size", total_size_}};
  nlohmann::ordered_json map = nlohmann::ordered_json::object();
  for (const auto& [tensor, file] : weight_map_) map[tensor] = file;
  index["weight_map"] = std::move(map);
  const std::string text = index.dump(2) + "\n";
  const std::string path =
      (fs::path(dir_) / StrCat(options_.base_name, ".safetensors.index.json")).string();
  const std::string tmp = path + ".tmp";
  {
    errno = 0;
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.close();
    if (!out) {  // errno tells why (e.g. ENOSPC: "No space left on device")
      return absl::InternalError(
          StrCat("cannot write ", tmp, ": ", errno != 0 ? std::strerror(errno) : "stream error"));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(
        StrCat("cannot rename ", tmp, " to ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace nvfp4::formats
