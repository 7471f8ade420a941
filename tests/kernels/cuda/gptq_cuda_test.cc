// GPTQ on the CUDA backend (kernels/cuda/gptq_cuda.h) against the host reference:
//  - the sweep, fed the host factor U, gives the host sweep's codes and scales bit for bit (every
//    block-scale method, objective, order and batch size, the flow's own sweep inputs);
//  - the whole CUDA path (cuSOLVER factor) against the CPU backend under the CUDA contract of
//    docs/NUMERICS.md ("GPTQ"): identical codes and scale on >= 99.9% of the 16-element blocks,
//    output_nmse within 1e-3 relative;
//  - run-to-run determinism, fused groups, non-positive-definite Grams.
// Skipped when no CUDA device is visible.
#include "kernels/cuda/gptq_cuda.h"

#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/codec.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_context.h"
#include "kernels/gptq.h"
#include "kernels/testing/synthetic.h"
#include "tests/kernels/test_util.h"

namespace nvfp4 {
namespace {

using testing::Distribution;
using testing::MakeF32;
using testing::MakeU16;
using testing::OwnedTensor;

#define SKIP_WITHOUT_GPU()                                                              \
  if (CudaVisibleDeviceCount() == 0) {                                                  \
    GTEST_SKIP() << "no CUDA device visible (CudaVisibleDeviceCount() == 0): the CUDA " \
                    "GPTQ tests need a GPU";                                            \
  }

using testing::CorrelatedGram;

QuantizeOptions Gptq(Method block_scales, Objective objective, GptqOrder order, int block_size,
                     ErrorRule rule = ErrorRule::kMse) {
  QuantizeOptions o;
  o.method = Method::kGptq;
  o.objective = objective;
  o.four_over_six_rule = rule;
  o.gptq.block_scales = block_scales;
  o.gptq.order = order;
  o.gptq.block_size = block_size;
  return o;
}

std::string Label(const QuantizeOptions& o) {
  return std::string(MethodName(o.gptq.block_scales)) + "/" +
         std::string(ObjectiveName(o.objective)) + "/" +
         std::string(ErrorRuleName(o.four_over_six_rule)) + "/" +
         std::string(GptqOrderName(o.gptq.order)) + "/bs" + std::to_string(o.gptq.block_size);
}

// Every block-scale method with the objectives it takes (rtn and 4over6 ignore the objective).
std::vector<QuantizeOptions> AllScaleOptions(GptqOrder order, int block_size) {
  std::vector<QuantizeOptions> out;
  out.push_back(Gptq(Method::kRtn, Objective::kMse, order, block_size));
  for (ErrorRule r : {ErrorRule::kMse, ErrorRule::kMae, ErrorRule::kAbsMax}) {
    out.push_back(Gptq(Method::kFourOverSix, Objective::kMse, order, block_size, r));
  }
  for (Method m : {Method::kScaleSweep, Method::kSoar}) {
    for (Objective obj : {Objective::kMse, Objective::kWmse, Objective::kHessian}) {
      out.push_back(Gptq(m, obj, order, block_size));
    }
  }
  return out;
}

// The host reference (load, factor, sweep, metrics) that also runs the CUDA device's load, sweep
// (on the same factor) and metrics on the same inputs, and records whether the results were
// identical (amax, codes, scales, nmse / rtn baseline / max error).
class HostVersusCudaSweep : public HostGptqDevice {
 public:
  explicit HostVersusCudaSweep(cuda::Context* ctx) : HostGptqDevice(4), cuda_(ctx) {}

