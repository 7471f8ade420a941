// The CUDA backend against the CPU reference: byte equality of codes and scales, equal global
// scales and metrics (the canonical sums are bit-identical), for every method over a corpus of
// tensors. Skipped when no CUDA device is visible.
#include "kernels/cuda/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/calibration.h"
#include "kernels/codec.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/testing/synthetic.h"
#include "tests/kernels/cuda/e2m1_exhaustive.h"

namespace nvfp4 {
namespace {

using testing::Distribution;

#define SKIP_WITHOUT_GPU()                                                             \
  if (CudaVisibleDeviceCount() == 0) {                                                 \
    GTEST_SKIP() << "no CUDA device visible (CudaVisibleDeviceCount() == 0): the CUDA " \
                    "backend tests need a GPU";                                        \
  }

// Owns the bytes of a source tensor (and optionally its calibration).
struct Case {
  std::string name;
  DType dtype = DType::kBF16;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
  Calibration calib;
  // FP8 source: `bytes` holds E4M3 codes, these the scales (fp8.scale points into them).
  std::vector<float> fp8_scale_values;
  Fp8Scales fp8;
  bool is_fp8 = false;

  TensorView view() const {
    TensorView v;
    v.name = name;
    v.dtype = dtype;
    v.shape = shape;
    v.data = bytes.data();
    if (is_fp8) v.fp8 = &fp8;
    return v;
  }
  int64_t cols() const { return shape.back(); }
};

Case Encode(std::string name, DType dtype, std::vector<int64_t> shape, const std::vector<float>& v) {
  Case c;
  c.name = std::move(name);
  c.dtype = dtype;
  c.shape = std::move(shape);
  if (dtype == DType::kF32) {
    c.bytes.resize(v.size() * 4);
    std::memcpy(c.bytes.data(), v.data(), c.bytes.size());
  } else {
    const std::vector<uint16_t> h = dtype == DType::kBF16 ? testing::ToBf16(v) : testing::ToF16(v);
    c.bytes.resize(h.size() * 2);
    std::memcpy(c.bytes.data(), h.data(), c.bytes.size());
  }
  return c;
}

// A block-scaled FP8 weight (kernels/testing SampleFp8) on tiles of block_rows x block_cols.
Case Fp8(std::string name, int64_t n, int64_t k, int64_t block_rows, int64_t block_cols,
         uint64_t seed) {
  testing::Fp8Sample f = testing::SampleFp8(n, k, block_rows, block_cols, seed);
  Case c;
  c.name = std::move(name);
  c.dtype = DType::kF32;
  c.shape = {n, k};
  c.bytes = std::move(f.codes);
  c.fp8_scale_values = std::move(f.scales);
  c.fp8 = Fp8Scales{c.fp8_scale_values.data(), block_rows, block_cols, f.grid_cols};
  c.is_fp8 = true;
  return c;
}

int64_t Numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Calibration from random activations [tokens, K]; with `gram`, the Gram matrix too.
void AddCalibration(Case& c, uint64_t seed, bool gram) {
  const int64_t k = c.cols();
  const int64_t tokens = 48;
  std::vector<float> x = testing::Sample(Distribution::kGaussian, tokens * k, seed);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t i = 0; i < k; ++i) x[t * k + i] *= 1.0f + static_cast<float>((i * 7) % 13) / 4.0f;
  }
  if (gram) {
    c.calib.gram.assign(static_cast<size_t>(k * k), 0.0f);
    for (int64_t i = 0; i < k; ++i) {
      for (int64_t j = 0; j < k; ++j) {
        double s = 0;
        for (int64_t t = 0; t < tokens; ++t) s += static_cast<double>(x[t * k + i]) * x[t * k + j];
        c.calib.gram[i * k + j] = static_cast<float>(s);
      }
    }
  } else {
    auto* owned = new std::vector<float>(std::move(x));  // lives for the test binary
    c.calib.activations = owned->data();
    c.calib.activations_dtype = DType::kF32;
    c.calib.tokens = tokens;
  }
}

