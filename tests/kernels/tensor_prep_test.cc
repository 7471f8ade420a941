// FP8 source dequantization (kernels/tensor_prep.h, docs/NUMERICS.md section 7): every E4M3 code
// times a scale against an independent decoding, and the tile lookup of block, per-channel and
// per-tensor scales with partial edge tiles; FP8 views (TensorView::fp8) through the CPU backend
// and GPTQ equal the same weights dequantized first.
#include "kernels/tensor_prep.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <utility>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/testing/synthetic.h"

namespace nvfp4 {
namespace {

uint32_t FloatBitsOf(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

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

// An FP8 view and the F32 view of the same values dequantized by DequantizeFp8Rows.
struct Fp8Pair {
  testing::Fp8Sample sample;
  Fp8Scales scales;
  std::vector<float> values;
  TensorView fp8, f32;

  Fp8Pair(std::string name, int64_t n, int64_t k, int64_t br, int64_t bc, uint64_t seed)
      : sample(testing::SampleFp8(n, k, br, bc, seed)) {
    scales = Fp8Scales{sample.scales.data(), br, bc, sample.grid_cols};
    values.resize(static_cast<size_t>(n * k));
    DequantizeFp8Rows(sample.codes.data(), k, scales, 0, n, values.data());
    fp8.name = f32.name = std::move(name);
    fp8.shape = f32.shape = {n, k};
    fp8.dtype = f32.dtype = DType::kF32;
    fp8.data = sample.codes.data();
    fp8.fp8 = &scales;
    f32.data = values.data();
  }
};

TEST(Fp8View, WidenAndViewToFloatGiveTheDequantizedValues) {
  Fp8Pair a("block", 300, 272, 128, 128, 1);  // partial edge tiles both ways
  Fp8Pair b("channel", 40, 64, 1, 64, 2);
  const std::vector<float> plain(32 * 16, 1.5f);
  TensorView other{"plain", DType::kF32, {32, 16}, plain.data()};
  std::vector<std::vector<float>> storage;
  const TensorView in[] = {a.fp8, other, b.fp8};
  for (int threads : {1, 3}) {
    storage.clear();
    auto out = WidenFp8Views(in, threads, &storage);
    ASSERT_TRUE(out.ok()) << out.status();
    ASSERT_EQ(out->size(), 3u);
    EXPECT_EQ((*out)[1].data, plain.data());  // untouched
    for (auto [i, pair] : {std::pair<int, Fp8Pair*>{0, &a}, {2, &b}}) {
      const TensorView& v = (*out)[i];
      EXPECT_EQ(v.fp8, nullptr);
      EXPECT_EQ(v.dtype, DType::kF32);
      const float* got = static_cast<const float*>(v.data);
      for (size_t e = 0; e < pair->values.size(); ++e) {
        ASSERT_EQ(FloatBitsOf(got[e]), FloatBitsOf(pair->values[e])) << pair->fp8.name << " " << e;
      }
    }
  }
  std::vector<float> some(100);
  ViewToFloat(a.fp8, 5000, 100, some.data());
  for (int i = 0; i < 100; ++i) EXPECT_EQ(some[i], a.values[5000 + i]);
}

TEST(Fp8View, InconsistentViewsAreRejectedByName) {
  Fp8Pair a("w", 64, 256, 128, 128, 3);
  TensorView bad = a.fp8;
  Fp8Scales wrong = a.scales;
  wrong.grid_cols = 1;  // K = 256 needs 2 columns of 128
  bad.fp8 = &wrong;
  std::vector<std::vector<float>> storage;
  auto r = WidenFp8Views(std::span<const TensorView>(&bad, 1), 1, &storage);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("tensor 'w'"), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("FP8"), std::string::npos) << r.status();
  bad = a.fp8;
  bad.dtype = DType::kBF16;  // an FP8 view stands for fp32 values
  EXPECT_FALSE(FoldShape(bad).ok());
  bad = a.fp8;
  bad.shape = {2, 32, 256};
  EXPECT_FALSE(FoldShape(bad).ok());
  auto cpu = MakeCpuBackend(1);
  wrong = a.scales;
  wrong.block_cols = 0;
  bad = a.fp8;
  bad.fp8 = &wrong;
  EXPECT_EQ(cpu->Quantize(bad, QuantizeOptions()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// The CPU backend (every block-scale method, and GPTQ) on an FP8 view returns the bytes it returns
// for the dequantized fp32 weight, in a fused group with a bf16 tensor too.
TEST(Fp8View, CpuBackendAndGptqEqualTheDequantizedWeight) {
  Fp8Pair gate("gate", 144, 256, 128, 128, 4), up("up", 96, 256, 1, 256, 5);
  const std::vector<uint16_t> other_bits =
      testing::ToBf16(testing::Sample(testing::Distribution::kGaussian, 64 * 256, 6));
  TensorView other{"other", DType::kBF16, {64, 256}, other_bits.data()};
  Calibration calib;
  calib.gram = testing::CorrelatedGram(256, 300, 7);
  auto cpu = MakeCpuBackend(2);
  std::vector<QuantizeOptions> methods;
  for (Method m : {Method::kRtn, Method::kFourOverSix, Method::kScaleSweep, Method::kSoar,
                   Method::kGptq}) {
    QuantizeOptions o;
    o.method = m;
    methods.push_back(o);
  }
  methods.back().gptq.block_scales = Method::kRtn;  // keep the GPTQ case fast
  for (const QuantizeOptions& o : methods) {
    SCOPED_TRACE(std::string(MethodName(o.method)));
    const TensorView with_fp8[] = {gate.fp8, up.fp8, other};
    const TensorView widened[] = {gate.f32, up.f32, other};
    const Calibration* c[] = {&calib, &calib, &calib};
    auto a = cpu->QuantizeGroup(with_fp8, o, c);
    auto b = cpu->QuantizeGroup(widened, o, c);
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_EQ((*a)[i].packed, (*b)[i].packed) << i;
      EXPECT_EQ((*a)[i].scales, (*b)[i].scales) << i;
      EXPECT_EQ(FloatBitsOf((*a)[i].global_scale), FloatBitsOf((*b)[i].global_scale)) << i;
      EXPECT_EQ((*a)[i].metrics.nmse, (*b)[i].metrics.nmse) << i;
      EXPECT_EQ((*a)[i].metrics.output_nmse, (*b)[i].metrics.output_nmse) << i;
    }
  }
}

}  // namespace
}  // namespace nvfp4
