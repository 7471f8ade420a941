#include "server/model_pipeline.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "base/status_macros.h"
#include "formats/dtypes.h"
#include "formats/random_access_source.h"
#include "formats/safetensors.h"
#include "formats/sharded.h"
#include "nlohmann/json.hpp"
#include "nvfp4/v1/convert.h"

namespace nvfp4::server {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr char kProducerVersion[] = "0.1.0";

// A RandomAccessSource over one object of an ObjectStore (ranged GETs for S3).
class StoreSource : public formats::RandomAccessSource {
 public:
  StoreSource(ObjectStore* store, std::string uri, uint64_t size)
      : store_(store), uri_(std::move(uri)), size_(size) {}
  absl::StatusOr<uint64_t> Size() override { return size_; }
  absl::Status ReadAt(uint64_t offset, std::span<uint8_t> out) override {
    if (offset + out.size() > size_) {
      return absl::OutOfRangeError(absl::StrCat(uri_, ": read past the end"));
    }
    return store_->ReadAt(uri_, static_cast<int64_t>(offset), static_cast<int64_t>(out.size()),
                          reinterpret_cast<char*>(out.data()));
  }
  std::string Describe() override { return uri_; }

 private:
  ObjectStore* store_;
  std::string uri_;
  uint64_t size_;
};

// Incremental sha256.
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  void Update(const void* p, size_t n) { EVP_DigestUpdate(ctx_, p, n); }
  std::string HexDigest() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_, md, &len);
    std::string out;
    for (unsigned int i = 0; i < len; ++i) absl::StrAppendFormat(&out, "%02x", md[i]);
    return out;
  }

 private:
  EVP_MD_CTX* ctx_;
};

std::string ModuleOf(const std::string& weight_name) {
  return weight_name.substr(0, weight_name.size() - std::string(".weight").size());
}

// Default exclusions (docs/CHECKPOINTS.md "What is not quantized by default").
bool DefaultExcluded(const std::string& module) {
  static const std::regex kExclude(
      R"((^|.*\.)(lm_head|embed_tokens|embeddings?|wte|wpe|.*norm.*|router|shared_expert_gate|)"
      R"(vision_tower|visual|vision_model|multi_modal_projector|mtp|conv1d)(\..*|$))"
      R"(|.*\.mlp\.gate$|.*\.block_sparse_moe\.gate$|.*\.output$|^output$)");
  return std::regex_match(module, kExclude);
}

// Fused-group key of a module: modules sharing a key share one global scale.
std::string GroupKey(const std::string& module) {
  size_t dot = module.rfind('.');
  std::string parent = dot == std::string::npos ? "" : module.substr(0, dot);
  std::string leaf = dot == std::string::npos ? module : module.substr(dot + 1);
  if (leaf == "q_proj" || leaf == "k_proj" || leaf == "v_proj") return parent + ".<qkv>";
  if (leaf == "gate_proj" || leaf == "up_proj") return parent + ".<gate_up>";
  if (leaf == "w1" || leaf == "w3") return parent + ".<w1w3>";
  return module;
}

struct Plan {
  // Groups of source tensor indices (into reader->tensors()), quantized together.
  std::vector<std::vector<size_t>> quantized_groups;
  std::vector<size_t> copied;
  std::vector<std::string> excluded_modules;  // Linear-like weights left unquantized
};

class CheckpointPipeline : public ModelPipeline {
 public:
  explicit CheckpointPipeline(std::string scratch) : scratch_(std::move(scratch)) {
    if (scratch_.empty()) scratch_ = (fs::temp_directory_path() / "nvfp4d-staging").string();
  }