std::vector<Case> Corpus() {
  std::vector<Case> out;
  auto gauss = [](int64_t n, uint64_t seed) { return testing::Sample(Distribution::kGaussian, n, seed); };
  out.push_back(Encode("gaussian_bf16", DType::kBF16, {256, 1024}, gauss(256 * 1024, 1)));
  out.push_back(Encode("laplace_f16", DType::kF16, {128, 512},
                       testing::Sample(Distribution::kLaplace, 128 * 512, 2)));
  out.push_back(Encode("student_t3_f32", DType::kF32, {96, 512},
                       testing::Sample(Distribution::kStudentT3, 96 * 512, 3)));
  {
    std::vector<float> v = gauss(200 * 1024, 4);
    testing::AddOutlierColumns(v, 1024, 64, 40.0f);
    out.push_back(Encode("outlier_columns_bf16", DType::kBF16, {200, 1024}, v));
  }
  out.push_back(Encode("all_zero_bf16", DType::kBF16, {64, 256}, std::vector<float>(64 * 256, 0.0f)));
  {
    std::vector<float> v = gauss(128 * 512, 5);
    for (size_t b = 0; b < v.size() / 16; b += 3) std::fill(v.begin() + b * 16, v.begin() + b * 16 + 16, 0.0f);
    v[17] = -0.0f;
    out.push_back(Encode("zero_blocks_f32", DType::kF32, {128, 512}, v));
  }
  {
    // Rows spanning 8 decades: small rows get E4M3 subnormal scales and the 2^-9 clamp.
    std::vector<float> v = gauss(64 * 512, 6);
    for (int64_t r = 0; r < 64; ++r) {
      for (int64_t i = 0; i < 512; ++i) v[r * 512 + i] *= std::pow(10.0f, -static_cast<float>(r % 9));
    }
    out.push_back(Encode("tiny_rows_f32", DType::kF32, {64, 512}, v));
    out.push_back(Encode("tiny_rows_bf16", DType::kBF16, {64, 512}, v));
  }
  {
    // fp32 subnormal inputs: g and s*g underflow (the search sees Inf/NaN quotients).
    std::vector<float> v = gauss(32 * 256, 7);
    for (float& f : v) f *= 1e-39f;
    out.push_back(Encode("subnormal_f32", DType::kF32, {32, 256}, v));
  }
  {
    // Wide dynamic range across blocks: block scales near the 448 clamp and far below it.
    std::vector<float> v = gauss(128 * 1024, 8);
    std::vector<float> f = testing::Sample(Distribution::kGaussian, 128 * 64, 9);
    for (size_t b = 0; b < v.size() / 16; ++b) {
      const float scale = std::exp2(-std::fabs(f[b]) * 8.0f);
      for (int i = 0; i < 16; ++i) v[b * 16 + i] *= scale;
    }
    v[5] = 3.0e4f;  // one huge element: the window clamps at bit pattern 126 for its block
    out.push_back(Encode("wide_range_f16", DType::kF16, {128, 1024}, v));
  }
  out.push_back(Encode("odd_rows_bf16", DType::kBF16, {257, 320}, gauss(257 * 320, 10)));
  out.push_back(Encode("one_row_bf16", DType::kBF16, {1, 4096}, gauss(4096, 11)));
  out.push_back(Encode("one_dim_f32", DType::kF32, {2048}, gauss(2048, 12)));
  out.push_back(Encode("three_dim_bf16", DType::kBF16, {3, 5, 64}, gauss(3 * 5 * 64, 13)));
  // More than one reduction chunk level: 1100 rows x 1024 = 70400 blocks (69 chunks).
  out.push_back(Encode("multi_chunk_bf16", DType::kBF16, {1100, 1024}, gauss(1100 * 1024, 14)));
  for (size_t i = 0; i < out.size(); ++i) AddCalibration(out[i], 100 + i, /*gram=*/out[i].cols() <= 512);
  return out;
}

const std::vector<Case>& SharedCorpus() {
  static const std::vector<Case>* c = new std::vector<Case>(Corpus());
  return *c;
}

struct MethodCase {
  std::string label;
  QuantizeOptions options;
};

