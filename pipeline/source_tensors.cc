#include "pipeline/source_tensors.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "base/str_util.h"
#include "formats/dtypes.h"

namespace nvfp4::pipeline {
namespace {

constexpr std::string_view kGateUp = ".experts.gate_up_proj";
constexpr std::string_view kDown = ".experts.down_proj";
constexpr std::string_view kBias = "_bias";

bool EndsWith(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

// The config objects to look in: the top level and text_config (multimodal models).
std::vector<const nlohmann::ordered_json*> ConfigLevels(
    const std::optional<nlohmann::ordered_json>& config) {
  std::vector<const nlohmann::ordered_json*> levels;
  if (!config || !config->is_object()) return levels;
  levels.push_back(&*config);
  auto t = config->find("text_config");
  if (t != config->end() && t->is_object()) levels.push_back(&*t);
  return levels;
}

std::optional<int64_t> HiddenSize(const std::optional<nlohmann::ordered_json>& config) {
  std::optional<int64_t> h;
  for (const nlohmann::ordered_json* c : ConfigLevels(config)) {
    auto it = c->find("hidden_size");
    if (it != c->end() && it->is_number_integer()) h = it->get<int64_t>();  // text_config wins
  }
  return h;
}

// The kind of a stored tensor that holds fused experts, by its name, rank and dtype.
enum class Fused { kNone, kGateUp, kDown, kGateUpBias, kDownBias };
Fused Classify(const formats::TensorInfo& t) {
  // F8_E4M3: fused FP8 experts, dequantized with their scales (pipeline/fp8_source.h).
  const bool weight_dtype = formats::IsQuantizableDType(t.dtype) || t.dtype == "F8_E4M3";
  if (EndsWith(t.name, kGateUp) && t.shape.size() == 3 && weight_dtype) return Fused::kGateUp;
  if (EndsWith(t.name, kDown) && t.shape.size() == 3 && weight_dtype) return Fused::kDown;
  if (EndsWith(t.name, StrCat(kGateUp, kBias)) && t.shape.size() == 2) return Fused::kGateUpBias;
  if (EndsWith(t.name, StrCat(kDown, kBias)) && t.shape.size() == 2) return Fused::kDownBias;
  return Fused::kNone;
}

// "<p>.experts" of a fused tensor's name.
std::string ExpertsPrefix(const std::string& name, Fused kind) {
  const size_t cut = (kind == Fused::kGateUp || kind == Fused::kGateUpBias)
                         ? name.rfind(kGateUp)
                         : name.rfind(kDown);
  return name.substr(0, cut) + ".experts";
}

}  // namespace

FusedExpertsLayout FusedExpertsLayoutFor(const std::optional<nlohmann::ordered_json>& config) {
  FusedExpertsLayout layout;
  for (const nlohmann::ordered_json* c : ConfigLevels(config)) {
    auto it = c->find("model_type");
    if (it == c->end() || !it->is_string()) continue;
    const std::string type = it->get<std::string>();
    if (type == "gpt_oss") return {/*transposed=*/true, /*interleaved=*/true};
    if (type == "llama4" || type == "llama4_text" || type == "aria" || type == "aria_text") {
      return {/*transposed=*/true, /*interleaved=*/false};
    }
  }
  return layout;
}

absl::StatusOr<SourceTensors> SourceTensors::Open(
    const formats::CheckpointReader& reader, const std::optional<nlohmann::ordered_json>& config) {
  SourceTensors st(reader);
  const FusedExpertsLayout layout = FusedExpertsLayoutFor(config);
  const std::optional<int64_t> hidden = HiddenSize(config);
  auto where = [&](const formats::TensorLocation& loc) {
    return StrCat(reader.shards()[loc.shard]->name(), ": tensor '", loc.info->name, "' [",
                  absl::StrJoin(loc.info->shape, ", "), "]");
  };
  // Per block: the expert count and intermediate size its weights give, to check the pair.
  struct Block {
    int64_t experts = -1, intermediate = -1;
  };
  std::map<std::string, Block> blocks;
  std::set<std::string> stored;
  for (const formats::TensorLocation& loc : reader.tensors()) stored.insert(loc.info->name);

  for (const formats::TensorLocation& loc : reader.tensors()) {
    const formats::TensorInfo& t = *loc.info;
    const Fused kind = Classify(t);
    if (kind == Fused::kNone) {
      st.index_[t.name] = st.specs_.size();
      st.specs_.push_back({t.name, t.dtype, t.shape});
      continue;
    }
    const std::string prefix = ExpertsPrefix(t.name, kind);
    Block& block = blocks[prefix];
    const int64_t experts = t.shape[0];
    if (block.experts >= 0 && block.experts != experts) {
      return absl::InvalidArgumentError(StrCat(where(loc), " has ", experts, " experts, but '",
                                               prefix, "' has ", block.experts, " elsewhere"));
    }
    block.experts = experts;
    // The output and input sizes of one expert (biases: output only).
    int64_t out = 0, in = 0;
    if (kind == Fused::kGateUp || kind == Fused::kDown) {
      out = layout.transposed ? t.shape[2] : t.shape[1];
      in = layout.transposed ? t.shape[1] : t.shape[2];
    } else {
      out = t.shape[1];
    }
    const std::string orientation = layout.transposed ? "[E, in, out]" : "[E, out, in]";
    const bool gate_up = kind == Fused::kGateUp || kind == Fused::kGateUpBias;
    if (gate_up && out % 2 != 0) {
      return absl::InvalidArgumentError(
          StrCat(where(loc), ": gate/up size ", out, " is odd (read as ", orientation, ")"));
    }
    const int64_t intermediate = gate_up ? out / 2 : (kind == Fused::kDown ? in : -1);
    if (intermediate >= 0) {
      if (block.intermediate >= 0 && block.intermediate != intermediate) {
        return absl::InvalidArgumentError(StrCat(
            where(loc), ": expert intermediate size ", intermediate, " (read as ", orientation,
            ") differs from ", block.intermediate, " of the other fused tensor of '", prefix,
            "'; is the model_type in config.json right?"));
      }
      block.intermediate = intermediate;
    }
    const int64_t hidden_dim = kind == Fused::kGateUp ? in : (kind == Fused::kDown ? out : -1);
    if (hidden && hidden_dim >= 0 && hidden_dim != *hidden) {
      return absl::InvalidArgumentError(StrCat(
          where(loc), ": read as ", orientation, " its hidden size is ", hidden_dim,
          ", but config.json's hidden_size is ", *hidden,
          " (the layout follows config.json's model_type: docs/CHECKPOINTS.md)"));
    }
    // The derived tensors, expert by expert.
    std::vector<std::pair<std::string, std::pair<int64_t, int64_t>>> parts;  // name, offset/step
    if (gate_up) {
      const int64_t half = out / 2;
      parts.push_back({"gate_proj", layout.interleaved ? std::pair<int64_t, int64_t>{0, 2}
                                                       : std::pair<int64_t, int64_t>{0, 1}});
      parts.push_back({"up_proj", layout.interleaved ? std::pair<int64_t, int64_t>{1, 2}
                                                     : std::pair<int64_t, int64_t>{half, 1}});
    } else {
      parts.push_back({"down_proj", {0, 1}});
    }
    const bool bias = kind == Fused::kGateUpBias || kind == Fused::kDownBias;
    const int64_t rows = gate_up ? out / 2 : out;
    for (int64_t e = 0; e < experts; ++e) {
      for (const auto& [proj, os] : parts) {
        ExpertSlice s;
        s.spec.name = StrCat(prefix, ".", e, ".", proj, bias ? ".bias" : ".weight");
        s.spec.dtype = t.dtype;
        s.spec.shape = bias ? std::vector<int64_t>{rows} : std::vector<int64_t>{rows, in};
        s.source = t.name;
        s.expert = e;
        s.offset = os.first;
        s.step = os.second;
        s.transposed = layout.transposed && !bias;
        if (stored.count(s.spec.name)) {
          return absl::InvalidArgumentError(
              StrCat(where(loc), " holds '", s.spec.name,
                     "', which the checkpoint also stores on its own: give one or the other"));
        }
        st.index_[s.spec.name] = st.specs_.size();
        st.specs_.push_back(s.spec);
        st.slices_.emplace(s.spec.name, std::move(s));
      }
    }
    st.split_.push_back(t.name);
  }
  std::sort(st.split_.begin(), st.split_.end());
  return st;
}

const formats::TensorSpec& SourceTensors::Spec(const std::string& name) const {
  return specs_[index_.at(name)];
}

uint64_t SourceTensors::ByteSize(const std::string& name) const {
  auto it = slices_.find(name);
  if (it == slices_.end()) return reader_->Find(name)->info->size;
  return *formats::TensorByteSize(it->second.spec);
}

const std::string& SourceTensors::FileName(const std::string& name) const {
  auto it = slices_.find(name);
  const formats::TensorLocation* loc = reader_->Find(it == slices_.end() ? name : it->second.source);
  return reader_->shards()[loc->shard]->name();
}

absl::Status SourceTensors::Read(const std::string& name, std::span<uint8_t> out) const {
  auto it = slices_.find(name);
  if (it == slices_.end()) return reader_->ReadTensor(*reader_->Find(name), out);
  const ExpertSlice& s = it->second;
  const formats::TensorLocation* loc = reader_->Find(s.source);
  const formats::SafetensorsReader& shard = *reader_->shards()[loc->shard];
  const formats::TensorInfo& src = *loc->info;
  const uint64_t item = static_cast<uint64_t>(*formats::SafetensorsDTypeSize(src.dtype));
  const bool bias = s.spec.shape.size() == 1;
  const uint64_t rows = static_cast<uint64_t>(s.spec.shape[0]);
  const uint64_t cols = bias ? 1 : static_cast<uint64_t>(s.spec.shape[1]);
  if (out.size() != rows * cols * item) {
    return absl::InternalError(StrCat("reading '", name, "': buffer of ", out.size(),
                                      " bytes for ", rows * cols * item));
  }
  // The expert's [A, B] (or [B]) block of the source.
  const uint64_t a = bias ? 1 : static_cast<uint64_t>(src.shape[1]);
  const uint64_t b = static_cast<uint64_t>(src.shape.back());
  const uint64_t slab = a * b * item;
  const uint64_t slab_offset = static_cast<uint64_t>(s.expert) * slab;
  const uint64_t offset = static_cast<uint64_t>(s.offset);
  if (!s.transposed && s.step == 1) {  // contiguous rows: read just them
    const uint64_t row_bytes = (bias ? item : b * item);
    return shard.ReadTensorRange(src, slab_offset + offset * row_bytes, out);
  }
  std::vector<uint8_t> buf(slab);
  RETURN_IF_ERROR(shard.ReadTensorRange(src, slab_offset, buf));
  const uint64_t step = static_cast<uint64_t>(s.step);
  for (uint64_t r = 0; r < rows; ++r) {
    const uint64_t o = offset + r * step;
    if (bias) {
      std::memcpy(out.data() + r * item, buf.data() + o * item, item);
    } else if (!s.transposed) {  // source row o is output row r
      std::memcpy(out.data() + r * cols * item, buf.data() + o * b * item, cols * item);
    } else {  // source column o is output row r
      for (uint64_t c = 0; c < cols; ++c) {
        std::memcpy(out.data() + (r * cols + c) * item, buf.data() + (c * b + o) * item, item);
      }
    }
  }
  return absl::OkStatus();
}

absl::Status SourceTensors::ReadRange(const std::string& name, uint64_t offset,
                                      std::span<uint8_t> out) const {
  auto it = slices_.find(name);
  if (it == slices_.end()) {
    const formats::TensorLocation* loc = reader_->Find(name);
    return reader_->shards()[loc->shard]->ReadTensorRange(*loc->info, offset, out);
  }
  // Derived tensors are one expert's slice: materialized, then the range copied.
  std::vector<uint8_t> whole(ByteSize(name));
  RETURN_IF_ERROR(Read(name, whole));
  if (offset + out.size() > whole.size()) {
    return absl::OutOfRangeError(StrCat("reading '", name, "': bytes [", offset, ", ",
                                        offset + out.size(), ") past its ", whole.size()));
  }
  std::memcpy(out.data(), whole.data() + offset, out.size());
  return absl::OkStatus();
}

}  // namespace nvfp4::pipeline