  absl::StatusOr<float> LoadWeights(std::span<const TensorView> tensors,
                                    std::span<const Matrix2D> m) override {
    absl::StatusOr<float> gpu = cuda_.LoadWeights(tensors, m);
    absl::StatusOr<float> host = HostGptqDevice::LoadWeights(tensors, m);
    if (gpu.ok() != host.ok() || (gpu.ok() && *gpu != *host) ||
        (!gpu.ok() && gpu.status() != host.status())) {
      ++differing_loads;
      load_mismatch = absl::StrCat(gpu.status().ToString(), " vs ", host.status().ToString());
    }
    return host;
  }
  absl::Status Sweep(const GptqSweepInput& in, const std::vector<float>& u,
                     std::vector<uint8_t>* codes, std::vector<uint8_t>* scales) override {
    std::vector<uint8_t> gpu_codes(7), gpu_scales(7);  // poisoned: the sweep must size them
    RETURN_IF_ERROR(cuda_.Sweep(in, u, &gpu_codes, &gpu_scales));
    RETURN_IF_ERROR(HostGptqDevice::Sweep(in, u, codes, scales));
    ++sweeps;
    if (gpu_codes.size() != codes->size() || gpu_scales.size() != scales->size()) {
      differing_codes = differing_scales = -1;
      return absl::OkStatus();
    }
    for (size_t i = 0; i < codes->size(); ++i) differing_codes += gpu_codes[i] != (*codes)[i];
    for (size_t i = 0; i < scales->size(); ++i) differing_scales += gpu_scales[i] != (*scales)[i];
    return absl::OkStatus();
  }
  absl::StatusOr<TensorMetrics> Metrics(size_t member, int64_t row0, const TensorView& t,
                                        const Matrix2D& m, const QuantizedTensor& q, float g_rtn,
                                        const Calibration* calibration) override {
    ASSIGN_OR_RETURN(TensorMetrics gpu,
                     cuda_.Metrics(member, row0, t, m, q, g_rtn, calibration));
    ASSIGN_OR_RETURN(TensorMetrics host,
                     HostGptqDevice::Metrics(member, row0, t, m, q, g_rtn, calibration));
    ++metrics;
    if (gpu.nmse != host.nmse || gpu.rtn_nmse != host.rtn_nmse ||
        gpu.max_abs_err != host.max_abs_err) {
      ++differing_metrics;
    }
    if (gpu.output_nmse.has_value() != host.output_nmse.has_value() ||
        (host.output_nmse && std::fabs(*gpu.output_nmse - *host.output_nmse) >
                                 1e-4 * std::fabs(*host.output_nmse) + 1e-12)) {
      ++differing_output_nmse;
    }
    return host;
  }

  int sweeps = 0;
  int metrics = 0;
  int64_t differing_codes = 0;
  int64_t differing_scales = 0;
  int differing_loads = 0;
  std::string load_mismatch;
  int differing_metrics = 0;
  int differing_output_nmse = 0;

 private:
  cuda::CudaGptqDevice cuda_;
};

class GptqCudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CudaVisibleDeviceCount() == 0) return;
    cpu_ = MakeCpuBackend();
    auto g = MakeBackend("cuda:0");
    ASSERT_TRUE(g.ok()) << g.status();
    gpu_ = std::move(*g);
    ctx_ = std::make_unique<cuda::Context>();
    ASSERT_TRUE(ctx_->Init(0).ok());
  }

  std::unique_ptr<QuantizerBackend> cpu_, gpu_;
  std::unique_ptr<cuda::Context> ctx_;
};