std::vector<MethodCase> AllMethods() {
  std::vector<MethodCase> m;
  auto add = [&](std::string label, Method method, Objective obj, ErrorRule rule) {
    QuantizeOptions o;
    o.method = method;
    o.objective = obj;
    o.four_over_six_rule = rule;
    m.push_back({std::move(label), o});
  };
  add("rtn", Method::kRtn, Objective::kMse, ErrorRule::kMse);
  add("4over6_mse", Method::kFourOverSix, Objective::kMse, ErrorRule::kMse);
  add("4over6_mae", Method::kFourOverSix, Objective::kMse, ErrorRule::kMae);
  add("4over6_absmax", Method::kFourOverSix, Objective::kMse, ErrorRule::kAbsMax);
  add("scalesweep_mse", Method::kScaleSweep, Objective::kMse, ErrorRule::kMse);
  add("scalesweep_wmse", Method::kScaleSweep, Objective::kWmse, ErrorRule::kMse);
  add("scalesweep_hessian", Method::kScaleSweep, Objective::kHessian, ErrorRule::kMse);
  add("soar_mse", Method::kSoar, Objective::kMse, ErrorRule::kMse);
  add("soar_wmse", Method::kSoar, Objective::kWmse, ErrorRule::kMse);
  add("soar_hessian", Method::kSoar, Objective::kHessian, ErrorRule::kMse);
  return m;
}

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

int64_t FirstDiff(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  if (a.size() != b.size()) return -2;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) return static_cast<int64_t>(i);
  }
  return -1;
}

void ExpectSame(const QuantizedTensor& cpu, const QuantizedTensor& gpu, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(cpu.rows, gpu.rows);
  EXPECT_EQ(cpu.cols, gpu.cols);
  EXPECT_EQ(Bits(cpu.global_scale), Bits(gpu.global_scale))
      << cpu.global_scale << " vs " << gpu.global_scale;
  const int64_t dp = FirstDiff(cpu.packed, gpu.packed);
  EXPECT_EQ(dp, -1) << "packed codes differ at byte " << dp << " (size " << cpu.packed.size() << "/"
                    << gpu.packed.size() << ")";
  const int64_t ds = FirstDiff(cpu.scales, gpu.scales);
  EXPECT_EQ(ds, -1) << "scales differ at block " << ds;
  // Metrics come from bit-identical canonical sums: equal, not just close.
  EXPECT_EQ(cpu.metrics.nmse, gpu.metrics.nmse);
  EXPECT_EQ(cpu.metrics.rtn_nmse, gpu.metrics.rtn_nmse);
  EXPECT_EQ(cpu.metrics.max_abs_err, gpu.metrics.max_abs_err);
  EXPECT_EQ(cpu.metrics.iterations, gpu.metrics.iterations);
  ASSERT_EQ(cpu.metrics.output_nmse.has_value(), gpu.metrics.output_nmse.has_value());
  if (cpu.metrics.output_nmse.has_value()) {
    const double a = *cpu.metrics.output_nmse, b = *gpu.metrics.output_nmse;
    EXPECT_NEAR(a, b, 1e-4 * std::fabs(a) + 1e-12) << "output nmse (cuBLAS fp32 vs host fp64)";
  }
}

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CudaVisibleDeviceCount() == 0) return;
    cpu_ = MakeCpuBackend();
    auto g = MakeBackend("cuda:0");
    ASSERT_TRUE(g.ok()) << g.status();
    gpu_ = std::move(*g);
  }

  // Runs one group on both backends and compares.
  void Compare(const std::vector<const Case*>& group, const MethodCase& m, const std::string& tag) {
    std::vector<TensorView> views;
    std::vector<const Calibration*> calib;
    for (const Case* c : group) {
      views.push_back(c->view());
      calib.push_back(&c->calib);
    }
    auto a = cpu_->QuantizeGroup(views, m.options, calib);
    auto b = gpu_->QuantizeGroup(views, m.options, calib);
    ASSERT_EQ(a.ok(), b.ok()) << tag << " " << m.label << ": cpu " << a.status() << " / cuda "
                              << b.status();
    if (!a.ok()) {
      EXPECT_EQ(a.status(), b.status());
      return;
    }
    ASSERT_EQ(a->size(), b->size());
    for (size_t i = 0; i < a->size(); ++i) {
      ExpectSame((*a)[i], (*b)[i], tag + " / " + m.label + " / " + group[i]->name);
    }
  }

  std::unique_ptr<QuantizerBackend> cpu_, gpu_;
};

