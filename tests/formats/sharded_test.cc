#include "formats/sharded.h"

#include <filesystem>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/formats/test_util.h"
#include "tests/testing/files.h"
#include "tests/testing/temp_dir.h"

namespace nvfp4::formats {
namespace {

using ::nvfp4::formats::testing::Bytes;
using ::nvfp4::testing::ReadFile;
using ::nvfp4::testing::TempDir;
using ::nvfp4::testing::WriteFile;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// "t<i>" (built by append: GCC 12 warns falsely on "t" + std::to_string(i) at -O3).
std::string TensorName(int i) {
  std::string name = "t";
  name += std::to_string(i);
  return name;
}

TEST(ShardedTest, ShardFileNames) {
  EXPECT_EQ(ShardFileName(0, 3), "model-00001-of-00003.safetensors");
  EXPECT_EQ(ShardFileName(11, 12, "x"), "x-00012-of-00012.safetensors");
}

TEST(ShardedTest, PlanShardsSplitsAtMaxSize) {
  std::vector<TensorSpec> specs = {{"a", "U8", {40}},
                                   {"b", "U8", {40}},
                                   {"c", "U8", {30}},
                                   {"d", "U8", {250}},
                                   {"e", "U8", {10}}};
  auto plan = PlanShards(specs, 100);
  ASSERT_TRUE(plan.ok());
  // a+b = 80, +c would be 110 -> new shard; d alone (too big); e.
  EXPECT_THAT(*plan,
              ElementsAre(ElementsAre(0, 1), ElementsAre(2), ElementsAre(3), ElementsAre(4)));
  auto one = PlanShards(specs, kDefaultMaxShardSize);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->size(), 1u);
  EXPECT_FALSE(PlanShards(specs, 0).ok());
}

// Writes tensors t0..t5 (100 bytes each, U8) with the given max shard size into `dir`.
std::vector<std::vector<uint8_t>> WriteCheckpoint(const std::string& dir, uint64_t max_size) {
  std::vector<TensorSpec> specs;
  std::vector<std::vector<uint8_t>> data;
  for (int i = 0; i < 6; ++i) {
    specs.push_back({TensorName(i), "U8", {10, 10}});
    data.push_back(Bytes(100, static_cast<uint8_t>(i)));
  }
  ShardedCheckpointWriter::Options options;
  options.max_shard_size = max_size;
  options.sync = false;
  auto writer = ShardedCheckpointWriter::Create(dir, specs, options);
  EXPECT_TRUE(writer.ok()) << writer.status();
  for (int i = 5; i >= 0; --i) {
    EXPECT_TRUE((*writer)->WriteTensor(TensorName(i), data[i]).ok());
  }
  EXPECT_TRUE((*writer)->Finish().ok());
  return data;
}

TEST(ShardedTest, WritesShardsAndIndexThatReadBack) {
  TempDir dir;
  const auto data = WriteCheckpoint(dir.path().string(), 250);
  for (int s = 0; s < 3; ++s) {
    EXPECT_TRUE(std::filesystem::exists(dir.Path(ShardFileName(s, 3)))) << s;
  }
  const auto index = nlohmann::json::parse(ReadFile(dir.Path("model.safetensors.index.json")));
  EXPECT_EQ(index["metadata"]["total_size"], 600);
  EXPECT_EQ(index["weight_map"]["t0"], "model-00001-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["t5"], "model-00003-of-00003.safetensors");

  auto reader = CheckpointReader::OpenLocal(dir.path().string());
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_TRUE((*reader)->sharded());
  EXPECT_EQ((*reader)->shards().size(), 3u);
  EXPECT_EQ((*reader)->tensors().size(), 6u);
  EXPECT_EQ((*reader)->total_size(), 600u);
  for (int i = 0; i < 6; ++i) {
    auto bytes = (*reader)->ReadTensor(TensorName(i));
    ASSERT_TRUE(bytes.ok());
    EXPECT_EQ(*bytes, data[i]);
  }
  EXPECT_TRUE(absl::IsNotFound((*reader)->ReadTensor("t9").status()));
  // Opening the index file directly works too.
  EXPECT_TRUE(CheckpointReader::OpenLocal(dir.Path("model.safetensors.index.json")).ok());
}

TEST(ShardedTest, SingleShardIsModelSafetensorsWithoutIndex) {
  TempDir dir;
  WriteCheckpoint(dir.path().string(), kDefaultMaxShardSize);
  EXPECT_TRUE(std::filesystem::exists(dir.Path("model.safetensors")));
  EXPECT_FALSE(std::filesystem::exists(dir.Path("model.safetensors.index.json")));
  auto reader = CheckpointReader::OpenLocal(dir.path().string());
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_FALSE((*reader)->sharded());
  EXPECT_EQ((*reader)->tensors().size(), 6u);
}

class ShardedIndexErrorTest : public ::testing::Test {
 protected:
  void SetUp() override { WriteCheckpoint(dir_.path().string(), 250); }
  std::string IndexPath() { return dir_.Path("model.safetensors.index.json"); }
  nlohmann::json Index() { return nlohmann::json::parse(ReadFile(IndexPath())); }
  void SetIndex(const nlohmann::json& j) { WriteFile(IndexPath(), j.dump()); }
  void ExpectRejected(std::vector<std::string> fragments) {
    auto reader = CheckpointReader::OpenLocal(dir_.path().string());
    ASSERT_FALSE(reader.ok());
    EXPECT_TRUE(absl::IsInvalidArgument(reader.status())) << reader.status();
    const std::string message(reader.status().message());
    EXPECT_THAT(message, HasSubstr("model.safetensors.index.json"));
    for (const std::string& f : fragments) EXPECT_THAT(message, HasSubstr(f));
  }
  TempDir dir_;
};

TEST_F(ShardedIndexErrorTest, IndexNamesMissingShard) {
  auto j = Index();
  j["weight_map"]["t0"] = "model-00009-of-00009.safetensors";
  j["weight_map"]["t1"] = "model-00009-of-00009.safetensors";
  SetIndex(j);
  ExpectRejected({"shard 'model-00009-of-00009.safetensors'", "tensor 't0'", "cannot be opened"});
}

TEST_F(ShardedIndexErrorTest, TensorInTwoShards) {
  // Copy shard 1 (t0, t1) over shard 2's name as well: t0 then lives in two shards.
  std::filesystem::copy_file(dir_.Path(ShardFileName(0, 3)), dir_.Path("extra.safetensors"));
  auto j = Index();
  j["weight_map"]["zz"] = "extra.safetensors";
  SetIndex(j);
  ExpectRejected({"tensor 't0'", "appears in two shards"});
}

TEST_F(ShardedIndexErrorTest, IndexTensorMissingFromItsShard) {
  auto j = Index();
  j["weight_map"]["ghost.weight"] = "model-00001-of-00003.safetensors";
  SetIndex(j);
  ExpectRejected(
      {"tensor 'ghost.weight'", "model-00001-of-00003.safetensors", "does not contain it"});
}

TEST_F(ShardedIndexErrorTest, TensorMappedToWrongShard) {
  auto j = Index();
  j["weight_map"]["t0"] = "model-00002-of-00003.safetensors";
  SetIndex(j);
  ExpectRejected({"tensor 't0'", "is in shard 'model-00001-of-00003.safetensors'",
                  "maps it to 'model-00002-of-00003.safetensors'"});
}

TEST_F(ShardedIndexErrorTest, TensorInShardButNotInIndex) {
  auto j = Index();
  j["weight_map"].erase("t3");
  SetIndex(j);
  ExpectRejected({"tensor 't3'", "not in the index"});
}

TEST_F(ShardedIndexErrorTest, DuplicateTensorInIndex) {
  WriteFile(IndexPath(),
            R"({"metadata":{"total_size":600},"weight_map":{
                "t0":"model-00001-of-00003.safetensors","t0":"model-00002-of-00003.safetensors"}})");
  ExpectRejected({"duplicate tensor name 't0'"});
}

