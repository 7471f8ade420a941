// GPU benchmark of the CUDA backend (docs/BENCHMARKS.md, GPU section).
//
// For each method (defaults: 4over6 rule mse, scalesweep/soar objective mse) on bf16 tensors it
// reports, as the median of --reps runs after one warm-up:
//   span_ms    device time of the method's flow on the device-resident tensor (CUDA events from
//              the scan kernel's start to the last pass's end; host round trips between passes
//              included; the PCIe copies of input and output excluded)
//   wall_ms    the whole QuantizeGroup call (host clock, PCIe copies included)
//   GB/s       bytes the kernels read and write (scan read + per pass: source read, codes/scales
//              written, previous codes read by soar refinements) over span_ms, and its ratio to a
//              device-to-device cudaMemcpy measured in the same run (bytes read + written)
//   speed-up   over the CPU backend, timed on the first --cpu-rows rows and extrapolated per element
// and the total time of the linear layers of an 8B Llama (32 x q,k,v,o,gate,up,down).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/testing/synthetic.h"

namespace {

using nvfp4::Method;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

#define CHECK_CUDA(x)                                                              \
  do {                                                                             \
    cudaError_t e_ = (x);                                                          \
    if (e_ != cudaSuccess) {                                                       \
      std::fprintf(stderr, "%s failed: %s\n", #x, cudaGetErrorString(e_));        \
      std::exit(1);                                                                \
    }                                                                              \
  } while (0)

double CopyBandwidthGBs() {
  const size_t bytes = size_t{1} << 30;
  void *a = nullptr, *b = nullptr;
  CHECK_CUDA(cudaMalloc(&a, bytes));
  CHECK_CUDA(cudaMalloc(&b, bytes));
  CHECK_CUDA(cudaMemset(a, 1, bytes));
  cudaEvent_t s, e;
  CHECK_CUDA(cudaEventCreate(&s));
  CHECK_CUDA(cudaEventCreate(&e));
  std::vector<double> ms;
  for (int r = 0; r < 12; ++r) {
    CHECK_CUDA(cudaEventRecord(s));
    CHECK_CUDA(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice));
    CHECK_CUDA(cudaEventRecord(e));
    CHECK_CUDA(cudaEventSynchronize(e));
    float t = 0;
    CHECK_CUDA(cudaEventElapsedTime(&t, s, e));
    if (r >= 2) ms.push_back(t);
  }
  cudaFree(a);
  cudaFree(b);
  return 2.0 * bytes / (Median(ms) * 1e-3) / 1e9;
}

struct Shape {
  int64_t rows, cols;
  std::string label() const { return std::to_string(rows) + "x" + std::to_string(cols); }
};

struct Result {
  double span_ms = 0, wall_ms = 0, kernel_ms = 0, cpu_ms = 0;
  int passes = 0, iterations = 0;
  double nmse_vs_rtn = 0;
};

}  // namespace

