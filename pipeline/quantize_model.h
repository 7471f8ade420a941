// Quantizes a whole Hugging Face checkpoint to an NVFP4 checkpoint that vLLM, SGLang and
// TensorRT-LLM load without conversion (docs/CHECKPOINTS.md). Used by the server (QuantizeModel)
// and by `nvfp4ctl quantize-model --local`.
//
// Streaming: the work is a sequence of units (a copied tensor, a quantized weight, or a fused
// group quantized together). A reader thread reads unit i+1 while the calling thread quantizes
// unit i and a writer thread writes unit i-1; the queues between them hold at most
// `queue_depth` units, so memory is bounded by a few units whatever the model size. Copied
// tensors are streamed in chunks by the writer. Output goes to OutputDirectory's staging
// directory and is published only when complete: on any error or cancellation nothing appears
// at the output location. Output bytes are deterministic (same input and options, same bytes).
//
//   ASSIGN_OR_RETURN(auto in, LocalInputDirectory::Open("llama"));
//   LocalOutputDirectory out("llama-nvfp4");
//   QuantizeModelOptions options;            // ModelOpt layout, soar/mse, cpu, 5 GB shards
//   ASSIGN_OR_RETURN(QuantizeModelResult r, QuantizeModel(*in, out, options));
#ifndef NVFP4_PIPELINE_QUANTIZE_MODEL_H_
#define NVFP4_PIPELINE_QUANTIZE_MODEL_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "formats/sharded.h"
#include "kernels/types.h"
#include "pipeline/layouts.h"
#include "pipeline/model_calibration.h"
#include "pipeline/selection.h"
#include "pipeline/storage.h"

namespace nvfp4::pipeline {

struct QuantizeModelOptions {
  Layout layout = Layout::kModelOpt;
  QuantizeOptions quantize;    // method, objective, ...
  SelectionOptions selection;  // include/exclude patterns (num_*_layers are read from config.json)
  uint64_t max_shard_size = formats::kDefaultMaxShardSize;
  std::string device = "cpu";  // MakeBackend spec: cpu | cuda | cuda:N | auto
  int cpu_threads = 0;         // for "cpu": <= 0 uses every hardware thread
  // Calibration statistics (docs/CALIBRATION.md), or null. Not owned; must outlive the call.
  // Required by the wmse/hessian objectives; its `input_amax` entries make the output W4A4.
  const ModelCalibration* calibration = nullptr;
  int queue_depth = 1;  // units buffered between reader/quantizer and quantizer/writer
  uint64_t copy_chunk_bytes = 8u << 20;  // chunk size for streamed tensor and file copies
  bool sync = true;                      // fdatasync output files before publishing
};

// Metrics of one quantized module.
struct ModuleResult {
  std::string module;
  std::string group;  // fused group name, or ""
  int64_t rows = 0, cols = 0;
  float global_scale = 0;  // g
  std::optional<float> input_amax;
  TensorMetrics metrics;
};

// Reported after each unit is written (from the writer thread, in unit order).
struct TensorProgress {
  std::string name;  // the tensor, or the fused group name
  bool quantized = false;
  std::vector<ModuleResult> modules;  // the quantized modules of this unit (with metrics)
  uint64_t bytes_in = 0;              // source bytes of the unit
  uint64_t bytes_out = 0;             // bytes written for it
  int64_t units_done = 0;
  int64_t units_total = 0;
  uint64_t bytes_in_done = 0;  // source bytes of all units written so far
  uint64_t bytes_in_total = 0;
};

struct PipelineHooks {
  // Called once per unit after it is written. Must not block for long.
  std::function<void(const TensorProgress&)> on_progress;
  // Polled between units (by each stage); true cancels the run (CANCELLED, nothing written).
  std::function<bool()> cancelled;
};

struct QuantizeModelResult {
  QuantizationPlan plan;
  std::vector<ModuleResult> modules;      // sorted by module name
  bool w4a4 = false;                      // input scales written (calibration had input_amax)
  std::string backend;                    // "cpu" | "cuda:N"
  uint64_t tensor_bytes_in = 0;           // all source tensors
  uint64_t tensor_bytes_out = 0;          // all output tensors
  std::vector<std::string> shard_files;   // output safetensors files
  std::vector<std::string> copied_files;  // other files copied unchanged
  std::vector<std::string> warnings;      // e.g. files left out, the K/16-odd tensor-parallel note
  double seconds = 0;
  // Instrumentation of the memory bound: the most units alive at once (read but not yet written)
  // and the most tensor bytes held in buffers at once.
  int peak_units_in_flight = 0;
  uint64_t peak_buffered_bytes = 0;
};

// Quantizes the checkpoint in `input` into `output` (Begin/Commit/Abort are called here).
// Errors: INVALID_ARGUMENT (bad options, malformed checkpoint: messages name the file and tensor),
// NOT_FOUND (no checkpoint), ALREADY_EXISTS (output exists), CANCELLED, INTERNAL (I/O).
absl::StatusOr<QuantizeModelResult> QuantizeModel(InputDirectory& input, OutputDirectory& output,
                                                  const QuantizeModelOptions& options,
                                                  const PipelineHooks& hooks = {});

// The plan QuantizeModel would follow (for --dry-run style reports and tests).
absl::StatusOr<QuantizationPlan> PlanModel(InputDirectory& input,
                                           const QuantizeModelOptions& options);

// Local directories in and out.
absl::StatusOr<QuantizeModelResult> QuantizeModelLocal(const std::string& input_dir,
                                                       const std::string& output_dir,
                                                       const QuantizeModelOptions& options,
                                                       const PipelineHooks& hooks = {});

}  // namespace nvfp4::pipeline

#endif  // NVFP4_PIPELINE_QUANTIZE_MODEL_H_
