#include "pipeline/demo_model.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "base/status_macros.h"
#include "base/str_util.h"
#include "formats/dtypes.h"
#include "formats/safetensors.h"
#include "formats/sharded.h"
#include "kernels/codec.h"
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
    // DeepSeek-V3, block FP8. After the Llama fields: experts, moe_intermediate,
    // experts_per_token, explicit_head_dim (unused), first_dense, q_lora_rank, kv_lora_rank,
    // qk_nope_dim, qk_rope_dim, v_head_dim. The tiny one has partial 128x128 edge blocks
    // (kv_a_proj_with_mqa N = 160, expert down_proj K = 192, ...).
    {"deepseek-v3-fp8-tiny", 256, 512, 2, 4, 4, 1024, 8, 192, 2, 0, 1, 96, 128, 64, 32, 64},
    // The real DeepSeek-V3 shapes, 3 layers (1 dense + 2 MoE) and 32 of its 256 routed experts.
    {"deepseek-v3-fp8-shape", 7168, 18432, 3, 128, 128, 129280, 32, 2048, 8, 0, 1, 1536, 512, 128,
     64, 128},
};

constexpr int64_t kFp8Block = 128;  // DeepSeek-V3's weight_block_size

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
  // kWeight: bf16 N(0, 0.02); kNorm: bf16 1 + N(0, 0.05); kBias: f32 N(0, 0.02);
  // kFp8: an F8_E4M3 weight (N(0, 0.02) quantized per 128x128 block), followed by its kScaleInv.
  enum class Kind { kWeight, kNorm, kBias, kFp8, kScaleInv };
  std::string name;
  std::vector<int64_t> shape;
  Kind kind = Kind::kWeight;

  const char* dtype() const {
    switch (kind) {
      case Kind::kFp8:
        return "F8_E4M3";
      case Kind::kBias:
      case Kind::kScaleInv:
        return "F32";
      default:
        return "BF16";
    }
  }
};

// A DeepSeek-V3 checkpoint's tensors (names as in deepseek-ai/DeepSeek-V3's safetensors).
std::vector<DemoTensor> DeepseekTensors(const DemoPreset& p) {
  using K = DemoTensor::Kind;
  const int64_t h = p.hidden;
  std::vector<DemoTensor> t;
  auto linear = [&](const std::string& name, int64_t n, int64_t k) {
    t.push_back({name + ".weight", {n, k}, K::kFp8});
    t.push_back({name + ".weight_scale_inv",
                 {(n + kFp8Block - 1) / kFp8Block, (k + kFp8Block - 1) / kFp8Block},
                 K::kScaleInv});
  };
  auto mlp = [&](const std::string& pre, int64_t inter) {
    linear(pre + "down_proj", h, inter);
    linear(pre + "gate_proj", inter, h);
    linear(pre + "up_proj", inter, h);
  };
  t.push_back({"model.embed_tokens.weight", {p.vocab, h}});
  for (int64_t l = 0; l < p.layers; ++l) {
    const std::string pre = StrCat("model.layers.", l, ".");
    t.push_back({pre + "input_layernorm.weight", {h}, K::kNorm});
    if (l < p.first_dense) {
      mlp(pre + "mlp.", p.intermediate);
    } else {
      for (int64_t e = 0; e < p.experts; ++e)
        mlp(StrCat(pre, "mlp.experts.", e, "."), p.moe_intermediate);
      t.push_back({pre + "mlp.gate.e_score_correction_bias", {p.experts}, K::kBias});
      t.push_back({pre + "mlp.gate.weight", {p.experts, h}});
      mlp(pre + "mlp.shared_experts.", p.moe_intermediate);
    }
    t.push_back({pre + "post_attention_layernorm.weight", {h}, K::kNorm});
    t.push_back({pre + "self_attn.kv_a_layernorm.weight", {p.kv_lora_rank}, K::kNorm});
    linear(pre + "self_attn.kv_a_proj_with_mqa", p.kv_lora_rank + p.qk_rope_dim, h);
    linear(pre + "self_attn.kv_b_proj", p.heads * (p.qk_nope_dim + p.v_head_dim), p.kv_lora_rank);
    linear(pre + "self_attn.o_proj", h, p.heads * p.v_head_dim);
    linear(pre + "self_attn.q_a_proj", p.q_lora_rank, h);
    t.push_back({pre + "self_attn.q_a_layernorm.weight", {p.q_lora_rank}, K::kNorm});
    linear(pre + "self_attn.q_b_proj", p.heads * (p.qk_nope_dim + p.qk_rope_dim), p.q_lora_rank);
  }
  t.push_back({"model.norm.weight", {h}, K::kNorm});
  t.push_back({"lm_head.weight", {p.vocab, h}});
  return t;
}

