#include "formats/safetensors.h"

#include <atomic>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/sha256.h"
#include "base/str_util.h"
#include "formats/dtypes.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/formats/test_util.h"
#include "tests/testing/files.h"
#include "tests/testing/temp_dir.h"

namespace nvfp4::formats {
namespace {

using ::nvfp4::formats::testing::Bytes;
using ::nvfp4::formats::testing::RawSafetensors;
using ::nvfp4::testing::ReadFile;
using ::nvfp4::testing::TempDir;
using ::nvfp4::testing::WriteFile;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// "t<i>" (built by append: GCC 12 warns falsely on absl::StrCat("t", i) at -O3).
std::string TensorName(int i) {
  std::string name = "t";
  name += std::to_string(i);
  return name;
}

// ---- Round trip -------------------------------------------------------------------------------

TEST(SafetensorsTest, RoundTripKeepsNamesDtypesShapesAndBytes) {
  TempDir dir;
  const std::string path = dir.Path("t.safetensors");
  const auto f32 = Bytes(2 * 3 * 4, 1);
  const auto bf16 = Bytes(4 * 2, 2);
  const auto u8 = Bytes(3 * 2, 3);
  const auto e4m3 = Bytes(2, 4);
  const auto i64 = Bytes(8, 5);
  const auto f16 = Bytes(0, 6);
  std::vector<TensorToWrite> tensors = {
      {"w.weight", "U8", {3, 2}, u8}, {"w.weight_scale", "F8_E4M3", {2}, e4m3},
      {"a.f32", "F32", {2, 3}, f32},  {"b.bf16", "BF16", {4}, bf16},
      {"step", "I64", {}, i64},       {"empty", "F16", {0, 5}, f16},
  };
  ASSERT_TRUE(WriteSafetensors(path, tensors, {{"producer", "test"}}).ok());
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));

  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  // Reference order: descending alignment, then name.
  std::vector<std::string> names;
  for (const TensorInfo& t : (*reader)->tensors()) names.push_back(t.name);
  EXPECT_THAT(names, ElementsAre("step", "a.f32", "b.bf16", "empty", "w.weight_scale", "w.weight"));
  EXPECT_EQ((*reader)->metadata().at("format"), "pt");
  EXPECT_EQ((*reader)->metadata().at("producer"), "test");
  EXPECT_EQ((*reader)->header_size() % 8, 0u);

  for (const TensorToWrite& t : tensors) {
    const TensorInfo* info = (*reader)->Find(t.name);
    ASSERT_NE(info, nullptr) << t.name;
    EXPECT_EQ(info->dtype, t.dtype);
    EXPECT_EQ(info->shape, t.shape);
    EXPECT_EQ(info->size, t.data.size());
    auto bytes = (*reader)->ReadTensor(t.name);
    ASSERT_TRUE(bytes.ok());
    EXPECT_EQ(*bytes, std::vector<uint8_t>(t.data.begin(), t.data.end())) << t.name;
  }
  EXPECT_EQ((*reader)->Find("step")->numel(), 1);
  EXPECT_EQ((*reader)->Find("empty")->numel(), 0);
  EXPECT_EQ((*reader)->Find("missing"), nullptr);
  EXPECT_TRUE(absl::IsNotFound((*reader)->ReadTensor("missing").status()));
}