TEST_F(GptqCudaTest, SweepWithTheHostFactorIsBitIdentical) {
  SKIP_WITHOUT_GPU();
  struct Shape {
    int64_t rows, k;
    std::vector<int> block_sizes;
  };
  // K = 208 is not a multiple of 128 (a short last batch); 37 rows are not a multiple of the
  // row tiles; block size 512 updates the batch in device memory (larger than the staged 256).
  const std::vector<Shape> shapes = {
      {37, 208, {16, 64, 128}}, {130, 256, {128}}, {300, 512, {128, 512}}};
  auto quantize_without_feedback = [&](std::span<const TensorView> t, const QuantizeOptions& o,
                                       std::span<const Calibration* const> c) {
    return cpu_->QuantizeGroup(t, o, c);
  };
  int runs = 0;
  for (const Shape& s : shapes) {
    std::vector<float> w = testing::Sample(Distribution::kStudentT3, s.rows * s.k, 7 + s.k);
    testing::AddOutlierColumns(w, s.k, 29, 8.0f);
    OwnedTensor t = MakeF32("w", {s.rows, s.k}, w);
    Calibration c;
    c.gram = CorrelatedGram(s.k, 3 * s.k, 11 + s.k);
    for (int bs : s.block_sizes) {
      for (GptqOrder order : {GptqOrder::kNatural, GptqOrder::kStatic}) {
        for (const QuantizeOptions& o : AllScaleOptions(order, bs)) {
          HostVersusCudaSweep device(ctx_.get());
          const std::vector<TensorView> group = {t.view};
          const std::vector<const Calibration*> cal = {&c};
          auto q = RunGptqGroup(group, o, cal, device, quantize_without_feedback);
          const std::string what =
              Label(o) + " " + std::to_string(s.rows) + "x" + std::to_string(s.k);
          ASSERT_TRUE(q.ok()) << what << ": " << q.status();
          EXPECT_EQ(device.sweeps, 1) << what;
          EXPECT_EQ(device.differing_codes, 0) << what;
          EXPECT_EQ(device.differing_scales, 0) << what;
          EXPECT_EQ(device.differing_loads, 0) << what << ": " << device.load_mismatch;
          EXPECT_EQ(device.metrics, 1) << what;
          EXPECT_EQ(device.differing_metrics, 0) << what;
          EXPECT_EQ(device.differing_output_nmse, 0) << what;
          ++runs;
        }
      }
    }
  }
  std::printf("bit-identical sweeps checked: %d\n", runs);
}

// LoadWeights converts bf16 / fp16 / fp32 sources of a fused group on the device (amax equal to
// the host's), Metrics reproduces the host's sums bit for bit for each member, and a NaN or Inf
// is reported with the host's message (member, index, value).
TEST_F(GptqCudaTest, LoadAndMetricsEqualTheHostForEveryDtype) {
  SKIP_WITHOUT_GPU();
  auto Make = [](std::string name, std::vector<int64_t> shape, const std::vector<float>& v,
                 DType dtype) {
    if (dtype == DType::kF32) return MakeF32(std::move(name), std::move(shape), v);
    return MakeU16(std::move(name), dtype, std::move(shape),
                   dtype == DType::kBF16 ? testing::ToBf16(v) : testing::ToF16(v));
  };
  const int64_t k = 256;
  Calibration c;
  c.gram = CorrelatedGram(k, 3 * k, 91);
  auto without_feedback = [&](std::span<const TensorView> t, const QuantizeOptions& o,
                              std::span<const Calibration* const> cal) {
    return cpu_->QuantizeGroup(t, o, cal);
  };
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    std::vector<OwnedTensor> owned;
    for (int64_t rows : {48, 37}) {
      const std::vector<float> v =
          testing::Sample(Distribution::kStudentT3, rows * k, 300 + rows);
      const std::string name = absl::StrCat("m", rows);
      owned.push_back(Make(name, {rows, k}, v, dtype));
    }
    const std::vector<TensorView> group = {owned[0].view, owned[1].view};
    const std::vector<const Calibration*> cal = {&c, &c};
    HostVersusCudaSweep device(ctx_.get());
    auto q = RunGptqGroup(group, Gptq(Method::kSoar, Objective::kMse, GptqOrder::kNatural, 128),
                          cal, device, without_feedback);
    const std::string what(DTypeName(dtype));
    ASSERT_TRUE(q.ok()) << what << ": " << q.status();
    EXPECT_EQ(device.differing_loads, 0) << what << ": " << device.load_mismatch;
    EXPECT_EQ(device.differing_codes, 0) << what;
    EXPECT_EQ(device.metrics, 2) << what;
    EXPECT_EQ(device.differing_metrics, 0) << what;
    EXPECT_EQ(device.differing_output_nmse, 0) << what;

    // A NaN in the second member: the same error from both (HostVersusCudaSweep compares them).
    std::vector<float> bad = testing::Sample(Distribution::kGaussian, 37 * k, 5);
    bad[17 * k + 33] = std::nanf("");
    bad[20 * k + 1] = INFINITY;
    owned[1] = Make("bad", {37, k}, bad, dtype);
    const std::vector<TensorView> bad_group = {owned[0].view, owned[1].view};
    HostVersusCudaSweep bad_device(ctx_.get());
    auto e = RunGptqGroup(bad_group,
                          Gptq(Method::kSoar, Objective::kMse, GptqOrder::kNatural, 128), cal,
                          bad_device, without_feedback);
    ASSERT_FALSE(e.ok()) << what;
    EXPECT_NE(e.status().message().find("'bad'"), std::string::npos) << e.status();
    EXPECT_EQ(bad_device.differing_loads, 0) << what << ": " << bad_device.load_mismatch;
  }
}

