#include "pipeline/quantize_model.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "base/status_macros.h"
#include "formats/dtypes.h"
#include "formats/str_util.h"
#include "kernels/backend.h"
#include "pipeline/checkpoint_io.h"
#include "pipeline/resume.h"

namespace nvfp4::pipeline {
namespace {

namespace fs = std::filesystem;
using formats::StrCat;

// A FIFO of at most `capacity` items. Close() wakes every waiter: Push then fails and Pop drains
// what is left, then returns nullopt.
template <typename T>
class BoundedQueue {
 public:
  explicit BoundedQueue(size_t capacity) : capacity_(std::max<size_t>(capacity, 1)) {}
  bool Push(T item) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return closed_ || items_.size() < capacity_; });
    if (closed_) return false;
    items_.push_back(std::move(item));
    cv_.notify_all();
    return true;
  }
  std::optional<T> Pop() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return closed_ || !items_.empty(); });
    if (items_.empty()) return std::nullopt;
    T item = std::move(items_.front());
    items_.pop_front();
    cv_.notify_all();
    return item;
  }
  void Close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    cv_.notify_all();
  }

 private:
  const size_t capacity_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<T> items_;
  bool closed_ = false;
};

// The first error of any stage; Fail() closes the queues so that every stage stops.
class RunState {
 public:
  void SetCloser(std::function<void()> closer) { closer_ = std::move(closer); }
  void Fail(absl::Status status) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (status_.ok()) status_ = std::move(status);
    }
    failed_.store(true);
    if (closer_) closer_();
  }
  bool failed() const { return failed_.load(); }
  absl::Status status() {
    std::lock_guard<std::mutex> lock(mu_);
    return status_;
  }

 private:
  std::mutex mu_;
  absl::Status status_;
  std::atomic<bool> failed_{false};
  std::function<void()> closer_;
};

// Counts units alive and bytes buffered (the memory-bound instrumentation).
class MemoryMeter {
 public:
  void AddUnit() {
    std::lock_guard<std::mutex> lock(mu_);
    peak_units_ = std::max(peak_units_, ++units_);
  }
  void RemoveUnit() {
    std::lock_guard<std::mutex> lock(mu_);
    --units_;
  }
  void AddBytes(int64_t delta) {
    std::lock_guard<std::mutex> lock(mu_);
    bytes_ += delta;
    peak_bytes_ = std::max(peak_bytes_, bytes_);
  }
  int peak_units() const { return peak_units_; }
  uint64_t peak_bytes() const { return static_cast<uint64_t>(peak_bytes_); }

 private:
  std::mutex mu_;
  int units_ = 0, peak_units_ = 0;
  int64_t bytes_ = 0, peak_bytes_ = 0;
};

struct UnitData {
  size_t index = 0;
  std::vector<std::vector<uint8_t>> inputs;  // kQuantize: one buffer per member tensor
  std::vector<EncodedTensor> outputs;        // kQuantize: encoded tensors
  std::vector<ModuleResult> results;
  uint64_t bytes_in = 0;
  uint64_t bytes_buffered = 0;
};
using UnitPtr = std::unique_ptr<UnitData>;

uint64_t BufferBytes(const UnitData& u) {
  uint64_t n = 0;
  for (const auto& b : u.inputs) n += b.size();
  for (const auto& e : u.outputs) n += e.data.size();
  return n;
}

std::vector<formats::TensorSpec> SourceSpecs(const formats::CheckpointReader& reader) {
  std::vector<formats::TensorSpec> specs;
  specs.reserve(reader.tensors().size());
  for (const formats::TensorLocation& loc : reader.tensors()) {
    specs.push_back({loc.info->name, loc.info->dtype, loc.info->shape});
  }
  return specs;
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
  QuantizationPlan plan;
};