TEST_F(CudaBackendTest, E2M1RoundValueExhaustive) {
  SKIP_WITHOUT_GPU();
  unsigned long long* d = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d), sizeof(*d)), cudaSuccess);
  ASSERT_EQ(cudaMemset(d, 0, sizeof(*d)), cudaSuccess);
  ASSERT_EQ(cuda::test_hooks::LaunchE2M1Exhaustive(d, nullptr), cudaSuccess);
  unsigned long long bad = 1;
  ASSERT_EQ(cudaMemcpy(&bad, d, sizeof(bad), cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(d);
  EXPECT_EQ(bad, 0u) << "device E2M1RoundValue != DecodeE2M1(EncodeE2M1(y))";
  // The host build of the same function, over all 2^32 inputs on all cores.
  const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  std::vector<unsigned long long> host_bad(threads, 0);
  std::vector<std::thread> pool;
  for (unsigned w = 0; w < threads; ++w) {
    pool.emplace_back([w, threads, &host_bad] {
      for (uint64_t u = w; u <= 0xFFFFFFFFull; u += threads) {
        float y;
        const uint32_t b = static_cast<uint32_t>(u);
        std::memcpy(&y, &b, 4);
        host_bad[w] += Bits(E2M1RoundValue(y)) != Bits(DecodeE2M1(EncodeE2M1(y)));
      }
    });
  }
  for (auto& t : pool) t.join();
  unsigned long long total = 0;
  for (auto b : host_bad) total += b;
  EXPECT_EQ(total, 0u) << "host E2M1RoundValue != DecodeE2M1(EncodeE2M1(y))";
}

TEST_F(CudaBackendTest, DeviceCountAndNames) {
  SKIP_WITHOUT_GPU();
  EXPECT_GT(CudaDeviceCount(), 0);
  EXPECT_EQ(gpu_->name(), "cuda:0");
  auto missing = MakeBackend("cuda:999");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
  auto a = MakeBackend("auto");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ((*a)->name(), "cuda:0");
  std::printf("cuBLAS available: %s\n", CudaCublasAvailable() ? "yes" : "no (host output metric)");
}

TEST_F(CudaBackendTest, EveryMethodEqualsCpuOnCorpus) {
  SKIP_WITHOUT_GPU();
  for (const MethodCase& m : AllMethods()) {
    for (const Case& c : SharedCorpus()) {
      // The DSS beta search is slow on the CPU reference: hessian on the smaller tensors only.
      if (m.options.objective == Objective::kHessian && Numel(c.shape) > 70000) continue;
      Compare({&c}, m, "single");
    }
  }
}

TEST_F(CudaBackendTest, FusedGroupOfThreeEqualsCpu) {
  SKIP_WITHOUT_GPU();
  std::vector<Case> g;
  g.push_back(Encode("q_proj", DType::kBF16, {96, 256},
                     testing::Sample(Distribution::kGaussian, 96 * 256, 21)));
  g.push_back(Encode("k_proj", DType::kBF16, {32, 256},
                     testing::Sample(Distribution::kLaplace, 32 * 256, 22)));
  g.push_back(Encode("v_proj", DType::kBF16, {32, 256},
                     testing::Sample(Distribution::kStudentT3, 32 * 256, 23)));
  for (size_t i = 0; i < g.size(); ++i) AddCalibration(g[i], 200 + i, /*gram=*/i == 0);
  for (const MethodCase& m : AllMethods()) Compare({&g[0], &g[1], &g[2]}, m, "fused");
}

TEST_F(CudaBackendTest, StreamedChunksEqualResidentAndCpu) {
  SKIP_WITHOUT_GPU();
  // 1000 x 2048 bf16 = 4 MB: with a 1 MB budget it runs in chunks of a multiple of 1024 blocks.
  Case big = Encode("big_bf16", DType::kBF16, {1000, 2048},
                    testing::Sample(Distribution::kStudentT3, 1000 * 2048, 31));
  AddCalibration(big, 301, /*gram=*/false);
  Case second = Encode("second_f32", DType::kF32, {40, 2048},
                       testing::Sample(Distribution::kGaussian, 40 * 2048, 32));
  AddCalibration(second, 302, /*gram=*/false);
  for (const MethodCase& m : AllMethods()) {
    if (m.options.objective == Objective::kHessian) continue;  // CPU reference too slow here
    setenv("NVFP4_CUDA_MAX_CHUNK_BYTES", "1048576", 1);
    Compare({&big}, m, "streamed");
    auto st = LastCudaRunStats(*gpu_);
    ASSERT_TRUE(st.ok());
    EXPECT_TRUE(st->streamed);
    EXPECT_GT(st->chunk_blocks, 0);
    EXPECT_EQ(st->chunk_blocks % 1024, 0);
    Compare({&big, &second}, m, "streamed group");
    unsetenv("NVFP4_CUDA_MAX_CHUNK_BYTES");
    Compare({&big}, m, "resident");
    st = LastCudaRunStats(*gpu_);
    ASSERT_TRUE(st.ok());
    EXPECT_FALSE(st->streamed);
  }
}

// FP8 sources (DeepSeek-V3 block FP8, per-channel, per-tensor; partial edge tiles): the codes are
// uploaded and dequantized on the device, resident and streamed in chunks, alone and fused with a
// bf16 tensor; every method equals the CPU reference (which dequantizes on the host), and so does
// GPTQ (which dequantizes on the host on both backends). A NaN code gives the CPU's error.
TEST_F(CudaBackendTest, Fp8SourcesDequantizedOnTheDeviceEqualCpu) {
  SKIP_WITHOUT_GPU();
  unsetenv("NVFP4_CUDA_FP8_ON_DEVICE");  // the default: on the device
  std::vector<Case> cases;
  cases.push_back(Fp8("block_fp8", 1100, 1040, 128, 128, 61));  // 71500 blocks, partial tiles
  cases.push_back(Fp8("channel_fp8", 96, 512, 1, 512, 62));
  cases.push_back(Fp8("tensor_fp8", 64, 256, 64, 256, 63));
  cases.push_back(Encode("bf16_partner", DType::kBF16, {200, 1040},
                         testing::Sample(Distribution::kGaussian, 200 * 1040, 64)));
  for (size_t i = 0; i < cases.size(); ++i) AddCalibration(cases[i], 600 + i, /*gram=*/false);
  for (const MethodCase& m : AllMethods()) {
    if (m.options.objective == Objective::kHessian) continue;  // CPU reference too slow here
    for (const char* budget : {"", "1048576"}) {
      if (*budget) setenv("NVFP4_CUDA_MAX_CHUNK_BYTES", budget, 1);
      const std::string tag = *budget ? "fp8 streamed" : "fp8 resident";
      Compare({&cases[0]}, m, tag);
      auto st = LastCudaRunStats(*gpu_);
      ASSERT_TRUE(st.ok());
      EXPECT_EQ(st->streamed, *budget != 0) << tag;
      EXPECT_EQ(st->fp8_sources_on_device, 1) << tag;
      Compare({&cases[1]}, m, tag);
      Compare({&cases[2]}, m, tag);
      Compare({&cases[0], &cases[3]}, m, tag + " group");
      st = LastCudaRunStats(*gpu_);
      ASSERT_TRUE(st.ok());
      EXPECT_EQ(st->fp8_sources_on_device, 1) << tag;
      unsetenv("NVFP4_CUDA_MAX_CHUNK_BYTES");
    }
  }
  // GPTQ: both backends dequantize on the host; the device factor keeps the GPTQ contract (equal
  // amax global scale, nearly equal error; gptq_cuda_test checks the blocks).
  Case gq = Fp8("gptq_fp8", 256, 512, 128, 128, 65);
  gq.calib.gram = testing::CorrelatedGram(512, 400, 66);
  QuantizeOptions o;
  o.method = Method::kGptq;
  o.gptq.block_scales = Method::kRtn;
  const TensorView v = gq.view();
  auto a = cpu_->Quantize(v, o, &gq.calib);
  auto b = gpu_->Quantize(v, o, &gq.calib);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(Bits(a->global_scale), Bits(b->global_scale));
  EXPECT_NEAR(a->metrics.nmse, b->metrics.nmse, 0.02 * a->metrics.nmse);
  // A NaN code (0x7F) in the middle of a tile.
  Case bad = Fp8("nan_fp8", 64, 256, 128, 128, 67);
  bad.bytes[64 * 100 + 7] = 0x7F;
  QuantizeOptions rtn;
  auto ca = cpu_->Quantize(bad.view(), rtn);
  auto cb = gpu_->Quantize(bad.view(), rtn);
  ASSERT_FALSE(ca.ok());
  EXPECT_EQ(ca.status(), cb.status());
  EXPECT_NE(ca.status().message().find("NaN at flat index 6407"), std::string::npos) << ca.status();
  // NVFP4_CUDA_FP8_ON_DEVICE=0: the backend dequantizes on the host: same bytes, no FP8 source
  // on the GPU.
  setenv("NVFP4_CUDA_FP8_ON_DEVICE", "0", 1);
  Compare({&cases[0], &cases[3]}, AllMethods()[0], "fp8 host");
  auto st = LastCudaRunStats(*gpu_);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->fp8_sources_on_device, 0);
  unsetenv("NVFP4_CUDA_FP8_ON_DEVICE");
}

