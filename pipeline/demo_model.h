// Synthetic Llama-shaped checkpoints for demos, tests and benchmarks: config.json, tokenizer stub
// files, generation_config.json, and bf16 safetensors (optionally sharded with an index) holding
// embed_tokens, per-layer q/k/v/o/gate/up/down projections, input/post-attention norms, the final
// norm and lm_head. The mixture-of-experts preset (qwen3-30b-a3b-shape) has Qwen3-MoE's names
// instead of the dense MLP: `mlp.gate` (router), `mlp.experts.<e>.{gate,up,down}_proj`, and the
// q/k norms. Weights are deterministic Gaussian noise (std 0.02; norms around 1) for a seed,
// generated and written in chunks, so even the 8B-shaped preset (16 GB) is written streaming.
// The DeepSeek-V3 presets (deepseek-v3-fp8-*) are block FP8 as DeepSeek ships it
// (docs/CHECKPOINTS.md "FP8 sources"): MLA attention (q_a/q_b/kv_a_proj_with_mqa/kv_b/o_proj),
// `first_dense` dense MLP layers, then MoE layers (mlp.gate router + e_score_correction_bias,
// `experts` routed experts, one shared expert). Every Linear weight is F8_E4M3 with a
// `weight_scale_inv` F32 per 128x128 block (scale = block amax / 448, codes rounded to nearest
// even); embeddings, norms, routers and lm_head are bf16, the correction bias f32; config.json
// carries the FP8 quantization_config.
#ifndef NVFP4_PIPELINE_DEMO_MODEL_H_
#define NVFP4_PIPELINE_DEMO_MODEL_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "formats/safetensors.h"

namespace nvfp4::pipeline {

struct DemoPreset {
  std::string name;
  int64_t hidden = 0, intermediate = 0, layers = 0, heads = 0, kv_heads = 0, vocab = 0;
  // Mixture of experts (Qwen3-MoE names): routed experts per layer (0: a dense Llama MLP) and
  // each expert's intermediate size.
  int64_t experts = 0, moe_intermediate = 0, experts_per_token = 0;
  int64_t explicit_head_dim = 0;  // 0: hidden / heads
  // DeepSeek-V3 (kv_lora_rank > 0): dense layers before the MoE ones and the MLA dimensions.
  int64_t first_dense = 0, q_lora_rank = 0, kv_lora_rank = 0, qk_nope_dim = 0, qk_rope_dim = 0,
          v_head_dim = 0;
  bool deepseek_fp8() const { return kv_lora_rank > 0; }
  int64_t head_dim() const { return explicit_head_dim > 0 ? explicit_head_dim : hidden / heads; }
  // Parameters and bf16 bytes of the checkpoint.
  int64_t parameters() const;
};

// "tiny" (~4 MB), "small" (~200 MB), "llama-8b-shape" (the Llama-3-8B shapes, ~16 GB),
// "qwen3-30b-a3b-shape" (Qwen3-30B-A3B: 48 layers x 128 experts, hidden 2048, expert intermediate
// 768, 32 query / 4 key-value heads of 128; ~61 GB, so DemoModelOptions::layers is the way to
// write a few of its layers), "deepseek-v3-fp8-tiny" (2 layers, hidden 256, 8 experts, ~3 MB),
// "deepseek-v3-fp8-shape" (the DeepSeek-V3 shapes: hidden 7168, 128 heads, q/kv LoRA ranks
// 1536/512, dense intermediate 18432, MoE intermediate 2048, vocab 129280; 3 layers: 1 dense + 2
// MoE with 32 routed experts instead of 256 and 1 shared expert; ~3.9 GB of FP8 weights + 3.7 GB
// of bf16 embeddings/lm_head).
absl::StatusOr<DemoPreset> DemoPresetByName(std::string_view name);
std::vector<std::string> DemoPresetNames();

// The tensors of a preset's checkpoint (their dtypes), in the order they are written.
std::vector<formats::TensorSpec> DemoTensorSpecs(const DemoPreset& preset);

struct DemoModelOptions {
  std::string preset = "tiny";
  uint64_t seed = 0;
  int shards = 1;     // 1: model.safetensors; N > 1: model-0000i-of-0000N + index
  int64_t layers = 0;  // > 0: only the first `layers` layers (config.json says so); 0: all
  bool sync = false;  // fdatasync the files
  bool overwrite = false;
};

struct DemoModelResult {
  DemoPreset preset;
  std::vector<std::string> files;
  uint64_t tensor_bytes = 0;  // all tensors as stored (FP8 weights 1 byte per element)
  int64_t tensors = 0;
};

// Writes the demo checkpoint to `dir` (published atomically; ALREADY_EXISTS when `dir` exists and
// is not empty, unless overwrite).
absl::StatusOr<DemoModelResult> MakeDemoModel(const std::string& dir,
                                              const DemoModelOptions& options);

}  // namespace nvfp4::pipeline

#endif  // NVFP4_PIPELINE_DEMO_MODEL_H_