  absl::Status Validate(const v1::QuantizeModelRequest& r) override {
    if (r.input_uri().empty()) return absl::InvalidArgumentError("input_uri is required");
    if (r.output_uri().empty()) return absl::InvalidArgumentError("output_uri is required");
    RETURN_IF_ERROR(ParseStorageUri(r.input_uri()).status());
    RETURN_IF_ERROR(ParseStorageUri(r.output_uri()).status());
    if (!r.calibration_uri().empty())
      RETURN_IF_ERROR(ParseStorageUri(r.calibration_uri()).status());
    if (r.input_uri() == r.output_uri()) {
      return absl::InvalidArgumentError("output_uri must differ from input_uri");
    }
    if (r.layout() != v1::LAYOUT_UNSPECIFIED && r.layout() != v1::LAYOUT_MODELOPT &&
        r.layout() != v1::LAYOUT_COMPRESSED_TENSORS) {
      return absl::InvalidArgumentError(absl::StrCat("unknown layout ", r.layout()));
    }
    RETURN_IF_ERROR(v1::FromProto(r.options()).status());
    for (const auto* list : {&r.include_patterns(), &r.exclude_patterns()}) {
      for (const std::string& p : *list) {
        try {
          std::regex re(p);
        } catch (const std::regex_error& e) {
          return absl::InvalidArgumentError(absl::StrCat("bad pattern '", p, "': ", e.what()));
        }
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<v1::OutputFile>> Run(const ModelJobContext& ctx) override;

 private:
  std::string scratch_;
};

absl::StatusOr<std::unique_ptr<formats::CheckpointReader>> OpenInput(
    ObjectStore* store, const std::string& input, std::vector<ObjectInfo>* files) {
  ASSIGN_OR_RETURN(*files, store->List(input));
  auto find = [&](std::string_view name) -> const ObjectInfo* {
    for (const ObjectInfo& f : *files) {
      if (f.name == name) return &f;
    }
    return nullptr;
  };
  if (const ObjectInfo* index = find(formats::kIndexFileName)) {
    ASSIGN_OR_RETURN(std::string text, store->ReadAll(JoinUri(input, index->name)));
    return formats::CheckpointReader::OpenSharded(
        text, JoinUri(input, index->name),
        [&](const std::string& name)
            -> absl::StatusOr<std::unique_ptr<formats::RandomAccessSource>> {
          const ObjectInfo* f = find(name);
          if (f == nullptr)
            return absl::NotFoundError(absl::StrCat(JoinUri(input, name), " not found"));
          return std::make_unique<StoreSource>(store, JoinUri(input, name), f->size);
        });
  }
  std::vector<const ObjectInfo*> st;
  for (const ObjectInfo& f : *files) {
    if (absl::EndsWith(f.name, ".safetensors") && f.name.find('/') == std::string::npos) {
      st.push_back(&f);
    }
  }
  if (st.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input ", input, ": expected ", std::string(formats::kIndexFileName),
        " or exactly one .safetensors file, found ", st.size(), " .safetensors files"));
  }
  return formats::CheckpointReader::OpenSingle(
      std::make_unique<StoreSource>(store, JoinUri(input, st[0]->name), st[0]->size));
}

Plan MakePlan(const formats::CheckpointReader& reader, const v1::QuantizeModelRequest& r) {
  std::vector<std::regex> include, exclude;
  for (const std::string& p : r.include_patterns()) include.emplace_back(p);
  for (const std::string& p : r.exclude_patterns()) exclude.emplace_back(p);
  auto matches = [](const std::vector<std::regex>& res, const std::string& m) {
    return std::any_of(res.begin(), res.end(),
                       [&](const std::regex& re) { return std::regex_match(m, re); });
  };
  Plan plan;
  std::map<std::string, std::vector<size_t>> groups;  // key -> candidate indices
  std::vector<std::string> group_order;
  const auto& tensors = reader.tensors();
  std::vector<bool> eligible(tensors.size(), false);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const formats::TensorInfo& t = *tensors[i].info;
    if (!absl::EndsWith(t.name, ".weight") || t.shape.size() != 2) continue;
    const std::string module = ModuleOf(t.name);
    const bool shape_ok =
        formats::IsQuantizableDType(t.dtype) && t.shape[1] % 16 == 0 && t.shape[0] > 0;
    bool selected = shape_ok && (!DefaultExcluded(module) || matches(include, module)) &&
                    !matches(exclude, module);
    eligible[i] = selected;
    const std::string key = GroupKey(module);
    if (!groups.count(key)) group_order.push_back(key);
    groups[key].push_back(i);
  }
  std::set<size_t> quantized;
  for (const std::string& key : group_order) {
    const std::vector<size_t>& members = groups[key];
    // Fused groups are all quantized or all excluded.
    const bool all =
        std::all_of(members.begin(), members.end(), [&](size_t i) { return eligible[i]; });
    if (all) {
      plan.quantized_groups.push_back(members);
      quantized.insert(members.begin(), members.end());
    } else {
      for (size_t i : members) plan.excluded_modules.push_back(ModuleOf(tensors[i].info->name));
    }
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!quantized.count(i)) plan.copied.push_back(i);
  }
  return plan;
}

