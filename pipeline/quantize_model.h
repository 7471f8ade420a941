// Quantizes a whole Hugging Face checkpoint to an NVFP4 checkpoint that vLLM, SGLang and
// TensorRT-LLM load without conversion (docs/CHECKPOINTS.md). Used by the server (QuantizeModel)
// and by `nvfp4ctl quantize-model --local`.
//
// Streaming: the work is a sequence of units (a copied tensor, a quantized weight, or a fused
// group quantized together). A reader thread reads unit i+1 while the calling thread quantizes
// unit i and a writer thread writes unit i-1; the queues between them hold at most
// `queue_depth` units, so memory is bounded by a few units whatever the model size. Copied
// tensors are streamed in chunks by the writer. Output goes to storage::OutputDirectory's staging
// directory and is published only when complete: on any error or cancellation nothing appears
// at the output location. Output bytes are deterministic (same input and options, same bytes).
// With QuantizeModelOptions::resume a run journals each finished unit and a later run resumes
// after an interruption, keeping the verified units (pipeline/resume.h).
//
//   ASSIGN_OR_RETURN(auto in, storage::OpenLocalInputDirectory("llama"));
//   ASSIGN_OR_RETURN(auto out, storage::OpenLocalOutputDirectory("llama-nvfp4"));
//   QuantizeModelOptions options;            // ModelOpt layout, soar/mse, cpu, 5 GB shards
//   ASSIGN_OR_RETURN(QuantizeModelResult r, QuantizeModel(*in, *out, options));
#ifndef NVFP4_PIPELINE_QUANTIZE_MODEL_H_
#define NVFP4_PIPELINE_QUANTIZE_MODEL_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "formats/sharded.h"
#include "kernels/backend.h"
#include "kernels/types.h"
#include "nlohmann/json.hpp"
#include "pipeline/layouts.h"
#include "pipeline/model_calibration.h"
#include "pipeline/selection.h"
#include "storage/directory.h"

