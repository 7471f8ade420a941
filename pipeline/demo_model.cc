#include "pipeline/demo_model.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "base/status_macros.h"
#include "base/str_util.h"
#include "formats/dtypes.h"
#include "formats/safetensors.h"
#include "formats/sharded.h"
#include "nlohmann/json.hpp"
#include "storage/directory.h"

namespace nvfp4::pipeline {
namespace {

namespace fs = std::filesystem;

const DemoPreset kPresets[] = {
    {"tiny", 256, 768, 2, 4, 2, 1024},
    {"small", 768, 2048, 8, 12, 4, 32000},
    {"llama-8b-shape", 4096, 14336, 32, 32, 8, 128256},
    {"qwen3-30b-a3b-shape", 2048, 6144, 48, 32, 4, 151936, /*experts=*/128,
     /*moe_intermediate=*/768, /*experts_per_token=*/8, /*explicit_head_dim=*/128},
};

uint64_t SplitMix(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t HashName(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (char c : s) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
  return h;
}

struct DemoTensor {
  std::string name;
  std::vector<int64_t> shape;
  bool norm = false;
};

std::vector<DemoTensor> Tensors(const DemoPreset& p) {
  const int64_t h = p.hidden, kv = p.kv_heads * p.head_dim(), q = p.heads * p.head_dim();
  std::vector<DemoTensor> t;
  t.push_back({"model.embed_tokens.weight", {p.vocab, h}});
  for (int64_t l = 0; l < p.layers; ++l) {
    const std::string pre = StrCat("model.layers.", l, ".");
    t.push_back({pre + "input_layernorm.weight", {h}, true});
    if (p.experts > 0) {  // Qwen3-MoE: router, then the experts in index order
      t.push_back({pre + "mlp.gate.weight", {p.experts, h}});
      for (int64_t e = 0; e < p.experts; ++e) {
        const std::string x = StrCat(pre, "mlp.experts.", e, ".");
        t.push_back({x + "down_proj.weight", {h, p.moe_intermediate}});
        t.push_back({x + "gate_proj.weight", {p.moe_intermediate, h}});
        t.push_back({x + "up_proj.weight", {p.moe_intermediate, h}});
      }
    } else {
      t.push_back({pre + "mlp.down_proj.weight", {h, p.intermediate}});
      t.push_back({pre + "mlp.gate_proj.weight", {p.intermediate, h}});
      t.push_back({pre + "mlp.up_proj.weight", {p.intermediate, h}});
    }
    t.push_back({pre + "post_attention_layernorm.weight", {h}, true});
    t.push_back({pre + "self_attn.k_proj.weight", {kv, h}});
    if (p.experts > 0) t.push_back({pre + "self_attn.k_norm.weight", {p.head_dim()}, true});
    t.push_back({pre + "self_attn.o_proj.weight", {h, q}});
    t.push_back({pre + "self_attn.q_proj.weight", {q, h}});
    if (p.experts > 0) t.push_back({pre + "self_attn.q_norm.weight", {p.head_dim()}, true});
    t.push_back({pre + "self_attn.v_proj.weight", {kv, h}});
  }
  t.push_back({"model.norm.weight", {h}, true});
  t.push_back({"lm_head.weight", {p.vocab, h}});
  return t;
}

int64_t Numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Fills `out` (bf16) with elements [first, first + out.size()) of tensor `t`.
void Generate(const DemoTensor& t, uint64_t seed, int64_t first, std::span<uint16_t> out) {
  // One independent stream per 4096-element block, so chunks can start anywhere.
  constexpr int64_t kBlock = 4096;
  const uint64_t base = seed * 0x9E3779B97F4A7C15ull ^ HashName(t.name);
  int64_t i = 0;
  const int64_t n = static_cast<int64_t>(out.size());
  while (i < n) {
    const int64_t e = first + i;
    const int64_t block = e / kBlock;
    uint64_t state = base + static_cast<uint64_t>(block) * 0xD1B54A32D192ED03ull;
    // Skip to the position inside the block (pairs of Box-Muller samples).
    const int64_t in_block = e % kBlock;
    for (int64_t s = 0; s < in_block / 2; ++s) SplitMix(state);
    bool have_second = false;
    float second = 0;
    if (in_block % 2 == 1) {
      const uint64_t r = SplitMix(state);
      const double u1 = (static_cast<double>(r >> 40) + 1.0) / 16777217.0;
      const double u2 = static_cast<double>(r & 0xFFFFFF) / 16777216.0;
      second = static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::sin(2 * M_PI * u2));
      have_second = true;
    }
    const int64_t end = std::min(n, i + (kBlock - in_block));
    for (; i < end; ++i) {
      float z;
      if (have_second) {
        z = second;
        have_second = false;
      } else {
        const uint64_t r = SplitMix(state);
        const double u1 = (static_cast<double>(r >> 40) + 1.0) / 16777217.0;
        const double u2 = static_cast<double>(r & 0xFFFFFF) / 16777216.0;
        const double rad = std::sqrt(-2.0 * std::log(u1));
        z = static_cast<float>(rad * std::cos(2 * M_PI * u2));
        second = static_cast<float>(rad * std::sin(2 * M_PI * u2));
        have_second = true;
      }
      const float v = t.norm ? 1.0f + 0.05f * z : 0.02f * z;
      out[static_cast<size_t>(i)] = formats::FloatToBf16(v);
    }
  }
}

absl::Status WriteText(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::InternalError(StrCat(path.string(), ": write failed"));
  return absl::OkStatus();
}

// config.json: LlamaConfig's keys, or Qwen3MoeConfig's for a mixture-of-experts preset.
nlohmann::ordered_json ConfigJson(const DemoPreset& p) {
  const bool moe = p.experts > 0;
  nlohmann::ordered_json config = {
      {"architectures", {moe ? "Qwen3MoeForCausalLM" : "LlamaForCausalLM"}},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"bos_token_id", 1},
      {"eos_token_id", 2},
      {"head_dim", p.head_dim()},
      {"hidden_act", "silu"},
      {"hidden_size", p.hidden},
      {"initializer_range", 0.02},
      {"intermediate_size", p.intermediate},
      {"max_position_embeddings", moe ? 40960 : 8192},
      {"model_type", moe ? "qwen3_moe" : "llama"},
      {"num_attention_heads", p.heads},
      {"num_hidden_layers", p.layers},
      {"num_key_value_heads", p.kv_heads},
      {"rms_norm_eps", moe ? 1e-06 : 1e-05},
      {"rope_scaling", nullptr},
      {"rope_theta", moe ? 1000000.0 : 500000.0},
      {"tie_word_embeddings", false},
      {"torch_dtype", "bfloat16"},
      {"transformers_version", moe ? "4.51.0" : "4.44.0"},
      {"use_cache", true},
      {"vocab_size", p.vocab},
  };
  if (moe) {
    config["decoder_sparse_step"] = 1;
    config["mlp_only_layers"] = nlohmann::ordered_json::array();
    config["moe_intermediate_size"] = p.moe_intermediate;
    config["norm_topk_prob"] = true;
    config["num_experts"] = p.experts;
    config["num_experts_per_tok"] = p.experts_per_token;
    config["output_router_logits"] = false;
    config["router_aux_loss_coef"] = 0.001;
  } else {
    config["mlp_bias"] = false;
    config["pretraining_tp"] = 1;
  }
  return config;
}

absl::Status WriteSideFiles(const fs::path& dir, const DemoPreset& p) {
  const nlohmann::ordered_json config = ConfigJson(p);
  RETURN_IF_ERROR(WriteText(dir / "config.json", config.dump(2) + "\n"));
  nlohmann::ordered_json gen = {{"bos_token_id", 1}, {"eos_token_id", 2},
                                {"do_sample", true}, {"temperature", 0.6},
                                {"top_p", 0.9},      {"transformers_version", "4.44.0"}};
  RETURN_IF_ERROR(WriteText(dir / "generation_config.json", gen.dump(2) + "\n"));
  nlohmann::ordered_json tok_cfg = {{"bos_token", "<s>"},
                                    {"eos_token", "</s>"},
                                    {"unk_token", "<unk>"},
                                    {"model_max_length", 8192},
                                    {"tokenizer_class", "PreTrainedTokenizerFast"}};
  RETURN_IF_ERROR(WriteText(dir / "tokenizer_config.json", tok_cfg.dump(2) + "\n"));
  nlohmann::ordered_json special = {
      {"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"}};
  RETURN_IF_ERROR(WriteText(dir / "special_tokens_map.json", special.dump(2) + "\n"));
  // A minimal word-level tokenizer.json (a stub: the demo model is not meant to produce text).
  nlohmann::ordered_json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  nlohmann::ordered_json tok = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens",
       nlohmann::ordered_json::array({{{"id", 0}, {"content", "<unk>"}, {"special", true}},
                                      {{"id", 1}, {"content", "<s>"}, {"special", true}},
                                      {{"id", 2}, {"content", "</s>"}, {"special", true}}})},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "Whitespace"}}},
      {"post_processor", nullptr},
      {"decoder", nullptr},
      {"model", {{"type", "WordLevel"}, {"vocab", vocab}, {"unk_token", "<unk>"}}}};
  return WriteText(dir / "tokenizer.json", tok.dump(2) + "\n");
}

}  // namespace