TEST(SafetensorsTest, HeaderIsSpacePaddedJsonWithMetadata) {
  std::vector<TensorSpec> specs = {{"x", "F32", {3}}};
  auto header = BuildSafetensorsHeader(specs);
  ASSERT_TRUE(header.ok());
  ASSERT_GE(header->size(), 8u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>((*header)[i]);
  EXPECT_EQ(n, header->size() - 8);
  EXPECT_EQ(n % 8, 0u);
  const std::string json = header->substr(8);
  EXPECT_EQ(json[0], '{');
  auto parsed = nlohmann::json::parse(json);
  EXPECT_EQ(parsed["__metadata__"]["format"], "pt");
  EXPECT_EQ(parsed["x"]["data_offsets"], nlohmann::json({0, 12}));
}

TEST(SafetensorsTest, SortForWritingFollowsTheReferenceDtypeOrderThenName) {
  std::vector<TensorSpec> specs = {{"b", "U8", {1}},   {"a", "F8_E4M3", {1}}, {"z", "BF16", {1}},
                                   {"c", "F32", {1}},  {"y", "F16", {1}},     {"d", "I32", {1}},
                                   {"e", "F64", {1}},  {"f", "I64", {1}},     {"g", "U8", {1}},
                                   {"h", "BOOL", {1}}, {"i", "I8", {1}},      {"j", "F32", {1}}};
  SortForWriting(specs);
  std::vector<std::string> names;
  for (const auto& s : specs) names.push_back(s.name);
  // I64 > F64 > F32 > I32 > BF16 > F16 > F8_E4M3 > I8 > U8 > BOOL, ties by name.
  EXPECT_THAT(names, ElementsAre("f", "e", "c", "j", "d", "z", "y", "a", "i", "b", "g", "h"));
}

TEST(SafetensorsTest, ReadsIntoCallerBufferAndRanges) {
  TempDir dir;
  const std::string path = dir.Path("t.safetensors");
  const auto data = Bytes(64, 9);
  std::vector<TensorToWrite> tensors = {{"x", "F32", {4, 4}, data}};
  ASSERT_TRUE(WriteSafetensors(path, tensors).ok());
  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok());
  const TensorInfo& info = (*reader)->tensors()[0];
  std::vector<uint8_t> out(64);
  ASSERT_TRUE((*reader)->ReadTensor(info, out).ok());
  EXPECT_EQ(out, data);
  std::vector<uint8_t> part(10);
  ASSERT_TRUE((*reader)->ReadTensorRange(info, 50, part).ok());
  EXPECT_EQ(part, std::vector<uint8_t>(data.begin() + 50, data.end() - 4));
  std::vector<uint8_t> wrong(63);
  EXPECT_TRUE(absl::IsInvalidArgument((*reader)->ReadTensor(info, wrong)));
  std::vector<uint8_t> past(20);
  EXPECT_TRUE(absl::IsOutOfRange((*reader)->ReadTensorRange(info, 50, past)));
}

// A source that counts the bytes read, to show the reader never loads the whole file.
class CountingSource : public RandomAccessSource {
 public:
  CountingSource(std::unique_ptr<RandomAccessSource> inner, std::atomic<uint64_t>* count)
      : inner_(std::move(inner)), count_(count) {}
  absl::StatusOr<uint64_t> Size() override { return inner_->Size(); }
  absl::Status ReadAt(uint64_t offset, std::span<uint8_t> out) override {
    *count_ += out.size();
    return inner_->ReadAt(offset, out);
  }
  std::string Describe() override { return inner_->Describe(); }

 private:
  std::unique_ptr<RandomAccessSource> inner_;
  std::atomic<uint64_t>* count_;
};

TEST(SafetensorsTest, ReadsOnlyTheHeaderAndTheRequestedTensor) {
  TempDir dir;
  const std::string path = dir.Path("t.safetensors");
  const auto big = Bytes(1 << 20, 1);
  const auto small = Bytes(16, 2);
  std::vector<TensorToWrite> tensors = {{"big", "U8", {1 << 20}, big},
                                        {"small", "U8", {16}, small}};
  ASSERT_TRUE(WriteSafetensors(path, tensors).ok());
  std::atomic<uint64_t> count{0};
  auto file = LocalFileSource::Open(path);
  ASSERT_TRUE(file.ok());
  auto reader = SafetensorsReader::Open(std::make_unique<CountingSource>(std::move(*file), &count));
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ(count.load(), 8 + (*reader)->header_size());
  count = 0;
  ASSERT_TRUE((*reader)->ReadTensor("small").ok());
  EXPECT_EQ(count.load(), 16u);
}