// One tensor (or fused group) of the contract corpus.
struct Weight {
  std::string name;
  OwnedTensor tensor;
  Calibration calibration;
};

std::vector<uint16_t> Bf16(const std::vector<float>& v) { return testing::ToBf16(v); }

std::vector<Weight> ContractCorpus() {
  std::vector<Weight> out;
  auto add = [&](std::string name, int64_t rows, int64_t k, Distribution d, uint64_t seed,
                 bool activations) {
    Weight w;
    w.name = name;
    std::vector<float> v = testing::Sample(d, rows * k, seed);
    testing::AddOutlierColumns(v, k, 37, 6.0f);
    w.tensor = MakeU16(name, DType::kBF16, {rows, k}, Bf16(v));
    if (activations) {
      static std::vector<std::vector<float>>* keep = new std::vector<std::vector<float>>();
      keep->push_back(testing::Sample(Distribution::kGaussian, 2 * k * k / 8, seed + 1));
      w.calibration.activations = keep->back().data();
      w.calibration.activations_dtype = DType::kF32;
      w.calibration.tokens = 2 * k / 8;  // fewer tokens than channels: needs the dampening
    } else {
      w.calibration.gram = CorrelatedGram(k, 512, seed + 1);
    }
    out.push_back(std::move(w));
  };
  add("gaussian_512x1024", 512, 1024, Distribution::kGaussian, 1, false);
  add("laplace_384x768", 384, 768, Distribution::kLaplace, 2, false);
  add("student_t_256x2048", 256, 2048, Distribution::kStudentT3, 3, false);
  add("odd_k_200x208", 200, 208, Distribution::kGaussian, 4, false);
  add("activations_128x512", 128, 512, Distribution::kGaussian, 5, true);
  return out;
}

struct Agreement {
  int64_t blocks = 0;
  int64_t identical = 0;
};

// Counts the 16-element blocks whose 8 code bytes and scale are identical.
void CountBlocks(const QuantizedTensor& a, const QuantizedTensor& b, Agreement* agree) {
  ASSERT_EQ(a.packed.size(), b.packed.size());
  ASSERT_EQ(a.scales.size(), b.scales.size());
  for (size_t blk = 0; blk < a.scales.size(); ++blk) {
    bool same = a.scales[blk] == b.scales[blk];
    for (size_t j = blk * 8; same && j < blk * 8 + 8; ++j) same = a.packed[j] == b.packed[j];
    agree->blocks += 1;
    agree->identical += same;
  }
}

