// Sharded quantization (pipeline/shard_plan.h): the assignment of output files to N processes
// (deterministic, balanced, each file exactly once), --shard parsing, and in-process runs of N
// shards + finalize giving the bytes of a single run (both layouts, W4A4), finalize refusing
// missing, mismatching and foreign shard files without writing anything.
// tests/integration/sharded_job_test.py runs the same with N concurrent nvfp4ctl processes.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "base/str_util.h"
#include "formats/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pipeline/demo_model.h"
#include "pipeline/shard_plan.h"
#include "storage/directory.h"
#include "storage/local_store.h"
#include "tests/testing/files.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/tiny_model.h"

namespace nvfp4::pipeline {
namespace {

using ::nvfp4::testing::StatusIs;

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

using ::nvfp4::testing::TempDir;

using ::nvfp4::testing::DirectorySnapshot;
using ::nvfp4::testing::ReadFile;

// The shared output directory `out` on the local filesystem (null, failing the test, on error).
std::unique_ptr<storage::SharedOutputDirectory> SharedOut(const std::string& out) {
  auto dir =
      storage::SharedOutputDirectory::Open(&storage::LocalObjectStore::Unconfined(), out, {});
  EXPECT_TRUE(dir.ok()) << dir.status();
  return dir.ok() ? std::move(*dir) : nullptr;
}

// ---- assignment ----

void CheckAssignment(const std::vector<uint64_t>& sizes, int n) {
  SCOPED_TRACE(::testing::Message() << sizes.size() << " files, N=" << n);
  const auto a = AssignShards(sizes, n);
  ASSERT_EQ(a.size(), static_cast<size_t>(n));
  EXPECT_EQ(a, AssignShards(sizes, n));  // deterministic
  std::vector<int> seen(sizes.size(), 0);
  uint64_t total = 0, biggest = 0, max_load = 0;
  for (uint64_t s : sizes) {
    total += s;
    biggest = std::max(biggest, s);
  }
  int non_empty = 0;
  for (const auto& files : a) {
    EXPECT_TRUE(std::is_sorted(files.begin(), files.end()));
    uint64_t load = 0;
    for (int f : files) {
      ASSERT_GE(f, 0);
      ASSERT_LT(static_cast<size_t>(f), sizes.size());
      ++seen[f];
      load += sizes[f];
    }
    max_load = std::max(max_load, load);
    non_empty += !files.empty();
  }
  for (size_t f = 0; f < sizes.size(); ++f) EXPECT_EQ(seen[f], 1) << "file " << f;
  // Greedy (largest first, to the least loaded) bound: no worker exceeds the mean by more than
  // one file, and every worker gets a file while there are files left.
  EXPECT_LE(max_load, total / static_cast<uint64_t>(n) + biggest);
  EXPECT_EQ(non_empty, std::min<int>(n, static_cast<int>(sizes.size())));
}

TEST(AssignShardsTest, EveryFileOnceBalancedDeterministic) {
  std::mt19937_64 rng(1);
  for (int n = 1; n <= 7; ++n) {
    CheckAssignment({}, n);
    CheckAssignment({5}, n);
    CheckAssignment(std::vector<uint64_t>(10, 100), n);
    CheckAssignment({0, 0, 7, 0}, n);
    for (int trial = 0; trial < 20; ++trial) {
      std::vector<uint64_t> sizes(1 + rng() % 40);
      for (uint64_t& s : sizes) s = rng() % 5'000'000'000ull;
      CheckAssignment(sizes, n);
    }
  }
}

TEST(AssignShardsTest, KnownSplit) {
  // Largest first, to the least loaded: 9 (file 1) -> w0, 7 (3) -> w1, 5 (5) -> w2,
  // 4 (4) -> w2 (5), 3 (2) -> w1 (7), 2 (0) -> w0 (9, tied with w2 on bytes and files).
  const auto a = AssignShards(std::vector<uint64_t>{2, 9, 3, 7, 4, 5}, 3);
  EXPECT_EQ(a, (std::vector<std::vector<int>>{{0, 1}, {2, 3}, {4, 5}}));
  // Equal sizes: round robin in file order.
  EXPECT_EQ(AssignShards(std::vector<uint64_t>{1, 1, 1, 1, 1}, 2),
            (std::vector<std::vector<int>>{{0, 2, 4}, {1, 3}}));
}

TEST(ParseShardSpecTest, GoodAndBad) {
  auto s = ParseShardSpec("2/4");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->index, 2);
  EXPECT_EQ(s->count, 4);
  EXPECT_TRUE(ParseShardSpec("0/1").ok());
  for (const char* bad : {"", "1", "4/4", "5/4", "-1/4", "1/0", "a/4", "1/b", "1/4/2", " 1/4",
                          "1 /4", "1/", "/4", "0x1/4", "1/1000000"}) {
    auto r = ParseShardSpec(bad);
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_THAT(r, StatusIs(absl::StatusCode::kInvalidArgument)) << bad;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("--shard")) << bad;
  }
  EXPECT_THAT(std::string(ParseShardSpec("4/4").status().message()), HasSubstr("numbered 0 to 3"));
}

