// GPTQ error feedback (kernels/gptq.h) against an independent reference and its contract:
// never worse than the same block scales without feedback, fused groups, dead inputs, singular
// Grams, determinism, option validation.
#include "kernels/gptq.h"

#include <cmath>
#include <cstring>
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
using testing::OwnedTensor;

using testing::CorrelatedGram;

QuantizeOptions Gptq(Method block_scales, Objective o = Objective::kMse,
                     GptqOrder order = GptqOrder::kNatural,
                     GptqGlobalScale gs = GptqGlobalScale::kAmax) {
  QuantizeOptions opt;
  opt.method = Method::kGptq;
  opt.objective = o;
  opt.gptq.block_scales = block_scales;
  opt.gptq.order = order;
  opt.gptq.global_scale = gs;
  return opt;
}

absl::StatusOr<QuantizedTensor> Quant(const TensorView& t, const QuantizeOptions& o,
                                    const Calibration* c, int threads = 2) {
  return MakeCpuBackend(threads)->Quantize(t, o, c);
}

// ---- An independent reference: the original GPTQ formulation (no Cholesky, no lazy batches):
// H^-1 by Gauss-Jordan in fp64; after quantizing column i, W[:, j] -= e * Hinv[i][j] / Hinv[i][i]
// for j > i and Hinv loses row/column i (Schur complement). Absmax block scales chosen at each
// block's first column from the updated values; g = amax / 2688.
std::vector<double> InverseGaussJordan(std::vector<double> a, int64_t k) {
  std::vector<double> inv(static_cast<size_t>(k * k), 0.0);
  for (int64_t i = 0; i < k; ++i) inv[i * k + i] = 1;
  for (int64_t c = 0; c < k; ++c) {
    const double p = a[c * k + c];
    for (int64_t j = 0; j < k; ++j) {
      a[c * k + j] /= p;
      inv[c * k + j] /= p;
    }
    for (int64_t r = 0; r < k; ++r) {
      if (r == c) continue;
      const double f = a[r * k + c];
      for (int64_t j = 0; j < k; ++j) {
        a[r * k + j] -= f * a[c * k + j];
        inv[r * k + j] -= f * inv[c * k + j];
      }
    }
  }
  return inv;
}

std::vector<float> ReferenceGptqAbsmax(const std::vector<float>& w0, int64_t n, int64_t k,
                                       const std::vector<float>& gram, double damp) {
  std::vector<double> h(gram.begin(), gram.end());
  double mean = 0;
  for (int64_t i = 0; i < k; ++i) mean += h[i * k + i];
  mean /= k;
  for (int64_t i = 0; i < k; ++i) h[i * k + i] += damp * mean;
  float amax = 0;
  for (float v : w0) amax = std::fmax(amax, std::fabs(v));
  const float g = amax / 2688.0f;
  std::vector<float> out(w0.size());
  for (int64_t r = 0; r < n; ++r) {
    std::vector<double> hinv = InverseGaussJordan(h, k);
    std::vector<double> w(w0.begin() + r * k, w0.begin() + (r + 1) * k);
    float sg = 1;
    for (int64_t i = 0; i < k; ++i) {
      if (i % 16 == 0) {
        double a = 0;
        for (int j = 0; j < 16; ++j) a = std::fmax(a, std::fabs(w[i + j]));
        const float s = static_cast<float>(a) / (6.0f * g);
        sg = DecodeE4M3(EncodeE4M3Scale(s == 0 ? 1.0f : s)) * g;
      }
      const double q = DecodeE2M1(EncodeE2M1(static_cast<float>(w[i]) / sg)) * sg;
      out[r * k + i] = static_cast<float>(q);
      const double d = hinv[i * k + i];
      const double e = (w[i] - q) / d;
      for (int64_t j = i + 1; j < k; ++j) w[j] -= e * hinv[i * k + j];
      std::vector<double> next(hinv);
      for (int64_t a = 0; a < k; ++a)
        for (int64_t b = 0; b < k; ++b) next[a * k + b] -= hinv[a * k + i] * hinv[i * k + b] / d;
      hinv.swap(next);
    }
  }
  return out;
}

