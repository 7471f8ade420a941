#include "pipeline/quantize_model.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <thread>

#include "base/status_macros.h"
#include "base/str_util.h"
#include "formats/dtypes.h"
#include "kernels/backend.h"
#include "kernels/tensor_prep.h"
#include "pipeline/checkpoint_io.h"
#include "pipeline/fp8_source.h"
#include "pipeline/output_files.h"
#include "pipeline/resume.h"
#include "pipeline/run_state.h"
#include "pipeline/source_tensors.h"

namespace nvfp4::pipeline {
namespace {

namespace fs = std::filesystem;

// Why a MoE expert may have no calibration statistics, for the errors that name one.
std::string MissingStatisticsHint(std::string_view module) {
  if (module.find(".experts.") == std::string_view::npos) return "";
  return " (a MoE expert that no calibration token was routed to has none: collect with "
         "nvfp4_client.calibration.Collector(all_experts=True))";
}

// Reads num_hidden_layers / num_nextn_predict_layers (top level or text_config).
void ApplyConfig(const std::optional<nlohmann::ordered_json>& config, SelectionOptions& sel) {
  if (!config) return;
  for (const nlohmann::ordered_json* c :
       {&*config, config->contains("text_config")
                      ? &(*config)["text_config"]
                      : static_cast<const nlohmann::ordered_json*>(nullptr)}) {
    if (c == nullptr || !c->is_object()) continue;
    auto h = c->find("num_hidden_layers");
    auto m = c->find("num_nextn_predict_layers");
    if (h != c->end() && h->is_number_integer() && m != c->end() && m->is_number_integer() &&
        m->get<int64_t>() > 0) {
      sel.num_hidden_layers = h->get<int64_t>();
      sel.num_mtp_layers = m->get<int64_t>();
    }
  }
}

bool IsCheckpointLike(const std::string& f) {
  if (f.find('/') != std::string::npos) return false;
  auto ends = [&](std::string_view s) {
    return f.size() >= s.size() && std::string_view(f).substr(f.size() - s.size()) == s;
  };
  return ends(".safetensors") || ends(".safetensors.index.json") ||
         (f.rfind("pytorch_model", 0) == 0 && (ends(".bin") || ends(".bin.index.json")));
}

absl::Status WriteTextFile(const fs::path& path, const std::string& text) {
  errno = 0;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) {  // errno tells why (e.g. ENOSPC: "No space left on device")
    return absl::InternalError(StrCat(
        path.string(), ": write failed: ", errno != 0 ? std::strerror(errno) : "stream error"));
  }
  return absl::OkStatus();
}

struct Prepared {
  OpenedCheckpoint checkpoint;
  std::optional<nlohmann::ordered_json> config;
  // The planned tensors: the stored ones, fused 3-D experts split per expert.
  std::optional<SourceTensors> sources;
  Fp8Sources fp8;  // FP8 weights and the scales consumed by their dequantization
  QuantizationPlan plan;
};

// Rejects inputs that are already quantized, except FP8 checkpoints (docs/CHECKPOINTS.md "FP8
// sources"), whose weight block size it returns when the config names one.
absl::StatusOr<std::optional<std::pair<int64_t, int64_t>>> CheckInputQuantization(
    storage::InputDirectory& input, const std::optional<nlohmann::ordered_json>& config) {
  std::optional<std::pair<int64_t, int64_t>> block;
  if (config && config->contains("quantization_config") &&
      !IsFp8QuantizationConfig((*config)["quantization_config"], &block)) {
    return absl::FailedPreconditionError(
        StrCat(input.Describe(),
               "/config.json: the model is already quantized (it has a quantization_config "
               "that is not FP8; FP8 checkpoints are the only quantized inputs, docs/"
               "CHECKPOINTS.md \"FP8 sources\"); give the original checkpoint"));
  }
  ASSIGN_OR_RETURN(std::optional<nlohmann::ordered_json> hf_quant,
                   ReadConfigJson(input, "hf_quant_config.json"));
  if (hf_quant && hf_quant->contains("quantization") && !IsFp8QuantizationConfig(*hf_quant)) {
    return absl::FailedPreconditionError(
        StrCat(input.Describe(),
               "/hf_quant_config.json: the model is already quantized (quant_algo is not FP8); "
               "give the original checkpoint"));
  }
  return block;
}

absl::StatusOr<Prepared> Prepare(storage::InputDirectory& input, const QuantizeModelOptions& options) {
  Prepared p;
  ASSIGN_OR_RETURN(p.checkpoint, OpenCheckpoint(input));
  ASSIGN_OR_RETURN(p.config, ReadConfigJson(input));
  ASSIGN_OR_RETURN(auto block, CheckInputQuantization(input, p.config));
  ASSIGN_OR_RETURN(p.sources, SourceTensors::Open(*p.checkpoint.reader, p.config));
  ASSIGN_OR_RETURN(p.fp8, FindFp8Sources(*p.sources, block));
  SelectionOptions sel = options.selection;
  ApplyConfig(p.config, sel);
  for (const auto& [weight, fp8] : p.fp8.weights) sel.fp8_weights.insert(weight);
  std::vector<formats::TensorSpec> specs = p.sources->specs();
  // The FP8 scales are consumed by their weights' dequantization: no unit of their own.
  std::erase_if(specs, [&](const formats::TensorSpec& s) { return p.fp8.consumed.count(s.name); });
  ASSIGN_OR_RETURN(p.plan, PlanQuantization(specs, sel));
  if (p.plan.quantized_modules.empty()) {
    if (p.fp8.unscaled > 0) {
      return absl::InvalidArgumentError(StrCat(
          input.Describe(), ": no module to quantize: ", p.fp8.unscaled,
          " weight(s) are F8_E4M3 without a dequantization scale (e.g. '", p.fp8.unscaled_example,
          "'): the checkpoint is already quantized to FP8 in a layout this service does not "
          "read. Supported FP8 inputs (docs/CHECKPOINTS.md \"FP8 sources\"): '<m>.weight' with "
          "'<m>.weight_scale_inv' (DeepSeek-V3 block FP8) or '<m>.weight_scale' "
          "(compressed-tensors, ModelOpt)"));
    }
    return absl::InvalidArgumentError(
        StrCat(input.Describe(), ": no module to quantize (every candidate is excluded)"));
  }
  // An FP8 tensor copied as it is would sit in an NVFP4 checkpoint whose quantization config no
  // longer describes it (loaders would read its bytes as weights): refuse it by name.
  for (const WorkUnit& u : p.plan.units) {
    if (u.kind != WorkUnit::Kind::kCopy || p.fp8.Find(u.tensors[0]) != nullptr) continue;
    const formats::TensorSpec& spec = p.sources->Spec(u.tensors[0]);
    if (!spec.dtype.starts_with("F8_")) continue;
    return absl::InvalidArgumentError(StrCat(
        p.sources->FileName(spec.name), ": tensor '", spec.name, "' (", spec.dtype, " ",
        ShapeString(spec.shape), ") is FP8 in a layout this service does not read",
        p.sources->Slice(spec.name) != nullptr
            ? StrCat(" (fused FP8 experts '", p.sources->Slice(spec.name)->source,
                     "' without a scale '<t>_scale_inv' or '<t>_scale')")
            : std::string(" (no dequantization scale '<m>.weight_scale_inv' or "
                          "'<m>.weight_scale' beside a '<m>.weight')"),
        "; copied unquantized, its FP8 bytes would be read as plain weights by the loaders of "
        "the NVFP4 output. Supported FP8 inputs: docs/CHECKPOINTS.md \"FP8 sources\""));
  }
  // gptq is driven by each module's input Gram, the wmse / hessian objectives by its statistics:
  // name the first module without them, before any work is done.
  const Method method = options.quantize.method;
  const Objective objective = options.quantize.objective;
  if (method == Method::kGptq || (UsesObjective(method) && objective != Objective::kMse)) {
    const bool gram = method == Method::kGptq || objective == Objective::kHessian;
    const std::string_view need = method == Method::kGptq ? "method gptq"
                                  : gram                  ? "objective hessian"
                                                          : "objective wmse";
    for (const std::string& m : p.plan.quantized_modules) {
      if (gram ? options.calibration->HasGram(m) : options.calibration->HasStatistics(m)) {
        continue;
      }
      return absl::InvalidArgumentError(StrCat(
          options.calibration->reader().name(), ": no input ", gram ? "Gram" : "statistics",
          " for module '", m, "' (expected '", m,
          gram ? ".input_gram' [K, K] or '" : ".input_sq' [K], '.input_gram' or '", m,
          ".input_activations'), which ", need, " needs for every quantized module",
          MissingStatisticsHint(m), "; exclude the module (--exclude) or collect its ",
          gram ? "Gram" : "statistics", " (docs/CALIBRATION.md)"));
    }
  }
  return p;
}

absl::Status CheckOptions(const QuantizeModelOptions& options) {
  if (options.max_shard_size == 0) return absl::InvalidArgumentError("max shard size must be > 0");
  if (options.quantize.method == Method::kGptq && options.calibration == nullptr) {
    return absl::InvalidArgumentError(
        "method gptq needs calibration statistics with each module's input_gram (a calibration "
        "file; docs/CALIBRATION.md)");
  }
  if (options.quantize.objective != Objective::kMse && options.calibration == nullptr) {
    return absl::InvalidArgumentError(
        StrCat("objective '", ObjectiveName(options.quantize.objective),
               "' needs calibration statistics (a calibration file)"));
  }
  RETURN_IF_ERROR(ValidateGptqOptions(options.quantize.gptq));
  return absl::OkStatus();
}

// The output tensors of `p` and their split into files (ModelOutputPlan).
absl::StatusOr<ModelOutputPlan> BuildOutputPlan(const Prepared& p,
                                                const QuantizeModelOptions& options) {
  const SourceTensors& sources = *p.sources;
  const QuantizationPlan& plan = p.plan;
  ModelOutputPlan op;
  op.plan = plan;
  op.config = p.config;
  op.checkpoint_files = p.checkpoint.files;

  // Input scales (W4A4): every quantized module needs one; a fused group shares the max.
  const ModelCalibration* cal = options.calibration;
  op.w4a4 = cal != nullptr && cal->HasAnyInputAmax();
  op.unit_amax.assign(plan.units.size(), std::nullopt);
  for (size_t i = 0; i < plan.units.size(); ++i) {
    const WorkUnit& u = plan.units[i];
    if (u.kind != WorkUnit::Kind::kQuantize || !op.w4a4) continue;
    for (const std::string& m : u.modules) {
      ASSIGN_OR_RETURN(std::optional<float> a, cal->InputAmax(m));
      if (a) op.unit_amax[i] = std::max(op.unit_amax[i].value_or(0.0f), *a);
    }
    if (!op.unit_amax[i]) {
      return absl::InvalidArgumentError(StrCat(
          cal->reader().name(), ": has input_amax entries (W4A4) but none for '", u.modules[0],
          "'", MissingStatisticsHint(u.modules[0]),
          "; give input_amax for every quantized module, or none for weight-only W4A16"));
    }
  }

  // Output tensor specs, unit by unit (this order decides the split into shards).
  for (size_t i = 0; i < plan.units.size(); ++i) {
    const WorkUnit& u = plan.units[i];
    op.unit_first_spec.push_back(op.specs.size());
    for (size_t j = 0; j < u.tensors.size(); ++j) {
      const formats::TensorSpec& source = sources.Spec(u.tensors[j]);
      op.tensor_bytes_in += sources.ByteSize(u.tensors[j]);
      if (u.kind == WorkUnit::Kind::kCopy) {
        // An FP8 weight that stays unquantized is written dequantized, as BF16 (the output's
        // quantization_config is NVFP4 only: its FP8 scales would not be loaded).
        op.specs.push_back(
            {source.name, p.fp8.Find(source.name) ? "BF16" : source.dtype, source.shape});
      } else {
        for (formats::TensorSpec& s :
             QuantizedSpecs(options.layout, u.modules[j], source.shape[0], source.shape[1],
                            op.unit_amax[i].has_value())) {
          op.specs.push_back(std::move(s));
        }
      }
    }
  }
  op.unit_first_spec.push_back(op.specs.size());
  for (const formats::TensorSpec& s : op.specs) {
    ASSIGN_OR_RETURN(uint64_t n, formats::TensorByteSize(s));
    op.tensor_bytes_out += n;
  }

  // The split into files, as formats::ShardedCheckpointWriter does it.
  ASSIGN_OR_RETURN(op.shard_specs, formats::PlanShards(op.specs, options.max_shard_size));
  op.indexed = op.shard_specs.size() > 1;
  const int count = static_cast<int>(op.shard_specs.size());
  for (int f = 0; f < count; ++f) {
    op.shard_files.push_back(op.indexed ? formats::ShardFileName(f, count)
                                        : std::string(formats::kSingleFileName));
    uint64_t bytes = 0;
    for (size_t i : op.shard_specs[f]) bytes += *formats::TensorByteSize(op.specs[i]);
    op.shard_tensor_bytes.push_back(bytes);
  }
  op.shard_metadata = {{"nvfp4.layout", std::string(LayoutName(options.layout))},
                       {"nvfp4.method", std::string(MethodName(options.quantize.method))},
                       {"nvfp4.objective", std::string(ObjectiveName(options.quantize.objective))}};
  if (options.quantize.method == Method::kGptq) {
    // Provenance, and part of the resume fingerprint (the headers): a resumed run must use the
    // same GPTQ options.
    const GptqOptions& g = options.quantize.gptq;
    op.shard_metadata["nvfp4.gptq"] =
        StrCat("block_scales=", MethodName(g.block_scales), ",dampening=", g.dampening,
               ",block_size=", g.block_size, ",order=", GptqOrderName(g.order),
               ",global_scale=", GptqGlobalScaleName(g.global_scale));
  }
  return op;
}

// model.safetensors.index.json of `op`, as formats::ShardedCheckpointWriter::Finish writes it.
std::string IndexJson(const ModelOutputPlan& op) {
  std::map<std::string, std::string> weight_map;
  for (size_t f = 0; f < op.shard_files.size(); ++f) {
    for (size_t i : op.shard_specs[f]) weight_map[op.specs[i].name] = op.shard_files[f];
  }
  nlohmann::ordered_json index;
  index["metadata"] = {{"total_size", op.tensor_bytes_out}};
  nlohmann::ordered_json map = nlohmann::ordered_json::object();
  for (const auto& [tensor, file] : weight_map) map[tensor] = file;
  index["weight_map"] = std::move(map);
  return index.dump(2) + "\n";
}

}  // namespace