std::vector<DemoTensor> Tensors(const DemoPreset& p) {
  if (p.deepseek_fp8()) return DeepseekTensors(p);
  using K = DemoTensor::Kind;
  const int64_t h = p.hidden, kv = p.kv_heads * p.head_dim(), q = p.heads * p.head_dim();
  std::vector<DemoTensor> t;
  t.push_back({"model.embed_tokens.weight", {p.vocab, h}});
  for (int64_t l = 0; l < p.layers; ++l) {
    const std::string pre = StrCat("model.layers.", l, ".");
    t.push_back({pre + "input_layernorm.weight", {h}, K::kNorm});
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
    t.push_back({pre + "post_attention_layernorm.weight", {h}, K::kNorm});
    t.push_back({pre + "self_attn.k_proj.weight", {kv, h}});
    if (p.experts > 0) t.push_back({pre + "self_attn.k_norm.weight", {p.head_dim()}, K::kNorm});
    t.push_back({pre + "self_attn.o_proj.weight", {h, q}});
    t.push_back({pre + "self_attn.q_proj.weight", {q, h}});
    if (p.experts > 0) t.push_back({pre + "self_attn.q_norm.weight", {p.head_dim()}, K::kNorm});
    t.push_back({pre + "self_attn.v_proj.weight", {kv, h}});
  }
  t.push_back({"model.norm.weight", {h}, K::kNorm});
  t.push_back({"lm_head.weight", {p.vocab, h}});
  return t;
}

int64_t Numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

uint64_t TensorBytes(const DemoTensor& t) {
  return static_cast<uint64_t>(Numel(t.shape)) * *formats::SafetensorsDTypeSize(t.dtype());
}

// Fills `out` with elements [first, first + out.size()) of tensor `t` as fp32.
void Generate(const DemoTensor& t, uint64_t seed, int64_t first, std::span<float> out) {
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
      out[static_cast<size_t>(i)] =
          t.kind == DemoTensor::Kind::kNorm ? 1.0f + 0.05f * z : 0.02f * z;
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

// fp32 -> E4M3 ("fn") byte, round to nearest even, saturating at +-448.
uint8_t ToE4M3(float v) {
  const uint8_t sign = std::signbit(v) ? 0x80 : 0;
  const float a = std::fabs(v);
  if (!(a > kE4M3MinSubnormal / 2)) return sign;  // 2^-10 ties to even: zero
  return static_cast<uint8_t>(sign | EncodeE4M3Scale(a));
}

// Writes FP8 weight `t` ([N, K]) 128 rows at a time: N(0, 0.02) values, one scale per 128x128
// block (block amax / 448; 1 for an all-zero block), codes E4M3(v / scale). Returns the scales
// ([ceil(N/128), ceil(K/128)] f32 bytes) for the `weight_scale_inv` tensor that follows.
absl::StatusOr<std::vector<uint8_t>> WriteFp8Weight(const DemoTensor& t, uint64_t seed,
                                                    formats::SafetensorsWriter& w) {
  const int64_t n = t.shape[0], k = t.shape[1];
  const int64_t grid_cols = (k + kFp8Block - 1) / kFp8Block;
  std::vector<float> scales;
  std::vector<float> v;
  std::vector<uint8_t> codes;
  for (int64_t r0 = 0; r0 < n; r0 += kFp8Block) {
    const int64_t rows = std::min(kFp8Block, n - r0);
    v.resize(static_cast<size_t>(rows * k));
    codes.resize(v.size());
    Generate(t, seed, r0 * k, v);
    for (int64_t cb = 0; cb < grid_cols; ++cb) {
      const int64_t c0 = cb * kFp8Block, c1 = std::min(k, c0 + kFp8Block);
      float amax = 0;
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = c0; c < c1; ++c) amax = std::fmax(amax, std::fabs(v[r * k + c]));
      }
      const float scale = amax > 0 ? amax / kE4M3Max : 1.0f;
      scales.push_back(scale);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = c0; c < c1; ++c) codes[r * k + c] = ToE4M3(v[r * k + c] / scale);
      }
    }
    RETURN_IF_ERROR(w.AppendTensorData(t.name, codes));
  }
  std::vector<uint8_t> bytes(scales.size() * 4);
  std::memcpy(bytes.data(), scales.data(), bytes.size());
  return bytes;
}

