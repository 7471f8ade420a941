// docs/NUMERICS.md section 5: every edge case, for every method.
#include <cmath>
#include <algorithm>
#include <limits>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/codec.h"
#include "kernels/testing/synthetic.h"
#include "test_util.h"

namespace nvfp4 {
namespace {

using testing::MakeF32;
using testing::MakeU16;

const Method kAllMethods[] = {Method::kRtn, Method::kFourOverSix, Method::kScaleSweep,
                              Method::kSoar};

absl::StatusOr<QuantizedTensor> Quant(const TensorView& t, Method m) {
  QuantizeOptions opt;
  opt.method = m;
  return MakeCpuBackend(2)->Quantize(t, opt);
}

TEST(EdgeCaseTest, AllZeroTensor) {
  for (float zero : {0.0f, -0.0f}) {
    auto t = MakeF32("zeros", {4, 64}, std::vector<float>(256, zero));
    for (Method m : kAllMethods) {
      auto q = Quant(t.view, m);
      ASSERT_TRUE(q.ok()) << q.status();
      EXPECT_EQ(q->global_scale, 1.0f);
      EXPECT_EQ(q->scales, std::vector<uint8_t>(16, kE4M3One));
      EXPECT_EQ(q->packed, std::vector<uint8_t>(128, 0));
      EXPECT_EQ(q->metrics.nmse, 0.0);
      EXPECT_TRUE(std::isinf(q->metrics.sqnr_db));
    }
  }
}

TEST(EdgeCaseTest, AllZeroBlockInANonZeroTensor) {
  auto x = testing::Sample(testing::Distribution::kGaussian, 2 * 64, 1);
  for (int i = 16; i < 32; ++i) x[i] = 0.0f;  // block 1 of row 0
  auto t = MakeF32("w", {2, 64}, x);
  for (Method m : kAllMethods) {
    auto q = Quant(t.view, m);
    ASSERT_TRUE(q.ok());
    EXPECT_EQ(q->scales[1], kE4M3One) << MethodName(m);
    for (int j = 8; j < 16; ++j) EXPECT_EQ(q->packed[j], 0) << MethodName(m);
  }
}

TEST(EdgeCaseTest, TinyBlocksUnderflowToTheSmallestScale) {
  // One block at 1000, the others ~1e-4: A_b / (6 g) is far below 2^-9, the scale clamps to 0x01.
  std::vector<float> x(4 * 16, 1e-4f);
  for (int i = 0; i < 16; ++i) x[i] = 1000.0f;
  auto t = MakeF32("w", {1, 64}, x);
  for (Method m : kAllMethods) {
    auto q = Quant(t.view, m);
    ASSERT_TRUE(q.ok());
    for (int b = 1; b < 4; ++b) EXPECT_EQ(q->scales[b], kE4M3MinCode) << MethodName(m);
    for (uint8_t s : q->scales) EXPECT_NE(s & 0x7F, 0x7F) << "NaN scale";
  }
}

TEST(EdgeCaseTest, WindowClampsAt448) {
  // The largest block's base scale is E4M3(256) = 0x78: the window's upper end 0x7F is clamped
  // to 0x7E, never the NaN pattern.
  auto x = testing::Sample(testing::Distribution::kStudentT3, 8 * 256, 3);
  auto t = MakeF32("w", {8, 256}, x);
  for (Method m : kAllMethods) {
    auto q = Quant(t.view, m);
    ASSERT_TRUE(q.ok());
    for (uint8_t s : q->scales) {
      EXPECT_GE(s, 1);
      EXPECT_LE(s, kE4M3MaxCode) << MethodName(m);
    }
  }
  // A block whose values make the largest candidate win: all elements equal to the amax.
  std::vector<float> flat(32, 5.0f);
  flat[16] = 1.0f;
  auto tf = MakeF32("flat", {1, 32}, flat);
  auto q = Quant(tf.view, Method::kScaleSweep);
  ASSERT_TRUE(q.ok());
  EXPECT_LE(q->scales[0], kE4M3MaxCode);
}

TEST(EdgeCaseTest, KNotMultipleOf16IsRejectedNamingTheShape) {
  auto t = MakeF32("model.layers.0.mlp.down_proj.weight", {4, 40}, std::vector<float>(160, 1));
  for (Method m : kAllMethods) {
    auto q = Quant(t.view, m);
    ASSERT_FALSE(q.ok());
    EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(q.status().message().find("model.layers.0.mlp.down_proj.weight"), std::string::npos);
    EXPECT_NE(q.status().message().find("[4, 40]"), std::string::npos);
    EXPECT_NE(q.status().message().find("multiple of 16"), std::string::npos);
  }
}

TEST(EdgeCaseTest, NonFiniteValuesAreRejectedNamingTheFirstIndex) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), INFINITY, -INFINITY}) {
    std::vector<float> x(3 * 32, 0.5f);
    x[40] = bad;  // row 1, column 8
    x[90] = std::numeric_limits<float>::quiet_NaN();
    auto t = MakeF32("w.bad", {3, 32}, x);
    for (Method m : kAllMethods) {
      auto q = Quant(t.view, m);
      ASSERT_FALSE(q.ok());
      EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument);
      const std::string msg(q.status().message());
      EXPECT_NE(msg.find("w.bad"), std::string::npos) << msg;
      EXPECT_NE(msg.find("flat index 40"), std::string::npos) << msg;
      EXPECT_NE(msg.find("row 1, column 8"), std::string::npos) << msg;
    }
  }
  // bf16 NaN and Inf too.
  std::vector<uint16_t> h(32, 0x3F80);
  h[5] = 0x7F80;
  auto tb = MakeU16("bf", DType::kBF16, {1, 32}, h);
  auto q = Quant(tb.view, Method::kRtn);
  ASSERT_FALSE(q.ok());
  EXPECT_NE(q.status().message().find("+Inf at flat index 5"), std::string::npos);
}