TEST(SafetensorsTest, ReaderWorksOnMemorySource) {
  const std::string file =
      RawSafetensors(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", 2);
  auto reader = SafetensorsReader::Open(
      std::make_unique<MemorySource>(std::vector<uint8_t>(file.begin(), file.end()), "mem://x"));
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->name(), "mem://x");
  auto bytes = (*reader)->ReadTensor("a");
  ASSERT_TRUE(bytes.ok());
  EXPECT_THAT(*bytes, ElementsAre(0, 1));
}

TEST(SafetensorsTest, AcceptsEmptyFileScalarAndPassThroughDtypes) {
  auto parse = [](const std::string& header, uint64_t data) {
    return ParseSafetensorsHeader(header, 8 + header.size() + data, "f");
  };
  EXPECT_TRUE(parse("{}", 0).ok());
  EXPECT_TRUE(parse(R"({"__metadata__":{"format":"pt"}}    )", 0).ok());
  auto scalar = parse(R"({"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})", 4);
  ASSERT_TRUE(scalar.ok());
  EXPECT_TRUE(scalar->tensors[0].shape.empty());
  for (const char* dtype : {"I8", "I16", "I32", "I64", "F64", "BOOL", "U16", "U32", "U64",
                            "F8_E4M3", "U8", "F16", "BF16", "F32"}) {
    const int size = *SafetensorsDTypeSize(dtype);
    const std::string header = std::string(R"({"t":{"dtype":")") + dtype +
                               R"(","shape":[3],"data_offsets":[0,)" + std::to_string(3 * size) +
                               "]}}";
    EXPECT_TRUE(parse(header, 3 * size).ok()) << dtype;
  }
  // Two empty tensors may share an offset.
  EXPECT_TRUE(parse(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},
                        "b":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},
                        "c":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})",
                    1)
                  .ok());
}

// ---- Malformed files ----------------------------------------------------------------------------

class MalformedTest : public ::testing::Test {
 protected:
  // Writes `bytes` to a file and returns the Open status.
  absl::Status OpenBytes(const std::string& bytes) {
    path_ = dir_.Path("bad.safetensors");
    WriteFile(path_, bytes);
    return SafetensorsReader::Open(path_).status();
  }
  // Expects INVALID_ARGUMENT whose message names the file and contains every fragment.
  void ExpectRejected(const std::string& bytes, std::vector<std::string> fragments) {
    const absl::Status status = OpenBytes(bytes);
    EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr(path_));
    for (const std::string& f : fragments) {
      EXPECT_THAT(std::string(status.message()), HasSubstr(f));
    }
  }

  TempDir dir_;
  std::string path_;
};

TEST_F(MalformedTest, FileShorterThanLengthPrefix) {
  ExpectRejected(std::string("\x10\x00\x00", 3), {"too short"});
  ExpectRejected("", {"too short"});
}

TEST_F(MalformedTest, HeaderLengthOverLimit) {
  ExpectRejected(RawSafetensors("{}", 0, 200'000'000), {"200000000", "exceeds the limit"});
  ExpectRejected(RawSafetensors("{}", 0, UINT64_MAX - 1), {"exceeds the limit"});
}

TEST_F(MalformedTest, HeaderLengthPastEndOfFile) {
  ExpectRejected(RawSafetensors("{}", 0, 1000), {"header length 1000", "past the end"});
}

TEST_F(MalformedTest, TruncatedData) {
  const std::string full =
      RawSafetensors(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 16);
  ExpectRejected(full.substr(0, full.size() - 5), {"tensor 'w'", "out of range"});
}

TEST_F(MalformedTest, BadJson) {
  ExpectRejected(RawSafetensors(R"({"w":{"dtype":"F32",)", 0), {"invalid JSON"});
  ExpectRejected(RawSafetensors(R"({"w":1} junk)", 0), {"invalid JSON"});
  // Not UTF-8: the string is named with its bytes escaped, and the message is valid UTF-8.
  ExpectRejected(RawSafetensors("{\"w\xff\xfe.weight\":{}}", 0),
                 {"not valid UTF-8: byte 3 in the string \"w\\xff\\xfe.weight\""});
  EXPECT_TRUE(IsValidUtf8(
      std::string(OpenBytes(RawSafetensors("{\"w\xff\xfe.weight\":{}}", 0)).message())));
}