nlohmann::ordered_json DeepseekConfig(const DemoPreset& p) {
  return {
      {"architectures", {"DeepseekV3ForCausalLM"}},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"bos_token_id", 1},
      {"eos_token_id", 2},
      {"first_k_dense_replace", p.first_dense},
      {"hidden_act", "silu"},
      {"hidden_size", p.hidden},
      {"initializer_range", 0.02},
      {"intermediate_size", p.intermediate},
      {"kv_lora_rank", p.kv_lora_rank},
      {"max_position_embeddings", 163840},
      {"model_type", "deepseek_v3"},
      {"moe_intermediate_size", p.moe_intermediate},
      {"moe_layer_freq", 1},
      {"n_group", p.experts >= 32 ? 8 : 2},
      {"n_routed_experts", p.experts},
      {"n_shared_experts", 1},
      {"norm_topk_prob", true},
      {"num_attention_heads", p.heads},
      {"num_experts_per_tok", p.experts_per_token},
      {"num_hidden_layers", p.layers},
      {"num_key_value_heads", p.kv_heads},
      {"num_nextn_predict_layers", 0},
      {"q_lora_rank", p.q_lora_rank},
      {"qk_nope_head_dim", p.qk_nope_dim},
      {"qk_rope_head_dim", p.qk_rope_dim},
      {"quantization_config",
       {{"activation_scheme", "dynamic"},
        {"fmt", "e4m3"},
        {"quant_method", "fp8"},
        {"weight_block_size", {kFp8Block, kFp8Block}}}},
      {"rms_norm_eps", 1e-06},
      {"rope_theta", 10000},
      {"routed_scaling_factor", 2.5},
      {"scoring_func", "sigmoid"},
      {"tie_word_embeddings", false},
      {"topk_group", p.experts >= 32 ? 4 : 1},
      {"topk_method", "noaux_tc"},
      {"torch_dtype", "bfloat16"},
      {"transformers_version", "4.44.0"},
      {"use_cache", true},
      {"v_head_dim", p.v_head_dim},
      {"vocab_size", p.vocab},
  };
}

// config.json: LlamaConfig's keys, Qwen3MoeConfig's for a mixture-of-experts preset, or
// DeepseekV3Config's with the FP8 quantization_config.
nlohmann::ordered_json ConfigJson(const DemoPreset& p) {
  if (p.deepseek_fp8()) return DeepseekConfig(p);
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
  for (const DemoTensor& t : Tensors(preset)) specs.push_back({t.name, t.dtype(), t.shape});
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
  for (const DemoTensor& t : tensors) total += TensorBytes(t);
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
        acc += TensorBytes(tensors[i]);
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
  std::vector<float> values;
  std::vector<uint8_t> buf;
  std::map<std::string, std::vector<uint8_t>> pending_scales;  // FP8 weight written, scale not yet
  for (int s = 0; s < n; ++s) {
    const std::string file =
        n == 1 ? std::string(formats::kSingleFileName) : formats::ShardFileName(s, n);
    std::vector<formats::TensorSpec> specs;
    for (size_t i : shards[s])
      specs.push_back({tensors[i].name, tensors[i].dtype(), tensors[i].shape});
    formats::SafetensorsWriter::Options wopts;
    wopts.sync = options.sync;
    ASSIGN_OR_RETURN(
        std::unique_ptr<formats::SafetensorsWriter> w,
        formats::SafetensorsWriter::Create((fs::path(staging) / file).string(), specs, wopts));
    for (size_t i : shards[s]) {
      const DemoTensor& t = tensors[i];
      weight_map[t.name] = file;
      if (t.kind == DemoTensor::Kind::kFp8) {
        ASSIGN_OR_RETURN(pending_scales[t.name + "_scale_inv"],
                         WriteFp8Weight(t, options.seed, *w));
        continue;
      }
      if (t.kind == DemoTensor::Kind::kScaleInv) {  // its weight precedes it (Tensors order)
        auto it = pending_scales.find(t.name);
        if (it == pending_scales.end()) return absl::InternalError(StrCat(t.name, ": no weight"));
        RETURN_IF_ERROR(w->WriteTensor(t.name, it->second));
        pending_scales.erase(it);
        continue;
      }
      const int64_t numel = Numel(t.shape);
      constexpr int64_t kChunk = 1 << 22;
      for (int64_t first = 0; first < numel; first += kChunk) {
        const int64_t m = std::min(kChunk, numel - first);
        values.resize(static_cast<size_t>(m));
        Generate(t, options.seed, first, values);
        if (t.kind == DemoTensor::Kind::kBias) {
          buf.resize(values.size() * 4);
          std::memcpy(buf.data(), values.data(), buf.size());
        } else {
          buf.resize(values.size() * 2);
          for (size_t j = 0; j < values.size(); ++j) {
            const uint16_t b = formats::FloatToBf16(values[j]);
            buf[2 * j] = static_cast<uint8_t>(b & 0xFF);
            buf[2 * j + 1] = static_cast<uint8_t>(b >> 8);
          }
        }
        RETURN_IF_ERROR(w->AppendTensorData(t.name, buf));
      }
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