TEST_F(ShardedIndexErrorTest, ShardNameEscapingTheDirectory) {
  auto j = Index();
  j["weight_map"]["t0"] = "../model-00001-of-00003.safetensors";
  SetIndex(j);
  ExpectRejected({"tensor 't0'", "not a plain file name"});
}

TEST_F(ShardedIndexErrorTest, MalformedIndex) {
  WriteFile(IndexPath(), "{not json");
  ExpectRejected({"invalid JSON"});
  WriteFile(IndexPath(), R"({"metadata":{}})");
  ExpectRejected({"missing 'weight_map'"});
  WriteFile(IndexPath(), R"({"weight_map":{"t0":5}})");
  ExpectRejected({"tensor 't0'", "file name string"});
  WriteFile(IndexPath(), R"({"metadata":{"total_size":-3},"weight_map":{}})");
  ExpectRejected({"total_size"});
}

TEST_F(ShardedIndexErrorTest, CorruptShardIsReported) {
  WriteFile(dir_.Path(ShardFileName(1, 3)), "garbage!garbage");
  auto reader = CheckpointReader::OpenLocal(dir_.path().string());
  ASSERT_FALSE(reader.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(reader.status()));
  EXPECT_THAT(std::string(reader.status().message()), HasSubstr(ShardFileName(1, 3)));
}

TEST(ShardedTest, OpenLocalErrors) {
  TempDir dir;
  EXPECT_TRUE(absl::IsNotFound(CheckpointReader::OpenLocal(dir.Path("nope")).status()));
  EXPECT_TRUE(absl::IsNotFound(CheckpointReader::OpenLocal(dir.path().string()).status()));
}

}  // namespace
}  // namespace nvfp4::formats
