// Each method against an independent reference written from docs/NUMERICS.md section 3.
#include <cmath>
#include <functional>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/calibration.h"
#include "kernels/codec.h"
#include "kernels/testing/synthetic.h"
#include "test_util.h"

namespace nvfp4 {
namespace {

using testing::Distribution;
using testing::MakeF32;
using testing::NibbleAt;
using testing::RefE2M1;
using testing::RefE4M3;

QuantizedTensor Quant(const TensorView& t, Method m, Objective o = Objective::kMse,
                    const Calibration* c = nullptr, ErrorRule rule = ErrorRule::kMse) {
  QuantizeOptions opt;
  opt.method = m;
  opt.objective = o;
  opt.four_over_six_rule = rule;
  auto r = MakeCpuBackend(2)->Quantize(t, opt, c);
  EXPECT_TRUE(r.ok()) << r.status();
  return *std::move(r);
}

float BlockAmax(const std::vector<float>& x, int64_t b) {
  float a = 0;
  for (int i = 0; i < 16; ++i) a = std::fmax(a, std::fabs(x[b * 16 + i]));
  return a;
}

// The candidate error of docs/NUMERICS.md 2: one reciprocal per candidate, fp32, sequential.
float RefCandidateError(const float* x, uint8_t code, float g, ErrorRule rule = ErrorRule::kMse) {
  const float sg = DecodeE4M3(code) * g;
  const float inv = 1.0f / sg;
  float err = 0;
  for (int i = 0; i < 16; ++i) {
    const float r = x[i] - DecodeE2M1(RefE2M1(x[i] * inv)) * sg;
    if (rule == ErrorRule::kMse) err += r * r;
    if (rule == ErrorRule::kMae) err += std::fabs(r);
    if (rule == ErrorRule::kAbsMax) err = std::fmax(err, std::fabs(r));
  }
  return err;
}

// Checks codes are the true-division nearest rounding of x / (s * g) for every element.
void ExpectCodesAreNearestRounding(const std::vector<float>& x, const QuantizedTensor& q) {
  for (int64_t i = 0; i < static_cast<int64_t>(x.size()); ++i) {
    const float sg = DecodeE4M3(q.scales[i / 16]) * q.global_scale;
    ASSERT_EQ(NibbleAt(q.packed, i), RefE2M1(x[i] / sg)) << "element " << i;
  }
}

std::vector<float> Data(Distribution d, int64_t n, uint64_t seed) {
  return testing::Sample(d, n, seed);
}

TEST(RtnTest, EqualsClosedFormBitForBit) {
  for (Distribution d : {Distribution::kGaussian, Distribution::kLaplace, Distribution::kStudentT3}) {
    auto x = Data(d, 64 * 256, 7);
    auto t = MakeF32("w", {64, 256}, x);
    QuantizedTensor q = Quant(t.view, Method::kRtn);
    float amax = 0;
    for (float v : x) amax = std::fmax(amax, std::fabs(v));
    const float g = amax / 2688.0f;
    ASSERT_EQ(q.global_scale, g);
    for (int64_t b = 0; b < 64 * 16; ++b) {
      const float s = BlockAmax(x, b) / (6.0f * g);
      ASSERT_EQ(q.scales[b], RefE4M3(s == 0 ? 1.0f : s)) << "block " << b;
    }
    ExpectCodesAreNearestRounding(x, q);
    EXPECT_DOUBLE_EQ(q.metrics.nmse_vs_rtn, 1.0);
  }
}

TEST(FourOverSixTest, ChoosesExactlyAsSpecified) {
  for (ErrorRule rule : {ErrorRule::kMse, ErrorRule::kMae, ErrorRule::kAbsMax}) {
    auto x = Data(Distribution::kLaplace, 32 * 512, 11);
    auto t = MakeF32("w", {32, 512}, x);
    QuantizedTensor q = Quant(t.view, Method::kFourOverSix, Objective::kMse, nullptr, rule);
    float amax = 0;
    for (float v : x) amax = std::fmax(amax, std::fabs(v));
    const float g = amax / 1536.0f;
    ASSERT_EQ(q.global_scale, g);
    int chose4 = 0;
    for (int64_t b = 0; b < 32 * 32; ++b) {
      const float h = BlockAmax(x, b) / (6.0f * g);
      const uint8_t s6 = RefE4M3(h), s4 = RefE4M3(1.5f * h);
      const bool take4 = RefCandidateError(&x[b * 16], s4, g, rule) <
                         RefCandidateError(&x[b * 16], s6, g, rule);
      ASSERT_EQ(q.scales[b], take4 ? s4 : s6) << "block " << b;
      chose4 += take4;
    }
    EXPECT_GT(chose4, 0);  // both candidates are exercised
    EXPECT_LT(chose4, 32 * 32);
    ExpectCodesAreNearestRounding(x, q);
  }
}

// Exhaustive search over E4M3 codes [lo, hi] (clamped to [1, 126]), strict <, ascending.
uint8_t ExhaustiveBest(const float* x, float g, int lo, int hi) {
  lo = std::max(lo, 1);
  hi = std::min(hi, 126);
  uint8_t best = static_cast<uint8_t>(lo);
  float best_err = RefCandidateError(x, best, g);
  for (int c = lo + 1; c <= hi; ++c) {
    const float e = RefCandidateError(x, static_cast<uint8_t>(c), g);
    if (e < best_err) best = static_cast<uint8_t>(c), best_err = e;
  }
  return best;
}

TEST(ScaleSweepTest, EqualsExhaustiveSearchInItsWindowAndUnrestricted) {
  for (Distribution d : {Distribution::kGaussian, Distribution::kLaplace, Distribution::kStudentT3}) {
    auto x = Data(d, 128 * 512, 5);
    auto t = MakeF32("w", {128, 512}, x);
    QuantizedTensor q = Quant(t.view, Method::kScaleSweep);
    float amax = 0;
    for (float v : x) amax = std::fmax(amax, std::fabs(v));
    const float g = amax / 1536.0f;
    ASSERT_EQ(q.global_scale, g);
    int unrestricted_equal = 0;
    for (int64_t b = 0; b < 128 * 32; ++b) {
      const int base = RefE4M3(BlockAmax(x, b) / (6.0f * g));
      ASSERT_EQ(q.scales[b], ExhaustiveBest(&x[b * 16], g, base - 3, base + 7)) << b;
      unrestricted_equal += q.scales[b] == ExhaustiveBest(&x[b * 16], g, 1, 126);
    }
    EXPECT_EQ(unrestricted_equal, 128 * 32) << "distribution " << static_cast<int>(d);
    ExpectCodesAreNearestRounding(x, q);
  }
}

TEST(ScaleSweepTest, WeightedObjectiveUsesTheWideWindow) {
  auto x = Data(Distribution::kGaussian, 16 * 256, 9);
  auto t = MakeF32("w", {16, 256}, x);
  Calibration c;
  auto imp = Data(Distribution::kGaussian, 256, 10);
  for (float& v : imp) v = v * v + 0.01f;
  c.importance = imp;
  QuantizedTensor q = Quant(t.view, Method::kScaleSweep, Objective::kWmse, &c);
  float amax = 0;
  for (float v : x) amax = std::fmax(amax, std::fabs(v));
  const float g = amax / 1536.0f;
  for (int64_t b = 0; b < 16 * 16; ++b) {
    const int base = RefE4M3(BlockAmax(x, b) / (6.0f * g));
    const float* w = &imp[(b % 16) * 16];
    int best = -1;
    float best_err = 0;
    for (int k = -8; k <= 7; ++k) {
      const int code = std::clamp(base + k, 1, 126);
      const float sg = DecodeE4M3(code) * g, inv = 1.0f / sg;
      float e = 0;
      for (int i = 0; i < 16; ++i) {
        const float r = x[b * 16 + i] - DecodeE2M1(RefE2M1(x[b * 16 + i] * inv)) * sg;
        e += w[i] * (r * r);
      }
      if (best < 0 || e < best_err) best = code, best_err = e;
    }
    ASSERT_EQ(q.scales[b], best) << b;
  }
}

double WeightedError(const std::vector<float>& x, const QuantizedTensor& q,
                     const std::vector<float>& imp) {
  const std::vector<float> xh = Dequantize(q);
  double e = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double r = x[i] - xh[i];
    e += imp[i % imp.size()] * r * r;
  }
  return e;
}

TEST(SoarTest, NeverWorseThanScaleSweep) {
  int improved = 0;
  for (Distribution d : {Distribution::kGaussian, Distribution::kLaplace, Distribution::kStudentT3}) {
    for (uint64_t seed : {1, 2, 3}) {
      auto x = Data(d, 256 * 512, seed);
      if (seed == 3) testing::AddOutlierColumns(x, 512, 37, 20.0f);
      auto t = MakeF32("w", {256, 512}, x);
      QuantizedTensor ss = Quant(t.view, Method::kScaleSweep);
      QuantizedTensor so = Quant(t.view, Method::kSoar);
      EXPECT_LE(so.metrics.nmse, ss.metrics.nmse) << static_cast<int>(d) << " seed " << seed;
      improved += so.metrics.nmse < ss.metrics.nmse;
      if (so.metrics.iterations == 0) {
        EXPECT_EQ(so.packed, ss.packed);
        EXPECT_EQ(so.scales, ss.scales);
      }
      // wmse: compare the weighted error.
      Calibration c;
      auto imp = Data(Distribution::kLaplace, 512, seed + 100);
      for (float& v : imp) v = std::fabs(v);
      c.importance = imp;
      QuantizedTensor wss = Quant(t.view, Method::kScaleSweep, Objective::kWmse, &c);
      QuantizedTensor wso = Quant(t.view, Method::kSoar, Objective::kWmse, &c);
      EXPECT_LE(WeightedError(x, wso, imp), WeightedError(x, wss, imp) * (1 + 1e-9));
    }
  }
  EXPECT_GT(improved, 0) << "soar never improved on scalesweep";
}

// Correlated activations: x_t = z_t + 0.95 z_{t-1} along channels, with per-channel scales.
std::vector<float> CorrelatedActivations(int64_t tokens, int64_t k, uint64_t seed) {
  auto z = testing::Sample(Distribution::kGaussian, tokens * k, seed);
  std::vector<float> x(z.size());
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t i = 0; i < k; ++i) {
      const float prev = i > 0 ? z[t * k + i - 1] : 0.0f;
      x[t * k + i] = (z[t * k + i] + 0.95f * prev) * (1.0f + 0.5f * (i % 5));
    }
  }
  return x;
}