// GPU out of memory: another process holds nearly all device memory. The group does not fit the
// free memory and is streamed in chunks; and when the budget claims it fits (a large
// NVFP4_CUDA_MAX_CHUNK_BYTES) the failed cudaMalloc falls back to chunks too. Results stay equal to
// the CPU reference; once the memory is back the group runs resident again.
TEST_F(CudaBackendTest, OutOfDeviceMemoryFallsBackToChunks) {
  SKIP_WITHOUT_GPU();
  unsetenv("NVFP4_CUDA_MAX_CHUNK_BYTES");
  // 4096 x 4096 bf16: 32 MiB source, ~42 MiB resident with codes and scales.
  Case big = Encode("big_bf16", DType::kBF16, {4096, 4096},
                    testing::Sample(Distribution::kGaussian, 4096 * 4096, 51));
  std::vector<MethodCase> methods;
  for (const MethodCase& m : AllMethods()) {
    if (m.label == "rtn" || m.label == "soar_mse") methods.push_back(m);
  }
  ASSERT_EQ(methods.size(), 2u);
  size_t free_b = 0, total_b = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_b, &total_b), cudaSuccess);
  constexpr size_t kLeave = 24u << 20;
  void* hog = nullptr;
  for (size_t take = free_b - kLeave; take > (1u << 30); take -= 64u << 20) {
    if (cudaMalloc(&hog, take) == cudaSuccess) break;
    cudaGetLastError();
    hog = nullptr;
  }
  ASSERT_NE(hog, nullptr) << "could not occupy the device memory";
  ASSERT_EQ(cudaMemGetInfo(&free_b, &total_b), cudaSuccess);
  ASSERT_LT(free_b, 42u << 20) << "the test tensor would still fit";
  for (const MethodCase& m : methods) {
    Compare({&big}, m, "nearly full device");
    auto st = LastCudaRunStats(*gpu_);
    ASSERT_TRUE(st.ok());
    EXPECT_TRUE(st->streamed) << m.label << ": free " << free_b << " bytes";
    setenv("NVFP4_CUDA_MAX_CHUNK_BYTES", "8589934592", 1);  // the budget says it fits
    Compare({&big}, m, "allocation failure");
    unsetenv("NVFP4_CUDA_MAX_CHUNK_BYTES");
    st = LastCudaRunStats(*gpu_);
    ASSERT_TRUE(st.ok());
    EXPECT_TRUE(st->streamed) << m.label;
    EXPECT_GT(st->chunk_blocks, 0);
  }
  ASSERT_EQ(cudaFree(hog), cudaSuccess);
  Compare({&big}, methods[1], "memory back");
  auto st = LastCudaRunStats(*gpu_);
  ASSERT_TRUE(st.ok());
  EXPECT_FALSE(st->streamed);
}

