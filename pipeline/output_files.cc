#include "pipeline/output_files.h"

#include <filesystem>
#include <utility>

#include "base/status_macros.h"
#include "base/str_util.h"

namespace nvfp4::pipeline {


absl::StatusOr<std::unique_ptr<ShardSubsetWriter>> ShardSubsetWriter::Create(
    const std::string& dir, const ModelOutputPlan& plan, const std::vector<int>& only,
    const Options& options) {
  std::unique_ptr<ShardSubsetWriter> w(new ShardSubsetWriter());
  for (int f : only) {
    if (f < 0 || static_cast<size_t>(f) >= plan.shard_files.size()) {
      return absl::InvalidArgumentError(
          StrCat("output shard ", f, " out of range (", plan.shard_files.size(), " files)"));
    }
    std::vector<formats::TensorSpec> specs;
    for (size_t i : plan.shard_specs[f]) {
      specs.push_back(plan.specs[i]);
      w->file_of_[plan.specs[i].name] = w->writers_.size();
    }
    formats::SafetensorsWriter::Options so;
    so.metadata = plan.shard_metadata;
    so.sync = options.sync;
    so.reuse_partial = options.reuse_partial;
    so.sha256 = options.sha256;
    ASSIGN_OR_RETURN(auto writer, formats::SafetensorsWriter::Create(
                                      (std::filesystem::path(dir) / plan.shard_files[f]).string(),
                                      std::move(specs), std::move(so)));
    w->writers_.push_back(std::move(writer));
    w->files_.push_back(plan.shard_files[f]);
  }
  return w;
}

absl::Status ShardSubsetWriter::WriteTensor(const std::string& name,
                                            std::span<const uint8_t> data) {
  return writers_[file_of_.at(name)]->WriteTensor(name, data);
}

absl::Status ShardSubsetWriter::AppendTensorData(const std::string& name,
                                                 std::span<const uint8_t> chunk) {
  return writers_[file_of_.at(name)]->AppendTensorData(name, chunk);
}

absl::StatusOr<TensorPlacement> ShardSubsetWriter::Locate(const std::string& name) const {
  auto it = file_of_.find(name);
  if (it == file_of_.end()) return absl::NotFoundError(StrCat("no output file for '", name, "'"));
  const formats::SafetensorsWriter& w = *writers_[it->second];
  ASSIGN_OR_RETURN(auto range, w.TensorRange(name));
  return TensorPlacement{files_[it->second], w.temp_path(), range.first, range.second, w.reused()};
}

absl::Status ShardSubsetWriter::MarkWritten(const std::string& name) {
  return writers_[file_of_.at(name)]->MarkWritten(name);
}

absl::StatusOr<std::vector<std::string>> ShardSubsetWriter::FinishCompleteFiles() {
  std::vector<std::string> done;
  for (size_t i = 0; i < writers_.size(); ++i) {
    if (writers_[i]->finished() || !writers_[i]->AllWritten()) continue;
    RETURN_IF_ERROR(writers_[i]->Finish());
    done.push_back(files_[i]);
  }
  return done;
}

absl::Status ShardSubsetWriter::Finish() {
  for (auto& w : writers_) {
    if (!w->finished()) RETURN_IF_ERROR(w->Finish());
  }
  return absl::OkStatus();
}

std::map<std::string, std::string> ShardSubsetWriter::Sha256s() const {
  return formats::FinishedSha256s(files_, writers_);
}

absl::StatusOr<std::unique_ptr<OutputFiles>> OutputFiles::Open(const std::string& dir,
                                                               const ModelOutputPlan& plan,
                                                               const Options& options) {
  std::unique_ptr<OutputFiles> out(new OutputFiles());
  if (!options.checkpoint_writer) {
    ShardSubsetWriter::Options so;
    so.sync = options.sync;
    so.reuse_partial = options.reuse_partial;
    so.sha256 = options.sha256;
    ASSIGN_OR_RETURN(out->subset_writer_, ShardSubsetWriter::Create(dir, plan, options.files, so));
    return out;
  }
  formats::ShardedCheckpointWriter::Options wo;
  wo.max_shard_size = options.max_shard_size;
  wo.sync = options.sync;
  wo.sha256 = options.sha256;
  wo.metadata = plan.shard_metadata;
  ASSIGN_OR_RETURN(out->checkpoint_writer_,
                   formats::ShardedCheckpointWriter::Create(dir, plan.specs, std::move(wo)));
  if (out->checkpoint_writer_->shard_files() != plan.shard_files) {
    return absl::InternalError(
        "the output plan and the checkpoint writer disagree on the shard files");
  }
  return out;
}

bool OutputFiles::Wants(const std::string& name) const {
  return checkpoint_writer_ != nullptr || subset_writer_->Wants(name);
}

absl::Status OutputFiles::WriteTensor(const std::string& name, std::span<const uint8_t> data) {
  if (checkpoint_writer_ != nullptr) return checkpoint_writer_->WriteTensor(name, data);
  if (!subset_writer_->Wants(name)) return absl::OkStatus();
  return subset_writer_->WriteTensor(name, data);
}

absl::Status OutputFiles::AppendTensorData(const std::string& name,
                                           std::span<const uint8_t> chunk) {
  if (checkpoint_writer_ != nullptr) return checkpoint_writer_->AppendTensorData(name, chunk);
  return subset_writer_->AppendTensorData(name, chunk);
}

absl::Status OutputFiles::Finish() {
  return checkpoint_writer_ != nullptr ? checkpoint_writer_->Finish() : subset_writer_->Finish();
}

const std::vector<std::string>& OutputFiles::shard_files() const {
  return checkpoint_writer_ != nullptr ? checkpoint_writer_->shard_files()
                                       : subset_writer_->shard_files();
}

std::map<std::string, std::string> OutputFiles::Sha256s() const {
  return checkpoint_writer_ != nullptr ? checkpoint_writer_->Sha256s() : subset_writer_->Sha256s();
}

}  // namespace nvfp4::pipeline
