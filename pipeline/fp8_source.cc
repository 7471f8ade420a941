#include "pipeline/fp8_source.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <variant>

#include "base/status_macros.h"
#include "base/str_util.h"
#include "formats/dtypes.h"
#include "kernels/parallel.h"
#include "kernels/tensor_prep.h"

namespace nvfp4::pipeline {
namespace {

constexpr int64_t kDefaultBlock = 128;

bool EndsWith(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         std::string_view(s).substr(s.size() - suffix.size()) == suffix;
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

std::string FileOf(const formats::CheckpointReader& reader, const formats::TensorLocation& loc) {
  return reader.shards()[loc.shard]->name();
}

std::optional<std::pair<int64_t, int64_t>> BlockOf(const nlohmann::ordered_json& j) {
  if (!j.is_array() || j.size() != 2 || !j[0].is_number_integer() || !j[1].is_number_integer()) {
    return std::nullopt;
  }
  const int64_t r = j[0].get<int64_t>(), c = j[1].get<int64_t>();
  if (r <= 0 || c <= 0) return std::nullopt;
  return std::make_pair(r, c);
}

// Whether a compressed-tensors QuantizationArgs object is an 8-bit float weight.
bool IsFp8Args(const nlohmann::ordered_json& w) {
  if (!w.is_object()) return false;
  auto bits = w.find("num_bits");
  auto type = w.find("type");
  return bits != w.end() && bits->is_number_integer() && bits->get<int64_t>() == 8 &&
         type != w.end() && type->is_string() && type->get<std::string>() == "float";
}

// The tiling of scale tensor `name` of shape `s` for weight [n, k], or an error message.
// `block_only`: only block scales fit (a 2-D weight's `weight_scale_inv`).
std::variant<Fp8Weight, std::string> Tiling(const std::string& name, const std::vector<int64_t>& s,
                                            int64_t n, int64_t k,
                                            std::optional<std::pair<int64_t, int64_t>> block,
                                            bool block_only) {
  Fp8Weight w;
  w.scale_tensor = name;
  w.rows = n;
  w.cols = k;
  int64_t numel = 1;
  for (int64_t d : s) numel *= d;
  auto block_fits = [&](int64_t bn, int64_t bk) {
    return s.size() == 2 && s[0] == CeilDiv(n, bn) && s[1] == CeilDiv(k, bk);
  };
  const auto [bn, bk] = block.value_or(std::make_pair(kDefaultBlock, kDefaultBlock));
  if (block_only) {
    if (block_fits(bn, bk)) {
      w.block_rows = bn;
      w.block_cols = bk;
      w.granularity = StrCat("block ", bn, "x", bk);
      return w;
    }
    return StrCat("expected [", CeilDiv(n, bn), ", ", CeilDiv(k, bk), "] (one scale per ", bn, "x",
                  bk, " block)");
  }
  if (numel == 1 && s.size() <= 2) {
    w.block_rows = n;
    w.block_cols = k;
    w.granularity = "per-tensor";
  } else if ((s.size() == 2 && s[0] == n && s[1] == 1) || (s.size() == 1 && s[0] == n)) {
    w.block_rows = 1;
    w.block_cols = k;
    w.granularity = "per-channel";
  } else if (block_fits(bn, bk)) {
    w.block_rows = bn;
    w.block_cols = bk;
    w.granularity = StrCat("block ", bn, "x", bk);
  } else if (s.size() == 2 && s[0] == n && s[1] > 0 && k % s[1] == 0) {
    w.block_rows = 1;
    w.block_cols = k / s[1];
    w.granularity = StrCat("group 1x", w.block_cols);
  } else {
    return StrCat("expected [] or [1] (per tensor), [", n, ", 1] (per channel), [", n,
                  ", K/g] (per group) or [", CeilDiv(n, bn), ", ", CeilDiv(k, bk), "] (per ", bn,
                  "x", bk, " block)");
  }
  return w;
}

}  // namespace

bool IsFp8QuantizationConfig(const nlohmann::ordered_json& q,
                             std::optional<std::pair<int64_t, int64_t>>* block) {
  if (!q.is_object()) return false;
  auto str = [&](const char* key) {
    auto it = q.find(key);
    return it != q.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  const std::string method = str("quant_method");
  if (method == "fp8") {
    const std::string fmt = str("fmt");
    if (!fmt.empty() && fmt != "e4m3") return false;
    if (block != nullptr && q.contains("weight_block_size"))
      *block = BlockOf(q["weight_block_size"]);
    return true;
  }
  if (method == "compressed-tensors") {
    auto groups = q.find("config_groups");
    if (groups == q.end() || !groups->is_object() || groups->empty()) return false;
    for (const auto& [name, g] : groups->items()) {
      if (!g.is_object() || !g.contains("weights") || !IsFp8Args(g["weights"])) return false;
      const auto& w = g["weights"];
      if (block != nullptr && w.contains("block_structure")) *block = BlockOf(w["block_structure"]);
    }
    return true;
  }
  // ModelOpt: config.json's quantization_config, or hf_quant_config.json's "quantization".
  if (method == "modelopt" || method.empty()) {
    const nlohmann::ordered_json* algo_holder = &q;
    if (q.contains("quantization") && q["quantization"].is_object())
      algo_holder = &q["quantization"];
    auto algo = algo_holder->find("quant_algo");
    return algo != algo_holder->end() && algo->is_string() && algo->get<std::string>() == "FP8";
  }
  return false;
}

std::optional<std::pair<int64_t, int64_t>> Fp8BlockSize(
    const std::optional<nlohmann::ordered_json>& config) {
  std::optional<std::pair<int64_t, int64_t>> block;
  if (config && config->contains("quantization_config")) {
    IsFp8QuantizationConfig((*config)["quantization_config"], &block);
  }
  return block;
}

namespace {

// The dequantization scale of an FP8 weight: `stem` + "_scale_inv" or `stem` + "_scale" (one of
// them), of dtype F32/BF16/F16. `weight` describes the weight in messages ("FP8 weight 'x' [..]:
// its"); *where receives the messages' prefix. nullptr (OK) when neither is stored.
absl::StatusOr<const formats::TensorLocation*> FindScale(const formats::CheckpointReader& reader,
                                                         const std::string& stem,
                                                         const std::string& weight,
                                                         std::string* where) {
  const formats::TensorLocation* inv = reader.Find(stem + "_scale_inv");
  const formats::TensorLocation* fwd = reader.Find(stem + "_scale");
  const formats::TensorLocation* scale = inv != nullptr ? inv : fwd;
  if (scale == nullptr) return scale;
  *where = StrCat(FileOf(reader, *scale), ": ", weight, " scale '", scale->info->name, "' ");
  if (inv != nullptr && fwd != nullptr) {
    return absl::InvalidArgumentError(StrCat(*where, "comes with '", fwd->info->name,
                                             "' too; a weight has one dequantization scale"));
  }
  if (!formats::ToKernelDType(scale->info->dtype)) {
    return absl::InvalidArgumentError(
        StrCat(*where, "has dtype ", scale->info->dtype, " (expected F32, BF16 or F16)"));
  }
  return scale;
}

bool IsInverseName(const formats::TensorLocation& scale) {
  return EndsWith(scale.info->name, "_scale_inv");
}

// The fused FP8 experts of `sources` (pipeline/source_tensors.h): adds each derived expert
// weight of an F8_E4M3 fused tensor, with its slice of the fused tensor's scales, to `out`.
absl::Status AddFusedFp8Experts(const SourceTensors& sources,
                                std::optional<std::pair<int64_t, int64_t>> block, Fp8Sources* out,
                                bool* inverse_layout, bool* scale_layout) {
  const formats::CheckpointReader& reader = sources.reader();
  // Per fused tensor: the tiling of one expert's [N, K] block, or nullopt when it has no scale.
  std::map<std::string, std::optional<Fp8Weight>> fused;
  for (const formats::TensorSpec& spec : sources.specs()) {
    const ExpertSlice* slice = sources.Slice(spec.name);
    if (slice == nullptr || spec.shape.size() != 2) continue;
    const formats::TensorLocation& src = *reader.Find(slice->source);
    const formats::TensorInfo& info = *src.info;
    if (info.dtype != "F8_E4M3") continue;
    auto [it, first] = fused.try_emplace(slice->source);
    if (first) {
      std::string where;
      ASSIGN_OR_RETURN(const formats::TensorLocation* scale,
                       FindScale(reader, slice->source,
                                 StrCat("fused FP8 experts '", info.name, "' ",
                                        ShapeString(info.shape), ": their"),
                                 &where));
      if (scale == nullptr) {
        if (out->unscaled++ == 0) out->unscaled_example = info.name;
        continue;
      }
      if (slice->transposed || slice->step != 1) {
        return absl::InvalidArgumentError(StrCat(
            FileOf(reader, src), ": fused FP8 experts '", info.name, "' ", ShapeString(info.shape),
            " are stored ", slice->transposed ? "transposed ([E, in, out])" : "interleaved",
            " (config.json's model_type); FP8 fused experts are read in the [E, out, in] "
            "concatenated layout only"));
      }
      const int64_t experts = info.shape[0], n = info.shape[1], k = info.shape[2];
      const std::vector<int64_t>& ss = scale->info->shape;
      if (ss.empty() || ss[0] != experts || n <= 0 || k <= 0) {
        return absl::InvalidArgumentError(
            StrCat(where, "has shape ", ShapeString(ss), ": expected a leading dimension of ",
                   experts, " (one set of scales per expert)"));
      }
      const std::vector<int64_t> per_expert(ss.begin() + 1, ss.end());
      auto tiling = Tiling(scale->info->name, per_expert, n, k, block, /*block_only=*/false);
      if (auto* why = std::get_if<std::string>(&tiling)) {
        return absl::InvalidArgumentError(StrCat(where, "has shape ", ShapeString(ss),
                                                 ": per expert ", *why, " behind [", experts, "]"));
      }
      (IsInverseName(*scale) ? *inverse_layout : *scale_layout) = true;
      out->consumed.insert(scale->info->name);
      for (const char* extra : {"_activation_scale", "_input_scale"}) {
        if (reader.Find(slice->source + extra) != nullptr)
          out->consumed.insert(slice->source + extra);
      }
      it->second = std::get<Fp8Weight>(std::move(tiling));
    }
    if (!it->second.has_value()) continue;  // counted as unscaled
    // The expert's slice of the tiling: rows [offset, offset + rows) of its [N, K] block.
    Fp8Weight w = *it->second;
    const int64_t expert_rows = w.rows, offset = slice->offset;
    w.rows = spec.shape[0];
    const int64_t grid_cols = CeilDiv(w.cols, w.block_cols);
    if (offset % w.block_rows != 0 && offset + w.rows > w.block_rows) {
      return absl::InvalidArgumentError(StrCat(
          FileOf(reader, src), ": fused FP8 experts '", info.name, "' ", ShapeString(info.shape),
          ": '", spec.name, "' starts at row ", offset, " of each expert, inside a block of ",
          w.block_rows, " rows of '", w.scale_tensor,
          "' (its scales would be shared with another weight)"));
    }
    w.scale_offset = slice->expert * CeilDiv(expert_rows, w.block_rows) * grid_cols +
                     offset / w.block_rows * grid_cols;
    out->weights.emplace(spec.name, std::move(w));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Fp8Sources> FindFp8Sources(const SourceTensors& sources,
                                          std::optional<std::pair<int64_t, int64_t>> block) {
  const formats::CheckpointReader& reader = sources.reader();
  Fp8Sources out;
  bool inverse_layout = false, scale_layout = false;
  for (const formats::TensorLocation& loc : reader.tensors()) {
    const formats::TensorInfo& info = *loc.info;
    if (info.dtype != "F8_E4M3" || !EndsWith(info.name, ".weight") || info.shape.size() != 2) {
      continue;
    }
    const std::string module = info.name.substr(0, info.name.size() - 7);
    std::string where;
    ASSIGN_OR_RETURN(const formats::TensorLocation* scale,
                     FindScale(reader, module + ".weight",
                               StrCat("FP8 weight '", info.name, "' ", ShapeString(info.shape),
                                      ": its"),
                               &where));
    if (scale == nullptr) {
      if (out.unscaled++ == 0) out.unscaled_example = info.name;
      continue;
    }
    if (reader.Find(module + ".weight_zero_point") != nullptr) {
      return absl::InvalidArgumentError(
          StrCat(where, "comes with '", module,
                 ".weight_zero_point': asymmetric FP8 is not supported (w = fp8 * scale only)"));
    }
    if (info.shape[0] <= 0 || info.shape[1] <= 0) {
      return absl::InvalidArgumentError(StrCat(where, ": the weight is empty"));
    }
    auto tiling = Tiling(scale->info->name, scale->info->shape, info.shape[0], info.shape[1], block,
                         /*block_only=*/IsInverseName(*scale));
    if (auto* why = std::get_if<std::string>(&tiling)) {
      return absl::InvalidArgumentError(
          StrCat(where, "has shape ", ShapeString(scale->info->shape), ": ", *why));
    }
    (IsInverseName(*scale) ? inverse_layout : scale_layout) = true;
    out.consumed.insert(scale->info->name);
    if (reader.Find(module + ".input_scale") != nullptr)
      out.consumed.insert(module + ".input_scale");
    out.weights.emplace(info.name, std::get<Fp8Weight>(std::move(tiling)));
  }
  RETURN_IF_ERROR(AddFusedFp8Experts(sources, block, &out, &inverse_layout, &scale_layout));
  if (inverse_layout && scale_layout) {
    out.layout = "FP8 with weight_scale_inv and weight_scale";
  } else if (inverse_layout) {
    out.layout = "block FP8 (weight_scale_inv)";
  } else if (scale_layout) {
    out.layout = "FP8 with weight_scale";
  }
  return out;
}

absl::StatusOr<Fp8ScaleGrid> ReadFp8Scales(const formats::CheckpointReader& reader,
                                           const std::string& weight, const Fp8Weight& fp8) {
  const formats::TensorLocation* sloc = reader.Find(fp8.scale_tensor);
  if (sloc == nullptr) {
    return absl::NotFoundError(StrCat("the scale '", fp8.scale_tensor, "' of FP8 weight '", weight,
                                      "' is not in the checkpoint"));
  }
  Fp8ScaleGrid grid;
  grid.block_rows = fp8.block_rows;
  grid.block_cols = fp8.block_cols;
  grid.grid_cols = CeilDiv(fp8.cols, fp8.block_cols);
  const int64_t count = CeilDiv(fp8.rows, fp8.block_rows) * grid.grid_cols;
  const formats::TensorInfo& info = *sloc->info;
  const int64_t item = *formats::SafetensorsDTypeSize(info.dtype);
  if (fp8.scale_offset < 0 || fp8.scale_offset + count > info.numel()) {
    return absl::InternalError(StrCat("FP8 weight '", weight, "': scales [", fp8.scale_offset,
                                      ", ", fp8.scale_offset + count, ") of '", fp8.scale_tensor,
                                      "' past its ", info.numel()));
  }
  std::vector<uint8_t> scale_bytes(static_cast<size_t>(count * item));
  RETURN_IF_ERROR(reader.shards()[sloc->shard]->ReadTensorRange(
      info, static_cast<uint64_t>(fp8.scale_offset * item), scale_bytes));
  ASSIGN_OR_RETURN(grid.values, formats::DecodeToFloat32(info.dtype, scale_bytes));
  for (size_t i = 0; i < grid.values.size(); ++i) {
    const float v = grid.values[i];
    if (!std::isfinite(v) || v < 0) {
      return absl::InvalidArgumentError(StrCat(
          FileOf(reader, *sloc), ": the dequantization scale '", fp8.scale_tensor,
          "' of FP8 weight '", weight, "' has ", std::isnan(v) ? "NaN" : "the value ",
          std::isnan(v) ? "" : StrCat(v), " at flat index ", fp8.scale_offset + i,
          " (scales must be finite and >= 0)"));
    }
  }
  return grid;
}

absl::Status ReadDequantizedFp8(const SourceTensors& sources, const std::string& weight,
                                const Fp8Weight& fp8, std::span<float> out) {
  ASSIGN_OR_RETURN(const Fp8ScaleGrid grid, ReadFp8Scales(sources.reader(), weight, fp8));
  const int64_t n = fp8.rows, k = fp8.cols;
  if (out.size() != static_cast<size_t>(n * k)) {
    return absl::InternalError(StrCat("FP8 weight '", weight, "': output of ", out.size(),
                                      " values for ", n * k, " elements"));
  }
  // The codes (1 byte per element besides `out`), dequantized on the host's threads.
  std::vector<uint8_t> codes(static_cast<size_t>(n * k));
  RETURN_IF_ERROR(sources.Read(weight, codes));
  DequantizeFp8(codes.data(), n, k, grid.view(), HostThreadCount(), out.data());
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint8_t>> ReadFp8AsBf16(const SourceTensors& sources,
                                                   const std::string& weight,
                                                   const Fp8Weight& fp8) {
  const size_t numel = static_cast<size_t>(fp8.rows * fp8.cols);
  std::vector<float> values(numel);
  RETURN_IF_ERROR(ReadDequantizedFp8(sources, weight, fp8, values));
  std::vector<uint8_t> bf16(numel * 2);
  constexpr size_t kSlice = size_t{1} << 20;  // elements per task
  HostParallelFor(static_cast<int64_t>((numel + kSlice - 1) / kSlice), HostThreadCount(),
                  [&](int64_t t) {
                    const size_t end = std::min(numel, (static_cast<size_t>(t) + 1) * kSlice);
                    for (size_t i = static_cast<size_t>(t) * kSlice; i < end; ++i) {
                      const uint16_t h = formats::FloatToBf16(values[i]);
                      bf16[2 * i] = static_cast<uint8_t>(h & 0xFF);
                      bf16[2 * i + 1] = static_cast<uint8_t>(h >> 8);
                    }
                  });
  return bf16;
}

}  // namespace nvfp4::pipeline