double OutputError(const std::vector<float>& w, const std::vector<float>& wh, int64_t n,
                   int64_t k, const std::vector<float>& gram) {
  double num = 0;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < k; ++j)
        num += (w[r * k + i] - wh[r * k + i]) * static_cast<double>(gram[i * k + j]) *
               (w[r * k + j] - wh[r * k + j]);
  return num;
}

TEST(GptqFactorTest, UpperFactorOfTheInverse) {
  const int64_t k = 48;
  std::vector<float> gf = CorrelatedGram(k, 200, 3);
  std::vector<double> h(gf.begin(), gf.end());
  for (int64_t i = 0; i < k; ++i) h[i * k + i] += 0.01;
  std::vector<float> u;
  ASSERT_TRUE(HostGptqFactor(h, k, &u, 2));
  const std::vector<double> inv = InverseGaussJordan(h, k);
  for (int64_t a = 0; a < k; ++a) {
    for (int64_t b = 0; b < k; ++b) {
      if (b < a) {
        EXPECT_EQ(u[a * k + b], 0.0f);
      }
      double s = 0;
      for (int64_t t = 0; t < k; ++t) s += static_cast<double>(u[t * k + a]) * u[t * k + b];
      EXPECT_NEAR(s, inv[a * k + b], 1e-5 * std::fabs(inv[a * k + a])) << a << "," << b;
    }
    EXPECT_GT(u[a * k + a], 0.0f);
  }
  std::vector<double> indefinite(static_cast<size_t>(k * k), 0.0);
  EXPECT_FALSE(HostGptqFactor(indefinite, k, &u, 2));
}

TEST(GptqTest, MatchesTheOriginalFormulation) {
  const int64_t n = 6, k = 64;
  const std::vector<float> w = testing::Sample(Distribution::kGaussian, n * k, 11);
  Calibration c;
  c.gram = CorrelatedGram(k, 300, 12);
  OwnedTensor t = MakeF32("w", {n, k}, w);
  QuantizeOptions o = Gptq(Method::kRtn);
  o.gptq.block_size = 32;  // several lazy batches
  auto q = Quant(t.view, o, &c);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->global_scale, 0.0f + [&] {
    float a = 0;
    for (float v : w) a = std::fmax(a, std::fabs(v));
    return a / 2688.0f;
  }());
  const std::vector<float> ref = ReferenceGptqAbsmax(w, n, k, c.gram, o.gptq.dampening);
  const std::vector<float> got = Dequantize(*q);
  int same = 0;
  for (size_t i = 0; i < got.size(); ++i) same += got[i] == ref[i];
  // fp32 Cholesky form vs the fp64 Schur-complement form: the same algorithm, rounding aside.
  EXPECT_GE(same, static_cast<int>(0.97 * got.size())) << same << " of " << got.size();
  const double e_got = OutputError(w, got, n, k, c.gram);
  const double e_ref = OutputError(w, ref, n, k, c.gram);
  EXPECT_NEAR(e_got, e_ref, 0.02 * e_ref);
}

TEST(GptqTest, NeverWorseThanTheSameScalesWithoutFeedback) {
  struct Case {
    int64_t n, k;
    Distribution d;
    uint64_t seed;
  };
  for (const Case& cs : {Case{32, 128, Distribution::kGaussian, 1},
                         Case{16, 256, Distribution::kLaplace, 2},
                         Case{24, 96, Distribution::kStudentT3, 3}}) {
    const std::vector<float> w = testing::Sample(cs.d, cs.n * cs.k, cs.seed);
    Calibration c;
    c.gram = CorrelatedGram(cs.k, 400, cs.seed + 100);
    OwnedTensor t = MakeF32("w", {cs.n, cs.k}, w);
    for (Method m : {Method::kRtn, Method::kFourOverSix, Method::kScaleSweep, Method::kSoar}) {
      for (Objective obj : {Objective::kMse, Objective::kHessian}) {
        if ((m == Method::kRtn || m == Method::kFourOverSix) && obj != Objective::kMse) continue;
        QuantizeOptions plain;
        plain.method = m;
        plain.objective = obj;
        auto base = Quant(t.view, plain, &c);
        auto fb = Quant(t.view, Gptq(m, obj, GptqOrder::kNatural, GptqGlobalScale::kCjso), &c);
        ASSERT_TRUE(base.ok() && fb.ok()) << base.status() << fb.status();
        ASSERT_TRUE(fb->metrics.output_nmse.has_value());
        EXPECT_LT(*fb->metrics.output_nmse, *base->metrics.output_nmse)
            << MethodName(m) << "/" << ObjectiveName(obj) << " seed " << cs.seed;
        EXPECT_GT(fb->metrics.rtn_nmse, 0);
        EXPECT_NEAR(fb->metrics.rtn_nmse, base->metrics.rtn_nmse, 1e-12 * base->metrics.rtn_nmse);
      }
    }
  }
}

