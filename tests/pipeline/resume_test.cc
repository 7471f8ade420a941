// Resuming an interrupted QuantizeModel run (pipeline/resume.h): a run interrupted after k units
// and resumed with the same journal and staging directory writes the same bytes as an
// uninterrupted run, without reading or quantizing the units it kept; untrusted staged bytes are
// recomputed; a journal of another plan starts over; the record encoding round-trips.
#include "pipeline/resume.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "pipeline/demo_model.h"
#include "pipeline/quantize_model.h"
#include "storage/directory.h"
#include "storage/memory_store.h"
#include "tests/testing/files.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/tiny_model.h"

namespace nvfp4::pipeline {
namespace {

using ::nvfp4::testing::StatusIs;

namespace fs = std::filesystem;

using ::nvfp4::testing::TempDir;

using ::nvfp4::testing::DirectorySnapshot;
using ::nvfp4::testing::ReadFile;

void ExpectSameFiles(const fs::path& want, const fs::path& got) {
  const auto a = DirectorySnapshot(want), b = DirectorySnapshot(got);
  std::set<std::string> an, bn;
  for (const auto& [k, v] : a) an.insert(k);
  for (const auto& [k, v] : b) bn.insert(k);
  ASSERT_EQ(an, bn);
  for (const auto& [name, bytes] : a) EXPECT_TRUE(bytes == b.at(name)) << name << " differs";
}

// The store holds exactly the files of local directory `want` under `uri`, byte for byte.
void ExpectStoreHolds(storage::MemoryObjectStore& store, const std::string& uri,
                      const std::string& want) {
  const auto ref = DirectorySnapshot(want);
  EXPECT_EQ(store.object_count(), ref.size());
  for (const auto& [name, bytes] : ref) {
    auto got = store.ReadAll(storage::JoinUri(uri, name));
    ASSERT_TRUE(got.ok()) << name << ": " << got.status();
    EXPECT_TRUE(*got == bytes) << name << " differs";
  }
}

// The CPU backend, recording the tensors it quantizes.
class CountingBackend : public QuantizerBackend {
 public:
  CountingBackend() : cpu_(MakeCpuBackend(2)) {}
  std::string name() const override { return cpu_->name(); }
  absl::StatusOr<std::vector<QuantizedTensor>> QuantizeGroup(
      std::span<const TensorView> tensors, const QuantizeOptions& options,
      std::span<const Calibration* const> calibration) override {
    {
      absl::MutexLock lock(&mu_);
      for (const TensorView& t : tensors) quantized_.push_back(t.name);
    }
    return cpu_->QuantizeGroup(tensors, options, calibration);
  }
  std::vector<std::string> quantized() const {
    absl::MutexLock lock(&mu_);
    return quantized_;
  }

 private:
  std::unique_ptr<QuantizerBackend> cpu_;
  mutable absl::Mutex mu_;
  std::vector<std::string> quantized_ ABSL_GUARDED_BY(mu_);
};

QuantizeModelOptions Options(Layout layout = Layout::kModelOpt) {
  QuantizeModelOptions o;
  o.layout = layout;
  o.quantize.method = Method::kRtn;
  o.sync = false;
  o.max_shard_size = 300'000;  // several output files and an index
  return o;
}

class ResumeTest : public ::nvfp4::testing::TinyModelTest {
 protected:
  static std::string Tiny() { return TinyModel(/*seed=*/11, /*shards=*/2); }

  // An uninterrupted run of `o` into `out`.
  void Reference(const QuantizeModelOptions& o, const std::string& out) {
    auto r = QuantizeModelLocal(Tiny(), out, o);
    ASSERT_TRUE(r.ok()) << r.status();
  }