TEST(SoarTest, HessianObjectiveLowersOutputError) {
  const int64_t n = 64, k = 128, tokens = 512;
  auto w = Data(Distribution::kGaussian, n * k, 21);
  auto t = MakeF32("w", {n, k}, w);
  auto acts = CorrelatedActivations(tokens, k, 22);
  Calibration c;
  c.activations = acts.data();
  c.activations_dtype = DType::kF32;
  c.tokens = tokens;
  QuantizedTensor mse = Quant(t.view, Method::kSoar, Objective::kMse, &c);
  QuantizedTensor hes = Quant(t.view, Method::kSoar, Objective::kHessian, &c);
  ASSERT_TRUE(mse.metrics.output_nmse.has_value());
  ASSERT_TRUE(hes.metrics.output_nmse.has_value());
  EXPECT_LT(*hes.metrics.output_nmse, *mse.metrics.output_nmse);
  // The Gram path gives the same objective data as the activations path.
  Calibration gram;
  gram.gram.assign(k * k, 0.0f);
  for (int64_t tok = 0; tok < tokens; ++tok)
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < k; ++j) gram.gram[i * k + j] += acts[tok * k + i] * acts[tok * k + j];
  QuantizedTensor hes_gram = Quant(t.view, Method::kSoar, Objective::kHessian, &gram);
  EXPECT_NEAR(*hes_gram.metrics.output_nmse, *hes.metrics.output_nmse,
              0.05 * *hes.metrics.output_nmse);
}