void ExpectWithinContract(const QuantizedTensor& cpu, const QuantizedTensor& gpu,
                          const std::string& what, Agreement* agree) {
  SCOPED_TRACE(what);
  EXPECT_EQ(cpu.global_scale, gpu.global_scale);
  EXPECT_EQ(cpu.metrics.gptq_dampening, gpu.metrics.gptq_dampening);
  ASSERT_TRUE(cpu.metrics.output_nmse.has_value() && gpu.metrics.output_nmse.has_value());
  const double a = *cpu.metrics.output_nmse, b = *gpu.metrics.output_nmse;
  EXPECT_NEAR(a, b, 1e-3 * a) << "output nmse";
  CountBlocks(cpu, gpu, agree);
}

TEST_F(GptqCudaTest, BackendMeetsTheContractAgainstTheCpu) {
  SKIP_WITHOUT_GPU();
  const std::vector<Weight> corpus = ContractCorpus();
  std::vector<QuantizeOptions> options = {
      Gptq(Method::kSoar, Objective::kMse, GptqOrder::kNatural, 128),
      Gptq(Method::kSoar, Objective::kHessian, GptqOrder::kNatural, 128),
      Gptq(Method::kScaleSweep, Objective::kWmse, GptqOrder::kStatic, 128),
      Gptq(Method::kRtn, Objective::kMse, GptqOrder::kStatic, 64),
      Gptq(Method::kFourOverSix, Objective::kMse, GptqOrder::kNatural, 32)};
  options[3].gptq.global_scale = GptqGlobalScale::kAmax;
  Agreement agree;
  for (const QuantizeOptions& o : options) {
    for (const Weight& w : corpus) {
      auto a = cpu_->Quantize(w.tensor.view, o, &w.calibration);
      auto b = gpu_->Quantize(w.tensor.view, o, &w.calibration);
      ASSERT_TRUE(a.ok() && b.ok())
          << Label(o) << " " << w.name << ": " << a.status() << " / " << b.status();
      ExpectWithinContract(*a, *b, Label(o) + " " + w.name, &agree);
    }
  }
  auto st = LastCudaRunStats(*gpu_);
  ASSERT_TRUE(st.ok());
  EXPECT_TRUE(st->gptq_factor_on_gpu) << "cuSOLVER unavailable: the contract was not exercised";
  EXPECT_TRUE(st->cublas_output_nmse);
  const double fraction = static_cast<double>(agree.identical) / agree.blocks;
  std::printf("identical blocks (device factor vs host): %lld of %lld = %.6f\n",
              static_cast<long long>(agree.identical), static_cast<long long>(agree.blocks),
              fraction);
  EXPECT_GE(fraction, 0.999);
}

TEST_F(GptqCudaTest, RepeatedRunsAreIdentical) {
  SKIP_WITHOUT_GPU();
  const int64_t rows = 256, k = 1024;
  OwnedTensor t = MakeU16("w", DType::kBF16, {rows, k},
                          Bf16(testing::Sample(Distribution::kLaplace, rows * k, 41)));
  Calibration c;
  c.gram = CorrelatedGram(k, 2 * k, 42);
  for (GptqOrder order : {GptqOrder::kNatural, GptqOrder::kStatic}) {
    const QuantizeOptions o = Gptq(Method::kSoar, Objective::kHessian, order, 128);
    auto a = gpu_->Quantize(t.view, o, &c);
    auto b = gpu_->Quantize(t.view, o, &c);
    ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
    EXPECT_EQ(a->packed, b->packed);
    EXPECT_EQ(a->scales, b->scales);
    EXPECT_EQ(a->global_scale, b->global_scale);
    EXPECT_EQ(*a->metrics.output_nmse, *b->metrics.output_nmse);
  }
  // The factor itself, bit for bit.
  std::vector<double> h(c.gram.begin(), c.gram.end());
  for (int64_t i = 0; i < k; ++i) h[i * k + i] += 1.0;
  cuda::CudaGptqDevice device(ctx_.get());
  std::vector<float> u;
  auto f1 = device.Factor(h, k, &u);
  EXPECT_TRUE(u.empty()) << "the device keeps its factor";
  auto u1 = device.DownloadFactor();
  auto f2 = device.Factor(h, k, &u);
  auto u2 = device.DownloadFactor();
  ASSERT_TRUE(f1.ok() && f2.ok() && *f1 && *f2 && u1.ok() && u2.ok());
  EXPECT_EQ(*u1, *u2);
  EXPECT_TRUE(device.stats().gptq_factor_on_gpu);
}

