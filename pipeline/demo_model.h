// Synthetic Llama-shaped checkpoints for demos, tests and benchmarks: config.json, tokenizer stub
// files, generation_config.json, and bf16 safetensors (optionally sharded with an index) holding
// embed_tokens, per-layer q/k/v/o/gate/up/down projections, input/post-attention norms, the final
// norm and lm_head. The mixture-of-experts preset (qwen3-30b-a3b-shape) has Qwen3-MoE's names
// instead of the dense MLP: `mlp.gate` (router), `mlp.experts.<e>.{gate,up,down}_proj`, and the
// q/k norms. Weights are deterministic Gaussian noise (std 0.02; norms around 1) for a seed,
// generated and written in chunks, so even the 8B-shaped preset (16 GB) is written streaming.
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
  int64_t head_dim() const { return explicit_head_dim > 0 ? explicit_head_dim : hidden / heads; }
  // Parameters and bf16 bytes of the checkpoint.
  int64_t parameters() const;
};

// "tiny" (~4 MB), "small" (~200 MB), "llama-8b-shape" (the Llama-3-8B shapes, ~16 GB),
// "qwen3-30b-a3b-shape" (Qwen3-30B-A3B: 48 layers x 128 experts, hidden 2048, expert intermediate
// 768, 32 query / 4 key-value heads of 128; ~61 GB, so DemoModelOptions::layers is the way to
// write a few of its layers).
absl::StatusOr<DemoPreset> DemoPresetByName(std::string_view name);
std::vector<std::string> DemoPresetNames();

// The tensors of a preset's checkpoint (bf16), in the order they are written.
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
  uint64_t tensor_bytes = 0;
  int64_t tensors = 0;
};

// Writes the demo checkpoint to `dir` (published atomically; ALREADY_EXISTS when `dir` exists and
// is not empty, unless overwrite).
absl::StatusOr<DemoModelResult> MakeDemoModel(const std::string& dir,
                                              const DemoModelOptions& options);

}  // namespace nvfp4::pipeline

#endif  // NVFP4_PIPELINE_DEMO_MODEL_H_
