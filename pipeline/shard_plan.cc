#include "pipeline/shard_plan.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <set>

#include "absl/strings/numbers.h"
#include "base/status_macros.h"
#include "base/str_util.h"
#include "formats/safetensors.h"

namespace nvfp4::pipeline {
namespace {

namespace fs = std::filesystem;

bool ParseDecimal(std::string_view s, int64_t max, int64_t* out) {
  if (s.empty() || s.size() > 12) return false;
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  if (v > max) return false;
  *out = v;
  return true;
}

std::string JoinNames(const std::vector<std::string>& names) {
  std::string s;
  for (const std::string& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

}  // namespace

absl::StatusOr<ShardSpec> ParseShardSpec(std::string_view text) {
  constexpr int64_t kMaxCount = 100000;
  const size_t slash = text.find('/');
  int64_t i = 0, n = 0;
  if (slash == std::string_view::npos || !ParseDecimal(text.substr(0, slash), kMaxCount, &i) ||
      !ParseDecimal(text.substr(slash + 1), kMaxCount, &n)) {
    return absl::InvalidArgumentError(StrCat(
        "--shard '", text, "': expected i/N with 0 <= i < N (e.g. 0/4), N at most ", kMaxCount));
  }
  if (n < 1) return absl::InvalidArgumentError(StrCat("--shard '", text, "': N must be >= 1"));
  if (i >= n) {
    return absl::InvalidArgumentError(StrCat("--shard '", text, "': index ", i,
                                             " out of range; shards are numbered 0 to ", n - 1,
                                             " (i/N with 0 <= i < N)"));
  }
  return ShardSpec{static_cast<int>(i), static_cast<int>(n)};
}

std::vector<std::vector<int>> AssignShards(std::span<const uint64_t> file_bytes, int workers) {
  std::vector<std::vector<int>> out(static_cast<size_t>(std::max(workers, 0)));
  if (out.empty()) return out;
  std::vector<int> order(file_bytes.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return file_bytes[a] > file_bytes[b]; });
  std::vector<uint64_t> load(out.size(), 0);
  for (int f : order) {
    size_t best = 0;
    for (size_t w = 1; w < out.size(); ++w) {
      // Fewest bytes; on a tie, fewest files (spreads empty files too); then the lower index.
      if (load[w] < load[best] || (load[w] == load[best] && out[w].size() < out[best].size())) {
        best = w;
      }
    }
    out[best].push_back(f);
    load[best] += file_bytes[f];
  }
  for (auto& files : out) std::sort(files.begin(), files.end());
  return out;
}

std::vector<int> FilesOfShard(const ModelOutputPlan& plan, const ShardSpec& shard) {
  // Balanced by the bytes each file holds: the work (reading, quantizing, writing) follows them.
  return AssignShards(plan.shard_tensor_bytes, shard.count)[shard.index];
}

// ---- shards and finalize ----

absl::StatusOr<ShardRunResult> QuantizeModelShard(storage::InputDirectory& input, storage::OutputDirectory& output,
                                                  const QuantizeModelOptions& options,
                                                  const ShardSpec& shard,
                                                  const PipelineHooks& hooks) {
  if (shard.count < 1 || shard.index < 0 || shard.index >= shard.count) {
    return absl::InvalidArgumentError(
        StrCat("shard ", shard.index, "/", shard.count, ": expected 0 <= i < N"));
  }
  ASSIGN_OR_RETURN(const ModelOutputPlan plan, PlanModelOutput(input, options));
  ShardRunResult r;
  r.shard = shard;
  r.total_files = static_cast<int>(plan.shard_files.size());
  const std::vector<int> mine = FilesOfShard(plan, shard);
  if (mine.empty()) return r;
  QuantizeModelOptions o = options;
  o.output_shards = mine;
  o.write_model_files = false;
  ASSIGN_OR_RETURN(r.run, QuantizeModel(input, output, o, hooks));
  r.files = r.run.shard_files;
  return r;
}

absl::StatusOr<FinalizeResult> FinalizeModel(storage::InputDirectory& input, storage::InputDirectory& written,
                                             storage::OutputDirectory& output,
                                             const QuantizeModelOptions& options) {
  ASSIGN_OR_RETURN(const ModelOutputPlan plan, PlanModelOutput(input, options));

  // What the output location holds now.
  ASSIGN_OR_RETURN(const std::vector<std::string> present, written.ListFiles());
  const std::set<std::string> present_set(present.begin(), present.end());
  const std::set<std::string> expected(plan.shard_files.begin(), plan.shard_files.end());

  std::vector<std::string> missing, wrong, foreign;
  for (size_t f = 0; f < plan.shard_files.size(); ++f) {
    const std::string& name = plan.shard_files[f];
    if (!present_set.contains(name)) {
      missing.push_back(name);
      continue;
    }
    // The exact header a single run writes, and the size that follows from it.
    std::vector<formats::TensorSpec> specs;
    for (size_t i : plan.shard_specs[f]) specs.push_back(plan.specs[i]);
    formats::SortForWriting(specs);
    ASSIGN_OR_RETURN(const std::string header,
                     formats::BuildSafetensorsHeader(specs, plan.shard_metadata));
    const uint64_t want_size = header.size() + plan.shard_tensor_bytes[f];
    ASSIGN_OR_RETURN(auto source, written.OpenFile(name));
    ASSIGN_OR_RETURN(const uint64_t size, source->Size());
    std::string got(std::min<uint64_t>(size, header.size()), '\0');
    RETURN_IF_ERROR(
        source->ReadAt(0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(got.data()), got.size())));
    if (size != want_size) {
      wrong.push_back(StrCat(name, " (", size, " bytes, expected ", want_size, ")"));
    } else if (got != header) {
      wrong.push_back(StrCat(name, " (its header differs from this plan's: other options?)"));
    }
  }
  for (const std::string& f : present) {
    const bool safetensors = f.find('/') == std::string::npos && f.size() > 12 &&
                             f.compare(f.size() - 12, 12, ".safetensors") == 0;
    if (safetensors && !expected.contains(f)) foreign.push_back(f);
  }
  if (!missing.empty()) {
    return absl::FailedPreconditionError(
        StrCat(written.Describe(), ": ", missing.size(), " of ", plan.shard_files.size(),
               " shard file(s) missing: ", JoinNames(missing),
               " (have all the `quantize-model --shard i/N` runs finished?); nothing written"));
  }
  if (!wrong.empty()) {
    return absl::FailedPreconditionError(StrCat(
        written.Describe(),
        ": shard file(s) do not match the plan for these options: ", JoinNames(wrong),
        "; give finalize the same --input and quantization flags as the shards; nothing written"));
  }
  if (!foreign.empty()) {
    return absl::FailedPreconditionError(
        StrCat(written.Describe(),
               ": safetensors file(s) that are not part of this output: ", JoinNames(foreign),
               " (left from a run with other options or another shard count?); remove them; "
               "nothing written"));
  }

  FinalizeResult result;
  result.shard_files = plan.shard_files;
  result.w4a4 = plan.w4a4;
  result.tensor_bytes_out = plan.tensor_bytes_out;
  ASSIGN_OR_RETURN(const std::string staging, output.Begin());
  QuantizeModelResult files;
  if (absl::Status s = WriteModelFiles(input, plan, options, staging, &files); !s.ok()) {
    output.Abort();
    return s;
  }
  if (absl::Status s = output.Commit(); !s.ok()) {
    output.Abort();
    return s;
  }
  if (plan.indexed) result.written.push_back(std::string(formats::kIndexFileName));
  result.written.push_back("config.json");
  if (options.layout == Layout::kModelOpt) result.written.push_back("hf_quant_config.json");
  result.copied_files = std::move(files.copied_files);
  result.warnings = std::move(files.warnings);
  return result;
}

}  // namespace nvfp4::pipeline