  // A durable run into `target` that is cancelled once `stop_after` units were written (-1: not).
  absl::StatusOr<QuantizeModelResult> Run(QuantizeModelOptions o, const std::string& target,
                                          ResumeJournal* journal, CountingBackend* backend,
                                          int stop_after, std::vector<TensorProgress>* progress,
                                          ResumeInfo* info = nullptr) {
    auto out = storage::OpenLocalOutputDirectory(target);
    if (!out.ok()) return out.status();
    return RunInto(std::move(o), **out, journal, backend, stop_after, progress, info);
  }

  // The same into the staged output of `uri` in `store` (an object store output).
  absl::StatusOr<QuantizeModelResult> RunIntoStore(
      QuantizeModelOptions o, storage::ObjectStore* store, const std::string& uri,
      const storage::StagedOutputDirectory::Options& options, ResumeJournal* journal,
      CountingBackend* backend, int stop_after, std::vector<TensorProgress>* progress,
      ResumeInfo* info = nullptr) {
    auto out = storage::StagedOutputDirectory::Open(store, uri, options);
    if (!out.ok()) return out.status();
    return RunInto(std::move(o), **out, journal, backend, stop_after, progress, info);
  }
  absl::StatusOr<QuantizeModelResult> RunInto(QuantizeModelOptions o, storage::OutputDirectory& out,
                                              ResumeJournal* journal, CountingBackend* backend,
                                              int stop_after, std::vector<TensorProgress>* progress,
                                              ResumeInfo* info = nullptr,
                                              const std::function<void()>& after_unit = nullptr) {
    auto in = storage::OpenLocalInputDirectory(input_.empty() ? Tiny() : input_);
    if (!in.ok()) return in.status();
    if (absl::Status s = out.SetResumeKey("job-1"); !s.ok()) return s;
    o.resume = journal;
    o.backend = backend;
    std::atomic<int> written{0};
    PipelineHooks hooks;
    hooks.on_progress = [&](const TensorProgress& p) {
      if (!p.resumed) ++written;
      progress->push_back(p);
      if (after_unit) after_unit();
    };
    hooks.cancelled = [&] { return stop_after >= 0 && written.load() >= stop_after; };
    hooks.on_resume = [&](const ResumeInfo& i) {
      if (info != nullptr) *info = i;
    };
    return QuantizeModel(**in, out, o, hooks);
  }

  std::string Staging(const std::string& target) const {
    return tmp_.Path("." + fs::path(target).filename().string() + ".resume-job-1");
  }