json QuantizationConfig(bool modelopt, const std::vector<std::string>& ignore) {
  json producer = {{"name", "nvfp4d"}, {"version", kProducerVersion}};
  if (modelopt) {
    return {{"quant_method", "modelopt"},
            {"quant_algo", "W4A16_NVFP4"},
            {"group_size", 16},
            {"ignore", ignore},
            {"producer", producer},
            {"config_groups",
             {{"group_0",
               {{"weights",
                 {{"dynamic", false}, {"num_bits", 4}, {"type", "float"}, {"group_size", 16}}},
                {"targets", {"Linear"}}}}}}};
  }
  return {{"quant_method", "compressed-tensors"},
          {"format", "nvfp4-pack-quantized"},
          {"quantization_status", "compressed"},
          {"ignore", ignore},
          {"config_groups",
           {{"group_0",
             {{"format", "nvfp4-pack-quantized"},
              {"targets", {"Linear"}},
              {"weights",
               {{"num_bits", 4},
                {"type", "float"},
                {"symmetric", true},
                {"group_size", 16},
                {"strategy", "tensor_group"},
                {"dynamic", false}}},
              {"input_activations", nullptr}}}}}};
}

// Copies a local staged file into the store, computing size and sha256.
absl::StatusOr<v1::OutputFile> Publish(ObjectStore* store, const fs::path& local,
                                       const std::string& output_uri, const std::string& name) {
  v1::OutputFile out;
  out.set_name(name);
  out.set_uri(JoinUri(output_uri, name));
  ASSIGN_OR_RETURN(std::unique_ptr<ObjectWriter> w, store->OpenWrite(out.uri()));
  std::ifstream in(local, std::ios::binary);
  if (!in) return absl::InternalError(absl::StrCat("cannot open staged file ", local.string()));
  Sha256 sha;
  std::string buf(8 << 20, '\0');
  int64_t total = 0;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const std::streamsize n = in.gcount();
    if (n <= 0) break;
    sha.Update(buf.data(), static_cast<size_t>(n));
    RETURN_IF_ERROR(w->Append(absl::string_view(buf.data(), static_cast<size_t>(n))));
    total += n;
  }
  RETURN_IF_ERROR(w->Commit());
  out.set_size_bytes(total);
  out.set_sha256(sha.HexDigest());
  return out;
}

absl::StatusOr<v1::OutputFile> PublishBytes(ObjectStore* store, const std::string& data,
                                            const std::string& output_uri,
                                            const std::string& name) {
  v1::OutputFile out;
  out.set_name(name);
  out.set_uri(JoinUri(output_uri, name));
  RETURN_IF_ERROR(store->WriteAll(out.uri(), data));
  Sha256 sha;
  sha.Update(data.data(), data.size());
  out.set_size_bytes(static_cast<int64_t>(data.size()));
  out.set_sha256(sha.HexDigest());
  return out;
}