TEST(SoarTest, HessianNeverWorseThanScaleSweepUnderItsObjective) {
  const int64_t n = 32, k = 64, tokens = 256;
  auto w = Data(Distribution::kStudentT3, n * k, 31);
  auto t = MakeF32("w", {n, k}, w);
  auto acts = CorrelatedActivations(tokens, k, 32);
  Calibration c;
  c.activations = acts.data();
  c.tokens = tokens;
  QuantizedTensor ss = Quant(t.view, Method::kScaleSweep, Objective::kHessian, &c);
  QuantizedTensor so = Quant(t.view, Method::kSoar, Objective::kHessian, &c);
  EXPECT_LE(*so.metrics.output_nmse, *ss.metrics.output_nmse * (1 + 1e-6));
}

TEST(BackendTest, ResultsDoNotDependOnThreadCount) {
  auto x = Data(Distribution::kStudentT3, 300 * 1024, 4);  // 19200 blocks: several chunks
  auto t = MakeF32("w", {300, 1024}, x);
  for (Method m : {Method::kRtn, Method::kFourOverSix, Method::kScaleSweep, Method::kSoar}) {
    QuantizeOptions opt;
    opt.method = m;
    auto a = MakeCpuBackend(1)->Quantize(t.view, opt);
    auto b = MakeCpuBackend(7)->Quantize(t.view, opt);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(a->packed, b->packed);
    EXPECT_EQ(a->scales, b->scales);
    EXPECT_EQ(a->global_scale, b->global_scale);
    EXPECT_EQ(a->metrics.nmse, b->metrics.nmse);
    EXPECT_EQ(a->metrics.iterations, b->metrics.iterations);
  }
}