  std::string input_;  // the input checkpoint of Run/RunInto ("": Tiny())
};

TEST_F(ResumeTest, InterruptedRunResumesWithoutRecomputingAndMatchesAnUninterruptedRun) {
  const QuantizeModelOptions o = Options();
  Reference(o, tmp_.Path("ref"));
  ASSERT_GT(DirectorySnapshot(tmp_.Path("ref")).size(), 4u);  // several shards + index + configs

  MemoryResumeJournal journal;
  CountingBackend first;
  std::vector<TensorProgress> p1;
  const std::string target = tmp_.Path("out");
  auto r1 = Run(o, target, &journal, &first, /*stop_after=*/7, &p1);
  ASSERT_THAT(r1, StatusIs(absl::StatusCode::kCancelled));
  EXPECT_FALSE(fs::exists(target));                // nothing published
  EXPECT_TRUE(fs::is_directory(Staging(target)));  // the staging survives for the resume
  auto records = journal.Load();
  ASSERT_TRUE(records.ok());
  const int64_t k = static_cast<int64_t>(records->size());
  EXPECT_GE(k, 7);
  const int64_t total = p1.front().units_total;
  EXPECT_LT(k, total);

  // Simulate a crash after a file was finished: the finished file (not `.tmp`) is reopened.
  for (const auto& e : fs::directory_iterator(Staging(target))) {
    const std::string n = e.path().filename().string();
    if (n.size() > 4 && n.substr(n.size() - 4) == ".tmp") {
      fs::rename(e.path(), e.path().parent_path() / n.substr(0, n.size() - 4));
      break;
    }
  }

  CountingBackend second;
  std::vector<TensorProgress> p2;
  ResumeInfo info;
  auto r2 = Run(o, target, &journal, &second, -1, &p2, &info);
  ASSERT_TRUE(r2.ok()) << r2.status();
  ExpectSameFiles(tmp_.Path("ref"), target);
  EXPECT_FALSE(fs::exists(Staging(target)));

  EXPECT_EQ(info.units_kept, k);
  EXPECT_EQ(info.units_rejected, 0);
  EXPECT_EQ(info.units_total, total);
  EXPECT_FALSE(info.started_over);
  EXPECT_GT(info.bytes_verified, 0u);
  EXPECT_EQ(r2->resume.units_kept, k);
  // The kept units are reported first (resumed), then the computed ones; each unit once.
  ASSERT_EQ(static_cast<int64_t>(p2.size()), total);
  std::set<std::string> kept_weights;  // tensors of the kept quantized modules
  for (int64_t i = 0; i < total; ++i) {
    EXPECT_EQ(p2[i].resumed, i < k) << i;
    EXPECT_EQ(p2[i].units_done, i + 1);
    if (!p2[i].resumed) continue;
    for (const ModuleResult& m : p2[i].modules) kept_weights.insert(m.module + ".weight");
  }
  EXPECT_FALSE(kept_weights.empty());
  // No kept module was quantized again; the resumed run quantized exactly the others.
  std::set<std::string> all_weights;
  for (const ModuleResult& m : r2->modules) all_weights.insert(m.module + ".weight");
  const std::vector<std::string> second_list = second.quantized();
  std::multiset<std::string> second_set(second_list.begin(), second_list.end());
  for (const std::string& w : all_weights) {
    EXPECT_EQ(second_set.count(w), kept_weights.count(w) ? 0u : 1u) << w;
  }
  EXPECT_EQ(second_list.size(), all_weights.size() - kept_weights.size());
  // Metrics of the kept modules come from the journal.
  EXPECT_EQ(r2->modules.size(), all_weights.size());
  // The resumed run journaled only the units it computed.
  EXPECT_EQ(journal.appended(), total);
}

// A copied tensor's NaN/Inf warning is journaled with its unit: the resumed run that keeps the
// unit reports it once, as an uninterrupted run does.
TEST_F(ResumeTest, WarningsOfKeptUnitsAreReportedByTheResumedRun) {
  const std::string norm = "model.layers.0.input_layernorm.weight";
  input_ = ::nvfp4::testing::WithNonFiniteTensor(Tiny(), tmp_.Path("nan-in"), norm);
  const QuantizeModelOptions o = Options();
  const std::string warning =
      "tensor '" + norm + "' (BF16, copied unquantized) holds 2 NaN/Inf values";
  // Where the norm's unit comes in the write order.
  MemoryResumeJournal probe_journal;
  CountingBackend probe;
  std::vector<TensorProgress> order;
  auto ref = Run(o, tmp_.Path("ref"), &probe_journal, &probe, -1, &order);
  ASSERT_TRUE(ref.ok()) << ref.status();
  EXPECT_THAT(ref->warnings, ::testing::Contains(::testing::HasSubstr(warning)));
  int norm_at = -1;
  for (size_t i = 0; i < order.size(); ++i) {
    if (order[i].name == norm) norm_at = static_cast<int>(i);
  }
  ASSERT_GE(norm_at, 0);
  ASSERT_LT(norm_at + 1, static_cast<int>(order.size()));  // a unit after it is left to redo

  MemoryResumeJournal journal;
  CountingBackend first, second;
  std::vector<TensorProgress> p1, p2;
  const std::string target = tmp_.Path("out");
  auto r1 = Run(o, target, &journal, &first, /*stop_after=*/norm_at + 1, &p1);
  ASSERT_THAT(r1, StatusIs(absl::StatusCode::kCancelled));
  auto records = journal.Load();
  ASSERT_TRUE(records.ok());
  int journaled_warnings = 0;
  for (const JournaledUnit& u : *records) {
    for (const std::string& w : u.warnings) {
      EXPECT_EQ(u.name, norm);
      EXPECT_THAT(w, ::testing::HasSubstr(warning));
      ++journaled_warnings;
    }
  }
  ASSERT_EQ(journaled_warnings, 1);

  ResumeInfo info;
  auto r2 = Run(o, target, &journal, &second, -1, &p2, &info);
  ASSERT_TRUE(r2.ok()) << r2.status();
  ASSERT_GT(info.units_kept, norm_at);  // the norm's unit was kept, not written again
  EXPECT_EQ(std::count_if(r2->warnings.begin(), r2->warnings.end(),
                          [&](const std::string& w) {
                            return w.find(warning) != std::string::npos;
                          }),
            1);
  ExpectSameFiles(tmp_.Path("ref"), target);
}

TEST_F(ResumeTest, UntrustedStagedBytesAreRecomputed) {
  const QuantizeModelOptions o = Options(Layout::kCompressedTensors);
  Reference(o, tmp_.Path("ref"));
  MemoryResumeJournal journal;
  CountingBackend first;
  std::vector<TensorProgress> p1;
  const std::string target = tmp_.Path("out");
  ASSERT_THAT(Run(o, target, &journal, &first, 9, &p1), StatusIs(absl::StatusCode::kCancelled));
  auto records = journal.Load();
  ASSERT_TRUE(records.ok());
  ASSERT_GE(records->size(), 2u);
  // Corrupt one byte of the first journaled unit's first tensor in the staged file.
  const JournaledTensor& t = (*records)[0].tensors.at(0);
  ASSERT_GT(t.size, 0u);
  {
    std::fstream f(fs::path(Staging(target)) / (t.file + ".tmp"),
                   std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(f.good());
    f.seekg(static_cast<std::streamoff>(t.offset));
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x5A);
    f.seekp(static_cast<std::streamoff>(t.offset));
    f.write(&c, 1);
  }
  CountingBackend second;
  std::vector<TensorProgress> p2;
  ResumeInfo info;
  auto r2 = Run(o, target, &journal, &second, -1, &p2, &info);
  ASSERT_TRUE(r2.ok()) << r2.status();
  EXPECT_EQ(info.units_rejected, 1);
  EXPECT_EQ(info.units_kept, static_cast<int64_t>(records->size()) - 1);
  EXPECT_THAT(r2->warnings, ::testing::Contains(::testing::HasSubstr("differ")));
  ExpectSameFiles(tmp_.Path("ref"), target);
}

TEST_F(ResumeTest, AJournalOfAnotherPlanStartsOver) {
  MemoryResumeJournal journal;
  CountingBackend first;
  std::vector<TensorProgress> p1;
  const std::string target = tmp_.Path("out");
  QuantizeModelOptions a = Options();
  ASSERT_THAT(Run(a, target, &journal, &first, 5, &p1), StatusIs(absl::StatusCode::kCancelled));
  QuantizeModelOptions b = Options();
  b.max_shard_size = 1'000'000;  // other output files: another plan
  Reference(b, tmp_.Path("ref"));
  CountingBackend second;
  std::vector<TensorProgress> p2;
  ResumeInfo info;
  auto r2 = Run(b, target, &journal, &second, -1, &p2, &info);
  ASSERT_TRUE(r2.ok()) << r2.status();
  EXPECT_TRUE(info.started_over);
  EXPECT_EQ(info.units_kept, 0);
  ExpectSameFiles(tmp_.Path("ref"), target);  // no stale file of the first plan published
}

TEST_F(ResumeTest, ObjectStoreOutputResumesFromItsScratchStaging) {
  const QuantizeModelOptions o = Options();
  Reference(o, tmp_.Path("ref"));
  storage::MemoryObjectStore store;  // no local paths: staged in scratch, then uploaded
  const std::string uri = "s3://bucket/out";
  const std::string scratch = tmp_.Path("work");
  storage::StagedOutputDirectory::Options options;
  options.scratch_root = scratch;
  MemoryResumeJournal journal;
  {
    auto out = storage::StagedOutputDirectory::Open(&store, uri, options);
    ASSERT_TRUE(out.ok()) << out.status();
    CountingBackend backend;
    std::vector<TensorProgress> p;
    ASSERT_EQ(RunInto(o, **out, &journal, &backend, 6, &p).status().code(),
              absl::StatusCode::kCancelled);
  }
  EXPECT_TRUE(fs::is_directory(fs::path(scratch) / "job-1"));  // kept for the resume
  // Nothing published: only finished files, handed over under the staging prefix.
  auto listed = store.List(uri);
  ASSERT_TRUE(listed.ok()) << listed.status();
  for (const storage::ObjectInfo& obj : *listed) {
    EXPECT_TRUE(obj.name.starts_with(".nvfp4-staging-job-1/")) << obj.name;
  }
  CountingBackend backend;
  std::vector<TensorProgress> p;
  ResumeInfo info;
  auto r = RunIntoStore(o, &store, uri, options, &journal, &backend, -1, &p, &info);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GE(info.units_kept, 6);
  EXPECT_EQ(info.units_rejected, 0);
  ExpectStoreHolds(store, uri, tmp_.Path("ref"));
  EXPECT_FALSE(fs::exists(fs::path(scratch) / "job-1"));  // removed once uploaded
}

// Disk space of the regular files below `dir` (allocated blocks: output files are created sparse,
// at their final size, and filled as tensors are written).
uint64_t LocalBytes(const std::string& dir) {
  uint64_t n = 0;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    struct stat st;
    if (it->is_regular_file(ec) && ::stat(it->path().c_str(), &st) == 0) {
      n += static_cast<uint64_t>(st.st_blocks) * 512;
    }
  }
  return n;
}

// A fleet's takeover of an s3:// output: the first process hands every finished file over to the
// object store and is killed (its scratch disk is gone); another process, with scratch of its
// own, resumes from the handed-over files without quantizing their units again, and publishes
// the same bytes as an uninterrupted run. Local disk holds only the files being written.
TEST_F(ResumeTest, AnotherProcessResumesAnObjectStoreOutputFromItsHandedOverFiles) {
  QuantizeModelOptions o = Options();
  o.max_shard_size = 100'000;  // many small files
  Reference(o, tmp_.Path("ref"));
  const auto ref = DirectorySnapshot(tmp_.Path("ref"));
  uint64_t ref_bytes = 0;
  for (const auto& [name, bytes] : ref) ref_bytes += bytes.size();
  storage::MemoryObjectStore store;
  const std::string uri = "s3://bucket/out";
  MemoryResumeJournal journal;
  uint64_t peak = 0;  // local staging bytes, sampled after each unit
  auto open = [&](const std::string& scratch) {
    storage::StagedOutputDirectory::Options options;
    options.scratch_root = scratch;
    return storage::StagedOutputDirectory::Open(&store, uri, options);
  };
  const std::string scratch_a = tmp_.Path("replica-a"), scratch_b = tmp_.Path("replica-b");
  {
    auto out = open(scratch_a);
    ASSERT_TRUE(out.ok()) << out.status();
    CountingBackend backend;
    std::vector<TensorProgress> p;
    auto sample = [&] { peak = std::max(peak, LocalBytes(scratch_a)); };
    ASSERT_THAT(RunInto(o, **out, &journal, &backend, 10, &p, nullptr, sample),
                StatusIs(absl::StatusCode::kCancelled));
  }
  std::vector<storage::HandedOverFile> handed;
  {
    auto probe = open(scratch_b);
    ASSERT_TRUE(probe.ok());
    ASSERT_TRUE((*probe)->SetResumeKey("job-1").ok());
    ASSERT_TRUE((*probe)->Begin().ok());
    auto h = (*probe)->HandedOver();
    ASSERT_TRUE(h.ok()) << h.status();
    handed = *h;
  }
  ASSERT_FALSE(handed.empty()) << "no file was finished before the interruption";
  fs::remove_all(scratch_a);  // the first replica's disk is gone with it

  CountingBackend backend;
  std::vector<TensorProgress> p;
  ResumeInfo info;
  auto out = open(scratch_b);
  ASSERT_TRUE(out.ok()) << out.status();
  auto sample = [&] { peak = std::max(peak, LocalBytes(scratch_b)); };
  auto r = RunInto(o, **out, &journal, &backend, -1, &p, &info, sample);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(info.units_kept, 0);
  // Units kept were neither read nor quantized: this run quantized only the others.
  std::set<std::string> kept_weights;
  for (const TensorProgress& t : p) {
    if (!t.resumed) continue;
    for (const ModuleResult& m : t.modules) kept_weights.insert(m.module + ".weight");
  }
  EXPECT_FALSE(kept_weights.empty());
  for (const std::string& w : backend.quantized()) EXPECT_FALSE(kept_weights.count(w)) << w;
  // The same bytes as an uninterrupted run; the handed-over files copied in place, the staging
  // prefix and the local scratch removed.
  ExpectStoreHolds(store, uri, tmp_.Path("ref"));
  EXPECT_FALSE(fs::exists(fs::path(scratch_b) / "job-1"));
  // Local disk held about three files at a time (the one being written, one being uploaded, one
  // waiting for the upload; plus a block of header in each file not yet begun: they are created
  // sparse), never the whole output.
  uint64_t largest = 0;
  for (const auto& [name, bytes] : ref) largest = std::max<uint64_t>(largest, bytes.size());
  EXPECT_LE(peak, 3 * largest + ref.size() * 8192) << "peak " << peak << ", largest " << largest;
  EXPECT_LT(peak, ref_bytes / 2) << "peak " << peak << " of " << ref_bytes;
}

// The memory store, whose first upload of a handed-over file waits at a gate until the test opens
// it (or 30 s pass).
class GatedStore : public storage::MemoryObjectStore {
 public:
  absl::StatusOr<std::unique_ptr<storage::ObjectWriter>> OpenWrite(absl::string_view uri) override {
    if (absl::StrContains(uri, "/.nvfp4-staging-") && absl::EndsWith(uri, ".safetensors")) {
      absl::MutexLock lock(&gate_mu_);
      if (!gated_) {
        gated_ = true;
        waiting_ = true;
        opened_in_time_ = gate_mu_.AwaitWithTimeout(absl::Condition(&open_), absl::Seconds(30));
        waiting_ = false;
      }
    }
    return MemoryObjectStore::OpenWrite(uri);
  }
  bool waiting() const {
    absl::MutexLock lock(&gate_mu_);
    return waiting_;
  }
  void Open() {
    absl::MutexLock lock(&gate_mu_);
    open_ = true;
  }
  bool opened_in_time() const {
    absl::MutexLock lock(&gate_mu_);
    return opened_in_time_;
  }