int main(int argc, char** argv) {
  int reps = 5;
  int64_t cpu_rows = 256;
  bool big = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--reps" && i + 1 < argc) reps = std::atoi(argv[++i]);
    else if (a == "--cpu-rows" && i + 1 < argc) cpu_rows = std::atoll(argv[++i]);
    else if (a == "--no-big") big = false;
    else {
      std::fprintf(stderr, "usage: %s [--reps N] [--cpu-rows R] [--no-big]\n", argv[0]);
      return 2;
    }
  }
  if (nvfp4::CudaVisibleDeviceCount() == 0) {
    std::fprintf(stderr, "no CUDA device\n");
    return 1;
  }
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  auto gpu_or = nvfp4::MakeBackend("cuda:0");
  if (!gpu_or.ok()) {
    std::fprintf(stderr, "%s\n", gpu_or.status().ToString().c_str());
    return 1;
  }
  auto gpu = std::move(*gpu_or);
  auto cpu = nvfp4::MakeCpuBackend();
  const double copy_gbs = CopyBandwidthGBs();
  std::printf("GPU: %s, %d SMs, %.1f GiB; device-to-device copy %.0f GB/s (read + write)\n",
              prop.name, prop.multiProcessorCount, prop.totalGlobalMem / 1073741824.0, copy_gbs);

  // One 4096x4096 N(0,1) bf16 tile, repeated for the larger shapes (timing only).
  const int64_t tile = 4096 * 4096;
  const std::vector<uint16_t> base =
      nvfp4::testing::ToBf16(nvfp4::testing::Sample(nvfp4::testing::Distribution::kGaussian, tile, 7));
  std::vector<Shape> shapes = {{4096, 4096}, {1024, 4096}, {4096, 14336}, {14336, 4096}};
  if (big) shapes.push_back({128256, 4096});
  const std::vector<std::pair<Method, const char*>> methods = {
      {Method::kRtn, "rtn"}, {Method::kFourOverSix, "4over6"}, {Method::kScaleSweep, "scalesweep"},
      {Method::kSoar, "soar"}};

  std::map<std::pair<std::string, std::string>, Result> results;
  for (const Shape& s : shapes) {
    const int64_t n = s.rows * s.cols;
    std::vector<uint16_t> data(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; i += tile) {
      std::memcpy(data.data() + i, base.data(), static_cast<size_t>(std::min(tile, n - i)) * 2);
    }
    nvfp4::TensorView v{"w", nvfp4::DType::kBF16, {s.rows, s.cols}, data.data()};
    nvfp4::TensorView sub{"w", nvfp4::DType::kBF16, {std::min(cpu_rows, s.rows), s.cols}, data.data()};
    for (const auto& [method, mname] : methods) {
      nvfp4::QuantizeOptions o;
      o.method = method;
      Result r;
      std::vector<double> span, wall, kern;
      for (int rep = 0; rep <= reps; ++rep) {
        auto q = gpu->Quantize(v, o);
        if (!q.ok()) {
          std::fprintf(stderr, "%s %s: %s\n", s.label().c_str(), mname, q.status().ToString().c_str());
          return 1;
        }
        auto st = nvfp4::LastCudaRunStats(*gpu);
        if (rep == 0) {  // warm-up
          r.passes = st->passes;
          r.iterations = q->metrics.iterations;
          r.nmse_vs_rtn = q->metrics.nmse_vs_rtn;
          continue;
        }
        span.push_back(st->device_span_ms);
        wall.push_back(st->wall_ms);
        kern.push_back(st->kernel_ms);
      }
      r.span_ms = Median(span);
      r.wall_ms = Median(wall);
      r.kernel_ms = Median(kern);
      // CPU reference on a row subsample, extrapolated per element.
      std::vector<double> cms;
      for (int rep = 0; rep < 2; ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        auto q = cpu->Quantize(sub, o);
        const auto t1 = std::chrono::steady_clock::now();
        if (!q.ok()) return 1;
        cms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      }
      r.cpu_ms = Median(cms) * static_cast<double>(s.rows) / static_cast<double>(sub.shape[0]);
      results[{s.label(), mname}] = r;
      std::fflush(stdout);
    }
  }

  std::printf("\n| shape | method | span ms | wall ms | kernel ms | passes | Gelem/s (span) | kernel GB/s | vs D2D copy | CPU ms (extrap.) | speed-up (wall) | speed-up (span) | nmse vs rtn |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const Shape& s : shapes) {
    const double n = static_cast<double>(s.rows * s.cols);
    for (const auto& [method, mname] : methods) {
      const Result& r = results[{s.label(), mname}];
      const int refine_passes = method == Method::kSoar ? r.passes - 1 : 0;
      // scan read + each pass: read source, write codes (n/2) and scales (n/16); refine passes
      // also read the previous codes and scales.
      const double bytes = n * 2 + r.passes * (n * 2 + n / 2 + n / 16) + refine_passes * (n / 2 + n / 16);
      const double gbs = bytes / (r.span_ms * 1e-3) / 1e9;
      std::printf("| %s | %s | %.3f | %.2f | %.3f | %d | %.1f | %.0f | %.1f%% | %.1f | %.1fx | %.0fx | %.4f |\n",
                  s.label().c_str(), mname, r.span_ms, r.wall_ms, r.kernel_ms, r.passes,
                  n / (r.span_ms * 1e-3) / 1e9, gbs, 100.0 * gbs / copy_gbs, r.cpu_ms,
                  r.cpu_ms / r.wall_ms, r.cpu_ms / r.span_ms, r.nmse_vs_rtn);
    }
  }
  // 8B Llama linear layers: 32 x (q 4096x4096, k/v 1024x4096, o 4096x4096, gate/up 14336x4096,
  // down 4096x14336).
  std::printf("\n| method | 8B linear layers: GPU span s | wall s (PCIe incl.) | CPU s (extrap.) |\n|---|---|---|---|\n");
  for (const auto& [method, mname] : methods) {
    auto get = [&](const char* shape) { return results[{shape, mname}]; };
    const Result q = get("4096x4096"), kv = get("1024x4096"), gu = get("14336x4096"),
                 d = get("4096x14336");
    const double span = 32 * (2 * q.span_ms + 2 * kv.span_ms + 2 * gu.span_ms + d.span_ms) / 1e3;
    const double wall = 32 * (2 * q.wall_ms + 2 * kv.wall_ms + 2 * gu.wall_ms + d.wall_ms) / 1e3;
    const double cpu_s = 32 * (2 * q.cpu_ms + 2 * kv.cpu_ms + 2 * gu.cpu_ms + d.cpu_ms) / 1e3;
    std::printf("| %s | %.3f | %.2f | %.1f |\n", mname, span, wall, cpu_s);
  }
  return 0;
}
