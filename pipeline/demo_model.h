// Synthetic Llama-shaped checkpoints for demos, tests and benchmarks: config.json, tokenizer stub
// files, generation_config.json, and bf16 safetensors (optionally sharded with an index) holding
// embed_tokens, per-layer q/k/v/o/gate/up/down projections, input/post-attention norms, the final
// norm and lm_head. Weights are deterministic Gaussian noise (std 0.02; norms around 1) for a seed,
// generated and written in chunks, so even the 8B-shaped preset (16 GB) is written streaming.
#ifndef NVFP4_PIPELINE_DEMO_MODEL_H_
#define NVFP4_PIPELINE_DEMO_MODEL_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace nvfp4::pipeline {

struct DemoPreset {
  std::string name;
  int64_t hidden = 0, intermediate = 0, layers = 0, heads = 0, kv_heads = 0, vocab = 0;
  int64_t head_dim() const { return hidden / heads; }
  // Parameters and bf16 bytes of the checkpoint.
  int64_t parameters() const;
};

// "tiny" (~4 MB), "small" (~200 MB), "llama-8b-shape" (the Llama-3-8B shapes, ~16 GB).
absl::StatusOr<DemoPreset> DemoPresetByName(std::string_view name);
std::vector<std::string> DemoPresetNames();

struct DemoModelOptions {
  std::string preset = "tiny";
  uint64_t seed = 0;
  int shards = 1;     // 1: model.safetensors; N > 1: model-0000i-of-0000N + index
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