TEST_F(MalformedTest, NonObjectJson) {
  ExpectRejected(RawSafetensors("[1, 2, 3]", 0), {"not a JSON object"});
  ExpectRejected(RawSafetensors("\"text\"", 0), {"not a JSON object"});
  ExpectRejected(RawSafetensors(R"({"w":[0,4]})", 4), {"tensor 'w'", "must be an object"});
}

TEST_F(MalformedTest, UnknownDtype) {
  ExpectRejected(RawSafetensors(R"({"w":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}})", 1),
                 {"tensor 'w'", "unknown dtype 'F4'"});
  ExpectRejected(RawSafetensors(R"({"w":{"dtype":7,"shape":[2],"data_offsets":[0,1]}})", 1),
                 {"tensor 'w'", "'dtype' must be a string"});
}

TEST_F(MalformedTest, ShapeSizeMismatch) {
  ExpectRejected(RawSafetensors(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", 20),
                 {"tensor 'w'", "[2, 3]", "needs 24 bytes", "span 20 bytes"});
}

TEST_F(MalformedTest, ShapeOverflow) {
  ExpectRejected(
      RawSafetensors(
          R"({"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}})", 16),
      {"tensor 'w'", "overflows"});
}

TEST_F(MalformedTest, OverlappingOffsets) {
  ExpectRejected(RawSafetensors(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},
                                    "b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
                                6),
                 {"tensor 'b'", "overlap tensor 'a'"});
}

TEST_F(MalformedTest, GapBetweenTensors) {
  ExpectRejected(RawSafetensors(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},
                                    "b":{"dtype":"U8","shape":[4],"data_offsets":[6,10]}})",
                                10),
                 {"tensor 'b'", "gap of 2 bytes"});
}

TEST_F(MalformedTest, OffsetsOutOfRange) {
  ExpectRejected(RawSafetensors(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},
                                    "b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})",
                                6),
                 {"tensor 'b'", "out of range"});
  ExpectRejected(RawSafetensors(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[100,100]}})", 0),
                 {"tensor 'a'", "out of range"});
}

TEST_F(MalformedTest, OffsetsNotStartingAtZero) {
  ExpectRejected(RawSafetensors(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})", 6),
                 {"tensor 'a'", "do not start at 0"});
}

TEST_F(MalformedTest, BadDataOffsets) {
  ExpectRejected(RawSafetensors(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[4,0]}})", 4),
                 {"tensor 'a'", "end before begin"});
  ExpectRejected(RawSafetensors(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0]}})", 4),
                 {"tensor 'a'", "data_offsets"});
  ExpectRejected(RawSafetensors(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[-1,3]}})", 4),
                 {"tensor 'a'", "data_offsets"});
  ExpectRejected(RawSafetensors(R"({"a":{"dtype":"U8","shape":[4]}})", 4),
                 {"tensor 'a'", "missing 'data_offsets'"});
}

TEST_F(MalformedTest, DuplicateNames) {
  ExpectRejected(RawSafetensors(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},
                                    "a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})",
                                8),
                 {"duplicate tensor name 'a'"});
  ExpectRejected(
      RawSafetensors(R"({"a":{"dtype":"U8","dtype":"U8","shape":[4],"data_offsets":[0,4]}})", 4),
      {"duplicate key 'dtype'"});
}

TEST_F(MalformedTest, NegativeOrNonIntegerShape) {
  ExpectRejected(RawSafetensors(R"({"a":{"dtype":"U8","shape":[-4],"data_offsets":[0,4]}})", 4),
                 {"tensor 'a'", "negative"});
  ExpectRejected(RawSafetensors(R"({"a":{"dtype":"U8","shape":[2.5],"data_offsets":[0,4]}})", 4),
                 {"tensor 'a'", "not a non-negative integer"});
  ExpectRejected(RawSafetensors(R"({"a":{"dtype":"U8","shape":[4.0],"data_offsets":[0,4]}})", 4),
                 {"tensor 'a'", "not a non-negative integer"});
  ExpectRejected(RawSafetensors(R"({"a":{"dtype":"U8","shape":["4"],"data_offsets":[0,4]}})", 4),
                 {"tensor 'a'", "not a non-negative integer"});
  ExpectRejected(RawSafetensors(R"({"a":{"dtype":"U8","shape":4,"data_offsets":[0,4]}})", 4),
                 {"tensor 'a'", "'shape' must be an array"});
}