TEST(GptqTest, StaticOrderKeepsTheLayoutAndHelpsOrTies) {
  const int64_t n = 32, k = 128;
  const std::vector<float> w = testing::Sample(Distribution::kGaussian, n * k, 21);
  Calibration c;
  c.gram = CorrelatedGram(k, 400, 22);
  OwnedTensor t = MakeF32("w", {n, k}, w);
  auto nat = Quant(t.view, Gptq(Method::kScaleSweep, Objective::kHessian), &c);
  auto st = Quant(t.view, Gptq(Method::kScaleSweep, Objective::kHessian, GptqOrder::kStatic), &c);
  ASSERT_TRUE(nat.ok() && st.ok());
  EXPECT_EQ(st->packed.size(), nat->packed.size());
  EXPECT_EQ(st->scales.size(), nat->scales.size());
  QuantizeOptions plain;
  plain.method = Method::kScaleSweep;
  plain.objective = Objective::kHessian;
  auto base = Quant(t.view, plain, &c);
  // Static order fixes the scales from the source values: they equal the plain method's
  // (same candidates, objective and global scale).
  EXPECT_EQ(st->scales, base->scales);
  EXPECT_LT(*st->metrics.output_nmse, *base->metrics.output_nmse);
}

TEST(GptqTest, FusedGroupEqualsTheStackedWeight) {
  const int64_t k = 64;
  const std::vector<float> a = testing::Sample(Distribution::kGaussian, 8 * k, 31);
  std::vector<float> b = testing::Sample(Distribution::kLaplace, 4 * k, 32);
  for (float& v : b) v *= 3;  // a different range: the shared global scale comes from b
  std::vector<float> ab(a);
  ab.insert(ab.end(), b.begin(), b.end());
  Calibration c;
  c.gram = CorrelatedGram(k, 300, 33);
  OwnedTensor ta = MakeF32("q", {8, k}, a), tb = MakeF32("k", {4, k}, b);
  OwnedTensor tab = MakeF32("qk", {12, k}, ab);
  const QuantizeOptions o = Gptq(Method::kSoar, Objective::kHessian);
  std::vector<TensorView> group = {ta.view, tb.view};
  std::vector<const Calibration*> cals = {&c, &c};
  auto fused = MakeCpuBackend(2)->QuantizeGroup(group, o, cals);
  auto stacked = Quant(tab.view, o, &c);
  ASSERT_TRUE(fused.ok() && stacked.ok()) << fused.status();
  ASSERT_EQ(fused->size(), 2u);
  EXPECT_EQ((*fused)[0].global_scale, stacked->global_scale);
  EXPECT_EQ((*fused)[1].global_scale, stacked->global_scale);
  std::vector<uint8_t> packed = (*fused)[0].packed;
  packed.insert(packed.end(), (*fused)[1].packed.begin(), (*fused)[1].packed.end());
  std::vector<uint8_t> scales = (*fused)[0].scales;
  scales.insert(scales.end(), (*fused)[1].scales.begin(), (*fused)[1].scales.end());
  EXPECT_EQ(packed, stacked->packed);
  EXPECT_EQ(scales, stacked->scales);
  EXPECT_EQ((*fused)[1].source_shape, (std::vector<int64_t>{4, k}));
}

