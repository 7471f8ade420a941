#include "pipeline/quantize_model.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
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
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::InternalError(StrCat(path.string(), ": write failed"));
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
  return p;
}

}  // namespace

absl::StatusOr<QuantizationPlan> PlanModel(InputDirectory& input,
                                           const QuantizeModelOptions& options) {
  ASSIGN_OR_RETURN(Prepared p, Prepare(input, options));
  return std::move(p.plan);
}

absl::StatusOr<QuantizeModelResult> QuantizeModel(InputDirectory& input, OutputDirectory& output,
                                                  const QuantizeModelOptions& options,
                                                  const PipelineHooks& hooks) {
  const auto t0 = std::chrono::steady_clock::now();
  if (options.max_shard_size == 0) return absl::InvalidArgumentError("max shard size must be > 0");
  if (options.quantize.objective != Objective::kMse && options.calibration == nullptr) {
    return absl::InvalidArgumentError(
        StrCat("objective '", ObjectiveName(options.quantize.objective),
               "' needs calibration statistics (a calibration file)"));
  }
  ASSIGN_OR_RETURN(Prepared prep, Prepare(input, options));
  const formats::CheckpointReader& reader = *prep.checkpoint.reader;
  const QuantizationPlan& plan = prep.plan;

  QuantizeModelResult result;
  result.plan = plan;

  // Input scales (W4A4): every quantized module needs one; a fused group shares the max.
  const ModelCalibration* cal = options.calibration;
  result.w4a4 = cal != nullptr && cal->HasAnyInputAmax();
  std::vector<std::optional<float>> unit_amax(plan.units.size());
  for (size_t i = 0; i < plan.units.size(); ++i) {
    const WorkUnit& u = plan.units[i];
    if (u.kind != WorkUnit::Kind::kQuantize || !result.w4a4) continue;
    for (const std::string& m : u.modules) {
      ASSIGN_OR_RETURN(std::optional<float> a, cal->InputAmax(m));
      if (a) unit_amax[i] = std::max(unit_amax[i].value_or(0.0f), *a);
    }
    if (!unit_amax[i]) {
      return absl::InvalidArgumentError(StrCat(
          cal->reader().name(), ": has input_amax entries (W4A4) but none for '", u.modules[0],
          "'; give input_amax for every quantized module, or none for weight-only W4A16"));
    }
  }

  // Output tensor specs, unit by unit (this order decides the split into shards).
  std::vector<formats::TensorSpec> out_specs;
  for (size_t i = 0; i < plan.units.size(); ++i) {
    const WorkUnit& u = plan.units[i];
    for (size_t j = 0; j < u.tensors.size(); ++j) {
      const formats::TensorLocation* loc = reader.Find(u.tensors[j]);
      result.tensor_bytes_in += loc->info->size;
      if (u.kind == WorkUnit::Kind::kCopy) {
        out_specs.push_back({loc->info->name, loc->info->dtype, loc->info->shape});
      } else {
        for (formats::TensorSpec& s :
             QuantizedSpecs(options.layout, u.modules[j], loc->info->shape[0], loc->info->shape[1],
                            unit_amax[i].has_value())) {
          out_specs.push_back(std::move(s));
        }
      }
    }
  }
  for (const formats::TensorSpec& s : out_specs) {
    ASSIGN_OR_RETURN(uint64_t n, formats::TensorByteSize(s));
    result.tensor_bytes_out += n;
  }

  std::unique_ptr<QuantizerBackend> backend;
  if (options.device == "cpu") {
    backend = MakeCpuBackend(options.cpu_threads);
  } else {
    ASSIGN_OR_RETURN(backend, MakeBackend(options.device));
  }
  result.backend = backend->name();

  ASSIGN_OR_RETURN(const std::string staging, output.Begin());
  // From here on every error path aborts the output.
  auto fail = [&](absl::Status s) -> absl::StatusOr<QuantizeModelResult> {
    output.Abort();
    return s;
  };

  formats::ShardedCheckpointWriter::Options wopts;
  wopts.max_shard_size = options.max_shard_size;
  wopts.sync = options.sync;
  wopts.metadata = {{"nvfp4.layout", std::string(LayoutName(options.layout))},
                    {"nvfp4.method", std::string(MethodName(options.quantize.method))},
                    {"nvfp4.objective", std::string(ObjectiveName(options.quantize.objective))}};
  auto writer_or = formats::ShardedCheckpointWriter::Create(staging, out_specs, wopts);
  if (!writer_or.ok()) return fail(writer_or.status());
  std::unique_ptr<formats::ShardedCheckpointWriter> writer = std::move(writer_or).value();

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
    int64_t done = 0;
    uint64_t in_done = 0;
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
      if (u.kind == WorkUnit::Kind::kCopy) {
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
          if (s.ok())
            s = writer->AppendTensorData(u.tensors[0], std::span<const uint8_t>(chunk.data(), n));
        }
        if (size == 0 && s.ok()) s = writer->WriteTensor(u.tensors[0], {});
        meter.AddBytes(-static_cast<int64_t>(cap));
        chunk.clear();
        chunk.shrink_to_fit();
        bytes_out = size;
      } else {
        for (const EncodedTensor& e : d.outputs) {
          if (s.ok()) s = writer->WriteTensor(e.spec.name, e.data);
          bytes_out += e.data.size();
        }
      }
      finish_unit();
      if (!s.ok()) {
        state.Fail(s);
        continue;
      }
      ++done;
      in_done += d.bytes_in;
      if (hooks.on_progress) {
        TensorProgress p;
        p.name = u.kind == WorkUnit::Kind::kCopy ? u.tensors[0]
                 : u.group.empty()               ? u.modules[0]
                                                 : u.group;
        p.quantized = u.kind == WorkUnit::Kind::kQuantize;
        p.modules = d.results;
        p.bytes_in = d.bytes_in;
        p.bytes_out = bytes_out;
        p.units_done = done;
        p.units_total = static_cast<int64_t>(plan.units.size());
        p.bytes_in_done = in_done;
        p.bytes_in_total = result.tensor_bytes_in;
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

  if (absl::Status s = writer->Finish(); !s.ok()) return fail(s);
  result.shard_files = writer->shard_files();
  writer.reset();

  // ---- configs and the other files ----
  const std::vector<std::string> ignore = plan.IgnoreList();
  nlohmann::ordered_json config = prep.config ? *prep.config : nlohmann::ordered_json::object();
  if (!prep.config) {
    result.warnings.push_back(
        "the input has no config.json: wrote one holding only the quantization_config");
  }
  config["quantization_config"] = QuantizationConfig(options.layout, result.w4a4, ignore);
  if (absl::Status s = WriteTextFile(fs::path(staging) / "config.json", config.dump(2) + "\n");
      !s.ok()) {
    return fail(s);
  }
  if (options.layout == Layout::kModelOpt) {
    if (absl::Status s = WriteTextFile(fs::path(staging) / "hf_quant_config.json",
                                       HfQuantConfig(result.w4a4, ignore).dump(2) + "\n");
        !s.ok()) {
      return fail(s);
    }
  }
  auto files = input.ListFiles();
  if (!files.ok()) return fail(files.status());
  const std::set<std::string> own(prep.checkpoint.files.begin(), prep.checkpoint.files.end());
  for (const std::string& f : *files) {
    if (own.count(f) || f == "config.json" || f == "hf_quant_config.json") continue;
    if (IsCheckpointLike(f)) {
      result.warnings.push_back(StrCat("not copied: '", f,
                                       "' (weights that are not part of the safetensors "
                                       "checkpoint being quantized)"));
      continue;
    }
    if (is_cancelled()) return fail(cancel_status());
    if (absl::Status s = CopyFileToLocal(input, f, (fs::path(staging) / f).string()); !s.ok()) {
      return fail(s);
    }
    result.copied_files.push_back(f);
  }
  if (!plan.odd_k_blocks.empty()) {
    result.warnings.push_back(StrCat(
        plan.odd_k_blocks.size(), " quantized module(s) have an odd K/16 (e.g. '",
        plan.odd_k_blocks[0],
        "'): vLLM needs K % 16 == 0 after the tensor-parallel split, so row-parallel layers of "
        "these cannot be split over 2 GPUs"));
  }
  if (is_cancelled()) return fail(cancel_status());
  if (absl::Status s = output.Commit(); !s.ok()) return fail(s);

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