absl::StatusOr<ModelOutputPlan> PlanModelOutput(storage::InputDirectory& input,
                                                const QuantizeModelOptions& options) {
  RETURN_IF_ERROR(CheckOptions(options));
  ASSIGN_OR_RETURN(Prepared p, Prepare(input, options));
  return BuildOutputPlan(p, options);
}

namespace {

absl::Status WriteModelFilesImpl(storage::InputDirectory& input, const ModelOutputPlan& op,
                                 const QuantizeModelOptions& options, const std::string& staging,
                                 bool write_index, QuantizeModelResult* result,
                                 const std::function<bool()>& cancelled) {
  if (write_index && op.indexed) {
    RETURN_IF_ERROR(WriteTextFile(fs::path(staging) / formats::kIndexFileName, IndexJson(op)));
  }
  const std::vector<std::string> ignore = op.plan.IgnoreList();
  nlohmann::ordered_json config = op.config ? *op.config : nlohmann::ordered_json::object();
  if (!op.config) {
    result->warnings.push_back(
        "the input has no config.json: wrote one holding only the quantization_config");
  }
  config["quantization_config"] = QuantizationConfig(options.layout, op.w4a4, ignore);
  RETURN_IF_ERROR(WriteTextFile(fs::path(staging) / "config.json", config.dump(2) + "\n"));
  if (options.layout == Layout::kModelOpt) {
    RETURN_IF_ERROR(WriteTextFile(fs::path(staging) / "hf_quant_config.json",
                                  HfQuantConfig(op.w4a4, ignore).dump(2) + "\n"));
  }
  ASSIGN_OR_RETURN(std::vector<std::string> files, input.ListFiles());
  const std::set<std::string> own(op.checkpoint_files.begin(), op.checkpoint_files.end());
  for (const std::string& f : files) {
    if (own.count(f) || f == "config.json" || f == "hf_quant_config.json") continue;
    if (IsCheckpointLike(f)) {
      result->warnings.push_back(StrCat("not copied: '", f,
                                        "' (weights that are not part of the safetensors "
                                        "checkpoint being quantized)"));
      continue;
    }
    RETURN_IF_ERROR(CheckCancelled(cancelled));
    RETURN_IF_ERROR(storage::CopyFileToLocal(input, f, (fs::path(staging) / f).string()));
    result->copied_files.push_back(f);
  }
  if (!op.plan.odd_k_blocks.empty()) {
    result->warnings.push_back(StrCat(
        op.plan.odd_k_blocks.size(), " quantized module(s) have an odd K/16 (e.g. '",
        op.plan.odd_k_blocks[0],
        "'): vLLM needs K % 16 == 0 after the tensor-parallel split, so row-parallel layers of "
        "these cannot be split over 2 GPUs"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteModelFiles(storage::InputDirectory& input, const ModelOutputPlan& op,
                             const QuantizeModelOptions& options, const std::string& dir,
                             QuantizeModelResult* result, const std::function<bool()>& cancelled) {
  return WriteModelFilesImpl(input, op, options, dir, /*write_index=*/true, result, cancelled);
}

absl::StatusOr<QuantizationPlan> PlanModel(storage::InputDirectory& input,
                                           const QuantizeModelOptions& options) {
  ASSIGN_OR_RETURN(Prepared p, Prepare(input, options));
  return std::move(p.plan);
}

namespace {

// A unit on its way from the reader through the quantizer to the writer.
struct UnitData {
  size_t index = 0;                          // into the plan's units
  std::vector<std::vector<uint8_t>> inputs;  // kQuantize: one buffer per member tensor
  std::vector<DType> input_dtypes;           // of `inputs` (F32 for an FP8 weight: the values)
  // Per member tensor: the scales of an FP8 weight, whose `inputs` entry holds its E4M3 codes
  // (dequantized by the backend: on the GPU, or on the host's threads by the CPU backend).
  std::vector<std::optional<Fp8ScaleGrid>> fp8;
  std::vector<EncodedTensor> outputs;        // kQuantize: encoded tensors
  std::vector<ModuleResult> results;
  uint64_t bytes_in = 0;
  MemoryMeter::Unit metered;  // the unit and its buffered bytes, on the run's meter
};
using UnitPtr = std::unique_ptr<UnitData>;

uint64_t BufferBytes(const UnitData& u) {
  uint64_t n = 0;
  for (const auto& b : u.inputs) n += b.size();
  for (const auto& e : u.outputs) n += e.data.size();
  return n;
}

// TensorProgress::name of a unit: the tensor, the module or the fused group.
const std::string& UnitName(const WorkUnit& u) {
  if (u.kind == WorkUnit::Kind::kCopy) return u.tensors[0];
  return u.group.empty() ? u.modules[0] : u.group;
}

// What the write stage did with a unit.
struct WrittenUnit {
  uint64_t bytes_out = 0;
  std::vector<std::pair<std::string, std::string>> sha256;  // durable runs: tensor -> hex sha256
  std::vector<std::string> warnings;  // copied NaN/Inf values (journaled with the unit)
};

// One QuantizeModel call. Run() is the table of contents; the stages run in this order:
//   Plan       the options, the input's headers, the output plan, the files and units of this
//              run, the backend (nothing is written yet)
//   (output.Begin(): from here on any failure aborts the output)
//   Resume     durable runs: the earlier attempt's journal is loaded and the staging directory
//              cleaned; the output files are opened; the journaled units whose staged bytes verify
//              are kept and reported
//   Read       reader thread: the source tensors of each unit still to do, in unit order
//   Quantize   this thread: the backend, the layout's encoding, the module results
//   Write      writer thread: the tensors into the output files (copied tensors streamed in
//              chunks), the journal record, progress
//   Finalize   the files finished, the index, configs and other files, output.Commit()
// The three streaming stages share only the queues, the run state and the meter (run_state.h);
// each writes its own members (reader: none; quantizer: modules_; writer: the progress counters).
class ModelRun {
 public:
  ModelRun(storage::InputDirectory& input, storage::OutputDirectory& output, const QuantizeModelOptions& options,
           const PipelineHooks& hooks)
      : input_(input),
        output_(output),
        options_(options),
        hooks_(hooks),
        journal_(options.resume),
        to_quantize_(QueueDepth(options)),
        to_write_(QueueDepth(options)),
        state_(hooks.cancelled) {}

  absl::StatusOr<QuantizeModelResult> Run() {
    RETURN_IF_ERROR(Plan());
    ASSIGN_OR_RETURN(staging_, output_.Begin());
    if (absl::Status s = RunStaged(); !s.ok()) {
      output_.Abort();
      return s;
    }
    return TakeResult();
  }

 private:
  static size_t QueueDepth(const QuantizeModelOptions& o) {
    return static_cast<size_t>(std::max(o.queue_depth, 1));
  }
  const formats::CheckpointReader& reader() const { return *prep_.checkpoint.reader; }
  const SourceTensors& sources() const { return *prep_.sources; }
  const QuantizationPlan& plan() const { return prep_.plan; }

  // Everything after output.Begin().
  absl::Status RunStaged() {
    RETURN_IF_ERROR(LoadJournal());
    RETURN_IF_ERROR(OpenOutputFiles());
    RETURN_IF_ERROR(KeepJournaledUnits());
    RETURN_IF_ERROR(HandOverFinishedFiles());
    RETURN_IF_ERROR(Stream());
    return Finalize();
  }

  // ---- plan ----

  absl::Status Plan() {
    RETURN_IF_ERROR(CheckOptions(options_));
    ASSIGN_OR_RETURN(prep_, Prepare(input_, options_));
    ASSIGN_OR_RETURN(op_, BuildOutputPlan(prep_, options_));
    result_.plan = plan();
    result_.w4a4 = op_.w4a4;
    WarnAboutWidenedFp8();
    RETURN_IF_ERROR(ChooseFilesAndUnits());
    return OpenBackend();
  }

  // FP8 weights that stay unquantized are written as BF16 (twice their size): say which.
  void WarnAboutWidenedFp8() {
    int64_t count = 0;
    const ExcludedModule* first = nullptr;
    for (const ExcludedModule& e : plan().excluded) {
      if (prep_.fp8.Find(e.module + ".weight") == nullptr) continue;
      if (count++ == 0) first = &e;
    }
    if (count == 0) return;
    result_.warnings.push_back(StrCat(count, " FP8 weight(s) are not quantized (e.g. '",
                                      first->module, "': ", first->reason,
                                      ") and are written dequantized, as BF16"));
  }

  // The files this run writes and the units that have an output tensor in one of them.
  absl::Status ChooseFilesAndUnits() {
    // Sharded runs write a subset of the files (and no index); a full run writes them all.
    subset_ = options_.output_shards.has_value() || !options_.write_model_files;
    if (options_.output_shards) {
      files_ = *options_.output_shards;
    } else {
      for (size_t f = 0; f < op_.shard_files.size(); ++f) files_.push_back(static_cast<int>(f));
    }
    std::sort(files_.begin(), files_.end());
    files_.erase(std::unique(files_.begin(), files_.end()), files_.end());
    const size_t units = plan().units.size();
    unit_wanted_.assign(units, true);
    unit_kept_.assign(units, false);
    if (subset_) {
      std::vector<bool> spec_wanted(op_.specs.size(), false);
      for (int f : files_) {
        if (f < 0 || static_cast<size_t>(f) >= op_.shard_files.size()) {
          return absl::InvalidArgumentError(
              StrCat("output shard ", f, " out of range (", op_.shard_files.size(), " files)"));
        }
        for (size_t i : op_.shard_specs[f]) spec_wanted[i] = true;
      }
      for (size_t i = 0; i < units; ++i) {
        unit_wanted_[i] = false;
        for (size_t k = op_.unit_first_spec[i]; k < op_.unit_first_spec[i + 1]; ++k) {
          if (spec_wanted[k]) unit_wanted_[i] = true;
        }
      }
    }
    uint64_t wanted_bytes_in = 0;
    for (size_t i = 0; i < units; ++i) {
      if (!unit_wanted_[i]) continue;
      ++wanted_units_;
      for (const std::string& t : plan().units[i].tensors) {
        const uint64_t size = sources().ByteSize(t);
        wanted_bytes_in += size;
        if (plan().units[i].kind == WorkUnit::Kind::kQuantize) result_.quantized_bytes_in += size;
      }
    }
    result_.tensor_bytes_in = subset_ ? wanted_bytes_in : op_.tensor_bytes_in;
    if (subset_) {
      for (int f : files_) {
        for (size_t i : op_.shard_specs[f]) {
          result_.tensor_bytes_out += *formats::TensorByteSize(op_.specs[i]);
        }
      }
    } else {
      result_.tensor_bytes_out = op_.tensor_bytes_out;
    }
    return absl::OkStatus();
  }

  absl::Status OpenBackend() {
    backend_ = options_.backend;
    if (backend_ == nullptr) {
      if (options_.device == "cpu") {
        own_backend_ = MakeCpuBackend(options_.cpu_threads);
      } else {
        ASSIGN_OR_RETURN(own_backend_, MakeBackend(options_.device));
      }
      backend_ = own_backend_.get();
    }
    result_.backend = backend_->name();
    return absl::OkStatus();
  }

  // ---- resume ----

  // What an earlier, interrupted attempt journaled. Keeps this plan's safetensors files (partial or
  // finished) when there is something to keep; everything else in the staging directory is
  // removed and written again.
  absl::Status LoadJournal() {
    if (journal_ == nullptr) return absl::OkStatus();
    ASSIGN_OR_RETURN(fingerprint_, PlanFingerprint(reader(), op_));
    ASSIGN_OR_RETURN(std::vector<JournaledUnit> loaded, journal_->Load());
    for (const JournaledUnit& r : loaded) {
      if (r.plan != fingerprint_) result_.resume.started_over = true;
    }
    if (result_.resume.started_over) {
      RETURN_IF_ERROR(journal_->Reset());
      result_.warnings.push_back(
          "resume: the input or the output plan changed since the interrupted run; starting over");
    } else {
      journaled_ = std::move(loaded);
    }
    RETURN_IF_ERROR(TrustHandedOverFiles());
    std::set<std::string> keep;
    if (!journaled_.empty()) {
      for (int f : files_) {
        if (handed_.count(op_.shard_files[f])) continue;  // in the object store, not here
        keep.insert(op_.shard_files[f]);
        keep.insert(op_.shard_files[f] + ".tmp");
      }
    }
    std::error_code ec;
    std::vector<fs::path> stale;
    for (const auto& e : fs::directory_iterator(staging_, ec)) {
      if (!keep.count(e.path().filename().string())) stale.push_back(e.path());
    }
    for (const fs::path& p : stale) fs::remove_all(p, ec);
    if (ec) return absl::InternalError(StrCat(staging_, ": cannot clean: ", ec.message()));
    return absl::OkStatus();
  }

  // The files an earlier attempt finished and handed over to the object store
  // (storage::OutputDirectory::HandOver), trusted when they were written under this plan and every
  // unit with a tensor in them is journaled: they are neither written nor read again. The others
  // are dropped (so that Commit() cannot publish a file of another plan).
  absl::Status TrustHandedOverFiles() {
    if (!output_.HandsOver()) return absl::OkStatus();
    ASSIGN_OR_RETURN(std::vector<storage::HandedOverFile> handed, output_.HandedOver());
    if (handed.empty()) return absl::OkStatus();
    std::set<int64_t> journaled_units;
    for (const JournaledUnit& r : journaled_) journaled_units.insert(r.unit);
    std::vector<size_t> unit_of_spec(op_.specs.size());
    for (size_t i = 0; i + 1 < op_.unit_first_spec.size(); ++i) {
      for (size_t k = op_.unit_first_spec[i]; k < op_.unit_first_spec[i + 1]; ++k) {
        unit_of_spec[k] = i;
      }
    }
    for (const storage::HandedOverFile& f : handed) {
      if (f.tag != fingerprint_) continue;
      auto it = std::find(op_.shard_files.begin(), op_.shard_files.end(), f.name);
      if (it == op_.shard_files.end()) continue;
      const size_t file = static_cast<size_t>(it - op_.shard_files.begin());
      if (std::find(files_.begin(), files_.end(), static_cast<int>(file)) == files_.end()) continue;
      bool all = true;
      for (size_t k : op_.shard_specs[file]) {
        all = all && journaled_units.count(static_cast<int64_t>(unit_of_spec[k])) > 0;
      }
      if (all) handed_[f.name] = f;
    }
    for (const storage::HandedOverFile& f : handed) {
      if (!handed_.count(f.name)) RETURN_IF_ERROR(output_.DropHandedOver(f.name));
    }
    return absl::OkStatus();
  }

  // Durable runs write through the subset writer (all files, the same bytes as the checkpoint
  // writer), whose partial files can be reopened and verified; files handed over by an earlier
  // attempt are not written again.
  absl::Status OpenOutputFiles() {
    OutputFiles::Options o;
    o.checkpoint_writer = !subset_ && journal_ == nullptr;
    if (!o.checkpoint_writer) {
      for (int f : files_) {
        if (!handed_.count(op_.shard_files[f])) o.files.push_back(f);
      }
    }
    o.reuse_partial = journal_ != nullptr;
    o.sync = options_.sync;
    o.sha256 = options_.sha256_outputs;
    o.max_shard_size = options_.max_shard_size;
    ASSIGN_OR_RETURN(out_, OutputFiles::Open(staging_, op_, o));
    return absl::OkStatus();
  }

  // Keeps the journaled units whose staged bytes verify; they are neither read nor computed again.
  absl::Status KeepJournaledUnits() {
    if (journal_ == nullptr) return absl::OkStatus();
    const auto v0 = std::chrono::steady_clock::now();
    ASSIGN_OR_RETURN(std::vector<const JournaledUnit*> kept, VerifyJournaledUnits());
    ResumeInfo& info = result_.resume;
    info.units_total = wanted_units_;
    for (size_t i = 0; i < plan().units.size(); ++i) {
      if (unit_kept_[i]) ++info.units_kept;
      if (unit_wanted_[i] && !unit_kept_[i] && info.first_redone < 0) {
        info.first_redone = static_cast<int64_t>(i);
      }
    }
    info.verify_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - v0).count();
    if (info.units_kept > 0) {
      result_.warnings.push_back(StrCat("resumed: kept ", info.units_kept, " of ", wanted_units_,
                                        " units of an interrupted run (", info.bytes_verified,
                                        " bytes verified)"));
    }
    if (hooks_.on_resume) hooks_.on_resume(info);
    for (size_t i = 0; i < plan().units.size(); ++i) {
      if (!unit_kept_[i]) continue;
      const JournaledUnit& r = *kept[i];
      kept_modules_.insert(kept_modules_.end(), r.modules.begin(), r.modules.end());
      // The interrupted run's warnings of this unit (its copied NaN/Inf values) are the output's.
      nonfinite_warnings_.insert(nonfinite_warnings_.end(), r.warnings.begin(), r.warnings.end());
      Report(plan().units[i], r.name, r.modules, r.bytes_in, r.bytes_out, /*resumed=*/true);
    }
    return absl::OkStatus();
  }

  // Verifies the last record of each wanted unit; marks the verified ones kept (unit_kept_ and
  // their tensors written). Returns, per unit, the record kept or null.
  absl::StatusOr<std::vector<const JournaledUnit*>> VerifyJournaledUnits() {
    std::map<int64_t, const JournaledUnit*> latest;  // the last record of each unit
    for (const JournaledUnit& r : journaled_) latest[r.unit] = &r;
    std::vector<const JournaledUnit*> kept(plan().units.size(), nullptr);
    std::vector<uint8_t> buf(
        std::clamp<uint64_t>(options_.copy_chunk_bytes, uint64_t{4096}, uint64_t{8} << 20));
    ShardSubsetWriter& writer = *out_->subset();
    for (const auto& [i, r] : latest) {
      if (static_cast<size_t>(i) >= plan().units.size() || !unit_wanted_[i]) continue;
      std::vector<std::string> expected;
      for (size_t k = op_.unit_first_spec[i]; k < op_.unit_first_spec[i + 1]; ++k) {
        if (writer.Wants(op_.specs[k].name)) expected.push_back(op_.specs[k].name);
      }
      // Tensors in handed-over files are trusted with their file; the others are verified here.
      JournaledUnit here = *r;
      std::erase_if(here.tensors, [&](const JournaledTensor& t) {
        return !writer.Wants(t.name) && handed_.count(t.file) > 0;
      });
      const std::string why = VerifyJournaledUnit(here, std::move(expected), writer, buf,
                                                  &result_.resume.bytes_verified);
      if (!why.empty()) {
        ++result_.resume.units_rejected;
        result_.warnings.push_back(StrCat("resume: computing '", r->name, "' again: ", why));
        continue;
      }
      for (const JournaledTensor& t : here.tensors) RETURN_IF_ERROR(writer.MarkWritten(t.name));
      unit_kept_[i] = true;
      kept[i] = r;
    }
    return kept;
  }

  // Durable runs: finishes the files whose tensors are all written and hands them to the output
  // directory (an object store output uploads them to its staging prefix and frees the local disk).
  absl::Status HandOverFinishedFiles() {
    ASSIGN_OR_RETURN(std::vector<std::string> finished, FinishFilesToHandOver());
    for (const std::string& name : finished) RETURN_IF_ERROR(output_.HandOver(name, fingerprint_));
    return absl::OkStatus();
  }

  // The files whose tensors are all written, finished (none unless the output hands over).
  absl::StatusOr<std::vector<std::string>> FinishFilesToHandOver() {
    if (journal_ == nullptr || out_->subset() == nullptr || !output_.HandsOver()) {
      return std::vector<std::string>{};
    }
    return out_->subset()->FinishCompleteFiles();
  }

  // While streaming, the hand-over (an upload to the object store) runs on its own thread, so
  // the writer goes on with the next file; at most one more finished file waits for it (the
  // local scratch holds the files being written, one being uploaded and one waiting). A
  // cancelled run still hands over the files already finished; a failed one stops.
  void HandOverStage() {
    while (std::optional<std::string> name = to_hand_over_.Pop()) {
      if (state_.failed() && !absl::IsCancelled(state_.status())) continue;
      if (absl::Status s = output_.HandOver(*name, fingerprint_); !s.ok()) {
        state_.Fail(std::move(s));
      }
    }
  }

  // ---- read, quantize, write ----

  absl::Status Stream() {
    state_.OnFail([this] {
      to_quantize_.Close();
      to_write_.Close();
      to_hand_over_.Close();
    });
    std::thread reader_thread([this] { ReadStage(); });
    std::thread writer_thread([this] { WriteStage(); });
    std::thread hand_over_thread([this] { HandOverStage(); });
    QuantizeStage();
    to_write_.Close();
    reader_thread.join();
    writer_thread.join();
    to_hand_over_.Close();
    hand_over_thread.join();
    result_.warnings.insert(result_.warnings.end(), nonfinite_warnings_.begin(),
                            nonfinite_warnings_.end());
    state_.CheckCancelled();
    return state_.status();
  }

  void ReadStage() {
    for (size_t i = 0; i < plan().units.size(); ++i) {
      if (!unit_wanted_[i] || unit_kept_[i]) continue;
      if (state_.CheckCancelled()) return;
      absl::StatusOr<UnitPtr> unit = ReadUnit(i);
      if (!unit.ok()) return state_.Fail(unit.status());
      if (!to_quantize_.Push(*std::move(unit))) return;  // closed by a failure
    }
    to_quantize_.Close();
  }

  // The source tensors of unit `i` (a copied tensor is streamed by the writer instead).
  absl::StatusOr<UnitPtr> ReadUnit(size_t i) {
    const WorkUnit& u = plan().units[i];
    auto data = std::make_unique<UnitData>();
    data->index = i;
    data->metered = MemoryMeter::Unit(&meter_);
    for (const std::string& t : u.tensors) {
      const uint64_t size = sources().ByteSize(t);
      data->bytes_in += size;
      if (u.kind == WorkUnit::Kind::kCopy) continue;
      std::vector<uint8_t> buf(size);
      data->metered.AddBytes(buf.size());
      RETURN_IF_ERROR(sources().Read(t, buf));
      data->inputs.push_back(std::move(buf));
      if (const Fp8Weight* fp8 = prep_.fp8.Find(t)) {
        // The E4M3 codes as stored and their checked scales: the backend dequantizes them into
        // the fp32 values the quantizer takes (docs/NUMERICS.md 7).
        ASSIGN_OR_RETURN(Fp8ScaleGrid grid, ReadFp8Scales(reader(), t, *fp8));
        data->metered.AddBytes(grid.values.size() * sizeof(float));
        data->fp8.push_back(std::move(grid));
        data->input_dtypes.push_back(DType::kF32);
        continue;
      }
      data->fp8.push_back(std::nullopt);
      data->input_dtypes.push_back(*formats::ToKernelDType(sources().Spec(t).dtype));
    }
    return data;
  }

  void QuantizeStage() {
    while (std::optional<UnitPtr> item = to_quantize_.Pop()) {
      UnitPtr d = std::move(*item);
      if (state_.CheckCancelled()) continue;  // the unit is dropped
      if (plan().units[d->index].kind == WorkUnit::Kind::kQuantize) {
        if (absl::Status s = QuantizeUnit(*d); !s.ok()) {
          state_.Fail(std::move(s));
          continue;
        }
      }
      to_write_.Push(std::move(d));  // closed by a failure: the unit is dropped
    }
  }

  // Quantizes and encodes the unit's tensors (replacing its inputs by its outputs).
  absl::Status QuantizeUnit(UnitData& d) {
    const WorkUnit& u = plan().units[d.index];
    // FP8 inputs are widened to fp32 for the quantizer (kernels/quantize_driver.h), on host
    // threads unless the CUDA executor reads them: metered as an upper bound while quantized.
    for (size_t j = 0; j < d.fp8.size(); ++j) {
      if (d.fp8[j].has_value()) d.metered.AddBytes(d.inputs[j].size() * sizeof(float));
    }
    absl::StatusOr<std::vector<QuantizedTensor>> q = QuantizeTensors(u, d);
    if (!q.ok()) {
      return absl::Status(
          q.status().code(),
          StrCat(sources().FileName(u.tensors[0]), ": quantizing '",
                 u.group.empty() ? u.tensors[0] : u.group, "': ", q.status().message()));
    }
    d.inputs.clear();
    d.fp8.clear();
    const std::optional<float>& amax = op_.unit_amax[d.index];
    for (size_t j = 0; j < q->size(); ++j) {
      const QuantizedTensor& qt = (*q)[j];
      for (EncodedTensor& e : EncodeQuantized(options_.layout, u.modules[j], qt, amax)) {
        d.outputs.push_back(std::move(e));
      }
      ModuleResult r;
      r.module = u.modules[j];
      r.group = u.group;
      r.rows = qt.rows;
      r.cols = qt.cols;
      r.global_scale = qt.global_scale;
      r.input_amax = amax;
      r.metrics = qt.metrics;
      d.results.push_back(r);
      modules_.push_back(std::move(r));
    }
    d.metered.SetBytes(BufferBytes(d));
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<QuantizedTensor>> QuantizeTensors(const WorkUnit& u,
                                                               const UnitData& d) {
    const ModelCalibration* cal = options_.calibration;
    std::vector<TensorView> views;
    std::vector<std::unique_ptr<formats::LoadedCalibration>> cals;
    std::vector<const Calibration*> cal_ptrs;
    std::vector<Fp8Scales> fp8(u.tensors.size());  // sized once: the views point into it
    for (size_t j = 0; j < u.tensors.size(); ++j) {
      const formats::TensorSpec& info = sources().Spec(u.tensors[j]);
      TensorView v;
      v.name = info.name;
      v.dtype = d.input_dtypes[j];
      v.shape = info.shape;
      v.data = d.inputs[j].data();
      if (d.fp8[j].has_value()) {
        fp8[j] = d.fp8[j]->view();
        v.fp8 = &fp8[j];
      }
      views.push_back(std::move(v));
      if (cal != nullptr) {
        ASSIGN_OR_RETURN(std::unique_ptr<formats::LoadedCalibration> loaded,
                         cal->Load(u.modules[j], info.shape[1]));
        cal_ptrs.push_back(loaded->calibration.empty() ? nullptr : &loaded->calibration);
        cals.push_back(std::move(loaded));
      }
    }
    return backend_->QuantizeGroup(views, options_.quantize, cal_ptrs);
  }

  void WriteStage() {
    while (std::optional<UnitPtr> item = to_write_.Pop()) {
      UnitData& d = **item;
      if (state_.failed()) continue;  // drained: the unit is dropped
      const WorkUnit& u = plan().units[d.index];
      absl::StatusOr<WrittenUnit> written = WriteUnit(d);
      d.metered.Release();
      absl::Status s = written.status();
      if (s.ok() && journal_ != nullptr) s = JournalUnit(d, *written);
      if (!s.ok()) {
        state_.Fail(std::move(s));
        continue;
      }
      nonfinite_warnings_.insert(nonfinite_warnings_.end(), written->warnings.begin(),
                                 written->warnings.end());
      Report(u, UnitName(u), d.results, d.bytes_in, written->bytes_out, /*resumed=*/false);
      absl::StatusOr<std::vector<std::string>> finished = FinishFilesToHandOver();
      if (!finished.ok()) {
        state_.Fail(finished.status());
        continue;
      }
      for (std::string& name : *finished) to_hand_over_.Push(std::move(name));  // closed: failed
      state_.CheckCancelled();
    }
  }

  // Writes unit `d`: its encoded tensors, an unquantized FP8 weight as BF16, or a copied tensor.
  absl::StatusOr<WrittenUnit> WriteUnit(const UnitData& d) {
    const WorkUnit& u = plan().units[d.index];
    if (u.kind != WorkUnit::Kind::kCopy) return WriteEncoded(d);
    if (prep_.fp8.Find(u.tensors[0]) != nullptr) return WriteDequantizedFp8(u.tensors[0]);
    return CopyTensor(u.tensors[0]);
  }

  // Streams a copied tensor from its input file into its output file in chunks.
  absl::StatusOr<WrittenUnit> CopyTensor(const std::string& name) {
    const std::string& dtype = sources().Spec(name).dtype;
    const uint64_t size = sources().ByteSize(name);
    // Chunks of whole elements (8 divides every element size), so that each is scanned alone.
    uint64_t cap = std::max<uint64_t>(options_.copy_chunk_bytes, 8);
    cap = std::min<uint64_t>(size, cap - cap % 8);
    std::vector<uint8_t> chunk(cap);
    meter_.AddBytes(static_cast<int64_t>(cap));
    Sha256 hash;
    absl::Status s;
    int64_t nonfinite = 0;
    for (uint64_t off = 0; off < size && s.ok(); off += cap) {
      const uint64_t n = std::min(cap, size - off);
      s = sources().ReadRange(name, off, std::span<uint8_t>(chunk.data(), n));
      if (s.ok()) {
        nonfinite += formats::CountNonFinite(dtype, std::span<const uint8_t>(chunk.data(), n));
      }
      if (s.ok() && nonfinite > 0 && options_.strict_finite) break;
      if (s.ok()) s = out_->AppendTensorData(name, std::span<const uint8_t>(chunk.data(), n));
      if (s.ok() && journal_ != nullptr) hash.Update(std::span<const uint8_t>(chunk.data(), n));
    }
    if (size == 0 && s.ok()) s = out_->WriteTensor(name, {});
    meter_.AddBytes(-static_cast<int64_t>(cap));
    RETURN_IF_ERROR(s);
    WrittenUnit w;
    // (strict: stopped at the first chunk with one)
    RETURN_IF_ERROR(ReportNonFinite(StrCat("tensor '", name, "' (", dtype, ", copied unquantized)"),
                                    nonfinite, &w));
    w.bytes_out = size;
    if (journal_ != nullptr && out_->Wants(name)) w.sha256.emplace_back(name, hash.HexDigest());
    return w;
  }

  // A NaN/Inf in a tensor that is written unquantized (a norm, an embedding, an excluded layer)
  // reaches the output as it is: reported in w->warnings (`what` names the tensor), or refused
  // with strict_finite.
  absl::Status ReportNonFinite(const std::string& what, int64_t nonfinite, WrittenUnit* w) {
    if (nonfinite == 0) return absl::OkStatus();
    if (options_.strict_finite) {
      return absl::InvalidArgumentError(
          StrCat(what, " holds NaN/Inf values (strict: non-finite values are refused)"));
    }
    w->warnings.push_back(StrCat(what, " holds ", nonfinite,
                                 nonfinite == 1 ? " NaN/Inf value" : " NaN/Inf values",
                                 "; copied as it is"));
    return absl::OkStatus();
  }

  // Writes an FP8 weight that stays unquantized as BF16: the fp32 dequantization rounded to
  // nearest even (bit-identical to DeepSeek's fp8_cast_bf16.py). NaN codes are reported as
  // copied NaN values are.
  absl::StatusOr<WrittenUnit> WriteDequantizedFp8(const std::string& name) {
    WrittenUnit w;
    if (!out_->Wants(name)) return w;
    // fp32 values, their bf16 bytes and the codes while converting.
    const Fp8Weight& fp8 = *prep_.fp8.Find(name);
    const int64_t bytes = fp8.rows * fp8.cols * 7;
    meter_.AddBytes(bytes);
    absl::StatusOr<std::vector<uint8_t>> bf16 =
        ReadFp8AsBf16(sources(), name, fp8);
    absl::Status s = bf16.status();
    if (s.ok()) {
      s = ReportNonFinite(StrCat("tensor '", name, "' (F8_E4M3, written as BF16 unquantized)"),
                          formats::CountNonFinite("BF16", *bf16), &w);
    }
    if (s.ok()) s = out_->WriteTensor(name, *bf16);
    meter_.AddBytes(-bytes);
    RETURN_IF_ERROR(s);
    w.bytes_out = bf16->size();
    if (journal_ != nullptr) {
      Sha256 h;
      h.Update(*bf16);
      w.sha256.emplace_back(name, h.HexDigest());
    }
    return w;
  }

  // Writes the encoded tensors of a quantized unit that go to this run's files.
  absl::StatusOr<WrittenUnit> WriteEncoded(const UnitData& d) {
    WrittenUnit w;
    for (const EncodedTensor& e : d.outputs) {
      if (!out_->Wants(e.spec.name)) continue;
      RETURN_IF_ERROR(out_->WriteTensor(e.spec.name, e.data));
      w.bytes_out += e.data.size();
      if (journal_ != nullptr) {
        Sha256 h;
        h.Update(e.data);
        w.sha256.emplace_back(e.spec.name, h.HexDigest());
      }
    }
    return w;
  }

  // The unit's bytes are in the staged file: records where, with their digests.
  absl::Status JournalUnit(const UnitData& d, const WrittenUnit& written) {
    JournaledUnit ju;
    ju.plan = fingerprint_;
    ju.unit = static_cast<int64_t>(d.index);
    ju.name = UnitName(plan().units[d.index]);
    ju.bytes_in = d.bytes_in;
    ju.bytes_out = written.bytes_out;
    ju.modules = d.results;
    ju.warnings = written.warnings;
    for (const auto& [name, sha] : written.sha256) {
      ASSIGN_OR_RETURN(TensorPlacement where, out_->subset()->Locate(name));
      ju.tensors.push_back({name, where.file, where.offset, where.size, sha});
    }
    return journal_->Append(ju);
  }

  // Counts a unit done (written, or kept from an earlier attempt) and reports it.
  void Report(const WorkUnit& u, const std::string& name, const std::vector<ModuleResult>& modules,
              uint64_t bytes_in, uint64_t bytes_out, bool resumed) {
    ++units_done_;
    bytes_in_done_ += bytes_in;
    if (!hooks_.on_progress) return;
    TensorProgress p;
    p.name = name;
    p.quantized = u.kind == WorkUnit::Kind::kQuantize;
    p.modules = modules;
    p.bytes_in = bytes_in;
    p.bytes_out = bytes_out;
    p.units_done = units_done_;
    p.units_total = wanted_units_;
    p.bytes_in_done = bytes_in_done_;
    p.bytes_in_total = result_.tensor_bytes_in;
    p.quantized_bytes_in_total = result_.quantized_bytes_in;
    p.resumed = resumed;
    hooks_.on_progress(p);
  }

  // ---- finalize ----

  absl::Status Finalize() {
    RETURN_IF_ERROR(out_->Finish());
    result_.shard_files = out_->shard_files();
    if (!handed_.empty()) {  // handed over by an earlier attempt: not in the writer
      result_.shard_files.clear();
      for (int f : files_) result_.shard_files.push_back(op_.shard_files[f]);
    }
    result_.shard_sha256 = out_->Sha256s();
    const bool index_written = out_->writes_index();
    out_.reset();
    if (options_.write_model_files) {
      RETURN_IF_ERROR(WriteModelFilesImpl(input_, op_, options_, staging_,
                                          /*write_index=*/!index_written, &result_,
                                          hooks_.cancelled));
    }
    RETURN_IF_ERROR(CheckCancelled(hooks_.cancelled));
    if (hooks_.before_commit) RETURN_IF_ERROR(hooks_.before_commit());
    return output_.Commit();
  }

  QuantizeModelResult TakeResult() {
    modules_.insert(modules_.end(), kept_modules_.begin(), kept_modules_.end());
    std::sort(modules_.begin(), modules_.end(),
              [](const ModuleResult& a, const ModuleResult& b) { return a.module < b.module; });
    result_.modules = std::move(modules_);
    result_.peak_units_in_flight = meter_.peak_units();
    result_.peak_buffered_bytes = meter_.peak_bytes();
    result_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    return std::move(result_);
  }

  // The call.
  storage::InputDirectory& input_;
  storage::OutputDirectory& output_;
  const QuantizeModelOptions& options_;
  const PipelineHooks& hooks_;
  ResumeJournal* const journal_;  // null: a plain run
  const std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();

  // Plan.
  Prepared prep_;
  ModelOutputPlan op_;
  bool subset_ = false;            // a subset of the files (sharded run): no index
  std::vector<int> files_;         // the files written: indices into op_.shard_files
  std::vector<bool> unit_wanted_;  // the unit has an output tensor in one of them
  int64_t wanted_units_ = 0;
  std::unique_ptr<QuantizerBackend> own_backend_;
  QuantizerBackend* backend_ = nullptr;
  std::string staging_;

  // Resume.
  std::string fingerprint_;
  std::vector<JournaledUnit> journaled_;
  std::map<std::string, storage::HandedOverFile> handed_;  // trusted, by file name
  std::vector<bool> unit_kept_;  // verified in the staged files: neither read nor computed
  std::vector<ModuleResult> kept_modules_;

  // Streaming.
  std::unique_ptr<OutputFiles> out_;
  BoundedQueue<std::string> to_hand_over_{1};  // finished files for HandOverStage
  BoundedQueue<UnitPtr> to_quantize_, to_write_;
  RunState state_;
  MemoryMeter meter_;
  std::vector<ModuleResult> modules_;  // the quantize stage's results
  std::vector<std::string> nonfinite_warnings_;  // copied NaN/Inf values (kept units' first)
  int64_t units_done_ = 0;             // kept, then written (writer thread)
  uint64_t bytes_in_done_ = 0;

  QuantizeModelResult result_;
};

}  // namespace

absl::StatusOr<QuantizeModelResult> QuantizeModel(storage::InputDirectory& input, storage::OutputDirectory& output,
                                                  const QuantizeModelOptions& options,
                                                  const PipelineHooks& hooks) {
  ModelRun run(input, output, options, hooks);
  return run.Run();
}

absl::StatusOr<QuantizeModelResult> QuantizeModelLocal(const std::string& input_dir,
                                                       const std::string& output_dir,
                                                       const QuantizeModelOptions& options,
                                                       const PipelineHooks& hooks) {
  ASSIGN_OR_RETURN(std::unique_ptr<storage::InputDirectory> in,
                   storage::OpenLocalInputDirectory(input_dir));
  ASSIGN_OR_RETURN(std::unique_ptr<storage::StagedOutputDirectory> out,
                   storage::OpenLocalOutputDirectory(output_dir));
  return QuantizeModel(*in, *out, options, hooks);
}

}  // namespace nvfp4::pipeline