TEST(GptqTest, FusedGroupWithDifferentGramsUsesTheirMean) {
  const int64_t k = 32;
  const std::vector<float> a = testing::Sample(Distribution::kGaussian, 4 * k, 35);
  const std::vector<float> b = testing::Sample(Distribution::kGaussian, 4 * k, 36);
  std::vector<float> ab(a);
  ab.insert(ab.end(), b.begin(), b.end());
  Calibration ca, cb, mean;
  ca.gram = CorrelatedGram(k, 200, 37);
  cb.gram = CorrelatedGram(k, 200, 38);
  mean.gram.resize(k * k);
  for (int64_t j = 0; j < k * k; ++j) {
    mean.gram[j] = static_cast<float>((static_cast<double>(ca.gram[j]) + cb.gram[j]) * 0.5);
  }
  OwnedTensor ta = MakeF32("gate", {4, k}, a), tb = MakeF32("up", {4, k}, b);
  OwnedTensor tab = MakeF32("gate_up", {8, k}, ab);
  const QuantizeOptions o = Gptq(Method::kScaleSweep, Objective::kHessian);
  std::vector<TensorView> group = {ta.view, tb.view};
  std::vector<const Calibration*> cals = {&ca, &cb};
  auto fused = MakeCpuBackend(2)->QuantizeGroup(group, o, cals);
  auto stacked = Quant(tab.view, o, &mean);
  ASSERT_TRUE(fused.ok() && stacked.ok()) << fused.status();
  std::vector<uint8_t> packed = (*fused)[0].packed;
  packed.insert(packed.end(), (*fused)[1].packed.begin(), (*fused)[1].packed.end());
  EXPECT_EQ(packed, stacked->packed);
  // A member without a Gram is named.
  std::vector<const Calibration*> missing = {&ca, nullptr};
  auto e = MakeCpuBackend(2)->QuantizeGroup(group, o, missing);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("'up'"), std::string::npos) << e.status();
}

TEST(GptqTest, DeadInputsAreQuantizedWithoutFeedback) {
  const int64_t n = 8, k = 64;
  const std::vector<float> w = testing::Sample(Distribution::kGaussian, n * k, 41);
  Calibration c;
  c.gram = CorrelatedGram(k, 300, 42);
  for (int64_t dead : {5, 16, 40}) {
    for (int64_t j = 0; j < k; ++j) c.gram[dead * k + j] = c.gram[j * k + dead] = 0;
  }
  OwnedTensor t = MakeF32("w", {n, k}, w);
  auto q = Quant(t.view, Gptq(Method::kRtn), &c);
  ASSERT_TRUE(q.ok()) << q.status();
  for (float v : Dequantize(*q)) ASSERT_TRUE(std::isfinite(v));
  EXPECT_TRUE(std::isfinite(*q->metrics.output_nmse));
  // Column 16 starts a block: its value is its own rtn rounding under the chosen scale (no
  // earlier column of the block could feed it).
  for (int64_t r = 0; r < n; ++r) {
    const float sg = DecodeE4M3(q->scales[r * (k / 16) + 1]) * q->global_scale;
    EXPECT_EQ(NibbleAt(q->packed, r * k + 16), EncodeE2M1(w[r * k + 16] / sg)) << r;
  }
}

TEST(GptqTest, SingularGramGetsMoreDampeningNeverNan) {
  const int64_t n = 8, k = 64;
  const std::vector<float> w = testing::Sample(Distribution::kGaussian, n * k, 51);
  Calibration c;
  c.gram = CorrelatedGram(k, 8, 52);  // rank 8 < 64
  OwnedTensor t = MakeF32("w", {n, k}, w);
  QuantizeOptions o = Gptq(Method::kSoar, Objective::kHessian);
  o.gptq.dampening = 0;
  auto q = Quant(t.view, o, &c);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_GT(q->metrics.gptq_dampening, 0.0);
  for (float v : Dequantize(*q)) ASSERT_TRUE(std::isfinite(v));
  // The default dampening factors this Gram as it is.
  auto d = Quant(t.view, Gptq(Method::kSoar, Objective::kHessian), &c);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->metrics.gptq_dampening, 0.01);
  // A Gram that is not one (negative diagonal) fails clearly.
  Calibration bad = c;
  for (int64_t i = 0; i < k; ++i) bad.gram[i * k + i] = -1e6f;
  auto e = Quant(t.view, o, &bad);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(e.status().message().find("not positive definite"), std::string::npos);
}

