// The output safetensors files of one QuantizeModel run, written into its staging directory.
//
// Every file's name, header and bytes come from the run's ModelOutputPlan, so a run that writes a
// subset of the files (one process of a sharded run) writes exactly the bytes a full run writes.
// Two writers do it:
//  - formats::ShardedCheckpointWriter: every file, and the index on Finish() (a plain full run);
//  - ShardSubsetWriter: the files named, reopening partial files of an interrupted attempt when
//    asked (sharded runs and durable runs, whose journaled units are verified in those files).
// OutputFiles picks one and gives the run's stages one interface to both.
#ifndef NVFP4_PIPELINE_OUTPUT_FILES_H_
#define NVFP4_PIPELINE_OUTPUT_FILES_H_

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "formats/safetensors.h"
#include "formats/sharded.h"
#include "pipeline/quantize_model.h"

namespace nvfp4::pipeline {

// Where an output tensor's bytes go.
struct TensorPlacement {
  std::string file;               // the output safetensors file (relative to the staging directory)
  std::string temp_path;          // the file being written
  uint64_t offset = 0, size = 0;  // the tensor's byte range in it
  bool reused = false;            // the file is a partial file of an earlier attempt
};

// Writes the files `only` (indices into plan.shard_files) of a run into `dir`. Same file names,
// headers and bytes as formats::ShardedCheckpointWriter; no index.
class ShardSubsetWriter {
 public:
  struct Options {
    bool sync = true;            // fdatasync each file before its rename
    bool reuse_partial = false;  // SafetensorsWriter::Options::reuse_partial
    bool sha256 = false;         // hash each file while it is written
  };
  // INVALID_ARGUMENT for a file index out of range.
  static absl::StatusOr<std::unique_ptr<ShardSubsetWriter>> Create(const std::string& dir,
                                                                   const ModelOutputPlan& plan,
                                                                   const std::vector<int>& only,
                                                                   const Options& options);

  // True when tensor `name` goes to one of the files written.
  bool Wants(const std::string& name) const { return file_of_.contains(name); }
  // As SafetensorsWriter::WriteTensor / AppendTensorData, for a wanted tensor.
  absl::Status WriteTensor(const std::string& name, std::span<const uint8_t> data);
  absl::Status AppendTensorData(const std::string& name, std::span<const uint8_t> chunk);
  // NOT_FOUND for a tensor not wanted.
  absl::StatusOr<TensorPlacement> Locate(const std::string& name) const;
  // SafetensorsWriter::MarkWritten: the tensor's verified bytes are already in a reused file.
  absl::Status MarkWritten(const std::string& name);
  // Finishes (and renames) every file whose tensors are all written and that is not finished yet;
  // returns their names, in file order. Finish() then finishes the others.
  absl::StatusOr<std::vector<std::string>> FinishCompleteFiles();
  absl::Status Finish();

  const std::vector<std::string>& shard_files() const { return files_; }
  // After Finish() with Options::sha256: file -> hex sha256.
  std::map<std::string, std::string> Sha256s() const;

 private:
  ShardSubsetWriter() = default;
  std::vector<std::unique_ptr<formats::SafetensorsWriter>> writers_;
  std::vector<std::string> files_;
  std::map<std::string, size_t> file_of_;
};

// The output files of a run, through either writer.
class OutputFiles {
 public:
  struct Options {
    // The files written (indices into plan.shard_files). Empty with `checkpoint_writer`.
    std::vector<int> files;
    // Write every file and the index with formats::ShardedCheckpointWriter; else
    // ShardSubsetWriter writes `files` (and the index is left to WriteModelFiles).
    bool checkpoint_writer = true;
    bool reuse_partial = false;  // ShardSubsetWriter only
    bool sync = true;
    bool sha256 = false;
    uint64_t max_shard_size = formats::kDefaultMaxShardSize;
  };
  // INTERNAL when the checkpoint writer splits the files otherwise than the plan (a bug).
  static absl::StatusOr<std::unique_ptr<OutputFiles>> Open(const std::string& dir,
                                                           const ModelOutputPlan& plan,
                                                           const Options& options);

  // True when tensor `name` goes to a file this run writes (always, for the checkpoint writer).
  bool Wants(const std::string& name) const;
  // Writes a whole tensor; a tensor that is not wanted is skipped.
  absl::Status WriteTensor(const std::string& name, std::span<const uint8_t> data);
  // Appends a chunk of a wanted tensor.
  absl::Status AppendTensorData(const std::string& name, std::span<const uint8_t> chunk);
  // True when Finish() writes the index (the checkpoint writer).
  bool writes_index() const { return checkpoint_writer_ != nullptr; }
  // The subset writer (placements, MarkWritten), or null for the checkpoint writer.
  ShardSubsetWriter* subset() { return subset_writer_.get(); }
  const ShardSubsetWriter* subset() const { return subset_writer_.get(); }

  // Finishes (and renames) every file.
  absl::Status Finish();
  // After Finish(): the files written and, with Options::sha256, file -> hex sha256.
  const std::vector<std::string>& shard_files() const;
  std::map<std::string, std::string> Sha256s() const;

 private:
  OutputFiles() = default;
  std::unique_ptr<formats::ShardedCheckpointWriter> checkpoint_writer_;
  std::unique_ptr<ShardSubsetWriter> subset_writer_;
};

}  // namespace nvfp4::pipeline

#endif  // NVFP4_PIPELINE_OUTPUT_FILES_H_