 private:
  mutable absl::Mutex gate_mu_;
  bool gated_ ABSL_GUARDED_BY(gate_mu_) = false;
  bool waiting_ ABSL_GUARDED_BY(gate_mu_) = false;
  bool open_ ABSL_GUARDED_BY(gate_mu_) = false;
  bool opened_in_time_ ABSL_GUARDED_BY(gate_mu_) = false;
};

// Handing a finished file over (its upload) does not stop the writer: units of the next file are
// written while the first upload waits; the output is the same.
TEST_F(ResumeTest, TheWriterGoesOnWhileAFinishedFileIsHandedOver) {
  const QuantizeModelOptions o = Options();
  Reference(o, tmp_.Path("ref"));
  GatedStore store;
  const std::string uri = "s3://bucket/out";
  storage::StagedOutputDirectory::Options options;
  options.scratch_root = tmp_.Path("work");
  auto out = storage::StagedOutputDirectory::Open(&store, uri, options);
  ASSERT_TRUE(out.ok()) << out.status();
  MemoryResumeJournal journal;
  CountingBackend backend;
  std::vector<TensorProgress> p;
  int written_while_uploading = 0;
  auto after_unit = [&] {
    if (store.waiting() && ++written_while_uploading == 2) store.Open();
  };
  auto r = RunInto(o, **out, &journal, &backend, -1, &p, nullptr, after_unit);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(store.opened_in_time()) << "no unit was written while the first file was uploaded";
  EXPECT_GE(written_while_uploading, 2);
  ExpectStoreHolds(store, uri, tmp_.Path("ref"));
}

// Files handed over under another plan (here: another shard size, so other file names) are
// dropped, never published with the new plan's files.
TEST_F(ResumeTest, HandedOverFilesOfAnotherPlanAreNotPublished) {
  QuantizeModelOptions o = Options();
  o.max_shard_size = 100'000;
  storage::MemoryObjectStore store;
  storage::StagedOutputDirectory::Options options;
  options.scratch_root = tmp_.Path("work");
  const std::string uri = "s3://bucket/out";
  MemoryResumeJournal journal;
  {
    auto out = storage::StagedOutputDirectory::Open(&store, uri, options);
    ASSERT_TRUE(out.ok()) << out.status();
    CountingBackend backend;
    std::vector<TensorProgress> p;
    ASSERT_THAT(RunInto(o, **out, &journal, &backend, 10, &p),
                StatusIs(absl::StatusCode::kCancelled));
  }
  ASSERT_GT(store.object_count(), 0u);  // handed-over files of the first plan
  o.max_shard_size = 300'000;
  Reference(o, tmp_.Path("ref"));
  CountingBackend backend;
  std::vector<TensorProgress> p;
  ResumeInfo info;
  auto r = RunIntoStore(o, &store, uri, options, &journal, &backend, -1, &p, &info);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(info.started_over);
  ExpectStoreHolds(store, uri, tmp_.Path("ref"));
}

TEST_F(ResumeTest, DiscardRemovesTheHandedOverFilesToo) {
  QuantizeModelOptions o = Options();
  o.max_shard_size = 100'000;
  storage::MemoryObjectStore store;
  storage::StagedOutputDirectory::Options options;
  options.scratch_root = tmp_.Path("work");
  MemoryResumeJournal journal;
  auto out = storage::StagedOutputDirectory::Open(&store, "s3://bucket/out", options);
  ASSERT_TRUE(out.ok()) << out.status();
  CountingBackend backend;
  std::vector<TensorProgress> p;
  ASSERT_THAT(RunInto(o, **out, &journal, &backend, 10, &p),
              StatusIs(absl::StatusCode::kCancelled));
  ASSERT_GT(store.object_count(), 0u);  // handed-over files
  (*out)->Discard();                    // the job failed or was cancelled
  EXPECT_EQ(store.object_count(), 0u);
  EXPECT_FALSE(fs::exists(fs::path(tmp_.Path("work")) / "job-1"));
}

TEST_F(ResumeTest, ResumableStagingIsKeptByAbortAndRemovedByDiscard) {
  const std::string target = tmp_.Path("o");
  {
    auto out = storage::OpenLocalOutputDirectory(target);
    ASSERT_TRUE(out.ok()) << out.status();
    ASSERT_TRUE((*out)->SetResumeKey("job-1").ok());
    auto staging = (*out)->Begin();
    ASSERT_TRUE(staging.ok()) << staging.status();
    std::ofstream(fs::path(*staging) / "x") << "partial";
    (*out)->Abort();
  }
  EXPECT_EQ(ReadFile(fs::path(Staging(target)) / "x"), "partial");
  auto again = storage::OpenLocalOutputDirectory(target);
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_TRUE((*again)->SetResumeKey("job-1").ok());
  auto staging = (*again)->Begin();
  ASSERT_TRUE(staging.ok());
  EXPECT_EQ(*staging, Staging(target));
  (*again)->Discard();
  EXPECT_FALSE(fs::exists(Staging(target)));
  auto bad = storage::OpenLocalOutputDirectory(target);
  ASSERT_TRUE(bad.ok()) << bad.status();
  EXPECT_EQ((*bad)->SetResumeKey("../x").code(), absl::StatusCode::kInvalidArgument);
}

TEST(JournaledUnitTest, EncodingRoundTripsBitExactly) {
  JournaledUnit u;
  u.plan = "abc";
  u.unit = 42;
  u.name = "model.layers.0.mlp.gate_up";
  u.bytes_in = 123456;
  u.bytes_out = 7890;
  u.tensors.push_back({"a.weight", "model-00001-of-00002.safetensors", 4096, 100, "ff00"});
  u.tensors.push_back({"a.weight_scale", "model.safetensors", 0, 0, ""});
  ModuleResult m;
  m.module = "model.layers.0.mlp.gate_proj";
  m.group = "gate_up";
  m.rows = 768;
  m.cols = 256;
  m.global_scale = 1.2345678e-5f;
  m.input_amax = 3.5f;
  m.metrics.nmse = 0;
  m.metrics.sqnr_db = std::numeric_limits<double>::infinity();
  m.metrics.max_abs_err = 0.1;
  m.metrics.rtn_nmse = 1e-300;
  m.metrics.nmse_vs_rtn = 0.97;
  m.metrics.output_nmse = 0.25;
  m.metrics.iterations = 7;
  m.metrics.gptq_dampening = 0.1;
  u.modules.push_back(m);
  u.modules.push_back(ModuleResult{});
  u.warnings = {"tensor 'x' holds 1 NaN/Inf value", ""};
  const std::string bytes = EncodeJournaledUnit(u);
  auto d = DecodeJournaledUnit(bytes);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(EncodeJournaledUnit(*d), bytes);
  EXPECT_EQ(d->unit, 42);
  EXPECT_EQ(d->tensors[0].offset, 4096u);
  EXPECT_TRUE(std::isinf(d->modules[0].metrics.sqnr_db));
  EXPECT_EQ(d->modules[0].input_amax, 3.5f);
  EXPECT_FALSE(d->modules[1].input_amax.has_value());
  EXPECT_FALSE(d->modules[1].metrics.output_nmse.has_value());
  EXPECT_EQ(d->modules[0].metrics.gptq_dampening, 0.1);
  EXPECT_EQ(d->warnings, u.warnings);
  // A version-2 record (before the warnings, a trailing count) decodes without warnings.
  JournaledUnit one = u;
  one.modules.resize(1);
  one.warnings.clear();
  std::string v2 = EncodeJournaledUnit(one);
  v2[0] = 2;
  v2.resize(v2.size() - 4);
  auto d2 = DecodeJournaledUnit(v2);
  ASSERT_TRUE(d2.ok()) << d2.status();
  EXPECT_EQ(d2->modules[0].metrics.gptq_dampening, 0.1);
  EXPECT_TRUE(d2->warnings.empty());
  // A version-1 record (also before gptq_dampening, the last 8 bytes of a module) still decodes.
  std::string v1 = v2;
  v1[0] = 1;
  v1.resize(v1.size() - 8);
  auto d1 = DecodeJournaledUnit(v1);
  ASSERT_TRUE(d1.ok()) << d1.status();
  EXPECT_EQ(d1->modules[0].metrics.iterations, 7);
  EXPECT_EQ(d1->modules[0].metrics.gptq_dampening, 0.0);
  // Every truncation is DATA_LOSS, never a crash or a wrong record.
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_EQ(DecodeJournaledUnit(std::string_view(bytes).substr(0, n)).status().code(),
              absl::StatusCode::kDataLoss)
        << n;
  }
}

}  // namespace
}  // namespace nvfp4::pipeline
