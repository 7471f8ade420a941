#include "pipeline/nvfp4_checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "base/str_util.h"
#include "formats/dtypes.h"
#include "kernels/calibration.h"
#include "kernels/codec.h"
#include "pipeline/checkpoint_io.h"
#include "pipeline/fp8_source.h"
#include "pipeline/source_tensors.h"

namespace nvfp4::pipeline {
namespace {


bool EndsWith(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::string FileOf(const formats::CheckpointReader& r, const formats::TensorLocation& loc) {
  return r.shards()[loc.shard]->name();
}

absl::Status LayoutError(const formats::CheckpointReader& r, std::string_view tensor,
                         std::string_view what) {
  const formats::TensorLocation* loc = r.Find(tensor);
  const std::string file = loc != nullptr ? FileOf(r, *loc) : std::string("checkpoint");
  return absl::InvalidArgumentError(StrCat(file, ": tensor '", tensor, "': ", what));
}

// Reads an F32 scalar ([] or [1]) and checks it is finite and positive.
absl::StatusOr<float> ReadScalar(const formats::CheckpointReader& r, const std::string& name) {
  const formats::TensorLocation* loc = r.Find(name);
  if (loc == nullptr) return LayoutError(r, name, "missing");
  const formats::TensorInfo& info = *loc->info;
  if (info.dtype != "F32" || info.numel() != 1 || info.shape.size() > 1) {
    return LayoutError(
        r, name,
        StrCat("expected an F32 scalar, found ", info.dtype, " ", ShapeString(info.shape)));
  }
  std::vector<uint8_t> bytes(4);
  RETURN_IF_ERROR(r.ReadTensor(*loc, bytes));
  float v;
  std::memcpy(&v, bytes.data(), 4);
  if (!std::isfinite(v) || v <= 0.0f) {
    return LayoutError(r, name, StrCat("value ", v, " is not finite and positive"));
  }
  return v;
}

// j[key] when j is an object and j[key] a string, else "" (nlohmann's value() throws on other
// types, and config files are untrusted input).
std::string StringField(const nlohmann::ordered_json& j, const char* key) {
  if (!j.is_object()) return "";
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

}  // namespace

absl::StatusOr<std::optional<Layout>> DetectLayout(storage::InputDirectory& dir) {
  ASSIGN_OR_RETURN(std::optional<nlohmann::ordered_json> config, ReadConfigJson(dir));
  if (config && config->contains("quantization_config")) {
    const auto& qc = (*config)["quantization_config"];
    const std::string method = StringField(qc, "quant_method");
    if (method == "modelopt") {
      const std::string algo = StringField(qc, "quant_algo");
      if (algo.find("NVFP4") == std::string::npos) {
        return absl::InvalidArgumentError(
            StrCat(dir.Describe(), "/config.json: modelopt quant_algo '", algo, "' is not NVFP4"));
      }
      return std::optional<Layout>(Layout::kModelOpt);
    }
    if (method == "compressed-tensors") {
      std::string format = StringField(qc, "format");
      if (format != "nvfp4-pack-quantized" && qc.contains("config_groups")) {
        for (const auto& [k, g] : qc["config_groups"].items()) {
          if (StringField(g, "format") == "nvfp4-pack-quantized")
            format = g["format"];
        }
      }
      if (format != "nvfp4-pack-quantized") {
        return absl::InvalidArgumentError(StrCat(dir.Describe(),
                                                 "/config.json: compressed-tensors format '",
                                                 format, "' is not nvfp4-pack-quantized"));
      }
      return std::optional<Layout>(Layout::kCompressedTensors);
    }
    return absl::InvalidArgumentError(
        StrCat(dir.Describe(), "/config.json: quant_method '", method, "' is not an NVFP4 layout"));
  }
  ASSIGN_OR_RETURN(std::optional<nlohmann::ordered_json> hf,
                   ReadConfigJson(dir, "hf_quant_config.json"));
  if (hf && hf->contains("quantization") && (*hf)["quantization"].is_object()) {
    const std::string algo = StringField((*hf)["quantization"], "quant_algo");
    if (algo.find("NVFP4") != std::string::npos) return std::optional<Layout>(Layout::kModelOpt);
    return absl::InvalidArgumentError(
        StrCat(dir.Describe(), "/hf_quant_config.json: quant_algo '", algo, "' is not NVFP4"));
  }
  return std::optional<Layout>();
}

const std::map<std::string, std::string>& Nvfp4Checkpoint::metadata() const {
  return reader_->shards().front()->metadata();
}

absl::StatusOr<std::unique_ptr<Nvfp4Checkpoint>> Nvfp4Checkpoint::Open(storage::InputDirectory& dir) {
  ASSIGN_OR_RETURN(std::optional<Layout> layout, DetectLayout(dir));
  if (!layout) {
    return absl::InvalidArgumentError(
        StrCat(dir.Describe(),
               ": not an NVFP4 checkpoint (no quantization_config in config.json "
               "and no hf_quant_config.json)"));
  }
  std::unique_ptr<Nvfp4Checkpoint> ckpt(new Nvfp4Checkpoint());
  ckpt->layout_ = *layout;
  ASSIGN_OR_RETURN(OpenedCheckpoint opened, OpenCheckpoint(dir));
  ckpt->reader_ = std::move(opened.reader);
  ckpt->files_ = std::move(opened.files);
  const formats::CheckpointReader& r = *ckpt->reader_;

  ASSIGN_OR_RETURN(std::optional<nlohmann::ordered_json> config, ReadConfigJson(dir));
  if (config && config->contains("quantization_config")) {
    const auto& qc = (*config)["quantization_config"];
    if (qc.contains("ignore") && qc["ignore"].is_array()) {
      for (const auto& s : qc["ignore"]) {
        if (s.is_string()) ckpt->ignore_.push_back(s.get<std::string>());
      }
    }
  }

  const bool mo = *layout == Layout::kModelOpt;
  const std::string_view key_suffix = mo ? ".weight_scale_2" : ".weight_packed";
  std::set<std::string> used;
  for (const formats::TensorLocation& loc : r.tensors()) {
    const std::string& t = loc.info->name;
    if (!EndsWith(t, key_suffix)) continue;
    Nvfp4Module m;
    m.name = t.substr(0, t.size() - key_suffix.size());
    const QuantizedTensorNames names = NamesFor(*layout, m.name);
    m.packed_tensor = names.packed;
    m.scales_tensor = names.block_scales;
    m.global_tensor = names.global_scale;
    const formats::TensorLocation* packed = r.Find(names.packed);
    const formats::TensorLocation* scales = r.Find(names.block_scales);
    if (packed == nullptr) return LayoutError(r, t, StrCat("has no '", names.packed, "'"));
    if (scales == nullptr) return LayoutError(r, t, StrCat("has no '", names.block_scales, "'"));
    if (r.Find(names.global_scale) == nullptr) {
      return LayoutError(r, t, StrCat("has no '", names.global_scale, "'"));
    }
    const formats::TensorInfo& p = *packed->info;
    const formats::TensorInfo& s = *scales->info;
    if (p.dtype != "U8" || p.shape.size() != 2) {
      return LayoutError(
          r, p.name,
          StrCat("packed codes must be U8 [N, K/2], found ", p.dtype, " ", ShapeString(p.shape)));
    }
    if (s.dtype != "F8_E4M3" || s.shape.size() != 2) {
      return LayoutError(r, s.name,
                         StrCat("block scales must be F8_E4M3 [N, K/16], found ", s.dtype, " ",
                                ShapeString(s.shape)));
    }
    if (s.shape[0] != p.shape[0] || 2 * p.shape[1] != 16 * s.shape[1]) {
      return LayoutError(r, s.name,
                         StrCat("shape ", ShapeString(s.shape), " does not match packed '", p.name,
                                "' ", ShapeString(p.shape),
                                " (need 2 * packed.shape[-1] == 16 * "
                                "scales.shape[-1] and equal rows)"));
    }
    m.rows = p.shape[0];
    m.cols = 2 * p.shape[1];
    ASSIGN_OR_RETURN(float gs, ReadScalar(r, names.global_scale));
    m.global_scale = mo ? gs : 1.0f / gs;
    m.stored_global_scale = gs;
    if (r.Find(names.input_scale) != nullptr) {
      m.input_tensor = names.input_scale;
      ASSIGN_OR_RETURN(float is, ReadScalar(r, names.input_scale));
      m.input_amax = mo ? is * kNvfp4ScaleDenominator : kNvfp4ScaleDenominator / is;
      used.insert(names.input_scale);
    }
    used.insert(names.packed);
    used.insert(names.block_scales);
    used.insert(names.global_scale);
    ckpt->modules_.push_back(std::move(m));
  }
  // Stray pieces of a quantized module are layout errors.
  for (const formats::TensorLocation& loc : r.tensors()) {
    const std::string& t = loc.info->name;
    if (used.count(t)) continue;
    for (std::string_view suffix : {".weight_scale", ".weight_scale_2", ".weight_packed",
                                    ".weight_global_scale", ".input_global_scale"}) {
      if (EndsWith(t, suffix)) {
        return LayoutError(
            r, t, StrCat("is not part of a complete ", LayoutName(*layout), " quantized module"));
      }
    }
    if (mo && EndsWith(t, ".input_scale")) {
      return LayoutError(r, t, "input scale of a module that is not quantized");
    }
    ckpt->other_tensors_.push_back(t);
  }
  if (ckpt->modules_.empty()) {
    return absl::InvalidArgumentError(StrCat(dir.Describe(), ": declares ", LayoutName(*layout),
                                             " NVFP4 but holds no quantized module"));
  }
  std::sort(ckpt->modules_.begin(), ckpt->modules_.end(),
            [](const Nvfp4Module& a, const Nvfp4Module& b) { return a.name < b.name; });
  std::sort(ckpt->other_tensors_.begin(), ckpt->other_tensors_.end());
  const bool all_inputs =
      std::all_of(ckpt->modules_.begin(), ckpt->modules_.end(),
                  [](const Nvfp4Module& m) { return m.input_amax.has_value(); });
  ckpt->quant_algo_ = all_inputs ? "NVFP4" : "W4A16_NVFP4";
  return ckpt;
}

absl::StatusOr<QuantizedTensor> Nvfp4Checkpoint::Load(const Nvfp4Module& module) const {
  const formats::CheckpointReader& r = *reader_;
  QuantizedTensor q;
  q.name = module.name;
  q.rows = module.rows;
  q.cols = module.cols;
  q.source_shape = {module.rows, module.cols};
  q.global_scale = module.global_scale;
  ASSIGN_OR_RETURN(q.packed, r.ReadTensor(module.packed_tensor));
  ASSIGN_OR_RETURN(q.scales, r.ReadTensor(module.scales_tensor));
  const int64_t per_row = module.cols / 16;
  for (size_t i = 0; i < q.scales.size(); ++i) {
    if ((q.scales[i] & 0x7F) == 0x7F) {
      const formats::TensorLocation* loc = r.Find(module.scales_tensor);
      return absl::DataLossError(StrCat(FileOf(r, *loc), ": tensor '", module.scales_tensor,
                                        "': block scale [", static_cast<int64_t>(i) / per_row, ", ",
                                        static_cast<int64_t>(i) % per_row,
                                        "] is an E4M3 NaN (corrupt file)"));
    }
  }
  return q;
}

absl::StatusOr<std::vector<float>> Nvfp4Checkpoint::Dequantize(const Nvfp4Module& module) const {
  ASSIGN_OR_RETURN(QuantizedTensor q, Load(module));
  if (layout_ == Layout::kModelOpt) return nvfp4::Dequantize(q);
  std::vector<float> out(static_cast<size_t>(q.rows * q.cols));
  const int64_t nb = q.cols / 16;
  const float gs = module.stored_global_scale;
  for (int64_t r = 0; r < q.rows; ++r) {
    for (int64_t c = 0; c < q.cols; ++c) {
      const uint8_t byte = q.packed[static_cast<size_t>((r * q.cols + c) / 2)];
      const uint32_t code = (c % 2 == 0) ? (byte & 0xFu) : (byte >> 4);
      const float s = DecodeE4M3(q.scales[static_cast<size_t>(r * nb + c / 16)]) / gs;
      out[static_cast<size_t>(r * q.cols + c)] = DecodeE2M1(code) * s;
    }
  }
  return out;
}

absl::StatusOr<InspectReport> InspectCheckpoint(storage::InputDirectory& dir) {
  InspectReport rep;
  ASSIGN_OR_RETURN(std::optional<Layout> layout, DetectLayout(dir));
  std::unique_ptr<Nvfp4Checkpoint> ckpt;
  OpenedCheckpoint opened;
  const formats::CheckpointReader* r;
  std::set<std::string> quantized_tensors;
  if (layout) {
    ASSIGN_OR_RETURN(ckpt, Nvfp4Checkpoint::Open(dir));
    r = &ckpt->reader();
    rep.quantized = true;
    rep.layout = layout;
    rep.quant_algo = ckpt->quant_algo();
    rep.modules = ckpt->modules();
    for (const Nvfp4Module& m : rep.modules) {
      rep.quantized_weights += m.rows * m.cols;
      for (const std::string& t :
           {m.packed_tensor, m.scales_tensor, m.global_tensor, m.input_tensor}) {
        if (t.empty()) continue;
        quantized_tensors.insert(t);
        rep.quantized_bytes += r->Find(t)->info->size;
      }
    }
  } else {
    ASSIGN_OR_RETURN(opened, OpenCheckpoint(dir));
    r = opened.reader.get();
  }
  if (!r->shards().empty()) rep.metadata = r->shards().front()->metadata();  // an empty index: none
  rep.tensors = static_cast<int64_t>(r->tensors().size());
  rep.shards = static_cast<int64_t>(r->shards().size());
  rep.total_bytes = r->total_size();
  for (const formats::TensorLocation& loc : r->tensors()) {
    if (quantized_tensors.count(loc.info->name)) continue;
    rep.other_elements += loc.info->numel();
    rep.other_bytes += loc.info->size;
    rep.other_tensors.push_back({loc.info->name, loc.info->dtype, loc.info->shape});
  }
  std::sort(
      rep.other_tensors.begin(), rep.other_tensors.end(),
      [](const formats::TensorSpec& a, const formats::TensorSpec& b) { return a.name < b.name; });
  if (rep.quantized_weights > 0) {
    rep.bits_per_weight =
        8.0 * static_cast<double>(rep.quantized_bytes) / static_cast<double>(rep.quantized_weights);
  }
  const int64_t params = rep.quantized_weights + rep.other_elements;
  if (params > 0) {
    rep.overall_bits_per_param =
        8.0 * static_cast<double>(rep.total_bytes) / static_cast<double>(params);
  }
  return rep;
}

absl::StatusOr<VerifyReport> VerifyCheckpoint(storage::InputDirectory& original, storage::InputDirectory& quantized) {
  ASSIGN_OR_RETURN(std::unique_ptr<Nvfp4Checkpoint> q, Nvfp4Checkpoint::Open(quantized));
  ASSIGN_OR_RETURN(OpenedCheckpoint orig, OpenCheckpoint(original));
  ASSIGN_OR_RETURN(std::optional<nlohmann::ordered_json> config, ReadConfigJson(original));
  // The original as the run planned it: fused 3-D experts split per expert.
  ASSIGN_OR_RETURN(SourceTensors o, SourceTensors::Open(*orig.reader, config));
  // An FP8 original is compared through its dequantization (docs/NUMERICS.md 7); its scales are
  // consumed, not copied.
  ASSIGN_OR_RETURN(const Fp8Sources fp8, FindFp8Sources(o, Fp8BlockSize(config)));
  VerifyReport rep;
  rep.layout = q->layout();
  rep.quant_algo = q->quant_algo();
  std::set<std::string> covered(fp8.consumed.begin(), fp8.consumed.end());
  double sum = 0;
  for (const Nvfp4Module& m : q->modules()) {
    const std::string wname = StrCat(m.name, ".weight");
    covered.insert(wname);
    if (!o.Contains(wname)) {
      rep.problems.push_back(
          StrCat("quantized module '", m.name, "' has no '", wname, "' in the original"));
      continue;
    }
    const formats::TensorSpec& info = o.Spec(wname);
    const Fp8Weight* fp8_weight = fp8.Find(wname);
    if (info.shape != std::vector<int64_t>{m.rows, m.cols} ||
        (!formats::IsQuantizableDType(info.dtype) && fp8_weight == nullptr)) {
      rep.problems.push_back(StrCat("quantized module '", m.name, "' is [", m.rows, ", ", m.cols,
                                    "] but the original '", wname, "' is ", info.dtype, " ",
                                    ShapeString(info.shape)));
      continue;
    }
    ASSIGN_OR_RETURN(std::vector<float> w_hat, q->Dequantize(m));
    std::vector<float> w;
    if (fp8_weight != nullptr) {
      w.resize(static_cast<size_t>(m.rows * m.cols));
      RETURN_IF_ERROR(ReadDequantizedFp8(o, wname, *fp8_weight, w));
    } else {
      std::vector<uint8_t> bytes(o.ByteSize(wname));
      RETURN_IF_ERROR(o.Read(wname, bytes));
      ASSIGN_OR_RETURN(w, formats::DecodeToFloat32(info.dtype, bytes));
    }
    double err = 0, ref = 0, max_err = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      const double d = static_cast<double>(w[i]) - static_cast<double>(w_hat[i]);
      err += d * d;
      ref += static_cast<double>(w[i]) * static_cast<double>(w[i]);
      max_err = std::max(max_err, std::fabs(d));
    }
    ModuleVerification v;
    v.module = m.name;
    v.rows = m.rows;
    v.cols = m.cols;
    v.nmse = ref > 0 ? err / ref : (err > 0 ? INFINITY : 0.0);
    v.max_abs_err = max_err;
    v.global_scale = m.global_scale;
    sum += v.nmse;
    rep.max_nmse = std::max(rep.max_nmse, v.nmse);
    rep.modules.push_back(std::move(v));
  }
  if (!rep.modules.empty()) rep.mean_nmse = sum / static_cast<double>(rep.modules.size());
  // Other tensors: byte-identical to the original.
  const formats::CheckpointReader& qr = q->reader();
  std::vector<uint8_t> a, b;
  for (const std::string& t : q->other_tensors()) {
    covered.insert(t);
    const formats::TensorLocation* ql = qr.Find(t);
    if (!o.Contains(t)) {
      rep.problems.push_back(StrCat("tensor '", t, "' is not in the original"));
      continue;
    }
    const formats::TensorSpec& ol = o.Spec(t);
    if (const Fp8Weight* f = fp8.Find(t);
        f != nullptr && ql->info->dtype == "BF16" && ql->info->shape == ol.shape) {
      // An unquantized FP8 weight is written as its BF16 dequantization.
      ASSIGN_OR_RETURN(std::vector<uint8_t> want, ReadFp8AsBf16(o, t, *f));
      ASSIGN_OR_RETURN(std::vector<uint8_t> got, qr.ReadTensor(t));
      if (want == got) {
        ++rep.copied_identical;
      } else {
        rep.problems.push_back(
            StrCat("tensor '", t, "' differs from the BF16 dequantization of the FP8 original"));
      }
      continue;
    }
    if (ol.dtype != ql->info->dtype || ol.shape != ql->info->shape) {
      rep.problems.push_back(StrCat("tensor '", t, "' is ", ql->info->dtype, " ",
                                    ShapeString(ql->info->shape), " but the original is ",
                                    ol.dtype, " ", ShapeString(ol.shape)));
      continue;
    }
    const uint64_t size = o.ByteSize(t);
    const uint64_t chunk = std::min<uint64_t>(size, 8u << 20);
    a.resize(chunk);
    b.resize(chunk);
    bool same = true;
    for (uint64_t off = 0; off < size && same; off += chunk) {
      const uint64_t n = std::min(chunk, size - off);
      RETURN_IF_ERROR(o.ReadRange(t, off, {a.data(), n}));
      RETURN_IF_ERROR(qr.shards()[ql->shard]->ReadTensorRange(*ql->info, off, {b.data(), n}));
      same = std::memcmp(a.data(), b.data(), n) == 0;
    }
    if (same) {
      ++rep.copied_identical;
    } else {
      rep.problems.push_back(StrCat("tensor '", t, "' differs from the original"));
    }
  }
  for (const formats::TensorSpec& spec : o.specs()) {
    if (!covered.count(spec.name)) {
      rep.problems.push_back(StrCat("tensor '", spec.name, "' of the original is missing"));
    }
  }
  return rep;
}

}  // namespace nvfp4::pipeline