// FactorGram builds on the device the same fp64 matrix as BuildGptqGram on the host (so the same
// factor), for a Gram that is not exactly symmetric, with a permutation and dampening.
TEST_F(GptqCudaTest, DeviceBuiltGramEqualsTheHostBuiltOne) {
  SKIP_WITHOUT_GPU();
  const int64_t k = 208;
  std::vector<float> g = CorrelatedGram(k, 300, 71);
  const std::vector<float> noise = testing::Sample(Distribution::kGaussian, k * k, 72);
  for (size_t i = 0; i < g.size(); ++i) g[i] *= 1.0f + 1e-6f * noise[i];  // fp32-rounded sums
  std::vector<int32_t> perm(k);
  for (int64_t a = 0; a < k; ++a) perm[a] = static_cast<int32_t>((a * 37) % k);
  const std::vector<const int32_t*> perms = {nullptr, perm.data()};
  for (const int32_t* p : perms) {
    std::vector<double> d(k);
    for (int64_t a = 0; a < k; ++a) d[a] = g[(p == nullptr ? a : p[a]) * (k + 1)];
    const GptqGram gram{g.data(), k, p, d.data()};
    const double damp = 0.013 * d[0];
    cuda::CudaGptqDevice device(ctx_.get());
    std::vector<float> u;
    auto from_gram = device.FactorGram(gram, damp, &u);
    ASSERT_TRUE(from_gram.ok() && *from_gram) << from_gram.status();
    auto u_gram = device.DownloadFactor();
    std::vector<double> h;
    BuildGptqGram(gram, damp, &h, 4);
    auto from_h = device.Factor(h, k, &u);
    ASSERT_TRUE(from_h.ok() && *from_h) << from_h.status();
    auto u_h = device.DownloadFactor();
    ASSERT_TRUE(u_gram.ok() && u_h.ok());
    EXPECT_EQ(*u_gram, *u_h) << (p == nullptr ? "natural" : "permuted");
  }
}

TEST_F(GptqCudaTest, FactorAgreesWithTheHostAndRejectsIndefinite) {
  SKIP_WITHOUT_GPU();
  const int64_t k = 208;
  const std::vector<float> gf = CorrelatedGram(k, 400, 51);
  std::vector<double> h(gf.begin(), gf.end());
  for (int64_t i = 0; i < k; ++i) h[i * k + i] += 0.01 * h[i * k + i];
  cuda::CudaGptqDevice device(ctx_.get());
  std::vector<float> u, host;
  auto ok = device.Factor(h, k, &u);
  ASSERT_TRUE(ok.ok() && *ok) << ok.status();
  auto kept = device.DownloadFactor();
  ASSERT_TRUE(kept.ok()) << kept.status();
  const std::vector<float>& gpu = *kept;
  ASSERT_TRUE(HostGptqFactor(h, k, &host, 4));
  ASSERT_EQ(gpu.size(), host.size());
  float largest = 0;
  for (float v : host) largest = std::fmax(largest, std::fabs(v));
  int64_t equal = 0;
  for (int64_t a = 0; a < k; ++a) {
    for (int64_t b = 0; b < k; ++b) {
      const float x = gpu[a * k + b], y = host[a * k + b];
      if (b < a) {
        ASSERT_EQ(x, 0.0f) << a << "," << b;
      }
      EXPECT_NEAR(x, y, 1e-6 * largest) << a << "," << b;
      equal += x == y;
    }
  }
  std::printf("factor entries equal to the host's: %lld of %lld\n", static_cast<long long>(equal),
              static_cast<long long>(k * k));
  std::vector<double> indefinite = h;
  for (int64_t i = 0; i < k; ++i) indefinite[i * k + i] = -1.0;
  auto bad = device.Factor(indefinite, k, &u);
  ASSERT_TRUE(bad.ok()) << bad.status();
  EXPECT_FALSE(*bad);
  EXPECT_EQ(device.DownloadFactor().status().code(), absl::StatusCode::kFailedPrecondition);
  auto nan = device.Factor(std::vector<double>(k * k, std::nan("")), k, &u);
  ASSERT_TRUE(nan.ok()) << nan.status();
  EXPECT_FALSE(*nan);
  // Through the backend: the same clear error as the CPU backend.
  OwnedTensor t = MakeF32("w", {8, 32}, testing::Sample(Distribution::kGaussian, 8 * 32, 52));
  Calibration c;
  c.gram.assign(32 * 32, 0.0f);
  for (int i = 0; i < 32; ++i) c.gram[i * 32 + i] = -1e6f;
  const QuantizeOptions o = Gptq(Method::kSoar, Objective::kMse, GptqOrder::kNatural, 128);
  auto e_cpu = cpu_->Quantize(t.view, o, &c);
  auto e_gpu = gpu_->Quantize(t.view, o, &c);
  ASSERT_FALSE(e_gpu.ok());
  EXPECT_EQ(e_cpu.status(), e_gpu.status());
}