TEST_F(MalformedTest, TrailingBytes) {
  ExpectRejected(RawSafetensors(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", 7),
                 {"3 trailing bytes"});
}

TEST_F(MalformedTest, BadMetadataAndUnknownKeys) {
  ExpectRejected(RawSafetensors(R"({"__metadata__":{"format":1}})", 0),
                 {"__metadata__", "'format'", "must be a string"});
  ExpectRejected(RawSafetensors(R"({"__metadata__":["pt"]})", 0), {"__metadata__"});
  ExpectRejected(
      RawSafetensors(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4],"extra":1}})", 4),
      {"tensor 'a'", "unexpected key 'extra'"});
}

TEST(SafetensorsRobustnessTest, EveryTruncationIsRejected) {
  const std::string file = RawSafetensors(
      R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"U8","shape":[3],"data_offsets":[16,19]}})",
      19);
  for (size_t len = 0; len < file.size(); ++len) {
    auto reader = SafetensorsReader::Open(std::make_unique<MemorySource>(
        std::vector<uint8_t>(file.begin(), file.begin() + len), "trunc"));
    EXPECT_TRUE(absl::IsInvalidArgument(reader.status())) << "length " << len;
  }
  EXPECT_TRUE(SafetensorsReader::Open(std::make_unique<MemorySource>(
                                          std::vector<uint8_t>(file.begin(), file.end()), "full"))
                  .ok());
}

TEST(SafetensorsRobustnessTest, RandomHeaderCorruptionNeverCrashes) {
  const std::string file = RawSafetensors(
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"U8","shape":[3],"data_offsets":[16,19]}})",
      19);
  uint64_t state = 12345;
  auto next = [&state]() {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<uint32_t>(state >> 33);
  };
  const char kAlphabet[] = "{}[]\",:0123456789-.eE \\xFUI";
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<uint8_t> bytes(file.begin(), file.end());
    const int edits = 1 + next() % 3;
    for (int e = 0; e < edits; ++e) {
      const size_t at = next() % bytes.size();
      bytes[at] = (next() % 2) ? static_cast<uint8_t>(next())
                               : static_cast<uint8_t>(kAlphabet[next() % (sizeof(kAlphabet) - 1)]);
    }
    auto reader = SafetensorsReader::Open(std::make_unique<MemorySource>(bytes, "fuzz"));
    if (!reader.ok()) {
      EXPECT_TRUE(absl::IsInvalidArgument(reader.status())) << reader.status();
      continue;
    }
    // Whatever was accepted must be readable within the file.
    for (const TensorInfo& t : (*reader)->tensors()) {
      EXPECT_LE(t.offset + t.size, bytes.size());
      EXPECT_TRUE((*reader)->ReadTensor(t).ok());
    }
  }
}

// ---- Streaming writer ---------------------------------------------------------------------------

TEST(SafetensorsWriterTest, StreamsChunksInAnyTensorOrder) {
  TempDir dir;
  const std::string path = dir.Path("s.safetensors");
  std::vector<TensorSpec> specs = {{"b", "U8", {10}}, {"a", "F32", {3}}, {"c", "BF16", {2, 2}}};
  auto writer = SafetensorsWriter::Create(path, specs);
  ASSERT_TRUE(writer.ok()) << writer.status();
  EXPECT_EQ((*writer)->specs()[0].name, "a");  // reference order
  const auto a = Bytes(12, 1), b = Bytes(10, 2), c = Bytes(8, 3);
  ASSERT_TRUE((*writer)->WriteTensor("c", c).ok());
  ASSERT_TRUE((*writer)->AppendTensorData("b", std::span(b).subspan(0, 4)).ok());
  ASSERT_TRUE((*writer)->AppendTensorData("b", std::span(b).subspan(4)).ok());
  ASSERT_TRUE((*writer)->WriteTensor("a", a).ok());
  EXPECT_FALSE(std::filesystem::exists(path));
  ASSERT_TRUE((*writer)->Finish().ok());
  EXPECT_EQ(std::filesystem::file_size(path), (*writer)->file_size());

  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ(*(*reader)->ReadTensor("a"), a);
  EXPECT_EQ(*(*reader)->ReadTensor("b"), b);
  EXPECT_EQ(*(*reader)->ReadTensor("c"), c);
}