// ---- runs ----

QuantizeModelOptions FastOptions(Layout layout) {
  QuantizeModelOptions o;
  o.layout = layout;
  o.quantize.method = Method::kRtn;
  o.sync = false;
  o.cpu_threads = 1;
  o.max_shard_size = 300'000;  // the tiny model (~1 MB out) in several files
  return o;
}

class ShardRunTest : public ::nvfp4::testing::TinyModelTest {
 protected:
  static std::string Tiny() { return TinyModel(/*seed=*/11, /*shards=*/2); }

  // N shards (concurrently, on threads) then finalize, into `out`.
  void RunSharded(const QuantizeModelOptions& o, int n, const std::string& out) {
    std::vector<absl::Status> status(n);
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i) {
      threads.emplace_back([&, i] {
        auto in = storage::OpenLocalInputDirectory(Tiny());
        if (!in.ok()) {
          status[i] = in.status();
          return;
        }
        auto dir = SharedOut(out);
        status[i] = QuantizeModelShard(**in, *dir, o, ShardSpec{i, n}).status();
      });
    }
    for (auto& t : threads) t.join();
    for (int i = 0; i < n; ++i) ASSERT_TRUE(status[i].ok()) << "shard " << i << ": " << status[i];
    ASSERT_FALSE(fs::exists(fs::path(out) / "config.json"));  // only finalize writes it
    auto f = Finalize(o, out);
    ASSERT_TRUE(f.ok()) << f.status();
  }
  absl::StatusOr<FinalizeResult> Finalize(const QuantizeModelOptions& o, const std::string& out) {
    auto in = storage::OpenLocalInputDirectory(Tiny());
    if (!in.ok()) return in.status();
    auto written = storage::OpenLocalInputDirectory(out);
    if (!written.ok()) return written.status();
    auto dir = SharedOut(out);
    return FinalizeModel(**in, **written, *dir, o);
  }
};

TEST_F(ShardRunTest, PlanIsDeterministicAndEveryFileHasOneShard) {
  auto in = storage::OpenLocalInputDirectory(Tiny());
  ASSERT_TRUE(in.ok());
  const QuantizeModelOptions o = FastOptions(Layout::kModelOpt);
  auto p1 = PlanModelOutput(**in, o);
  auto p2 = PlanModelOutput(**in, o);
  ASSERT_TRUE(p1.ok()) << p1.status();
  ASSERT_TRUE(p2.ok());
  ASSERT_GE(p1->shard_files.size(), 3u);
  EXPECT_EQ(p1->shard_files, p2->shard_files);
  EXPECT_EQ(p1->shard_tensor_bytes, p2->shard_tensor_bytes);
  EXPECT_EQ(p1->shard_specs, p2->shard_specs);
  for (int n = 1; n <= 7; ++n) {
    std::vector<int> count(p1->shard_files.size(), 0);
    for (int i = 0; i < n; ++i) {
      for (int f : FilesOfShard(*p1, {i, n})) ++count[f];
      EXPECT_EQ(FilesOfShard(*p1, {i, n}), FilesOfShard(*p2, {i, n}));
    }
    for (int c : count) EXPECT_EQ(c, 1) << "N=" << n;
  }
}

TEST_F(ShardRunTest, ShardsPlusFinalizeEqualASingleRunBothLayouts) {
  for (Layout layout : {Layout::kModelOpt, Layout::kCompressedTensors}) {
    SCOPED_TRACE(std::string(LayoutName(layout)));
    const QuantizeModelOptions o = FastOptions(layout);
    const std::string single = tmp_.Path(StrCat("single-", LayoutName(layout)));
    auto r = QuantizeModelLocal(Tiny(), single, o);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_GE(r->shard_files.size(), 3u);
    const auto want = DirectorySnapshot(single);
    for (int n : {1, 2, 3, 7}) {
      SCOPED_TRACE(n);
      const std::string out = tmp_.Path(StrCat("sharded-", LayoutName(layout), "-", n));
      RunSharded(o, n, out);
      const auto got = DirectorySnapshot(out);
      ASSERT_EQ(got.size(), want.size());
      for (const auto& [name, bytes] : want) {
        auto it = got.find(name);
        ASSERT_NE(it, got.end()) << name;
        EXPECT_TRUE(it->second == bytes) << name << " differs";
      }
      // Nothing left next to the output (staging directories are removed).
      for (const auto& e : fs::directory_iterator(tmp_.path())) {
        EXPECT_THAT(e.path().filename().string(), Not(HasSubstr(".part-")));
      }
    }
  }
}

