// Test suites over the tiny demo checkpoint (pipeline/demo_model.h preset "tiny": 2 Llama
// layers, hidden 256, 21 bf16 tensors, ~4 MB). Each (seed, shards) model is written once per
// suite, on first use, and removed after the suite; every test gets a fresh tmp_.
//
//   class PipelineTest : public nvfp4::testing::TinyModelTest {};
//   TEST_F(PipelineTest, Quantizes) {
//     auto r = QuantizeModelLocal(TinyModel(/*seed=*/7, /*shards=*/3), tmp_.Path("out"), options);
//     ASSERT_THAT(r, IsOk());
//   }
#ifndef NVFP4_TESTS_TESTING_TINY_MODEL_H_
#define NVFP4_TESTS_TESTING_TINY_MODEL_H_

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>

#include "formats/sharded.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "pipeline/demo_model.h"
#include "pipeline/quantize_model.h"
#include "tests/testing/temp_dir.h"

namespace nvfp4::testing {

// Options that quantize small test checkpoints quickly: rtn, no fdatasync, 2 CPU threads.
inline pipeline::QuantizeModelOptions FastModelOptions(pipeline::Layout layout) {
  pipeline::QuantizeModelOptions o;
  o.layout = layout;
  o.quantize.method = Method::kRtn;
  o.sync = false;
  o.cpu_threads = 2;
  return o;
}

// Checkpoint directory `src` copied to `dir` with element 3 of bf16 tensor `name` set to +Inf
// and element 5 to NaN. Returns `dir`.
inline std::string WithNonFiniteTensor(const std::string& src, const std::string& dir,
                                       const std::string& name = "model.norm.weight") {
  namespace fs = std::filesystem;
  fs::copy(src, dir, fs::copy_options::recursive);
  auto r = formats::CheckpointReader::OpenLocal(dir);
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) return dir;
  const formats::TensorInfo* norm = (*r)->Find(name)->info;
  EXPECT_EQ(norm->dtype, "BF16");
  const uint64_t offset = norm->offset;
  std::string file = "model.safetensors";
  if ((*r)->sharded()) {
    std::ifstream index(fs::path(dir) / "model.safetensors.index.json");
    file = nlohmann::json::parse(index)["weight_map"][name].get<std::string>();
  }
  r->reset();
  std::fstream f(fs::path(dir) / file, std::ios::in | std::ios::out | std::ios::binary);
  const char inf[2] = {'\x80', '\x7f'}, nan[2] = {'\xc0', '\x7f'};  // bf16, little-endian
  f.seekp(static_cast<std::streamoff>(offset + 3 * 2));
  f.write(inf, 2);
  f.seekp(static_cast<std::streamoff>(offset + 5 * 2));
  f.write(nan, 2);
  return dir;
}

class TinyModelTest : public ::testing::Test {
 protected:
  // The directory of the tiny demo model with `seed`, written as `shards` safetensors files
  // (1: model.safetensors; N: model-0000i-of-0000N + index). Thread-safe.
  static std::string TinyModel(uint64_t seed, int shards = 1) {
    std::lock_guard<std::mutex> lock(mu_);
    if (models_ == nullptr) models_ = std::make_unique<TempDir>();
    const std::string dir =
        models_->Path("tiny-seed" + std::to_string(seed) + "-shards" + std::to_string(shards));
    if (!std::filesystem::exists(dir)) {
      pipeline::DemoModelOptions d;
      d.preset = "tiny";
      d.seed = seed;
      d.shards = shards;
      auto r = pipeline::MakeDemoModel(dir, d);
      EXPECT_TRUE(r.ok()) << dir << ": " << r.status();
    }
    return dir;
  }
  static void TearDownTestSuite() {
    std::lock_guard<std::mutex> lock(mu_);
    models_.reset();
  }

  TempDir tmp_;  // a fresh directory for each test

 private:
  inline static std::mutex mu_;
  inline static std::unique_ptr<TempDir> models_;
};

}  // namespace nvfp4::testing

#endif  // NVFP4_TESTS_TESTING_TINY_MODEL_H_