// Options::sha256 hashes while writing: tensors out of file order, chunked tensors, an empty
// tensor, tensors written from several threads, and a resumed partial file (MarkWritten) must all
// give the sha256 of the finished file; without the option sha256() stays empty.
TEST(SafetensorsWriterTest, Sha256WhileWritingEqualsTheFinishedFilesDigest) {
  TempDir dir;
  std::vector<TensorSpec> specs;
  for (int i = 0; i < 24; ++i) {
    specs.push_back({absl::StrCat("t", i), "U8", {i == 7 ? 0 : 1000 + 4099 * i}});
  }
  std::vector<std::vector<uint8_t>> data;
  for (int i = 0; i < 24; ++i) data.push_back(Bytes(i == 7 ? 0 : 1000 + 4099 * i, i));
  auto write = [&](const std::string& path, bool threads, bool sha256) {
    SafetensorsWriter::Options o;
    o.sha256 = sha256;
    o.sync = false;
    auto w = SafetensorsWriter::Create(path, specs, o);
    EXPECT_TRUE(w.ok()) << w.status();
    auto one = [&](int i) {
      const std::string name = absl::StrCat("t", i);
      if (i % 3 == 0 && data[i].size() > 10) {  // in chunks
        const auto d = std::span<const uint8_t>(data[i]);
        EXPECT_TRUE((*w)->AppendTensorData(name, d.subspan(0, 10)).ok());
        EXPECT_TRUE((*w)->AppendTensorData(name, d.subspan(10)).ok());
      } else {
        EXPECT_TRUE((*w)->WriteTensor(name, data[i]).ok());
      }
    };
    if (threads) {
      std::vector<std::thread> ts;
      for (int k = 0; k < 4; ++k) {
        ts.emplace_back([&, k] {
          for (int i = 23 - k; i >= 0; i -= 4) one(i);
        });
      }
      for (auto& t : ts) t.join();
    } else {
      for (int i = 23; i >= 0; --i) one((i * 7) % 24);  // a scrambled order
    }
    EXPECT_TRUE((*w)->Finish().ok());
    return (*w)->sha256();
  };
  for (bool threads : {false, true}) {
    const std::string path = dir.Path(threads ? "threads.safetensors" : "serial.safetensors");
    const std::string digest = write(path, threads, true);
    EXPECT_EQ(digest, Sha256::Hex(ReadFile(path))) << (threads ? "threads" : "serial");
    EXPECT_EQ(digest.size(), 64u);
  }
  EXPECT_EQ(write(dir.Path("plain.safetensors"), false, false), "");

  // A resumed write: an earlier run left <path>.tmp with some tensors; the new writer reuses it,
  // marks those tensors written and writes the rest.
  const std::string path = dir.Path("resumed.safetensors");
  {
    SafetensorsWriter::Options o;
    o.sync = false;
    o.reuse_partial = true;
    auto w = SafetensorsWriter::Create(path, specs, o);
    ASSERT_TRUE(w.ok());
    for (int i = 0; i < 24; i += 2) {
      ASSERT_TRUE((*w)->WriteTensor(absl::StrCat("t", i), data[i]).ok());
    }
  }  // dropped: the partial file stays
  SafetensorsWriter::Options o;
  o.sync = false;
  o.reuse_partial = true;
  o.sha256 = true;
  auto w = SafetensorsWriter::Create(path, specs, o);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->reused());
  for (int i = 0; i < 24; ++i) {
    const std::string name = absl::StrCat("t", i);
    ASSERT_TRUE((i % 2 == 0 ? (*w)->MarkWritten(name) : (*w)->WriteTensor(name, data[i])).ok());
  }
  ASSERT_TRUE((*w)->Finish().ok());
  EXPECT_EQ((*w)->sha256(), Sha256::Hex(ReadFile(path)));
}

