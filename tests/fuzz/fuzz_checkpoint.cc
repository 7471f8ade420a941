// Fuzz target: checkpoint index and config parsers (formats/sharded.h, formats/json_util.h,
// pipeline/checkpoint_io.h, pipeline/nvfp4_checkpoint.h, pipeline/quantize_model.h PlanModel).
//
// Input: a bundle of files, each introduced by a line "--- <name>\n" and running up to the next
// "\n--- " (an input that does not start with "--- " is a bundle holding just `config.json`). The
// files form an in-memory checkpoint directory (config.json, hf_quant_config.json,
// model.safetensors.index.json, *.safetensors), which goes through everything that reads a
// checkpoint directory without writing: ReadConfigJson, DetectLayout, OpenCheckpoint (index +
// shards, cross-checked), Nvfp4Checkpoint::Open/Load/Dequantize, InspectCheckpoint and PlanModel
// (config.json's num_hidden_layers / num_nextn_predict_layers + module selection). The raw input
// also goes to ParseJsonRejectingDuplicates and ParseShardIndex.
#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "formats/json_util.h"
#include "formats/random_access_source.h"
#include "formats/sharded.h"
#include "pipeline/checkpoint_io.h"
#include "pipeline/nvfp4_checkpoint.h"
#include "pipeline/quantize_model.h"
#include "pipeline/selection.h"
#include "storage/directory.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using nvfp4::storage::InputDirectory;

class MemoryInputDirectory : public InputDirectory {
 public:
  explicit MemoryInputDirectory(std::map<std::string, std::string> files)
      : files_(std::move(files)) {}

  absl::StatusOr<std::vector<std::string>> ListFiles() override {
    std::vector<std::string> names;
    for (const auto& [name, unused] : files_) names.push_back(name);
    return names;
  }
  absl::StatusOr<std::unique_ptr<nvfp4::formats::RandomAccessSource>> OpenFile(
      const std::string& name) override {
    auto it = files_.find(name);
    if (it == files_.end()) return absl::NotFoundError("mem://fuzz/" + name + ": no such file");
    return std::unique_ptr<nvfp4::formats::RandomAccessSource>(new nvfp4::formats::MemorySource(
        std::vector<uint8_t>(it->second.begin(), it->second.end()), "mem://fuzz/" + name));
  }
  bool Exists(const std::string& name) override { return files_.count(name) != 0; }
  std::string Describe() const override { return "mem://fuzz"; }

 private:
  std::map<std::string, std::string> files_;
};

std::map<std::string, std::string> SplitBundle(std::string_view in) {
  std::map<std::string, std::string> files;
  if (in.substr(0, 4) != "--- ") {
    files["config.json"] = std::string(in);
    return files;
  }
  size_t pos = 0;
  while (pos < in.size()) {
    // in[pos..] starts with "--- ".
    const size_t name_begin = pos + 4;
    const size_t nl = in.find('\n', name_begin);
    if (nl == std::string_view::npos) break;
    const std::string name(in.substr(name_begin, nl - name_begin));
    const size_t next = in.find("\n--- ", nl + 1);
    const size_t end = next == std::string_view::npos ? in.size() : next;
    if (!name.empty()) files[name] = std::string(in.substr(nl + 1, end - (nl + 1)));
    if (next == std::string_view::npos) break;
    pos = next + 1;
  }
  return files;
}

void CheckShardIndex(std::string_view text) {
  absl::StatusOr<nvfp4::formats::ShardIndex> index =
      nvfp4::formats::ParseShardIndex(text, "fuzz.index.json");
  if (!index.ok()) {
    FUZZ_CHECK(absl::IsInvalidArgument(index.status()));
    return;
  }
  FUZZ_CHECK(std::is_sorted(index->shard_files.begin(), index->shard_files.end()));
  FUZZ_CHECK(std::adjacent_find(index->shard_files.begin(), index->shard_files.end()) ==
             index->shard_files.end());
  for (const std::string& s : index->shard_files) {
    FUZZ_CHECK(!s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos &&
               s.find('\\') == std::string::npos);
  }
  for (const auto& [tensor, shard] : index->weight_map) {
    FUZZ_CHECK(std::binary_search(index->shard_files.begin(), index->shard_files.end(), shard));
  }
}

void CheckDirectory(InputDirectory& dir) {
  (void)nvfp4::pipeline::ReadConfigJson(dir);
  (void)nvfp4::pipeline::ReadConfigJson(dir, "hf_quant_config.json");
  (void)nvfp4::pipeline::DetectLayout(dir);

  absl::StatusOr<nvfp4::pipeline::OpenedCheckpoint> opened = nvfp4::pipeline::OpenCheckpoint(dir);
  if (opened.ok()) {
    const nvfp4::formats::CheckpointReader& r = *opened->reader;
    uint64_t total = 0;
    for (const nvfp4::formats::TensorLocation& loc : r.tensors()) {
      FUZZ_CHECK(r.Find(loc.info->name) == &loc);
      FUZZ_CHECK(loc.shard >= 0 && static_cast<size_t>(loc.shard) < r.shards().size());
      total += loc.info->size;
      if (loc.info->size <= (1u << 16)) FUZZ_CHECK(r.ReadTensor(loc.info->name).ok());
    }
    FUZZ_CHECK(total == r.total_size());
    // Module selection on the checkpoint's tensors, with the MTP rule on (DeepSeek-V3 style
    // config: layers >= num_hidden_layers are MTP heads); PlanModel below reads these from
    // config.json but stops earlier on many inputs.
    std::vector<nvfp4::formats::TensorSpec> specs;
    for (const nvfp4::formats::TensorLocation& loc : r.tensors()) {
      specs.push_back({loc.info->name, loc.info->dtype, loc.info->shape});
    }
    nvfp4::pipeline::SelectionOptions sel;
    sel.num_hidden_layers = 1;
    sel.num_mtp_layers = 1;
    (void)nvfp4::pipeline::PlanQuantization(specs, sel);
  }

  absl::StatusOr<std::unique_ptr<nvfp4::pipeline::Nvfp4Checkpoint>> ckpt =
      nvfp4::pipeline::Nvfp4Checkpoint::Open(dir);
  if (ckpt.ok()) {
    (void)(*ckpt)->metadata();
    int n = 0;
    for (const nvfp4::pipeline::Nvfp4Module& m : (*ckpt)->modules()) {
      if (++n > 8) break;
      (void)(*ckpt)->Load(m);
      if (m.rows * m.cols <= (1 << 16)) (void)(*ckpt)->Dequantize(m);
    }
  }
  (void)nvfp4::pipeline::InspectCheckpoint(dir);

  nvfp4::pipeline::QuantizeModelOptions options;
  absl::StatusOr<nvfp4::pipeline::QuantizationPlan> plan = nvfp4::pipeline::PlanModel(dir, options);
  if (plan.ok() && opened.ok()) {
    // Every tensor of the checkpoint is in exactly one work unit.
    size_t tensors = 0;
    for (const auto& u : plan->units) tensors += u.tensors.size();
    FUZZ_CHECK(tensors == opened->reader->tensors().size());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  for (int depth : {1, 2}) (void)nvfp4::formats::ParseJsonRejectingDuplicates(in, "fuzz", depth);
  CheckShardIndex(in);
  std::map<std::string, std::string> files = SplitBundle(in);
  if (auto it = files.find("model.safetensors.index.json"); it != files.end()) {
    CheckShardIndex(it->second);
  }
  MemoryInputDirectory dir(std::move(files));
  CheckDirectory(dir);
  return 0;
}
