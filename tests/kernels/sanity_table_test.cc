// docs/NUMERICS.md section 6: the sanity table (N(0,1) 1024x4096, plus Laplace and Student-t(3)),
// reproduced to within 1% for the ratios vs rtn. The reference used numpy's generator; ours draws
// different samples of the same distributions, so only the ratios (and nmse loosely) are compared.
#include <cstdio>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/testing/synthetic.h"
#include "test_util.h"

namespace nvfp4 {
namespace {

struct Row {
  testing::Distribution dist;
  const char* name;
  double rtn_nmse, four_over_six, scalesweep;
};

double Nmse(const TensorView& t, Method m) {
  QuantizeOptions opt;
  opt.method = m;
  auto q = MakeCpuBackend()->Quantize(t, opt);
  EXPECT_TRUE(q.ok()) << q.status();
  return q->metrics.nmse;
}

TEST(SanityTableTest, RatiosVsRtnWithinOnePercent) {
  const Row rows[] = {{testing::Distribution::kGaussian, "gaussian", 9.04e-3, 0.836, 0.729},
                      {testing::Distribution::kLaplace, "laplace", 8.59e-3, 0.885, 0.792},
                      {testing::Distribution::kStudentT3, "student-t3", 8.10e-3, 0.920, 0.849}};
  for (const Row& row : rows) {
    auto x = testing::Sample(row.dist, 1024 * 4096, 0);
    auto t = testing::MakeF32("w", {1024, 4096}, x);
    const double rtn = Nmse(t.view, Method::kRtn);
    const double f6 = Nmse(t.view, Method::kFourOverSix) / rtn;
    const double ss = Nmse(t.view, Method::kScaleSweep) / rtn;
    const double soar = Nmse(t.view, Method::kSoar) / rtn;
    std::printf("%-10s rtn %.3e (spec %.2e)  4over6 %.3f (spec %.3f)  scalesweep %.3f (spec %.3f)"
                "  soar %.3f\n", row.name, rtn, row.rtn_nmse, f6, row.four_over_six, ss,
                row.scalesweep, soar);
    EXPECT_NEAR(rtn, row.rtn_nmse, 0.03 * row.rtn_nmse) << row.name;
    EXPECT_NEAR(f6, row.four_over_six, 0.01 * row.four_over_six) << row.name;
    EXPECT_NEAR(ss, row.scalesweep, 0.01 * row.scalesweep) << row.name;
    EXPECT_LE(soar, ss) << row.name;
  }
}

}  // namespace
}  // namespace nvfp4