TEST_F(GptqCudaTest, FusedGroupEqualsTheStackedWeightAndTheContract) {
  SKIP_WITHOUT_GPU();
  const int64_t k = 512;
  const std::vector<int64_t> rows = {192, 64, 64};  // q, k, v
  std::vector<OwnedTensor> parts;
  std::vector<float> stacked;
  for (size_t i = 0; i < rows.size(); ++i) {
    std::vector<float> v = testing::Sample(Distribution::kGaussian, rows[i] * k, 61 + i);
    for (float& x : v) x *= static_cast<float>(i + 1);  // different ranges, one global scale
    stacked.insert(stacked.end(), v.begin(), v.end());
    parts.push_back(MakeF32("part" + std::to_string(i), {rows[i], k}, v));
  }
  OwnedTensor whole = MakeF32("qkv", {320, k}, stacked);
  Calibration c;
  c.gram = CorrelatedGram(k, 2 * k, 64);
  const std::vector<const Calibration*> cals = {&c, &c, &c};
  std::vector<TensorView> group;
  for (const OwnedTensor& p : parts) group.push_back(p.view);
  Agreement agree;
  for (GptqOrder order : {GptqOrder::kNatural, GptqOrder::kStatic}) {
    const QuantizeOptions o = Gptq(Method::kSoar, Objective::kHessian, order, 128);
    auto fused = gpu_->QuantizeGroup(group, o, cals);
    auto one = gpu_->Quantize(whole.view, o, &c);
    auto cpu = cpu_->QuantizeGroup(group, o, cals);
    ASSERT_TRUE(fused.ok() && one.ok() && cpu.ok()) << fused.status() << one.status();
    ASSERT_EQ(fused->size(), 3u);
    std::vector<uint8_t> packed, scales;
    for (size_t i = 0; i < 3; ++i) {
      const QuantizedTensor& q = (*fused)[i];
      EXPECT_EQ(q.global_scale, one->global_scale);
      EXPECT_EQ(q.source_shape, (std::vector<int64_t>{rows[i], k}));
      packed.insert(packed.end(), q.packed.begin(), q.packed.end());
      scales.insert(scales.end(), q.scales.begin(), q.scales.end());
      ExpectWithinContract((*cpu)[i], q, "fused part " + std::to_string(i), &agree);
    }
    EXPECT_EQ(packed, one->packed);
    EXPECT_EQ(scales, one->scales);
  }
  EXPECT_GE(static_cast<double>(agree.identical) / agree.blocks, 0.999);
}

}  // namespace
}  // namespace nvfp4