TEST_F(CudaBackendTest, NonFiniteAndBadShapesGiveTheCpuErrors) {
  SKIP_WITHOUT_GPU();
  QuantizeOptions o;
  for (DType dt : {DType::kBF16, DType::kF16, DType::kF32}) {
    std::vector<float> v = testing::Sample(Distribution::kGaussian, 64 * 256, 41);
    v[5000] = std::numeric_limits<float>::infinity();
    v[9000] = std::numeric_limits<float>::quiet_NaN();
    Case c = Encode("bad", dt, {64, 256}, v);
    auto a = cpu_->Quantize(c.view(), o);
    auto b = gpu_->Quantize(c.view(), o);
    ASSERT_FALSE(a.ok());
    EXPECT_EQ(a.status(), b.status());
  }
  Case odd = Encode("odd_k", DType::kF32, {4, 24}, std::vector<float>(96, 1.0f));
  EXPECT_EQ(cpu_->Quantize(odd.view(), o).status(), gpu_->Quantize(odd.view(), o).status());
}

TEST_F(CudaBackendTest, RepeatedRunsAreDeterministicAndReuseTheWorkspace) {
  SKIP_WITHOUT_GPU();
  const Case& c = SharedCorpus()[0];
  QuantizeOptions o;
  auto a = gpu_->Quantize(c.view(), o);
  auto b = gpu_->Quantize(c.view(), o);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->packed, b->packed);
  EXPECT_EQ(a->scales, b->scales);
  EXPECT_EQ(a->metrics.nmse, b->metrics.nmse);
}