absl::StatusOr<Prepared> Prepare(InputDirectory& input, const QuantizeModelOptions& options) {
  Prepared p;
  ASSIGN_OR_RETURN(p.checkpoint, OpenCheckpoint(input));
  ASSIGN_OR_RETURN(p.config, ReadConfigJson(input));
  if (p.config && p.config->contains("quantization_config")) {
    return absl::FailedPreconditionError(
        StrCat(input.Describe(),
               "/config.json: the model is already quantized (it has a "
               "quantization_config); give the original checkpoint"));
  }
  SelectionOptions sel = options.selection;
  ApplyConfig(p.config, sel);
  const std::vector<formats::TensorSpec> specs = SourceSpecs(*p.checkpoint.reader);
  ASSIGN_OR_RETURN(p.plan, PlanQuantization(specs, sel));
  if (p.plan.quantized_modules.empty()) {
    return absl::InvalidArgumentError(
        StrCat(input.Describe(), ": no module to quantize (every candidate is excluded)"));
  }
  // gptq is driven by each module's input Gram: name the first module without one, before any
  // work is done.
  if (options.quantize.method == Method::kGptq) {
    for (const std::string& m : p.plan.quantized_modules) {
      if (!options.calibration->HasGram(m)) {
        return absl::InvalidArgumentError(StrCat(
            options.calibration->reader().name(), ": no input Gram for module '", m,
            "' (expected '", m, ".input_gram' [K, K] or '", m,
            ".input_activations'), which method gptq needs for every quantized module; "
            "exclude the module (--exclude) or collect its Gram (docs/CALIBRATION.md)"));
      }
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
  const formats::CheckpointReader& reader = *p.checkpoint.reader;
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
          "'; give input_amax for every quantized module, or none for weight-only W4A16"));
    }
  }

  // Output tensor specs, unit by unit (this order decides the split into shards).
  for (size_t i = 0; i < plan.units.size(); ++i) {
    const WorkUnit& u = plan.units[i];
    op.unit_first_spec.push_back(op.specs.size());
    for (size_t j = 0; j < u.tensors.size(); ++j) {
      const formats::TensorLocation* loc = reader.Find(u.tensors[j]);
      op.tensor_bytes_in += loc->info->size;
      if (u.kind == WorkUnit::Kind::kCopy) {
        op.specs.push_back({loc->info->name, loc->info->dtype, loc->info->shape});
      } else {
        for (formats::TensorSpec& s :
             QuantizedSpecs(options.layout, u.modules[j], loc->info->shape[0], loc->info->shape[1],
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
    op.shard_metadata["nvfp4.gptq"] = StrCat("block_scales=", MethodName(g.block_scales), ",dampening=", g.dampening,
                             ",block_size=", g.block_size, ",order=", GptqOrderName(g.order),
                             ",global_scale=", GptqGlobalScaleName(g.global_scale));
  }
  return op;
}

// Writes the safetensors files `only` (indices into op.shard_files) of a run: the subset writer of
// sharded runs. Same file names, headers and bytes as formats::ShardedCheckpointWriter.
class ShardSubsetWriter {
 public:
  static absl::StatusOr<std::unique_ptr<ShardSubsetWriter>> Create(const std::string& dir,
                                                                   const ModelOutputPlan& op,
                                                                   const std::vector<int>& only,
                                                                   bool sync,
                                                                   bool reuse_partial = false,
                                                                   bool sha256 = false) {
    std::unique_ptr<ShardSubsetWriter> w(new ShardSubsetWriter());
    for (int f : only) {
      if (f < 0 || static_cast<size_t>(f) >= op.shard_files.size()) {
        return absl::InvalidArgumentError(
            StrCat("output shard ", f, " out of range (", op.shard_files.size(), " files)"));
      }
      std::vector<formats::TensorSpec> specs;
      for (size_t i : op.shard_specs[f]) {
        specs.push_back(op.specs[i]);
        w->file_of_[op.specs[i].name] = w->writers_.size();
      }
      formats::SafetensorsWriter::Options so;
      so.metadata = op.shard_metadata;
      so.sync = sync;
      so.reuse_partial = reuse_partial;
      so.sha256 = sha256;
      ASSIGN_OR_RETURN(auto writer, formats::SafetensorsWriter::Create(
                                        (fs::path(dir) / op.shard_files[f]).string(),
                                        std::move(specs), std::move(so)));
      w->writers_.push_back(std::move(writer));
      w->files_.push_back(op.shard_files[f]);
    }
    return w;
  }
  bool Wants(const std::string& name) const { return file_of_.contains(name); }
  absl::Status WriteTensor(const std::string& name, std::span<const uint8_t> data) {
    return writers_[file_of_.at(name)]->WriteTensor(name, data);
  }
  absl::Status AppendTensorData(const std::string& name, std::span<const uint8_t> chunk) {
    return writers_[file_of_.at(name)]->AppendTensorData(name, chunk);
  }
  absl::Status Finish() {
    for (auto& w : writers_) RETURN_IF_ERROR(w->Finish());
    return absl::OkStatus();
  }
  const std::vector<std::string>& shard_files() const { return files_; }
  // After Finish() when created with `sha256`: file -> hex sha256.
  std::map<std::string, std::string> Sha256s() const {
    return formats::FinishedSha256s(files_, writers_);
  }

  // Where tensor `name` goes: its file, the file's temporary path and the byte range.
  struct Placement {
    std::string file;
    std::string temp_path;
    uint64_t offset = 0, size = 0;
    bool reused = false;  // the file is a partial file of an earlier run
  };
  absl::StatusOr<Placement> Locate(const std::string& name) const {
    auto it = file_of_.find(name);
    if (it == file_of_.end()) return absl::NotFoundError(StrCat("no output file for '", name, "'"));
    const formats::SafetensorsWriter& w = *writers_[it->second];
    ASSIGN_OR_RETURN(auto range, w.TensorRange(name));
    return Placement{files_[it->second], w.temp_path(), range.first, range.second, w.reused()};
  }
  absl::Status MarkWritten(const std::string& name) {
    return writers_[file_of_.at(name)]->MarkWritten(name);
  }

 private:
  ShardSubsetWriter() = default;
  std::vector<std::unique_ptr<formats::SafetensorsWriter>> writers_;
  std::vector<std::string> files_;
  std::map<std::string, size_t> file_of_;
};

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

// Fingerprint of everything that decides a run's output bytes apart from the job's options: the
// input tensors (names, dtypes, shapes, places), the output headers (layout, tensors, files,
// metadata) and the input scales. Journaled units of another fingerprint are not reused.
absl::StatusOr<std::string> PlanFingerprint(const formats::CheckpointReader& reader,
                                            const ModelOutputPlan& op) {
  Sha256 h;
  auto add = [&](std::string_view s) {
    h.Update(StrCat(s.size(), ":"));
    h.Update(s);
  };
  add("nvfp4-resume-plan-v1");
  for (size_t i = 0; i < reader.shards().size(); ++i) {
    add(StrCat("input shard ", i));
    for (const formats::TensorInfo& t : reader.shards()[i]->tensors()) {
      std::string shape;
      for (int64_t d : t.shape) shape += StrCat(d, ",");
      add(StrCat(t.name, "|", t.dtype, "|", shape, "|", t.offset, "|", t.size));
    }
  }
  for (size_t f = 0; f < op.shard_files.size(); ++f) {
    std::vector<formats::TensorSpec> specs;
    for (size_t i : op.shard_specs[f]) specs.push_back(op.specs[i]);
    formats::SortForWriting(specs);
    ASSIGN_OR_RETURN(std::string header, formats::BuildSafetensorsHeader(specs, op.shard_metadata));
    add(op.shard_files[f]);
    add(header);
  }
  for (const std::optional<float>& a : op.unit_amax) {
    add(a ? StrCat(std::bit_cast<uint32_t>(*a)) : std::string("-"));
  }
  return h.HexDigest();
}

// Checks a journaled unit against the staged files: exactly the output tensors `expected`, each in
// the file and byte range the writers planned, in a partial file kept from the earlier run, with
// the journaled sha256. Returns "" when it holds, else the reason.
std::string VerifyJournaledUnit(const JournaledUnit& r, std::vector<std::string> expected,
                                const ShardSubsetWriter& writer, std::vector<uint8_t>& buf,
                                uint64_t* bytes_read) {
  std::vector<std::string> got;
  for (const JournaledTensor& t : r.tensors) got.push_back(t.name);
  std::sort(expected.begin(), expected.end());
  std::sort(got.begin(), got.end());
  if (got != expected) return "the journaled tensors are not the unit's output tensors";
  std::map<std::string, std::unique_ptr<formats::LocalFileSource>> sources;
  for (const JournaledTensor& t : r.tensors) {
    absl::StatusOr<ShardSubsetWriter::Placement> p = writer.Locate(t.name);
    if (!p.ok()) return std::string(p.status().message());
    if (p->file != t.file || p->offset != t.offset || p->size != t.size) {
      return StrCat("'", t.name, "' is planned at another place");
    }
    if (!p->reused) return StrCat(p->file, " was not kept from the interrupted run");
    auto& src = sources[p->temp_path];
    if (src == nullptr) {
      absl::StatusOr<std::unique_ptr<formats::LocalFileSource>> s =
          formats::LocalFileSource::Open(p->temp_path);
      if (!s.ok()) return std::string(s.status().message());
      src = std::move(s).value();
    }
    Sha256 h;
    for (uint64_t off = 0; off < t.size;) {
      const uint64_t n = std::min<uint64_t>(buf.size(), t.size - off);
      if (absl::Status s = src->ReadAt(t.offset + off, std::span<uint8_t>(buf.data(), n));
          !s.ok()) {
        return std::string(s.message());
      }
      h.Update(std::span<const uint8_t>(buf.data(), n));
      off += n;
      *bytes_read += n;
    }
    if (h.HexDigest() != t.sha256) return StrCat("the staged bytes of '", t.name, "' differ");
  }
  return "";
}

}  // namespace

absl::StatusOr<ModelOutputPlan> PlanModelOutput(InputDirectory& input,
                                                const QuantizeModelOptions& options) {
  RETURN_IF_ERROR(CheckOptions(options));
  ASSIGN_OR_RETURN(Prepared p, Prepare(input, options));
  return BuildOutputPlan(p, options);
}

namespace {

absl::Status WriteModelFilesImpl(InputDirectory& input, const ModelOutputPlan& op,
                                 const QuantizeModelOptions& options, const std::string& staging,
                                 bool write_index, QuantizeModelResult* result,
                                 const std::function<bool()>& cancelled) {
  auto is_cancelled = [&] { return cancelled && cancelled(); };
  auto cancel_status = [] { return absl::CancelledError("quantize-model cancelled"); };
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
    if (is_cancelled()) return cancel_status();
    RETURN_IF_ERROR(CopyFileToLocal(input, f, (fs::path(staging) / f).string()));
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

absl::Status WriteModelFiles(InputDirectory& input, const ModelOutputPlan& op,
                             const QuantizeModelOptions& options, const std::string& dir,
                             QuantizeModelResult* result, const std::function<bool()>& cancelled) {
  return WriteModelFilesImpl(input, op, options, dir, /*write_index=*/true, result, cancelled);
}

absl::StatusOr<QuantizationPlan> PlanModel(InputDirectory& input,
                                           const QuantizeModelOptions& options) {
  ASSIGN_OR_RETURN(Prepared p, Prepare(input, options));
  return std::move(p.plan);
}

absl::StatusOr<QuantizeModelResult> QuantizeModel(InputDirectory& input, OutputDirectory& output,
                                                  const QuantizeModelOptions& options,
                                                  const PipelineHooks& hooks) {
  const auto t0 = std::chrono::steady_clock::now();
  RETURN_IF_ERROR(CheckOptions(options));
  ASSIGN_OR_RETURN(Prepared prep, Prepare(input, options));
  const formats::CheckpointReader& reader = *prep.checkpoint.reader;
  const QuantizationPlan& plan = prep.plan;
  ASSIGN_OR_RETURN(const ModelOutputPlan op, BuildOutputPlan(prep, options));

  QuantizeModelResult result;
  result.plan = plan;
  result.w4a4 = op.w4a4;
  const std::vector<std::optional<float>>& unit_amax = op.unit_amax;
  const std::vector<formats::TensorSpec>& out_specs = op.specs;

  // Sharded runs write a subset of the files (and no index); a full run writes them all.
  const bool subset = options.output_shards.has_value() || !options.write_model_files;
  ResumeJournal* const journal = options.resume;
  // Durable runs write through the subset writer (all files, the same bytes as the checkpoint
  // writer), whose partial files can be reopened and verified.
  const bool use_subset_writer = subset || journal != nullptr;
  std::vector<int> only;
  if (options.output_shards) {
    only = *options.output_shards;
  } else {
    for (size_t f = 0; f < op.shard_files.size(); ++f) only.push_back(static_cast<int>(f));
  }
  std::sort(only.begin(), only.end());
  only.erase(std::unique(only.begin(), only.end()), only.end());
  // The units that have an output tensor in one of the written files.
  std::vector<bool> unit_wanted(plan.units.size(), true);
  if (subset) {
    std::vector<bool> spec_wanted(out_specs.size(), false);
    for (int f : only) {
      if (f < 0 || static_cast<size_t>(f) >= op.shard_files.size()) {
        return absl::InvalidArgumentError(
            StrCat("output shard ", f, " out of range (", op.shard_files.size(), " files)"));
      }
      for (size_t i : op.shard_specs[f]) spec_wanted[i] = true;
    }
    for (size_t i = 0; i < plan.units.size(); ++i) {
      unit_wanted[i] = false;
      for (size_t k = op.unit_first_spec[i]; k < op.unit_first_spec[i + 1]; ++k) {
        if (spec_wanted[k]) unit_wanted[i] = true;
      }
    }
  }
  uint64_t wanted_bytes_in = 0;
  int64_t wanted_units = 0;
  for (size_t i = 0; i < plan.units.size(); ++i) {
    if (!unit_wanted[i]) continue;
    ++wanted_units;
    for (const std::string& t : plan.units[i].tensors) {
      const uint64_t size = reader.Find(t)->info->size;
      wanted_bytes_in += size;
      if (plan.units[i].kind == WorkUnit::Kind::kQuantize) result.quantized_bytes_in += size;
    }
  }

  const ModelCalibration* cal = options.calibration;
  result.tensor_bytes_in = subset ? wanted_bytes_in : op.tensor_bytes_in;
  if (subset) {
    for (int f : only) {
      for (size_t i : op.shard_specs[f])
        result.tensor_bytes_out += *formats::TensorByteSize(out_specs[i]);
    }
  } else {
    result.tensor_bytes_out = op.tensor_bytes_out;
  }

  std::unique_ptr<QuantizerBackend> own_backend;
  if (options.backend == nullptr && options.device == "cpu") {
    own_backend = MakeCpuBackend(options.cpu_threads);
  } else if (options.backend == nullptr) {
    ASSIGN_OR_RETURN(own_backend, MakeBackend(options.device));
  }
  QuantizerBackend* const backend =
      options.backend != nullptr ? options.backend : own_backend.get();
  result.backend = backend->name();

  ASSIGN_OR_RETURN(const std::string staging, output.Begin());
  // From here on every error path aborts the output.
  auto fail = [&](absl::Status s) -> absl::StatusOr<QuantizeModelResult> {
    output.Abort();
    return s;
  };

  // ---- resume: what an earlier, interrupted attempt journaled ----
  std::string fingerprint;
  std::vector<JournaledUnit> journaled;
  if (journal != nullptr) {
    absl::StatusOr<std::string> fp = PlanFingerprint(reader, op);
    if (!fp.ok()) return fail(fp.status());
    fingerprint = *std::move(fp);
    absl::StatusOr<std::vector<JournaledUnit>> loaded = journal->Load();
    if (!loaded.ok()) return fail(loaded.status());
    for (const JournaledUnit& r : *loaded) {
      if (r.plan != fingerprint) result.resume.started_over = true;
    }
    if (result.resume.started_over) {
      if (absl::Status s = journal->Reset(); !s.ok()) return fail(s);
      result.warnings.push_back(
          "resume: the input or the output plan changed since the interrupted run; starting over");
    } else {
      journaled = *std::move(loaded);
    }
    // Keep this plan's safetensors files (partial or finished) when there is something to keep;
    // everything else in the staging directory is removed and written again.
    std::set<std::string> keep;
    if (!journaled.empty()) {
      for (int f : only) {
        keep.insert(op.shard_files[f]);
        keep.insert(op.shard_files[f] + ".tmp");
      }
    }
    std::error_code ec;
    std::vector<fs::path> stale;
    for (const auto& e : fs::directory_iterator(staging, ec)) {
      if (!keep.count(e.path().filename().string())) stale.push_back(e.path());
    }
    for (const fs::path& p : stale) fs::remove_all(p, ec);
    if (ec) return fail(absl::InternalError(StrCat(staging, ": cannot clean: ", ec.message())));
  }

  formats::ShardedCheckpointWriter::Options wopts;
  wopts.max_shard_size = options.max_shard_size;
  wopts.sync = options.sync;
  wopts.sha256 = options.sha256_outputs;
  wopts.metadata = op.shard_metadata;
  std::unique_ptr<formats::ShardedCheckpointWriter> writer;
  std::unique_ptr<ShardSubsetWriter> subset_writer;
  if (use_subset_writer) {
    auto w = ShardSubsetWriter::Create(staging, op, only, options.sync,
                                       /*reuse_partial=*/journal != nullptr,
                                       options.sha256_outputs);
    if (!w.ok()) return fail(w.status());
    subset_writer = std::move(w).value();
  } else {
    auto writer_or = formats::ShardedCheckpointWriter::Create(staging, out_specs, wopts);
    if (!writer_or.ok()) return fail(writer_or.status());
    writer = std::move(writer_or).value();
    if (writer->shard_files() != op.shard_files) {
      return fail(
          absl::InternalError("the output plan and the checkpoint writer disagree on the "
                              "shard files"));
    }
  }
  auto write_tensor = [&](const std::string& name, std::span<const uint8_t> data) {
    if (!use_subset_writer) return writer->WriteTensor(name, data);
    if (!subset_writer->Wants(name)) return absl::OkStatus();
    return subset_writer->WriteTensor(name, data);
  };
  auto append_tensor = [&](const std::string& name, std::span<const uint8_t> chunk) {
    if (!use_subset_writer) return writer->AppendTensorData(name, chunk);
    return subset_writer->AppendTensorData(name, chunk);
  };

  // Keep the journaled units whose staged bytes verify; they are neither read nor computed again.
  std::vector<bool> unit_kept(plan.units.size(), false);
  std::vector<ModuleResult> kept_modules;
  int64_t kept_units = 0;
  uint64_t kept_bytes_in = 0;
  if (journal != nullptr) {
    const auto v0 = std::chrono::steady_clock::now();
    std::map<int64_t, const JournaledUnit*> latest;  // the last record of each unit
    for (const JournaledUnit& r : journaled) latest[r.unit] = &r;
    std::vector<const JournaledUnit*> kept_record(plan.units.size(), nullptr);
    std::vector<uint8_t> buf(
        std::clamp<uint64_t>(options.copy_chunk_bytes, uint64_t{4096}, uint64_t{8} << 20));
    for (const auto& [i, r] : latest) {
      if (static_cast<size_t>(i) >= plan.units.size() || !unit_wanted[i]) continue;
      std::vector<std::string> expected;
      for (size_t k = op.unit_first_spec[i]; k < op.unit_first_spec[i + 1]; ++k) {
        if (subset_writer->Wants(out_specs[k].name)) expected.push_back(out_specs[k].name);
      }
      const std::string why = VerifyJournaledUnit(*r, std::move(expected), *subset_writer, buf,
                                                  &result.resume.bytes_verified);
      if (!why.empty()) {
        ++result.resume.units_rejected;
        result.warnings.push_back(StrCat("resume: computing '", r->name, "' again: ", why));
        continue;
      }
      for (const JournaledTensor& t : r->tensors) {
        if (absl::Status s = subset_writer->MarkWritten(t.name); !s.ok()) return fail(s);
      }
      unit_kept[i] = true;
      kept_record[i] = r;
    }
    result.resume.units_total = wanted_units;
    for (size_t i = 0; i < plan.units.size(); ++i) {
      if (unit_kept[i]) ++result.resume.units_kept;
      if (unit_wanted[i] && !unit_kept[i] && result.resume.first_redone < 0) {
        result.resume.first_redone = static_cast<int64_t>(i);
      }
    }
    result.resume.verify_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - v0).count();
    if (result.resume.units_kept > 0) {
      result.warnings.push_back(StrCat("resumed: kept ", result.resume.units_kept, " of ",
                                       wanted_units, " units of an interrupted run (",
                                       result.resume.bytes_verified, " bytes verified)"));
    }
    if (hooks.on_resume) hooks.on_resume(result.resume);
    for (size_t i = 0; i < plan.units.size(); ++i) {
      if (!unit_kept[i]) continue;
      const JournaledUnit& r = *kept_record[i];
      ++kept_units;
      kept_bytes_in += r.bytes_in;
      kept_modules.insert(kept_modules.end(), r.modules.begin(), r.modules.end());
      if (hooks.on_progress) {
        TensorProgress p;
        p.name = r.name;
        p.quantized = plan.units[i].kind == WorkUnit::Kind::kQuantize;
        p.modules = r.modules;
        p.bytes_in = r.bytes_in;
        p.bytes_out = r.bytes_out;
        p.units_done = kept_units;
        p.units_total = wanted_units;
        p.bytes_in_done = kept_bytes_in;
        p.bytes_in_total = result.tensor_bytes_in;
        p.quantized_bytes_in_total = result.quantized_bytes_in;
        p.resumed = true;
        hooks.on_progress(p);
      }
    }
  }

  // ---- the three stages ----
  const size_t depth = static_cast<size_t>(std::max(options.queue_depth, 1));
  BoundedQueue<UnitPtr> to_quantize(depth), to_write(depth);
  RunState state;
  state.SetCloser([&] {
    to_quantize.Close();
    to_write.Close();
  });
  MemoryMeter meter;
  auto is_cancelled = [&] { return hooks.cancelled && hooks.cancelled(); };
  auto cancel_status = [] { return absl::CancelledError("quantize-model cancelled"); };

  std::thread reader_thread([&] {
    for (size_t i = 0; i < plan.units.size() && !state.failed(); ++i) {
      if (!unit_wanted[i] || unit_kept[i]) continue;
      if (is_cancelled()) return state.Fail(cancel_status());
      const WorkUnit& u = plan.units[i];
      auto data = std::make_unique<UnitData>();
      data->index = i;
      meter.AddUnit();
      for (const std::string& t : u.tensors) {
        const formats::TensorLocation* loc = reader.Find(t);
        data->bytes_in += loc->info->size;
        if (u.kind == WorkUnit::Kind::kCopy) continue;  // streamed by the writer
        std::vector<uint8_t> buf(loc->info->size);
        meter.AddBytes(static_cast<int64_t>(buf.size()));
        if (absl::Status s = reader.ReadTensor(*loc, buf); !s.ok()) {
          meter.RemoveUnit();
          return state.Fail(s);
        }
        data->inputs.push_back(std::move(buf));
      }
      data->bytes_buffered = BufferBytes(*data);
      if (!to_quantize.Push(std::move(data))) {
        meter.RemoveUnit();
        return;
      }
    }
    to_quantize.Close();
  });

  std::thread writer_thread([&] {
    int64_t done = kept_units;
    uint64_t in_done = kept_bytes_in;
    std::vector<uint8_t> chunk;
    while (std::optional<UnitPtr> item = to_write.Pop()) {
      UnitData& d = **item;
      const WorkUnit& u = plan.units[d.index];
      auto finish_unit = [&] {
        meter.AddBytes(-static_cast<int64_t>(d.bytes_buffered));
        meter.RemoveUnit();
      };
      if (state.failed()) {
        finish_unit();
        continue;
      }
      uint64_t bytes_out = 0;
      absl::Status s;
      std::vector<std::pair<std::string, std::string>> hashes;  // journal: tensor -> sha256
      if (u.kind == WorkUnit::Kind::kCopy) {
        Sha256 copy_hash;
        const formats::TensorLocation* loc = reader.Find(u.tensors[0]);
        const auto& shard = reader.shards()[loc->shard];
        const uint64_t size = loc->info->size;
        const uint64_t cap =
            std::min<uint64_t>(size, std::max<uint64_t>(options.copy_chunk_bytes, 1));
        chunk.resize(cap);
        meter.AddBytes(static_cast<int64_t>(cap));
        for (uint64_t off = 0; off < size && s.ok(); off += cap) {
          const uint64_t n = std::min(cap, size - off);
          s = shard->ReadTensorRange(*loc->info, off, std::span<uint8_t>(chunk.data(), n));
          if (s.ok()) s = append_tensor(u.tensors[0], std::span<const uint8_t>(chunk.data(), n));
          if (s.ok() && journal != nullptr) {
            copy_hash.Update(std::span<const uint8_t>(chunk.data(), n));
          }
        }
        if (journal != nullptr && (!subset || subset_writer->Wants(u.tensors[0]))) {
          hashes.emplace_back(u.tensors[0], copy_hash.HexDigest());
        }
        if (size == 0 && s.ok()) s = write_tensor(u.tensors[0], {});
        meter.AddBytes(-static_cast<int64_t>(cap));
        chunk.clear();
        chunk.shrink_to_fit();
        bytes_out = size;
      } else {
        for (const EncodedTensor& e : d.outputs) {
          if (!subset || subset_writer->Wants(e.spec.name)) {
            if (s.ok()) s = write_tensor(e.spec.name, e.data);
            bytes_out += e.data.size();
            if (s.ok() && journal != nullptr) {
              Sha256 h;
              h.Update(e.data);
              hashes.emplace_back(e.spec.name, h.HexDigest());
            }
          }
        }
      }
      finish_unit();
      const std::string unit_name = u.kind == WorkUnit::Kind::kCopy ? u.tensors[0]
                                    : u.group.empty()               ? u.modules[0]
                                                                    : u.group;
      if (s.ok() && journal != nullptr) {
        // The unit's bytes are in the staged file: record where, with their digests.
        JournaledUnit ju;
        ju.plan = fingerprint;
        ju.unit = static_cast<int64_t>(d.index);
        ju.name = unit_name;
        ju.bytes_in = d.bytes_in;
        ju.bytes_out = bytes_out;
        ju.modules = d.results;
        for (auto& [name, sha] : hashes) {
          absl::StatusOr<ShardSubsetWriter::Placement> where = subset_writer->Locate(name);
          if (!where.ok()) {
            s = where.status();
            break;
          }
          ju.tensors.push_back({name, where->file, where->offset, where->size, std::move(sha)});
        }
        if (s.ok()) s = journal->Append(ju);
      }
      if (!s.ok()) {
        state.Fail(s);
        continue;
      }
      ++done;
      in_done += d.bytes_in;
      if (hooks.on_progress) {
        TensorProgress p;
        p.name = unit_name;
        p.quantized = u.kind == WorkUnit::Kind::kQuantize;
        p.modules = d.results;
        p.bytes_in = d.bytes_in;
        p.bytes_out = bytes_out;
        p.units_done = done;
        p.units_total = wanted_units;
        p.bytes_in_done = in_done;
        p.bytes_in_total = result.tensor_bytes_in;
        p.quantized_bytes_in_total = result.quantized_bytes_in;
        hooks.on_progress(p);
      }
      if (is_cancelled()) state.Fail(cancel_status());
    }
  });

  // Quantize on this thread.
  std::vector<ModuleResult> modules;
  while (std::optional<UnitPtr> item = to_quantize.Pop()) {
    UnitPtr d = std::move(*item);
    const WorkUnit& u = plan.units[d->index];
    if (state.failed() || is_cancelled()) {
      if (!state.failed()) state.Fail(cancel_status());
      meter.AddBytes(-static_cast<int64_t>(d->bytes_buffered));
      meter.RemoveUnit();
      continue;
    }
    if (u.kind == WorkUnit::Kind::kQuantize) {
      std::vector<TensorView> views;
      std::vector<std::unique_ptr<formats::LoadedCalibration>> cals;
      std::vector<const Calibration*> cal_ptrs;
      absl::Status s;
      for (size_t j = 0; j < u.tensors.size() && s.ok(); ++j) {
        const formats::TensorInfo& info = *reader.Find(u.tensors[j])->info;
        TensorView v;
        v.name = info.name;
        v.dtype = *formats::ToKernelDType(info.dtype);
        v.shape = info.shape;
        v.data = d->inputs[j].data();
        views.push_back(std::move(v));
        if (cal != nullptr) {
          auto loaded = cal->Load(u.modules[j], info.shape[1]);
          if (!loaded.ok()) {
            s = loaded.status();
            break;
          }
          cal_ptrs.push_back((*loaded)->calibration.empty() ? nullptr : &(*loaded)->calibration);
          cals.push_back(std::move(loaded).value());
        }
      }
      absl::StatusOr<std::vector<QuantizedTensor>> q =
          s.ok() ? backend->QuantizeGroup(views, options.quantize, cal_ptrs)
                 : absl::StatusOr<std::vector<QuantizedTensor>>(s);
      if (!q.ok()) {
        state.Fail(absl::Status(
            q.status().code(),
            StrCat(reader.shards()[reader.Find(u.tensors[0])->shard]->name(), ": quantizing '",
                   u.group.empty() ? u.tensors[0] : u.group, "': ", q.status().message())));
        meter.AddBytes(-static_cast<int64_t>(d->bytes_buffered));
        meter.RemoveUnit();
        continue;
      }
      const uint64_t in_bytes = d->bytes_buffered;
      d->inputs.clear();
      for (size_t j = 0; j < q->size(); ++j) {
        const QuantizedTensor& qt = (*q)[j];
        for (EncodedTensor& e :
             EncodeQuantized(options.layout, u.modules[j], qt, unit_amax[d->index])) {
          d->outputs.push_back(std::move(e));
        }
        ModuleResult r;
        r.module = u.modules[j];
        r.group = u.group;
        r.rows = qt.rows;
        r.cols = qt.cols;
        r.global_scale = qt.global_scale;
        r.input_amax = unit_amax[d->index];
        r.metrics = qt.metrics;
        d->results.push_back(r);
        modules.push_back(std::move(r));
      }
      d->bytes_buffered = BufferBytes(*d);
      meter.AddBytes(static_cast<int64_t>(d->bytes_buffered) - static_cast<int64_t>(in_bytes));
    }
    if (!to_write.Push(std::move(d))) {
      // Closed by a failure: the unit is dropped.
      meter.RemoveUnit();
    }
  }
  to_write.Close();
  reader_thread.join();
  writer_thread.join();
  if (state.failed()) return fail(state.status());
  if (is_cancelled()) return fail(cancel_status());

  if (use_subset_writer) {
    if (absl::Status s = subset_writer->Finish(); !s.ok()) return fail(s);
    result.shard_files = subset_writer->shard_files();
    result.shard_sha256 = subset_writer->Sha256s();
    subset_writer.reset();
  } else {
    if (absl::Status s = writer->Finish(); !s.ok()) return fail(s);
    result.shard_files = writer->shard_files();
    result.shard_sha256 = writer->Sha256s();
    writer.reset();
  }

  // ---- the index (subset writer), configs and the other files ----
  if (options.write_model_files) {
    // A full run's index was written by the checkpoint writer.
    if (absl::Status s =
            WriteModelFilesImpl(input, op, options, staging,
                                /*write_index=*/use_subset_writer, &result, hooks.cancelled);
        !s.ok()) {
      return fail(s);
    }
  }
  if (is_cancelled()) return fail(cancel_status());
  if (absl::Status s = output.Commit(); !s.ok()) return fail(s);

  modules.insert(modules.end(), kept_modules.begin(), kept_modules.end());
  std::sort(modules.begin(), modules.end(),
            [](const ModuleResult& a, const ModuleResult& b) { return a.module < b.module; });
  result.modules = std::move(modules);
  result.peak_units_in_flight = meter.peak_units();
  result.peak_buffered_bytes = meter.peak_bytes();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

absl::StatusOr<QuantizeModelResult> QuantizeModelLocal(const std::string& input_dir,
                                                       const std::string& output_dir,
                                                       const QuantizeModelOptions& options,
                                                       const PipelineHooks& hooks) {
  ASSIGN_OR_RETURN(std::unique_ptr<LocalInputDirectory> in, LocalInputDirectory::Open(input_dir));
  LocalOutputDirectory out(output_dir);
  return QuantizeModel(*in, out, options, hooks);
}

}  // namespace nvfp4::pipeline
