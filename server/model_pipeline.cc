#include "server/model_pipeline.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "base/sha256.h"
#include "base/status_macros.h"
#include "nvfp4/v1/convert.h"
#include "pipeline/model_calibration.h"
#include "pipeline/quantize_model.h"
#include "pipeline/resume.h"
#include "pipeline/selection.h"
#include "server/log.h"
#include "storage/directory.h"
#include "storage/router.h"

namespace nvfp4::server {
namespace {
namespace fs = std::filesystem;

// A QuantizerBackend that leases a device of the pool for each QuantizeGroup call and remembers
// which device ran which unit, and for how long (keyed by the unit's first tensor name).
class PooledBackend : public QuantizerBackend {
 public:
  PooledBackend(DevicePool* pool, ProgressSink* progress) : pool_(pool), progress_(progress) {}

  std::string name() const override { return absl::StrJoin(pool_->names(), ","); }

  absl::StatusOr<std::vector<QuantizedTensor>> QuantizeGroup(
      std::span<const TensorView> tensors, const QuantizeOptions& options,
      std::span<const Calibration* const> calibration) override {
    if (!tensors.empty()) progress_->TensorStarted(tensors[0].name);
    ASSIGN_OR_RETURN(DevicePool::Lease lease,
                     pool_->Acquire([this] { return progress_->Cancelled(); }));
    const absl::Time t0 = absl::Now();
    absl::StatusOr<std::vector<QuantizedTensor>> out =
        lease.backend()->QuantizeGroup(tensors, options, calibration);
    const double seconds = absl::ToDoubleSeconds(absl::Now() - t0);
    if (out.ok() && !tensors.empty()) {
      absl::MutexLock lock(&mu_);
      runs_[tensors[0].name] = {lease.backend()->name(), seconds};
    }
    return out;
  }

  // The device and seconds of the unit whose first tensor is `tensor` (forgotten afterwards).
  std::pair<std::string, double> TakeRun(const std::string& tensor) {
    absl::MutexLock lock(&mu_);
    auto it = runs_.find(tensor);
    if (it == runs_.end()) return {"", 0.0};
    std::pair<std::string, double> r = it->second;
    runs_.erase(it);
    return r;
  }

 private:
  DevicePool* pool_;
  ProgressSink* progress_;
  absl::Mutex mu_;
  std::map<std::string, std::pair<std::string, double>> runs_ ABSL_GUARDED_BY(mu_);
};

// size + sha256 of a local file.
absl::StatusOr<v1::OutputFile> DescribeLocalFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InternalError(absl::StrCat("cannot read output file ", path.string()));
  Sha256 sha;
  std::string buf(4u << 20, '\0');
  int64_t total = 0;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const std::streamsize n = in.gcount();
    if (n <= 0) break;
    sha.Update(buf.data(), static_cast<size_t>(n));
    total += n;
  }
  v1::OutputFile f;
  f.set_sha256(sha.HexDigest());
  f.set_size_bytes(total);
  return f;
}

absl::StatusOr<pipeline::QuantizeModelOptions> OptionsFromRequest(
    const v1::QuantizeModelRequest& r) {
  pipeline::QuantizeModelOptions o;
  o.layout = r.layout() == v1::LAYOUT_COMPRESSED_TENSORS ? pipeline::Layout::kCompressedTensors
                                                         : pipeline::Layout::kModelOpt;
  ASSIGN_OR_RETURN(o.quantize, v1::FromProto(r.options()));
  o.selection.include.assign(r.include_patterns().begin(), r.include_patterns().end());
  o.selection.exclude.assign(r.exclude_patterns().begin(), r.exclude_patterns().end());
  o.strict_finite = r.strict();
  return o;
}

class CheckpointPipeline : public ModelPipeline {
 public:
  CheckpointPipeline(std::string scratch, std::string work, uint64_t max_shard_size)
      : scratch_(std::move(scratch)), work_(std::move(work)), max_shard_size_(max_shard_size) {}