TEST_F(ShardRunTest, W4A4ConfigsMatchASingleRun) {
  auto in = storage::OpenLocalInputDirectory(Tiny());
  ASSERT_TRUE(in.ok());
  QuantizeModelOptions o = FastOptions(Layout::kModelOpt);
  auto plan = PlanModel(**in, o);
  ASSERT_TRUE(plan.ok());
  std::vector<std::vector<uint8_t>> store;
  store.reserve(200);
  std::vector<formats::TensorToWrite> cal;
  float a = 2.0f;
  for (const std::string& m : plan->quantized_modules) {
    std::vector<uint8_t> b(4);
    a += 0.5f;
    std::memcpy(b.data(), &a, 4);
    store.push_back(std::move(b));
    cal.push_back({m + ".input_amax", "F32", {}, std::span<const uint8_t>(store.back())});
  }
  const std::string cal_path = tmp_.Path("cal.safetensors");
  ASSERT_TRUE(formats::WriteSafetensors(cal_path, cal).ok());
  auto calib = ModelCalibration::Open(cal_path);
  ASSERT_TRUE(calib.ok()) << calib.status();
  o.calibration = calib->get();
  const std::string single = tmp_.Path("single"), sharded = tmp_.Path("sharded");
  auto r = QuantizeModelLocal(Tiny(), single, o);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->w4a4);
  RunSharded(o, 3, sharded);
  EXPECT_TRUE(DirectorySnapshot(single) == DirectorySnapshot(sharded));
  EXPECT_THAT(ReadFile(fs::path(sharded) / "hf_quant_config.json"), HasSubstr("\"NVFP4\""));

  // Finalize without the calibration (so W4A16 configs) sees the shard headers disagree.
  const auto before = DirectorySnapshot(sharded);
  QuantizeModelOptions no_cal = o;
  no_cal.calibration = nullptr;
  auto f = Finalize(no_cal, sharded);
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(f, StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_TRUE(DirectorySnapshot(sharded) == before);
}

// gptq (driven by each module's input Gram) sharded over processes is the single run's bytes.
TEST_F(ShardRunTest, GptqShardsEqualASingleRun) {
  auto in = storage::OpenLocalInputDirectory(Tiny());
  ASSERT_TRUE(in.ok());
  QuantizeModelOptions o = FastOptions(Layout::kModelOpt);
  auto plan = PlanModel(**in, o);
  ASSERT_TRUE(plan.ok());
  std::vector<std::vector<uint8_t>> store;
  store.reserve(200);
  std::vector<formats::TensorToWrite> cal;
  for (const std::string& m : plan->quantized_modules) {
    const int64_t k = m.find("down_proj") != std::string::npos ? 768 : 256;
    std::vector<float> g(k * k, 0.0f);  // a correlated, positive definite Gram
    for (int64_t i = 0; i < k; ++i) {
      g[i * k + i] = 2.0f + static_cast<float>(i % 7);
      if (i + 1 < k) g[i * k + i + 1] = g[(i + 1) * k + i] = 0.9f;
    }
    std::vector<uint8_t> b(g.size() * 4);
    std::memcpy(b.data(), g.data(), b.size());
    store.push_back(std::move(b));
    cal.push_back({m + ".input_gram", "F32", {k, k}, std::span<const uint8_t>(store.back())});
  }
  const std::string cal_path = tmp_.Path("cal.safetensors");
  ASSERT_TRUE(formats::WriteSafetensors(cal_path, cal).ok());
  auto calib = ModelCalibration::Open(cal_path);
  ASSERT_TRUE(calib.ok()) << calib.status();
  o.calibration = calib->get();
  o.quantize.method = Method::kGptq;
  o.quantize.gptq.block_scales = Method::kScaleSweep;
  const std::string single = tmp_.Path("single"), sharded = tmp_.Path("sharded");
  auto r = QuantizeModelLocal(Tiny(), single, o);
  ASSERT_TRUE(r.ok()) << r.status();
  RunSharded(o, 3, sharded);
  EXPECT_TRUE(DirectorySnapshot(single) == DirectorySnapshot(sharded));
}