TEST(BackendTest, FusedGroupSharesOneGlobalScale) {
  auto q = Data(Distribution::kGaussian, 64 * 256, 1);
  auto k = Data(Distribution::kGaussian, 16 * 256, 2);
  for (float& v : k) v *= 3.0f;  // the group amax comes from k
  auto tq = MakeF32("q_proj.weight", {64, 256}, q);
  auto tk = MakeF32("k_proj.weight", {16, 256}, k);
  std::vector<TensorView> group = {tq.view, tk.view};
  for (Method m : {Method::kRtn, Method::kSoar}) {
    QuantizeOptions opt;
    opt.method = m;
    auto r = MakeCpuBackend()->QuantizeGroup(group, opt, {});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ((*r)[0].global_scale, (*r)[1].global_scale);
    if (m == Method::kRtn) {
      float amax = 0;
      for (float v : k) amax = std::fmax(amax, std::fabs(v));
      EXPECT_EQ((*r)[0].global_scale, amax / 2688.0f);
    }
  }
}

TEST(MetricsTest, MatchDequantization) {
  auto x = Data(Distribution::kGaussian, 64 * 256, 8);
  auto t = MakeF32("w", {64, 256}, x);
  QuantizedTensor q = Quant(t.view, Method::kSoar);
  const std::vector<float> xh = Dequantize(q);
  double num = 0, den = 0, mx = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    num += (double(x[i]) - xh[i]) * (double(x[i]) - xh[i]);
    den += double(x[i]) * x[i];
    mx = std::max(mx, std::fabs(double(x[i]) - xh[i]));
  }
  EXPECT_NEAR(q.metrics.nmse, num / den, 1e-6 * num / den);
  EXPECT_NEAR(q.metrics.sqnr_db, -10 * std::log10(num / den), 1e-4);
  EXPECT_NEAR(q.metrics.max_abs_err, mx, 1e-6);
  QuantizedTensor r = Quant(t.view, Method::kRtn);
  EXPECT_NEAR(q.metrics.rtn_nmse, r.metrics.nmse, 1e-9);
  EXPECT_NEAR(q.metrics.nmse_vs_rtn, q.metrics.nmse / r.metrics.nmse, 1e-9);
}

}  // namespace
}  // namespace nvfp4