int64_t DemoPreset::parameters() const {
  int64_t n = 0;
  for (const DemoTensor& t : Tensors(*this)) n += Numel(t.shape);
  return n;
}

std::vector<formats::TensorSpec> DemoTensorSpecs(const DemoPreset& preset) {
  std::vector<formats::TensorSpec> specs;
  for (const DemoTensor& t : Tensors(preset)) specs.push_back({t.name, "BF16", t.shape});
  return specs;
}

std::vector<std::string> DemoPresetNames() {
  std::vector<std::string> names;
  for (const DemoPreset& p : kPresets) names.push_back(p.name);
  return names;
}

absl::StatusOr<DemoPreset> DemoPresetByName(std::string_view name) {
  for (const DemoPreset& p : kPresets) {
    if (p.name == name) return p;
  }
  std::string names;
  for (const DemoPreset& p : kPresets) names += (names.empty() ? "" : ", ") + p.name;
  return absl::InvalidArgumentError(StrCat("unknown preset '", name, "' (expected ", names, ")"));
}

absl::StatusOr<DemoModelResult> MakeDemoModel(const std::string& dir,
                                              const DemoModelOptions& options) {
  ASSIGN_OR_RETURN(DemoPreset preset, DemoPresetByName(options.preset));
  if (options.layers < 0 || options.layers > preset.layers) {
    return absl::InvalidArgumentError(StrCat("--layers must be between 1 and ", preset.layers,
                                             " for preset ", preset.name, " (0: all)"));
  }
  if (options.layers > 0) preset.layers = options.layers;
  const std::vector<DemoTensor> tensors = Tensors(preset);
  if (options.shards < 1 || options.shards > static_cast<int>(tensors.size())) {
    return absl::InvalidArgumentError(
        StrCat("--shards must be between 1 and ", tensors.size(), " for preset ", preset.name));
  }
  DemoModelResult result;
  result.preset = preset;
  result.tensors = static_cast<int64_t>(tensors.size());
  uint64_t total = 0;
  for (const DemoTensor& t : tensors) total += 2 * static_cast<uint64_t>(Numel(t.shape));
  result.tensor_bytes = total;

  ASSIGN_OR_RETURN(std::unique_ptr<storage::StagedOutputDirectory> out_dir,
                   storage::OpenLocalOutputDirectory(dir, options.overwrite));
  storage::StagedOutputDirectory& out = *out_dir;
  ASSIGN_OR_RETURN(std::string staging, out.Begin());

  // Contiguous shards of about total/N bytes each.
  const int n = options.shards;
  // Shard k starts at the first tensor whose preceding bytes reach k * total / n (each shard gets
  // at least one tensor).
  std::vector<size_t> start(n + 1, 0);
  start[n] = tensors.size();
  {
    uint64_t acc = 0;
    size_t i = 0;
    for (int k = 1; k < n; ++k) {
      const double target = static_cast<double>(total) * k / n;
      while (i < tensors.size() && static_cast<double>(acc) < target) {
        acc += 2 * static_cast<uint64_t>(Numel(tensors[i].shape));
        ++i;
      }
      start[k] = std::clamp(i, start[k - 1] + 1, tensors.size() - static_cast<size_t>(n - k));
    }
  }
  std::vector<std::vector<size_t>> shards(n);
  for (int k = 0; k < n; ++k) {
    for (size_t i = start[k]; i < start[k + 1]; ++i) shards[k].push_back(i);
  }
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  std::vector<uint16_t> buf;
  for (int s = 0; s < n; ++s) {
    const std::string file =
        n == 1 ? std::string(formats::kSingleFileName) : formats::ShardFileName(s, n);
    std::vector<formats::TensorSpec> specs;
    for (size_t i : shards[s]) specs.push_back({tensors[i].name, "BF16", tensors[i].shape});
    formats::SafetensorsWriter::Options wopts;
    wopts.sync = options.sync;
    ASSIGN_OR_RETURN(
        std::unique_ptr<formats::SafetensorsWriter> w,
        formats::SafetensorsWriter::Create((fs::path(staging) / file).string(), specs, wopts));
    for (size_t i : shards[s]) {
      const DemoTensor& t = tensors[i];
      const int64_t numel = Numel(t.shape);
      constexpr int64_t kChunk = 1 << 22;
      for (int64_t first = 0; first < numel; first += kChunk) {
        const int64_t m = std::min(kChunk, numel - first);
        buf.resize(static_cast<size_t>(m));
        Generate(t, options.seed, first, buf);
        RETURN_IF_ERROR(w->AppendTensorData(
            t.name, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(buf.data()),
                                             buf.size() * 2)));
      }
      weight_map[t.name] = file;
    }
    RETURN_IF_ERROR(w->Finish());
    result.files.push_back(file);
  }
  if (n > 1) {
    nlohmann::ordered_json index = {{"metadata", {{"total_size", total}}},
                                    {"weight_map", weight_map}};
    RETURN_IF_ERROR(WriteText(fs::path(staging) / formats::kIndexFileName, index.dump(2) + "\n"));
    result.files.push_back(std::string(formats::kIndexFileName));
  }
  RETURN_IF_ERROR(WriteSideFiles(staging, preset));
  for (const char* f : {"config.json", "generation_config.json", "tokenizer_config.json",
                        "special_tokens_map.json", "tokenizer.json"}) {
    result.files.push_back(f);
  }
  RETURN_IF_ERROR(out.Commit());
  return result;
}

}  // namespace nvfp4::pipeline
