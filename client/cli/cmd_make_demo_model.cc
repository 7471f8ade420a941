// nvfp4ctl make-demo-model: writes a synthetic checkpoint (config.json, tokenizer stubs,
// generation_config.json, safetensors, optionally sharded) for demos and benchmarks: Llama-shaped
// or Qwen3-MoE-shaped bf16, or DeepSeek-V3-shaped block FP8 (pipeline/demo_model.h).
#include <iostream>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "client/cli/exit_codes.h"
#include "client/cli/pipeline_commands.h"
#include "pipeline/demo_model.h"

namespace nvfp4::cli {
namespace {

struct DemoFlags {
  std::string output;
  std::string preset = "tiny";
  uint64_t seed = 0;
  int shards = 1;
  int64_t layers = 0;
  bool overwrite = false;
};

}  // namespace

void AddMakeDemoModelCommand(CLI::App& root, SubcommandList& out) {
  auto f = std::make_shared<DemoFlags>();
  CLI::App* app = root.add_subcommand(
      "make-demo-model",
      "Write a synthetic Hugging Face checkpoint: Llama-shaped bf16 (embed_tokens, per-layer "
      "q/k/v/o/gate/up/down projections and norms, final norm, lm_head) or DeepSeek-V3-shaped "
      "block FP8 (--preset deepseek-v3-fp8-*), with config and tokenizer stubs.");
  app->add_option("--output", f->output, "Directory to create.")->required()->type_name("DIR");
  app->add_option("--preset", f->preset,
                  "tiny (~4 MB, 2 layers), small (~200 MB, 8 layers), llama-8b-shape (the "
                  "Llama-3-8B shapes: hidden 4096, intermediate 14336, 32 layers, ~16 GB, written "
                  "streaming), qwen3-30b-a3b-shape (Qwen3-30B-A3B mixture of experts with its "
                  "tensor names: 48 layers x 128 experts, hidden 2048, expert intermediate 768, "
                  "~61 GB; see --layers); block-FP8 DeepSeek-V3 checkpoints (F8_E4M3 weights + "
                  "weight_scale_inv per 128x128 block): deepseek-v3-fp8-tiny (~3 MB, 1 dense + 1 "
                  "MoE layer, 8 experts), deepseek-v3-fp8-shape (the DeepSeek-V3 shapes, 1 dense "
                  "+ 2 MoE layers with 32 of the 256 routed experts, ~7.6 GB).")
      ->check(CLI::IsMember(pipeline::DemoPresetNames()))
      ->capture_default_str();
  app->add_option("--layers", f->layers,
                  "Write only the first N layers (config.json says N; 0: all the preset's).")
      ->capture_default_str();
  app->add_option("--seed", f->seed, "Random seed (same seed, same bytes).")->capture_default_str();
  app->add_option("--shards", f->shards,
                  "Number of safetensors files (> 1 writes model-0000i-of-0000N.safetensors and "
                  "model.safetensors.index.json).")
      ->capture_default_str();
  app->add_flag("--overwrite", f->overwrite, "Replace an existing non-empty directory.");
  out.push_back({app, [f]() {
                   pipeline::DemoModelOptions o;
                   o.preset = f->preset;
                   o.seed = f->seed;
                   o.shards = f->shards;
                   o.layers = f->layers;
                   o.overwrite = f->overwrite;
                   auto r = pipeline::MakeDemoModel(f->output, o);
                   if (!r.ok()) return ReportError(r.status());
                   std::cout << "wrote " << f->output << ": preset " << r->preset.name << ", "
                             << r->preset.layers << " layers, hidden " << r->preset.hidden << ", "
                             << r->preset.parameters() << " parameters, " << r->tensors
                             << " tensors, " << FormatBytes(static_cast<double>(r->tensor_bytes))
                             << " in " << f->shards << " safetensors file(s)\n";
                   return kExitOk;
                 }});
}

}  // namespace nvfp4::cli
