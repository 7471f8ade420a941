// Sharded quantization of one checkpoint by N independent processes (the Kubernetes Indexed Job
// in deploy/jobs): process i of N writes its share of the output safetensors files into the common
// output location, then one `finalize` step writes the index, the configs and the copied files.
// The result is byte-identical to a single QuantizeModel run with the same options.
//
// Every process computes the same output plan from the input's headers (PlanModelOutput: the
// output tensors and their split into files, exactly as a single run splits them), and the same
// assignment of files to processes (AssignShards: greedy by bytes, deterministic). Process i
// writes the files assigned to it, each one atomically (temporary file + rename). Finalize
// recomputes the plan, checks that every file is present with exactly the expected header and
// size, and only then writes the non-tensor files (WriteModelFiles, the code a single run uses).
//
//   ASSIGN_OR_RETURN(ShardSpec shard, ParseShardSpec("2/4"));
//   ASSIGN_OR_RETURN(auto out, storage::OpenSharedOutputDirectory("/models/llama-nvfp4", router));
//   ASSIGN_OR_RETURN(ShardRunResult r, QuantizeModelShard(*in, *out, options, shard));
//   ...                                                          // all N processes done
//   ASSIGN_OR_RETURN(auto view, storage::OpenLocalInputDirectory("/models/llama-nvfp4"));
//   ASSIGN_OR_RETURN(FinalizeResult f, FinalizeModel(*in, *view, *out, options));
#ifndef NVFP4_PIPELINE_SHARD_PLAN_H_
#define NVFP4_PIPELINE_SHARD_PLAN_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "pipeline/quantize_model.h"
#include "storage/directory.h"

namespace nvfp4::pipeline {

// "i/N": process i (0-based) of N.
struct ShardSpec {
  int index = 0;
  int count = 1;
};

// Parses "i/N" (decimal, 0 <= i < N, 1 <= N <= 100000). INVALID_ARGUMENT with a message that
// names the text otherwise.
absl::StatusOr<ShardSpec> ParseShardSpec(std::string_view text);

// Assigns files of the given byte sizes to `workers` workers: largest file first (ties: lower file
// index first), each to the worker with the fewest bytes so far (ties: the one with fewer files,
// then the lower worker index). Every file goes to exactly one worker; the result depends only on
// the sizes and `workers`; no worker exceeds the mean load by more than the largest file. Returns,
// per worker, its file indices in increasing order (empty when there are more workers than files).
std::vector<std::vector<int>> AssignShards(std::span<const uint64_t> file_bytes, int workers);

// The output files of a plan assigned to process `shard`.
std::vector<int> FilesOfShard(const ModelOutputPlan& plan, const ShardSpec& shard);

struct ShardRunResult {
  ShardSpec shard;
  int total_files = 0;             // safetensors files of the whole output
  std::vector<std::string> files;  // the files this process wrote (empty: nothing to do)
  QuantizeModelResult run;         // of this process's part (when files is not empty)
};

// Quantizes process `shard`'s share of the output files into `output` (which must accept files
// from several writers, e.g. storage::SharedOutputDirectory) and writes no index, configs or copies.
// When the shard has no file (N larger than the number of files) nothing is read or written.
absl::StatusOr<ShardRunResult> QuantizeModelShard(storage::InputDirectory& input, storage::OutputDirectory& output,
                                                  const QuantizeModelOptions& options,
                                                  const ShardSpec& shard,
                                                  const PipelineHooks& hooks = {});

struct FinalizeResult {
  std::vector<std::string> shard_files;   // the verified safetensors files
  std::vector<std::string> written;       // index / config.json / hf_quant_config.json
  std::vector<std::string> copied_files;  // other input files copied
  std::vector<std::string> warnings;
  bool w4a4 = false;
  uint64_t tensor_bytes_out = 0;
};

// Checks that every safetensors file of the plan is in `written` (the output location, read back)
// with exactly the header and size a single run writes; FAILED_PRECONDITION naming the missing or
// mismatching files otherwise, and files that do not belong to the plan (a previous run with other
// options). Only then writes the non-tensor outputs through `output`. Nothing is written on error.
absl::StatusOr<FinalizeResult> FinalizeModel(storage::InputDirectory& input, storage::InputDirectory& written,
                                             storage::OutputDirectory& output,
                                             const QuantizeModelOptions& options);

}  // namespace nvfp4::pipeline

#endif  // NVFP4_PIPELINE_SHARD_PLAN_H_
