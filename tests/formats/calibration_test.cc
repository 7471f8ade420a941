#include "formats/calibration.h"

#include <cstring>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/formats/test_util.h"
#include "tests/testing/temp_dir.h"

namespace nvfp4::formats {
namespace {

using ::nvfp4::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<uint8_t> F32Bytes(const std::vector<float>& v) {
  std::vector<uint8_t> out(v.size() * 4);
  std::memcpy(out.data(), v.data(), out.size());
  return out;
}

class CalibrationTest : public ::testing::Test {
 protected:
  std::unique_ptr<SafetensorsReader> Write(const std::vector<TensorToWrite>& tensors) {
    const std::string path = dir_.Path("cal.safetensors");
    EXPECT_TRUE(WriteSafetensors(path, tensors).ok());
    auto reader = SafetensorsReader::Open(path);
    EXPECT_TRUE(reader.ok()) << reader.status();
    return std::move(*reader);
  }
  TempDir dir_;
};

TEST_F(CalibrationTest, LoadsAllThreeKinds) {
  const auto sq = F32Bytes({1, 2, 3, 4});
  std::vector<float> gram_values(16);
  for (int i = 0; i < 16; ++i) gram_values[i] = static_cast<float>(i);
  const auto gram = F32Bytes(gram_values);
  const std::vector<uint8_t> act(3 * 4 * 2, 0x3F);  // BF16 [3, 4]
  auto reader = Write({{"w.input_sq", "F32", {4}, sq},
                       {"w.input_gram", "F32", {4, 4}, gram},
                       {"w.input_activations", "BF16", {3, 4}, act}});
  EXPECT_TRUE(HasCalibrationFor(*reader, "w"));
  EXPECT_FALSE(HasCalibrationFor(*reader, "v"));
  auto loaded = LoadCalibration(*reader, "w", 4);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const Calibration& cal = (*loaded)->calibration;
  EXPECT_THAT(cal.importance, ElementsAre(1, 2, 3, 4));
  EXPECT_EQ(cal.gram, gram_values);
  EXPECT_EQ(cal.tokens, 3);
  EXPECT_EQ(cal.activations_dtype, DType::kBF16);
  ASSERT_NE(cal.activations, nullptr);
  EXPECT_EQ(std::memcmp(cal.activations, act.data(), act.size()), 0);
  EXPECT_FALSE(cal.empty());
}

TEST_F(CalibrationTest, MissingEntriesGiveEmptyCalibration) {
  const auto sq = F32Bytes({1, 2});
  auto reader = Write({{"other.input_sq", "F32", {2}, sq}});
  auto loaded = LoadCalibration(*reader, "w", 2);
  ASSERT_TRUE(loaded.ok());
  EXPECT_TRUE((*loaded)->calibration.empty());
}

TEST_F(CalibrationTest, ActivationsWithLeadingDimsAreFolded) {
  const std::vector<uint8_t> act(2 * 3 * 4 * 4, 0);
  auto reader = Write({{"w.input_activations", "F32", {2, 3, 4}, act}});
  auto loaded = LoadCalibration(*reader, "w", 4);
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ((*loaded)->calibration.tokens, 6);
}

TEST_F(CalibrationTest, ShapeMismatchesNameEntryAndExpectedShape) {
  const auto sq = F32Bytes({1, 2, 3});
  const auto gram = F32Bytes(std::vector<float>(12));
  const std::vector<uint8_t> act(5 * 4, 0);
  const std::vector<uint8_t> i32(4 * 4, 0);
  struct Case {
    TensorToWrite tensor;
    std::string fragment;
  };
  std::vector<Case> cases = {
      {{"w.input_sq", "F32", {3}, sq}, "expected shape [4]"},
      {{"w.input_gram", "F32", {3, 4}, gram}, "expected shape [4, 4]"},
      {{"w.input_activations", "U8", {5, 4}, act}, "dtype must be F32, F16 or BF16"},
      {{"w.input_activations", "U8", {20}, act}, "dtype must be"},
      {{"w.input_activations", "F32", {5}, act}, "expected shape [tokens, 4]"},
      {{"w.input_sq", "I32", {4}, i32}, "dtype must be F32, F16 or BF16"},
  };
  for (const Case& c : cases) {
    auto reader = Write({c.tensor});
    auto loaded = LoadCalibration(*reader, "w", 4);
    ASSERT_FALSE(loaded.ok()) << c.tensor.name;
    EXPECT_TRUE(absl::IsInvalidArgument(loaded.status()));
    const std::string message(loaded.status().message());
    EXPECT_THAT(message, HasSubstr(c.tensor.name));
    EXPECT_THAT(message, HasSubstr(c.fragment));
    EXPECT_THAT(message, HasSubstr("cal.safetensors"));
  }
}

}  // namespace
}  // namespace nvfp4::formats