  absl::Status Validate(const v1::QuantizeModelRequest& r) override {
    if (r.input_uri().empty()) return absl::InvalidArgumentError("input_uri is required");
    if (r.output_uri().empty()) return absl::InvalidArgumentError("output_uri is required");
    RETURN_IF_ERROR(storage::ParseStorageUri(r.input_uri()).status());
    RETURN_IF_ERROR(storage::ParseStorageUri(r.output_uri()).status());
    if (!r.calibration_uri().empty()) {
      RETURN_IF_ERROR(storage::ParseStorageUri(r.calibration_uri()).status());
    }
    if (r.input_uri() == r.output_uri()) {
      return absl::InvalidArgumentError("output_uri must differ from input_uri");
    }
    if (r.layout() != v1::LAYOUT_UNSPECIFIED && r.layout() != v1::LAYOUT_MODELOPT &&
        r.layout() != v1::LAYOUT_COMPRESSED_TENSORS) {
      return absl::InvalidArgumentError(absl::StrCat("unknown layout ", r.layout()));
    }
    RETURN_IF_ERROR(v1::FromProto(r.options()).status());
    for (const auto* list : {&r.include_patterns(), &r.exclude_patterns()}) {
      for (const std::string& p : *list) RETURN_IF_ERROR(pipeline::ValidatePattern(p));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<v1::OutputFile>> Run(const ModelJobContext& ctx) override {
    absl::StatusOr<std::vector<v1::OutputFile>> out = RunImpl(ctx);
    // A job that ends here (failed or cancelled by a client) never resumes: drop its staging,
    // unless another replica owns the job by now (this one stalled past its lease).
    if (!out.ok() && ctx.resume != nullptr && !ctx.progress->Interrupted() &&
        ctx.progress->CheckOwnership().ok()) {
      DiscardStaged(ctx.job_id, *ctx.request, ctx.store);
    }
    return out;
  }

  void DiscardStaged(const std::string& job_id, const v1::QuantizeModelRequest& r,
                     storage::StorageRouter* store) override {
    if (store == nullptr) return;
    absl::StatusOr<std::unique_ptr<storage::OutputDirectory>> out =
        OpenOutput(r, *store, job_id, /*resumable=*/true);
    if (out.ok()) (*out)->Discard();
  }

 private:
  absl::StatusOr<std::vector<v1::OutputFile>> RunImpl(const ModelJobContext& ctx);
  // The job's output directory; resumable: staged under a name derived from the job id.
  absl::StatusOr<std::unique_ptr<storage::StagedOutputDirectory>> OpenOutput(
      const v1::QuantizeModelRequest& r, storage::StorageRouter& router, const std::string& job_id,
      bool resumable) const {
    const bool object = storage::IsObjectStoreUri(r.output_uri());
    // An explicit scratch directory (--scratch_dir) wins: the operator chose where staging goes.
    const std::string& scratch = resumable && object && scratch_.empty() ? work_ : scratch_;
    ASSIGN_OR_RETURN(
        std::unique_ptr<storage::StagedOutputDirectory> out,
        storage::OpenOutputDirectory(r.output_uri(), router, /*overwrite=*/false, scratch));
    if (resumable) RETURN_IF_ERROR(out->SetResumeKey(job_id));
    return out;
  }

  std::string scratch_;
  std::string work_;
  uint64_t max_shard_size_;
};

absl::StatusOr<std::vector<v1::OutputFile>> CheckpointPipeline::RunImpl(
    const ModelJobContext& ctx) {
  const v1::QuantizeModelRequest& r = *ctx.request;
  storage::StorageRouter* router = ctx.store;
  if (router == nullptr) return absl::InternalError("a model job without the server's storage");
  ASSIGN_OR_RETURN(pipeline::QuantizeModelOptions options, OptionsFromRequest(r));
  options.max_shard_size = max_shard_size_;

  ASSIGN_OR_RETURN(std::unique_ptr<storage::InputDirectory> input,
                   storage::OpenInputDirectory(r.input_uri(), *router));
  std::unique_ptr<pipeline::ModelCalibration> calibration;
  if (!r.calibration_uri().empty()) {
    ASSIGN_OR_RETURN(std::unique_ptr<formats::RandomAccessSource> src,
                     storage::OpenObjectFile(r.calibration_uri(), *router));
    ASSIGN_OR_RETURN(calibration, pipeline::ModelCalibration::Open(std::move(src)));
    options.calibration = calibration.get();
  }
  // Totals first, so that watchers see tensors_total from the start.
  ASSIGN_OR_RETURN(pipeline::QuantizationPlan plan, pipeline::PlanModel(*input, options));
  int64_t tensors_total = 0;
  for (const pipeline::WorkUnit& u : plan.units) tensors_total += static_cast<int64_t>(u.tensors.size());
  ctx.progress->SetTotals(tensors_total, 0);
  if (ctx.progress->Cancelled()) return absl::CancelledError("job cancelled");

  ASSIGN_OR_RETURN(std::unique_ptr<storage::StagedOutputDirectory> output,
                   OpenOutput(r, *router, ctx.job_id, /*resumable=*/ctx.resume != nullptr));
  options.resume = ctx.resume;
  // A local output is renamed into place, so its files are hashed while they are written; an
  // object store output is hashed as it is uploaded.
  options.sha256_outputs = output->PublishesByRename();
  PooledBackend backend(ctx.devices, ctx.progress);
  options.backend = &backend;

  bool totals_known = false;
  int64_t tensors_resumed = 0;
  pipeline::PipelineHooks hooks;
  hooks.cancelled = [&ctx] { return ctx.progress->Cancelled(); };
  // A fleet replica that stalled past its lease must not publish over the job's new owner.
  hooks.before_commit = [&ctx] { return ctx.progress->CheckOwnership(); };
  hooks.on_resume = [&](const pipeline::ResumeInfo& info) {
    if (info.started_over) {
      LogLine("job ", ctx.job_id, " resume: the input changed since the interrupted run; ",
              "starting over");
    }
    if (info.units_kept == 0 && info.units_rejected == 0) return;
    LogLine("job ", ctx.job_id, " resumed at unit ", info.units_kept, "/", info.units_total,
            ": kept ", info.units_kept, " journaled units (", info.bytes_verified,
            " staged bytes verified in ", absl::StrFormat("%.3f", info.verify_seconds), "s), ",
            info.units_rejected, " untrusted; computing from unit ", info.first_redone);
  };
  hooks.on_progress = [&](const pipeline::TensorProgress& p) {
    if (!totals_known) {
      ctx.progress->SetTotals(tensors_total, static_cast<int64_t>(p.bytes_in_total));
      ctx.progress->SetQuantizedBytesTotal(static_cast<int64_t>(p.quantized_bytes_in_total));
      totals_known = true;
    }
    if (p.resumed) {
      tensors_resumed += p.quantized ? static_cast<int64_t>(p.modules.size()) : 1;
      ctx.progress->SetResumed(tensors_resumed);
    }
    if (!p.quantized) {
      v1::TensorResult res;
      res.set_name(p.name);
      ctx.progress->TensorFinished(res, static_cast<int64_t>(p.bytes_in),
                                   static_cast<int64_t>(p.bytes_out));
      return;
    }
    // One result per module of the unit; bytes split by element count.
    const std::pair<std::string, double> run =
        p.modules.empty() ? std::pair<std::string, double>{"", 0.0}
                          : backend.TakeRun(p.modules[0].module + ".weight");
    int64_t elements = 0;
    for (const pipeline::ModuleResult& m : p.modules) elements += m.rows * m.cols;
    int64_t in_left = static_cast<int64_t>(p.bytes_in), out_left = static_cast<int64_t>(p.bytes_out);
    for (size_t j = 0; j < p.modules.size(); ++j) {
      const pipeline::ModuleResult& m = p.modules[j];
      const bool last = j + 1 == p.modules.size();
      const double share = elements > 0 ? static_cast<double>(m.rows * m.cols) / elements : 0;
      const int64_t in = last ? in_left : static_cast<int64_t>(share * static_cast<double>(p.bytes_in));
      const int64_t out =
          last ? out_left : static_cast<int64_t>(share * static_cast<double>(p.bytes_out));
      in_left -= in;
      out_left -= out;
      v1::TensorResult res;
      res.set_name(m.module + ".weight");
      res.set_quantized(true);
      res.add_shape(m.rows);
      res.add_shape(m.cols);
      v1::ToProto(m.metrics, res.mutable_metrics());
      res.set_quantize_seconds(run.second * share);
      res.set_device(run.first);
      ctx.progress->TensorFinished(res, in, out);
    }
  };
  ASSIGN_OR_RETURN(pipeline::QuantizeModelResult result,
                   pipeline::QuantizeModel(*input, *output, options, hooks));
  for (const std::string& w : result.warnings) ctx.progress->Warn(w);

  std::vector<v1::OutputFile> outputs;
  if (!output->PublishesByRename()) {
    for (const storage::PublishedFile& f : output->published()) {
      v1::OutputFile o;
      o.set_name(f.name);
      o.set_uri(f.uri);
      o.set_size_bytes(f.size);
      o.set_sha256(f.sha256);
      outputs.push_back(std::move(o));
    }
    return outputs;
  }
  // A local output directory: list what was published.
  const fs::path root = output->Describe();
  std::vector<std::string> names;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_regular_file(ec)) names.push_back(fs::relative(it->path(), root).generic_string());
  }
  if (ec) return absl::InternalError(absl::StrCat("listing ", root.string(), ": ", ec.message()));
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    v1::OutputFile o;
    if (auto it = result.shard_sha256.find(name); it != result.shard_sha256.end()) {
      std::error_code size_ec;
      const uintmax_t size = fs::file_size(root / name, size_ec);
      if (size_ec) {
        return absl::InternalError(
            absl::StrCat("cannot stat output file ", (root / name).string(), ": ",
                         size_ec.message()));
      }
      o.set_size_bytes(static_cast<int64_t>(size));
      o.set_sha256(it->second);
    } else {  // config.json and the other small files
      ASSIGN_OR_RETURN(o, DescribeLocalFile(root / name));
    }
    o.set_name(name);
    o.set_uri(storage::JoinUri(r.output_uri(), name));
    outputs.push_back(std::move(o));
  }
  return outputs;
}

}  // namespace

std::unique_ptr<ModelPipeline> MakeCheckpointPipeline(std::string scratch_dir, std::string work_dir,
                                                      uint64_t max_shard_size) {
  return std::make_unique<CheckpointPipeline>(std::move(scratch_dir), std::move(work_dir),
                                              max_shard_size);
}

}  // namespace nvfp4::server