// Writes quantized tensors for tests/kernels/cuda/torch_decode_check.py when NVFP4_DUMP_DIR is
// set: "NVFP4DMP", int64 rows, int64 cols, float g, packed [rows*cols/2], scales [rows*cols/16],
// our dequantization fp32 [rows*cols].
TEST_F(CudaBackendTest, DumpForTorchDecodeCheck) {
  SKIP_WITHOUT_GPU();
  const char* dir = std::getenv("NVFP4_DUMP_DIR");
  if (dir == nullptr) GTEST_SKIP() << "NVFP4_DUMP_DIR not set";
  int written = 0;
  const std::vector<std::pair<int, Method>> picks = {
      {0, Method::kSoar}, {3, Method::kRtn}, {7, Method::kScaleSweep}, {9, Method::kFourOverSix},
      {10, Method::kSoar}};
  for (const auto& [index, method] : picks) {
    const Case& c = SharedCorpus()[index];
    QuantizeOptions o;
    o.method = method;
    auto q = gpu_->Quantize(c.view(), o);
    ASSERT_TRUE(q.ok()) << q.status();
    const std::vector<float> deq = Dequantize(*q);
    std::ofstream f(std::string(dir) + "/" + c.name + "_" + std::string(MethodName(method)) + ".bin",
                    std::ios::binary);
    f.write("NVFP4DMP", 8);
    f.write(reinterpret_cast<const char*>(&q->rows), 8);
    f.write(reinterpret_cast<const char*>(&q->cols), 8);
    f.write(reinterpret_cast<const char*>(&q->global_scale), 4);
    f.write(reinterpret_cast<const char*>(q->packed.data()), q->packed.size());
    f.write(reinterpret_cast<const char*>(q->scales.data()), q->scales.size());
    f.write(reinterpret_cast<const char*>(deq.data()), deq.size() * 4);
    ASSERT_TRUE(f.good());
    ++written;
  }
  EXPECT_EQ(written, 5);
}

}  // namespace
}  // namespace nvfp4