TEST(SafetensorsWriterTest, RejectsMisuse) {
  TempDir dir;
  const std::string path = dir.Path("s.safetensors");
  auto writer = SafetensorsWriter::Create(path, {{"a", "U8", {4}}, {"b", "U8", {4}}});
  ASSERT_TRUE(writer.ok());
  const auto four = Bytes(4, 0), five = Bytes(5, 0);
  EXPECT_TRUE(absl::IsInvalidArgument((*writer)->WriteTensor("nope", four)));
  EXPECT_TRUE(absl::IsInvalidArgument((*writer)->WriteTensor("a", five)));
  ASSERT_TRUE((*writer)->AppendTensorData("a", std::span(four).subspan(0, 3)).ok());
  EXPECT_TRUE(
      absl::IsInvalidArgument((*writer)->AppendTensorData("a", std::span(four).subspan(0, 2))));
  EXPECT_TRUE(absl::IsFailedPrecondition((*writer)->WriteTensor("a", four)));
  const absl::Status incomplete = (*writer)->Finish();
  EXPECT_TRUE(absl::IsFailedPrecondition(incomplete));
  EXPECT_THAT(std::string(incomplete.message()), HasSubstr("tensor 'a' has 3 of 4 bytes"));
  EXPECT_TRUE(std::filesystem::exists(path + ".tmp"));
  writer->reset();  // abandoned: the temporary file goes away, no output appears
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(SafetensorsWriterTest, RejectsBadSpecs) {
  TempDir dir;
  const std::string path = dir.Path("s.safetensors");
  EXPECT_TRUE(absl::IsInvalidArgument(
      SafetensorsWriter::Create(path, {{"a", "U8", {4}}, {"a", "U8", {4}}}).status()));
  EXPECT_TRUE(
      absl::IsInvalidArgument(SafetensorsWriter::Create(path, {{"a", "F4", {4}}}).status()));
  EXPECT_TRUE(
      absl::IsInvalidArgument(SafetensorsWriter::Create(path, {{"a", "U8", {-1}}}).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      SafetensorsWriter::Create(path, {{"__metadata__", "U8", {1}}}).status()));
  EXPECT_TRUE(absl::IsNotFound(SafetensorsWriter::Create(dir.Path("no/such/dir/x"), {}).status()));
}

TEST(SafetensorsWriterTest, OutputOfWriterPassesStrictReader) {
  // Many tensors of mixed dtypes: the written file must tile exactly.
  TempDir dir;
  const std::string path = dir.Path("m.safetensors");
  std::vector<std::vector<uint8_t>> storage;
  std::vector<TensorToWrite> tensors;
  const char* dtypes[] = {"F32", "BF16", "U8", "F8_E4M3", "I64", "F16"};
  for (int i = 0; i < 30; ++i) {
    const char* dtype = dtypes[i % 6];
    const int64_t rows = 1 + i % 5, cols = 1 + (i * 7) % 11;
    storage.push_back(Bytes(rows * cols * *SafetensorsDTypeSize(dtype), static_cast<uint8_t>(i)));
  }
  for (int i = 0; i < 30; ++i) {
    const char* dtype = dtypes[i % 6];
    tensors.push_back({TensorName(i), dtype, {1 + i % 5, 1 + (i * 7) % 11}, storage[i]});
  }
  ASSERT_TRUE(WriteSafetensors(path, tensors).ok());
  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  ASSERT_EQ((*reader)->tensors().size(), 30u);
  for (int i = 0; i < 30; ++i) {
    EXPECT_EQ(*(*reader)->ReadTensor(TensorName(i)), storage[i]);
  }
  (void)ReadFile;
}

}  // namespace
}  // namespace nvfp4::formats
