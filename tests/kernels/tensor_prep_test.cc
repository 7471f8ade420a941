// FP8 source dequantization (kernels/tensor_prep.h, docs/NUMERICS.md section 7): every E4M3 code
// times a scale against an independent decoding, and the tile lookup of block, per-channel and
// per-tensor scales with partial edge tiles.
#include "kernels/tensor_prep.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace nvfp4 {
namespace {

// E4M3 "fn" by its definition (sign, 4-bit exponent with bias 7, 3-bit mantissa; e=0 subnormal;
// S.1111.111 NaN), in double: exact for every code.
double ReferenceE4M3(int code) {
  const int s = code >> 7, e = (code >> 3) & 15, m = code & 7;
  if (e == 15 && m == 7) return std::nan("");
  const double mag = e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1.0 + m / 8.0, e - 7);
  return s ? -mag : mag;
}

TEST(DequantFp8, EveryCodeTimesScalesIsOneRoundedProduct) {
  const float scales[] = {1.0f, 0.5f, 3.0517578125e-05f, 1.7f / 448.0f, 123.456f, 0.0f};
  for (float scale : scales) {
    for (int code = 0; code < 256; ++code) {
      const double ref = ReferenceE4M3(code);
      const float got = DequantFp8(static_cast<uint8_t>(code), scale);
      if (std::isnan(ref)) {
        EXPECT_TRUE(std::isnan(got)) << "code " << code;
        continue;
      }
      // The E4M3 value and the scale are exact in fp32, their product exact in double: fp32
      // rounding of the double product is the single correctly rounded fp32 multiply.
      EXPECT_EQ(got, static_cast<float>(ref * static_cast<double>(scale)))
          << "code " << code << " scale " << scale;
    }
  }
  EXPECT_EQ(DequantFp8(0x38, 2.0f), 2.0f);            // 1.0
  EXPECT_EQ(DequantFp8(0x7E, 1.0f), 448.0f);          // the largest finite value
  EXPECT_EQ(DequantFp8(0x01, 1.0f), 0.001953125f);    // 2^-9
  EXPECT_TRUE(std::signbit(DequantFp8(0x80, 1.0f)));  // -0
}

struct Case {
  int64_t rows, cols, block_rows, block_cols;
};

class DequantizeFp8RowsTest : public ::testing::TestWithParam<Case> {};

TEST_P(DequantizeFp8RowsTest, EachElementUsesItsTilesScale) {
  const Case c = GetParam();
  const int64_t grid_rows = (c.rows + c.block_rows - 1) / c.block_rows;
  const int64_t grid_cols = (c.cols + c.block_cols - 1) / c.block_cols;
  std::mt19937 rng(static_cast<uint32_t>(c.rows * 131 + c.cols));
  std::vector<uint8_t> codes(static_cast<size_t>(c.rows * c.cols));
  for (uint8_t& b : codes) {
    do {
      b = static_cast<uint8_t>(rng());
    } while ((b & 0x7F) == 0x7F);  // finite codes
  }
  std::vector<float> scales(static_cast<size_t>(grid_rows * grid_cols));
  std::uniform_real_distribution<float> u(1e-4f, 1e-2f);
  for (float& s : scales) s = u(rng);
  Fp8Scales fs{scales.data(), c.block_rows, c.block_cols, grid_cols};
  // Whole tensor, and in two row ranges that split a tile (the pipeline reads row slabs).
  std::vector<float> whole(codes.size()), parts(codes.size());
  DequantizeFp8Rows(codes.data(), c.cols, fs, 0, c.rows, whole.data());
  const int64_t split = c.rows / 2 + 1;
  DequantizeFp8Rows(codes.data(), c.cols, fs, 0, split, parts.data());
  DequantizeFp8Rows(codes.data() + split * c.cols, c.cols, fs, split, c.rows,
                    parts.data() + split * c.cols);
  for (int64_t r = 0; r < c.rows; ++r) {
    for (int64_t k = 0; k < c.cols; ++k) {
      const size_t i = static_cast<size_t>(r * c.cols + k);
      const float scale =
          scales[static_cast<size_t>((r / c.block_rows) * grid_cols + k / c.block_cols)];
      const float want = static_cast<float>(ReferenceE4M3(codes[i]) * static_cast<double>(scale));
      ASSERT_EQ(whole[i], want) << "row " << r << " col " << k;
      ASSERT_EQ(parts[i], want) << "row " << r << " col " << k;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Tilings, DequantizeFp8RowsTest,
                         ::testing::Values(Case{130, 272, 128,
                                                128},  // partial edge blocks in both dimensions
                                           Case{100, 96, 128, 128},   // one partial block
                                           Case{256, 384, 128, 128},  // whole blocks only
                                           Case{37, 64, 1, 64},       // per channel
                                           Case{37, 64, 37, 64},      // per tensor
                                           Case{12, 256, 1, 32}));    // groups of 32 columns

}  // namespace
}  // namespace nvfp4