absl::StatusOr<std::vector<v1::OutputFile>> CheckpointPipeline::Run(const ModelJobContext& ctx) {
  const v1::QuantizeModelRequest& r = *ctx.request;
  ObjectStore* store = ctx.store;
  const bool modelopt = r.layout() != v1::LAYOUT_COMPRESSED_TENSORS;
  ASSIGN_OR_RETURN(nvfp4::QuantizeOptions qopts, v1::FromProto(r.options()));
  std::vector<ObjectInfo> input_files;
  ASSIGN_OR_RETURN(std::unique_ptr<formats::CheckpointReader> reader,
                   OpenInput(store, r.input_uri(), &input_files));
  const auto& tensors = reader->tensors();
  Plan plan = MakePlan(*reader, r);
  ctx.progress->SetTotals(static_cast<int64_t>(tensors.size()),
                          static_cast<int64_t>(reader->total_size()));

  // Output tensor specs.
  std::vector<formats::TensorSpec> specs;
  for (const auto& group : plan.quantized_groups) {
    for (size_t i : group) {
      const formats::TensorInfo& t = *tensors[i].info;
      const std::string m = ModuleOf(t.name);
      const int64_t n = t.shape[0], k = t.shape[1];
      specs.push_back({m + (modelopt ? ".weight" : ".weight_packed"), "U8", {n, k / 2}});
      specs.push_back({m + ".weight_scale", "F8_E4M3", {n, k / 16}});
      if (modelopt) {
        specs.push_back({m + ".weight_scale_2", "F32", {}});
      } else {
        specs.push_back({m + ".weight_global_scale", "F32", {1}});
      }
    }
  }
  for (size_t i : plan.copied) {
    const formats::TensorInfo& t = *tensors[i].info;
    specs.push_back({t.name, t.dtype, t.shape});
  }

  const fs::path staging = fs::path(scratch_) / ctx.job_id;
  std::error_code ec;
  fs::remove_all(staging, ec);
  fs::create_directories(staging, ec);
  if (ec)
    return absl::InternalError(absl::StrCat("staging dir ", staging.string(), ": ", ec.message()));
  struct Cleanup {
    fs::path p;
    ~Cleanup() {
      std::error_code e;
      fs::remove_all(p, e);
    }
  } cleanup{staging};

  formats::ShardedCheckpointWriter::Options wopts;
  wopts.sync = false;  // staging only; the published copies are synced by the store
  ASSIGN_OR_RETURN(auto writer,
                   formats::ShardedCheckpointWriter::Create(staging.string(), specs, wopts));

  // Quantized groups.
  for (const auto& group : plan.quantized_groups) {
    if (ctx.progress->Cancelled()) return absl::CancelledError("job cancelled");
    ctx.progress->TensorStarted(tensors[group.front()].info->name);
    std::vector<std::vector<uint8_t>> buffers;
    std::vector<nvfp4::TensorView> views;
    int64_t bytes_in = 0;
    for (size_t i : group) {
      const formats::TensorInfo& t = *tensors[i].info;
      std::vector<uint8_t> buf(t.size);
      RETURN_IF_ERROR(reader->ReadTensor(tensors[i], buf));
      bytes_in += static_cast<int64_t>(t.size);
      buffers.push_back(std::move(buf));
    }
    for (size_t j = 0; j < group.size(); ++j) {
      const formats::TensorInfo& t = *tensors[group[j]].info;
      nvfp4::TensorView v;
      v.name = t.name;
      v.dtype = *formats::ToKernelDType(t.dtype);
      v.shape = t.shape;
      v.data = buffers[j].data();
      views.push_back(std::move(v));
    }
    std::vector<nvfp4::QuantizedTensor> out;
    std::string device;
    double seconds = 0;
    {
      ASSIGN_OR_RETURN(DevicePool::Lease lease,
                       ctx.devices->Acquire([&] { return ctx.progress->Cancelled(); }));
      device = lease.backend()->name();
      const absl::Time t0 = absl::Now();
      ASSIGN_OR_RETURN(out, lease.backend()->QuantizeGroup(views, qopts, {}));
      seconds = absl::ToDoubleSeconds(absl::Now() - t0);
    }
    buffers.clear();
    for (size_t j = 0; j < group.size(); ++j) {
      const nvfp4::QuantizedTensor& q = out[j];
      const std::string m = ModuleOf(views[j].name);
      RETURN_IF_ERROR(writer->WriteTensor(m + (modelopt ? ".weight" : ".weight_packed"), q.packed));
      RETURN_IF_ERROR(writer->WriteTensor(m + ".weight_scale", q.scales));
      const float g = modelopt ? q.global_scale : 1.0f / q.global_scale;
      uint8_t gb[4];
      std::memcpy(gb, &g, 4);
      RETURN_IF_ERROR(
          writer->WriteTensor(m + (modelopt ? ".weight_scale_2" : ".weight_global_scale"), gb));
      v1::TensorResult res;
      res.set_name(views[j].name);
      res.set_quantized(true);
      for (int64_t d : views[j].shape) res.add_shape(d);
      v1::ToProto(q.metrics, res.mutable_metrics());
      res.set_quantize_seconds(seconds / static_cast<double>(group.size()));
      res.set_device(device);
      const int64_t in_bytes = static_cast<int64_t>(tensors[group[j]].info->size);
      ctx.progress->TensorFinished(res, in_bytes,
                                   static_cast<int64_t>(q.packed.size() + q.scales.size() + 4));
    }
    (void)bytes_in;
  }

  // Copied tensors, in bounded chunks.
  std::vector<uint8_t> chunk;
  for (size_t i : plan.copied) {
    if (ctx.progress->Cancelled()) return absl::CancelledError("job cancelled");
    const formats::TensorInfo& t = *tensors[i].info;
    ctx.progress->TensorStarted(t.name);
    const formats::SafetensorsReader& shard = *reader->shards()[tensors[i].shard];
    for (uint64_t off = 0; off < t.size; off += 16 << 20) {
      chunk.resize(std::min<uint64_t>(16 << 20, t.size - off));
      RETURN_IF_ERROR(shard.ReadTensorRange(t, off, chunk));
      RETURN_IF_ERROR(writer->AppendTensorData(t.name, chunk));
    }
    v1::TensorResult res;
    res.set_name(t.name);
    for (int64_t d : t.shape) res.add_shape(d);
    ctx.progress->TensorFinished(res, static_cast<int64_t>(t.size), static_cast<int64_t>(t.size));
  }
  RETURN_IF_ERROR(writer->Finish());
  if (ctx.progress->Cancelled()) return absl::CancelledError("job cancelled");

  // Publish: shards first, then the index, then the configs (a reader keys on those).
  std::vector<v1::OutputFile> outputs;
  std::vector<std::string> staged;
  for (const auto& entry : fs::directory_iterator(staging))
    staged.push_back(entry.path().filename().string());
  std::sort(staged.begin(), staged.end(), [](const std::string& a, const std::string& b) {
    const bool ai = absl::EndsWith(a, ".json"), bi = absl::EndsWith(b, ".json");
    return ai != bi ? bi : a < b;
  });
  for (const std::string& name : staged) {
    ASSIGN_OR_RETURN(v1::OutputFile f, Publish(store, staging / name, r.output_uri(), name));
    outputs.push_back(std::move(f));
  }
  std::vector<std::string> ignore = plan.excluded_modules;
  std::sort(ignore.begin(), ignore.end());
  if (ignore.empty()) ignore.push_back("lm_head");
  // Other input files: copied unchanged (config.json gets the quantization_config).
  for (const ObjectInfo& f : input_files) {
    if (absl::EndsWith(f.name, ".safetensors") || f.name == formats::kIndexFileName) continue;
    if (ctx.progress->Cancelled()) return absl::CancelledError("job cancelled");
    ASSIGN_OR_RETURN(std::string data, store->ReadAll(JoinUri(r.input_uri(), f.name)));
    if (f.name == "config.json") {
      json config = json::parse(data, nullptr, false);
      if (config.is_discarded() || !config.is_object()) {
        return absl::InvalidArgumentError(
            absl::StrCat(JoinUri(r.input_uri(), f.name), ": not a JSON object"));
      }
      config["quantization_config"] = QuantizationConfig(modelopt, ignore);
      data = config.dump(2) + "\n";
    }
    ASSIGN_OR_RETURN(v1::OutputFile o, PublishBytes(store, data, r.output_uri(), f.name));
    outputs.push_back(std::move(o));
  }
  if (modelopt) {
    json hf = {{"producer", {{"name", "modelopt"}, {"version", kProducerVersion}}},
               {"quantization",
                {{"quant_algo", "NVFP4"},
                 {"kv_cache_quant_algo", nullptr},
                 {"group_size", 16},
                 {"exclude_modules", ignore}}}};
    ASSIGN_OR_RETURN(v1::OutputFile o, PublishBytes(store, hf.dump(2) + "\n", r.output_uri(),
                                                    "hf_quant_config.json"));
    outputs.push_back(std::move(o));
  }
  return outputs;
}

}  // namespace

std::unique_ptr<ModelPipeline> MakeCheckpointPipeline(std::string scratch_dir) {
  return std::make_unique<CheckpointPipeline>(std::move(scratch_dir));
}

}  // namespace nvfp4::server