TEST(EdgeCaseTest, OneDimensionalIsOneRowAndThreeDimensionalFolds) {
  auto x = testing::Sample(testing::Distribution::kGaussian, 6 * 64, 2);
  auto flat2d = MakeF32("w", {6, 64}, x);
  auto three = MakeF32("w", {2, 3, 64}, x);
  auto q2 = Quant(flat2d.view, Method::kSoar);
  auto q3 = Quant(three.view, Method::kSoar);
  ASSERT_TRUE(q2.ok() && q3.ok());
  EXPECT_EQ(q3->rows, 6);
  EXPECT_EQ(q3->cols, 64);
  EXPECT_EQ(q3->source_shape, (std::vector<int64_t>{2, 3, 64}));
  EXPECT_EQ(q2->packed, q3->packed);
  EXPECT_EQ(q2->scales, q3->scales);
  std::vector<float> row(x.begin(), x.begin() + 64);
  auto one = MakeF32("v", {64}, row);
  auto q1 = Quant(one.view, Method::kScaleSweep);
  ASSERT_TRUE(q1.ok());
  EXPECT_EQ(q1->rows, 1);
  EXPECT_EQ(q1->cols, 64);
}

TEST(EdgeCaseTest, EmptyAndScalarTensorsAreRejected) {
  auto scalar = MakeF32("s", {}, {1.0f});
  EXPECT_EQ(Quant(scalar.view, Method::kRtn).status().code(), absl::StatusCode::kInvalidArgument);
  auto empty = MakeF32("e", {0, 16}, {});
  empty.view.data = empty.bytes.data();
  EXPECT_EQ(Quant(empty.view, Method::kRtn).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(EdgeCaseTest, Bf16Fp16Fp32InputsGiveTheSameResultForTheSameValues) {
  // Values exactly representable in bf16 and fp16.
  auto x = testing::Sample(testing::Distribution::kLaplace, 8 * 128, 6);
  for (float& v : x) v = std::clamp(std::round(v * 8.0f) / 8.0f, -15.0f, 15.0f);  // 8 bits
  auto f32 = MakeF32("w", {8, 128}, x);
  auto bf16 = MakeU16("w", DType::kBF16, {8, 128}, testing::ToBf16(x));
  auto f16 = MakeU16("w", DType::kF16, {8, 128}, testing::ToF16(x));
  for (Method m : kAllMethods) {
    auto a = Quant(f32.view, m), b = Quant(bf16.view, m), c = Quant(f16.view, m);
    ASSERT_TRUE(a.ok() && b.ok() && c.ok());
    EXPECT_EQ(a->packed, b->packed);
    EXPECT_EQ(a->packed, c->packed);
    EXPECT_EQ(a->scales, b->scales);
    EXPECT_EQ(a->scales, c->scales);
    EXPECT_EQ(a->global_scale, c->global_scale);
  }
}

TEST(EdgeCaseTest, ObjectivesNeedCalibration) {
  auto t = MakeF32("w", {2, 32}, std::vector<float>(64, 1.0f));
  QuantizeOptions opt;
  opt.method = Method::kSoar;
  opt.objective = Objective::kWmse;
  auto r = MakeCpuBackend()->Quantize(t.view, opt);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("needs calibration"), std::string::npos);
  Calibration c;
  c.importance = std::vector<float>(31, 1.0f);
  r = MakeCpuBackend()->Quantize(t.view, opt, &c);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("expected K = 32"), std::string::npos);
  c.importance = std::vector<float>(32, 1.0f);
  c.importance[3] = -1.0f;
  EXPECT_FALSE(MakeCpuBackend()->Quantize(t.view, opt, &c).ok());
  opt.objective = Objective::kHessian;
  c.importance = std::vector<float>(32, 1.0f);
  r = MakeCpuBackend()->Quantize(t.view, opt, &c);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("input_gram or input_activations"), std::string::npos);
}

TEST(DeviceSpecTest, ParsesAndRejects) {
  EXPECT_TRUE(MakeBackend("cpu").ok());
  EXPECT_TRUE(MakeBackend("auto").ok());
  EXPECT_EQ(MakeBackend("gpu").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeBackend("cuda:x").status().code(), absl::StatusCode::kInvalidArgument);
  if (CudaDeviceCount() == 0) {
    EXPECT_FALSE(MakeBackend("cuda:0").ok());
  }
}

}  // namespace
}  // namespace nvfp4