TEST(GptqTest, DeterministicAcrossThreadCounts) {
  const int64_t n = 40, k = 96;
  const std::vector<float> w = testing::Sample(Distribution::kStudentT3, n * k, 61);
  Calibration c;
  c.gram = CorrelatedGram(k, 300, 62);
  OwnedTensor t = MakeF32("w", {n, k}, w);
  const QuantizeOptions o = Gptq(Method::kSoar, Objective::kHessian);
  auto a = Quant(t.view, o, &c, 1);
  auto b = Quant(t.view, o, &c, 4);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->packed, b->packed);
  EXPECT_EQ(a->scales, b->scales);
  EXPECT_EQ(a->global_scale, b->global_scale);
}

TEST(GptqTest, ActivationsWorkLikeTheirGram) {
  const int64_t n = 8, k = 32, tokens = 64;
  const std::vector<float> w = testing::Sample(Distribution::kGaussian, n * k, 71);
  const std::vector<float> x = testing::Sample(Distribution::kGaussian, tokens * k, 72);
  Calibration acts;
  acts.activations = x.data();
  acts.tokens = tokens;
  Calibration gram;
  gram.gram.assign(k * k, 0);
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) {
      double s = 0;
      for (int64_t t = 0; t < tokens; ++t) s += static_cast<double>(x[t * k + i]) * x[t * k + j];
      gram.gram[i * k + j] = static_cast<float>(s);
    }
  OwnedTensor t = MakeF32("w", {n, k}, w);
  auto a = Quant(t.view, Gptq(Method::kRtn), &acts);
  auto g = Quant(t.view, Gptq(Method::kRtn), &gram);
  ASSERT_TRUE(a.ok() && g.ok()) << a.status();
  int same = 0;
  for (size_t i = 0; i < a->packed.size(); ++i) same += a->packed[i] == g->packed[i];
  EXPECT_GE(same, static_cast<int>(0.95 * a->packed.size()));
}

TEST(GptqTest, ClearErrors) {
  const int64_t k = 32;
  const std::vector<float> w = testing::Sample(Distribution::kGaussian, 4 * k, 81);
  OwnedTensor t = MakeF32("model.layers.0.mlp.up_proj.weight", {4, k}, w);
  auto none = Quant(t.view, Gptq(Method::kSoar), nullptr);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(none.status().message().find("model.layers.0.mlp.up_proj.weight"), std::string::npos);
  EXPECT_NE(none.status().message().find("input_gram"), std::string::npos);

  Calibration c;
  c.gram = CorrelatedGram(k, 100, 82);
  QuantizeOptions o = Gptq(Method::kSoar);
  o.gptq.block_size = 24;
  auto bs = Quant(t.view, o, &c);
  ASSERT_FALSE(bs.ok());
  EXPECT_NE(bs.status().message().find("block size 24"), std::string::npos);
  o = Gptq(Method::kGptq);
  EXPECT_FALSE(Quant(t.view, o, &c).ok());
  o = Gptq(Method::kSoar);
  o.gptq.dampening = -1;
  EXPECT_FALSE(Quant(t.view, o, &c).ok());

  std::vector<float> nan_w = w;
  nan_w[37] = std::nanf("");
  OwnedTensor tn = MakeF32("w", {4, k}, nan_w);
  auto nan = Quant(tn.view, Gptq(Method::kSoar), &c);
  ASSERT_FALSE(nan.ok());
  EXPECT_NE(nan.status().message().find("row 1, column 5"), std::string::npos) << nan.status();
}

TEST(GptqTest, AllZeroWeight) {
  const int64_t k = 32;
  OwnedTensor t = MakeF32("w", {2, k}, std::vector<float>(2 * k, 0.0f));
  Calibration c;
  c.gram = CorrelatedGram(k, 100, 91);
  auto q = Quant(t.view, Gptq(Method::kSoar, Objective::kMse, GptqOrder::kNatural,
                            GptqGlobalScale::kCjso), &c);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->global_scale, 1.0f);
  for (uint8_t s : q->scales) EXPECT_EQ(s, kE4M3One);
  for (uint8_t p : q->packed) EXPECT_EQ(p, 0);
}

}  // namespace
}  // namespace nvfp4
