// CPU backend throughput per method on bf16 Llama-shaped tensors (issue 2's benchmark).
//
//   build/bench/nvfp4_cpu_bench [--shapes 4096x4096,4096x14336] [--reps N] [--threads T]
//
// Prints one row per (shape, method): seconds (best of reps), input GB/s (bf16 bytes read),
// elements/s, nmse vs rtn. Figures quoted in docs/BENCHMARKS.md come from this program.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/testing/synthetic.h"

namespace {

struct Shape {
  int64_t rows, cols;
};

std::vector<Shape> ParseShapes(const std::string& s) {
  std::vector<Shape> out;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t comma = s.find(',', pos);
    if (comma == std::string::npos) comma = s.size();
    const std::string item = s.substr(pos, comma - pos);
    const size_t x = item.find('x');
    out.push_back({std::stoll(item.substr(0, x)), std::stoll(item.substr(x + 1))});
    pos = comma + 1;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string shapes = "4096x4096,4096x14336";
  int reps = 3, threads = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* flag) -> const char* {
      const size_t n = std::strlen(flag);
      if (a.compare(0, n, flag) == 0 && a.size() > n && a[n] == '=') return argv[i] + n + 1;
      if (a == flag && i + 1 < argc) return argv[++i];
      return nullptr;
    };
    if (const char* v = value("--shapes")) shapes = v;
    else if (const char* v = value("--reps")) reps = std::atoi(v);
    else if (const char* v = value("--threads")) threads = std::atoi(v);
    else {
      std::fprintf(stderr, "usage: %s [--shapes RxC,...] [--reps N] [--threads T]\n", argv[0]);
      return a == "--help" ? 0 : 2;
    }
  }
  nvfp4::CpuBackend backend(threads);
  std::printf("# nvfp4 CPU backend benchmark: %d threads (hardware: %u)\n", backend.threads(),
              std::thread::hardware_concurrency());
  std::printf("%-12s %-11s %10s %10s %12s %10s %5s\n", "shape", "method", "seconds", "in_GB/s",
              "elements/s", "vs_rtn", "iters");
  for (const Shape& s : ParseShapes(shapes)) {
    const auto values = nvfp4::testing::Sample(nvfp4::testing::Distribution::kGaussian,
                                                s.rows * s.cols, 42);
    const auto bf16 = nvfp4::testing::ToBf16(values);
    nvfp4::TensorView view{"w", nvfp4::DType::kBF16, {s.rows, s.cols}, bf16.data()};
    for (nvfp4::Method m : {nvfp4::Method::kRtn, nvfp4::Method::kFourOverSix,
                            nvfp4::Method::kScaleSweep, nvfp4::Method::kSoar}) {
      nvfp4::QuantizeOptions opt;
      opt.method = m;
      double best = 1e30;
      nvfp4::TensorMetrics metrics;
      for (int r = 0; r < reps; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        auto q = backend.Quantize(view, opt);
        const double sec =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (!q.ok()) {
          std::fprintf(stderr, "%s\n", q.status().ToString().c_str());
          return 1;
        }
        metrics = q->metrics;
        best = std::min(best, sec);
      }
      const double elems = static_cast<double>(s.rows * s.cols);
      char shape[32];
      std::snprintf(shape, sizeof(shape), "%lldx%lld", static_cast<long long>(s.rows),
                    static_cast<long long>(s.cols));
      std::printf("%-12s %-11s %10.4f %10.3f %12.3e %10.4f %5d\n", shape,
                  std::string(nvfp4::MethodName(m)).c_str(), best, elems * 2 / best / 1e9,
                  elems / best, metrics.nmse_vs_rtn, metrics.iterations);
      std::fflush(stdout);
    }
  }
  return 0;
}
