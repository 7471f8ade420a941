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

// ---- SharedLocalOutputDirectory ----

SharedLocalOutputDirectory::SharedLocalOutputDirectory(std::string target,
                                                       std::vector<std::string> publish_last)
    : target_(std::move(target)), publish_last_(std::move(publish_last)) {
  while (target_.size() > 1 && target_.back() == '/') target_.pop_back();
}

SharedLocalOutputDirectory::~SharedLocalOutputDirectory() { Abort(); }

absl::StatusOr<std::string> SharedLocalOutputDirectory::Begin() {
  if (!staging_.empty()) return absl::FailedPreconditionError("Begin() called twice");
  static std::atomic<int> counter{0};
  const fs::path target = fs::absolute(target_);
  std::error_code ec;
  if (fs::exists(target, ec) && !fs::is_directory(target, ec)) {
    return absl::FailedPreconditionError(StrCat(target_, ": exists and is not a directory"));
  }
  fs::create_directories(target.parent_path(), ec);
  if (ec) {
    return absl::InternalError(
        StrCat(target.parent_path().string(), ": cannot create: ", ec.message()));
  }
  char host[64] = {0};
  if (::gethostname(host, sizeof(host) - 1) != 0) std::snprintf(host, sizeof(host), "host");
  const fs::path staging =
      target.parent_path() / StrCat(".", target.filename().string(), ".part-", host, "-",
                                    static_cast<int64_t>(::getpid()), "-", counter.fetch_add(1));
  fs::remove_all(staging, ec);
  if (!fs::create_directory(staging, ec) || ec) {
    return absl::InternalError(StrCat(staging.string(), ": cannot create: ", ec.message()));
  }
  staging_ = staging.string();
  return staging_;
}

absl::Status SharedLocalOutputDirectory::Commit() {
  if (staging_.empty()) return absl::FailedPreconditionError("Commit() without Begin()");
  std::error_code ec;
  fs::create_directories(target_, ec);
  if (ec) return absl::InternalError(StrCat(target_, ": cannot create: ", ec.message()));
  std::vector<std::string> files;
  for (auto it = fs::recursive_directory_iterator(staging_, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file()) files.push_back(fs::relative(it->path(), staging_).generic_string());
  }
  if (ec) return absl::InternalError(StrCat(staging_, ": cannot list: ", ec.message()));
  auto rank = [&](const std::string& f) {
    auto it = std::find(publish_last_.begin(), publish_last_.end(), f);
    return it == publish_last_.end() ? -1 : static_cast<int>(it - publish_last_.begin());
  };
  std::sort(files.begin(), files.end(), [&](const std::string& a, const std::string& b) {
    return std::make_pair(rank(a), a) < std::make_pair(rank(b), b);
  });
  for (const std::string& f : files) {
    const fs::path from = fs::path(staging_) / f, to = fs::path(target_) / f;
    fs::create_directories(to.parent_path(), ec);
    if (ec) {
      return absl::InternalError(
          StrCat(to.parent_path().string(), ": cannot create: ", ec.message()));
    }
    if (std::rename(from.c_str(), to.c_str()) != 0) {
      return absl::InternalError(
          StrCat("cannot rename ", from.string(), " to ", to.string(), ": ", std::strerror(errno)));
    }
  }
  fs::remove_all(staging_, ec);
  staging_.clear();
  return absl::OkStatus();
}

void SharedLocalOutputDirectory::Abort() {
  if (staging_.empty()) return;
  std::error_code ec;
  fs::remove_all(staging_, ec);
  staging_.clear();
}

// ---- shards and finalize ----

absl::StatusOr<ShardRunResult> QuantizeModelShard(InputDirectory& input, OutputDirectory& output,
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

absl::StatusOr<FinalizeResult> FinalizeModel(InputDirectory& input, InputDirectory& written,
                                             OutputDirectory& output,
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