namespace nvfp4::pipeline {

class ResumeJournal;  // pipeline/resume.h

struct QuantizeModelOptions {
  Layout layout = Layout::kModelOpt;
  QuantizeOptions quantize;    // method, objective, ...
  SelectionOptions selection;  // include/exclude patterns (num_*_layers are read from config.json)
  uint64_t max_shard_size = formats::kDefaultMaxShardSize;
  std::string device = "cpu";  // MakeBackend spec: cpu | cuda | cuda:N | auto
  int cpu_threads = 0;         // for "cpu": <= 0 uses every hardware thread
  // A backend to use instead of creating one from `device` (not owned; must outlive the call and
  // accept QuantizeGroup calls from the pipeline's quantize thread). The server passes one that
  // leases a device of its pool per unit.
  QuantizerBackend* backend = nullptr;
  // Calibration statistics (docs/CALIBRATION.md), or null. Not owned; must outlive the call.
  // Required by the wmse/hessian objectives; its `input_amax` entries make the output W4A4.
  const ModelCalibration* calibration = nullptr;
  int queue_depth = 1;  // units buffered between reader/quantizer and quantizer/writer
  uint64_t copy_chunk_bytes = 8u << 20;  // chunk size for streamed tensor and file copies
  bool sync = true;                      // fdatasync output files before publishing
  // A tensor copied unquantized that holds NaN/Inf values fails the run (INVALID_ARGUMENT naming
  // it) instead of being copied with a warning (QuantizeModelResult::warnings).
  bool strict_finite = false;
  // Hash each output safetensors file while it is written (QuantizeModelResult::shard_sha256):
  // overlapped with the run instead of a second read of the output afterwards.
  bool sha256_outputs = false;
  // Sharded runs (pipeline/shard_plan.h). When set, only these output safetensors files (indices
  // into ModelOutputPlan::shard_files) are written, and only the units with an output tensor in
  // one of them are read and quantized; the bytes of each file are those of a full run.
  std::optional<std::vector<int>> output_shards;
  // Write the non-tensor outputs: model.safetensors.index.json, config.json,
  // hf_quant_config.json and the copied input files. False for one shard of a sharded run, whose
  // `finalize` step writes them once (FinalizeModel in pipeline/shard_plan.h).
  bool write_model_files = true;
  // Durable runs (pipeline/resume.h): record every finished unit here, and keep the units an
  // earlier, interrupted run with the same journal recorded (verified against the staged files)
  // instead of computing them again. The output's staging directory must survive the crash
  // (storage::OutputDirectory::SetResumeKey). Not owned. Null: a plain run.
  ResumeJournal* resume = nullptr;
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
  uint64_t quantized_bytes_in_total = 0;  // of bytes_in_total: the quantized units' source bytes
  bool resumed = false;  // kept from an interrupted earlier run (not read or computed again)
};

// What a run with QuantizeModelOptions::resume found of an earlier attempt.
struct ResumeInfo {
  int64_t units_kept = 0;       // journaled, verified in the staged files, not computed again
  int64_t units_rejected = 0;   // journaled but not trusted (bytes differ or missing): redone
  int64_t units_total = 0;      // units of this run
  int64_t first_redone = -1;    // the first unit (in run order) that is computed; -1: none
  uint64_t bytes_verified = 0;  // staged bytes read back and hashed
  double verify_seconds = 0;
  bool started_over = false;  // the journal held another plan (input changed): nothing kept
};

struct PipelineHooks {
  // Called once per unit after it is written. Must not block for long.
  std::function<void(const TensorProgress&)> on_progress;
  // Polled between units (by each stage); true cancels the run (CANCELLED, nothing written).
  std::function<bool()> cancelled;
  // With QuantizeModelOptions::resume: called once, after the journal was checked and before any
  // unit is processed. Kept units are then reported through on_progress (resumed = true), in unit
  // order, before the first computed one.
  std::function<void(const ResumeInfo&)> on_resume;
  // Called once the output is complete, right before it is published (output.Commit()); an error
  // stops the run without publishing (the staging is then kept or aborted as on any failure).
  std::function<absl::Status()> before_commit;
};

struct QuantizeModelResult {
  QuantizationPlan plan;
  std::vector<ModuleResult> modules;      // sorted by module name
  bool w4a4 = false;                      // input scales written (calibration had input_amax)
  std::string backend;                    // "cpu" | "cuda:N"
  uint64_t tensor_bytes_in = 0;           // all source tensors
  uint64_t quantized_bytes_in = 0;        // of those, the tensors quantized (the rest is copied)
  uint64_t tensor_bytes_out = 0;          // all output tensors
  std::vector<std::string> shard_files;   // output safetensors files
  std::map<std::string, std::string> shard_sha256;  // with sha256_outputs: file -> hex sha256
  std::vector<std::string> copied_files;  // other files copied unchanged
  std::vector<std::string> warnings;      // e.g. files left out, the K/16-odd tensor-parallel note
  double seconds = 0;
  // Instrumentation of the memory bound: the most units alive at once (read but not yet written)
  // and the most tensor bytes held in buffers at once.
  int peak_units_in_flight = 0;
  uint64_t peak_buffered_bytes = 0;
  ResumeInfo resume;  // with QuantizeModelOptions::resume
};

// Everything a run with given options writes, computed from the input's headers alone (no tensor
// data is read): the output tensors and their split into safetensors files. QuantizeModel, the
// shards of a sharded run and its finalize step all derive their outputs from this one plan.
struct ModelOutputPlan {
  QuantizationPlan plan;
  std::optional<nlohmann::ordered_json> config;       // the input's config.json, when present
  std::vector<std::string> checkpoint_files;          // the input's index and safetensors files
  bool w4a4 = false;                                  // input scales written
  std::vector<std::optional<float>> unit_amax;        // per unit of `plan`: the input amax (W4A4)
  std::vector<formats::TensorSpec> specs;             // output tensors, unit by unit
  std::vector<size_t> unit_first_spec;                // specs of unit i: [first[i], first[i + 1])
  std::vector<std::string> shard_files;               // output safetensors files, in order
  std::vector<std::vector<size_t>> shard_specs;       // per file: indices into `specs`
  std::vector<uint64_t> shard_tensor_bytes;           // per file: bytes of its tensors
  std::map<std::string, std::string> shard_metadata;  // "__metadata__" of every file
  bool indexed = false;  // several files: model.safetensors.index.json is written
  uint64_t tensor_bytes_in = 0, tensor_bytes_out = 0;
};

// The output plan of QuantizeModel(input, ..., options). Same errors as QuantizeModel's checks.
absl::StatusOr<ModelOutputPlan> PlanModelOutput(storage::InputDirectory& input,
                                                const QuantizeModelOptions& options);

// Writes the non-tensor outputs of `plan` into the local directory `dir`: the index (when
// `plan.indexed`), config.json, hf_quant_config.json (ModelOpt) and every other input file.
// Fills result->copied_files and result->warnings. The bytes are those QuantizeModel writes.
absl::Status WriteModelFiles(storage::InputDirectory& input, const ModelOutputPlan& plan,
                             const QuantizeModelOptions& options, const std::string& dir,
                             QuantizeModelResult* result,
                             const std::function<bool()>& cancelled = {});

// Quantizes the checkpoint in `input` into `output` (Begin/Commit/Abort are called here).
// Errors: INVALID_ARGUMENT (bad options, malformed checkpoint: messages name the file and tensor),
// NOT_FOUND (no checkpoint), ALREADY_EXISTS (output exists), CANCELLED, INTERNAL (I/O).
absl::StatusOr<QuantizeModelResult> QuantizeModel(storage::InputDirectory& input, storage::OutputDirectory& output,
                                                  const QuantizeModelOptions& options,
                                                  const PipelineHooks& hooks = {});

// The plan QuantizeModel would follow (for --dry-run style reports and tests).
absl::StatusOr<QuantizationPlan> PlanModel(storage::InputDirectory& input,
                                           const QuantizeModelOptions& options);

// Local directories in and out.
absl::StatusOr<QuantizeModelResult> QuantizeModelLocal(const std::string& input_dir,
                                                       const std::string& output_dir,
                                                       const QuantizeModelOptions& options,
                                                       const PipelineHooks& hooks = {});

}  // namespace nvfp4::pipeline

#endif  // NVFP4_PIPELINE_QUANTIZE_MODEL_H_