TEST_F(ShardRunTest, FinalizeNamesMissingShardsAndWritesNothing) {
  const QuantizeModelOptions o = FastOptions(Layout::kModelOpt);
  auto in = storage::OpenLocalInputDirectory(Tiny());
  ASSERT_TRUE(in.ok());
  auto plan = PlanModelOutput(**in, o);
  ASSERT_TRUE(plan.ok());
  const std::string out = tmp_.Path("out");
  // Shard 1 of 3 only.
  auto dir = SharedOut(out);
  auto s = QuantizeModelShard(**in, *dir, o, ShardSpec{1, 3});
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_FALSE(s->files.empty());
  const auto before = DirectorySnapshot(out);
  EXPECT_EQ(before.size(), s->files.size());
  auto f = Finalize(o, out);
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(f, StatusIs(absl::StatusCode::kFailedPrecondition));
  const std::string msg(f.status().message());
  std::set<std::string> mine(s->files.begin(), s->files.end());
  for (const std::string& file : plan->shard_files) {
    if (mine.contains(file)) {
      EXPECT_THAT(msg, Not(HasSubstr(file)));
    } else {
      EXPECT_THAT(msg, HasSubstr(file));
    }
  }
  EXPECT_TRUE(DirectorySnapshot(out) == before);
}

TEST_F(ShardRunTest, FinalizeRejectsOtherOptionsAndForeignFiles) {
  const QuantizeModelOptions o = FastOptions(Layout::kModelOpt);
  const std::string out = tmp_.Path("out");
  RunSharded(o, 2, out);
  fs::remove(fs::path(out) / "config.json");
  const auto before = DirectorySnapshot(out);

  QuantizeModelOptions other_method = o;
  other_method.quantize.method = Method::kFourOverSix;
  auto f = Finalize(other_method, out);
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("header differs"));

  QuantizeModelOptions other_layout = FastOptions(Layout::kCompressedTensors);
  f = Finalize(other_layout, out);
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(f, StatusIs(absl::StatusCode::kFailedPrecondition));

  QuantizeModelOptions other_size = o;
  other_size.max_shard_size = 10'000'000;  // one file: model.safetensors is missing
  f = Finalize(other_size, out);
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("model.safetensors"));
  EXPECT_TRUE(DirectorySnapshot(out) == before);

  // A truncated shard.
  for (const auto& e : fs::directory_iterator(out)) {
    if (e.path().filename().string().rfind("model-00002-of-", 0) == 0) {
      fs::resize_file(e.path(), fs::file_size(e.path()) - 1);
      f = Finalize(o, out);
      ASSERT_FALSE(f.ok());
      EXPECT_THAT(std::string(f.status().message()), HasSubstr(e.path().filename().string()));
      EXPECT_THAT(std::string(f.status().message()), HasSubstr("bytes, expected"));
    }
  }
  // A file of a run with another shard count.
  RunSharded(o, 2, tmp_.Path("clean"));
  std::ofstream(fs::path(tmp_.Path("clean")) / "model-00009-of-00009.safetensors") << "x";
  f = Finalize(o, tmp_.Path("clean"));
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("model-00009-of-00009.safetensors"));
}

TEST_F(ShardRunTest, MoreProcessesThanFilesHaveNothingToDo) {
  const QuantizeModelOptions o = FastOptions(Layout::kModelOpt);
  auto in = storage::OpenLocalInputDirectory(Tiny());
  ASSERT_TRUE(in.ok());
  auto plan = PlanModelOutput(**in, o);
  ASSERT_TRUE(plan.ok());
  const int files = static_cast<int>(plan->shard_files.size());
  const std::string out = tmp_.Path("out");
  auto dir = SharedOut(out);
  auto s = QuantizeModelShard(**in, *dir, o, ShardSpec{files, files + 1});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->files.empty());
  EXPECT_EQ(s->total_files, files);
  EXPECT_FALSE(fs::exists(out));
}

TEST_F(ShardRunTest, OneFileOutputGoesToShardZero) {
  QuantizeModelOptions o = FastOptions(Layout::kCompressedTensors);
  o.max_shard_size = 1'000'000'000;  // model.safetensors, no index
  const std::string single = tmp_.Path("single"), sharded = tmp_.Path("sharded");
  ASSERT_TRUE(QuantizeModelLocal(Tiny(), single, o).ok());
  RunSharded(o, 3, sharded);
  EXPECT_TRUE(DirectorySnapshot(single) == DirectorySnapshot(sharded));
  EXPECT_FALSE(fs::exists(fs::path(sharded) / "model.safetensors.index.json"));
}

}  // namespace
}  // namespace nvfp4::pipeline
