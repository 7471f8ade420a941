// GPTQ (method gptq, default options: soar block scales, natural order, block size 128, cjso
// global scale, dampening 0.01) over the linear layers of an 8B Llama (docs/BENCHMARKS.md,
// "GPTQ"). Per layer: q/k/v fused [6144, 4096] and o_proj [4096, 4096] and gate/up fused
// [28672, 4096] with a K=4096 input Gram, down_proj [4096, 14336] with a K=14336 Gram. Synthetic
// bf16 weights and synthetic positive definite Grams, generated once and reused by every layer.
//
//   nvfp4_gptq_bench [--layers N] [--device cuda|cuda:N|cpu] [--objective mse|hessian|both]
//                    [--shape 8b|small]
//
// Per layer kind and in total: GPU time (CUDA events on the default stream around each
// QuantizeGroup call, which returns with its work done: the call's whole span, host work and
// PCIe copies included), wall time, and the CUDA backend's breakdown (LastCudaRunStats: factor,
// sweep, the sweep's kernels, output metric; the rest is host work: weights to fp32, the cjso
// global scale's soar run, metrics). --device cpu times the CPU backend (wall time only);
// --shape small divides every dimension by 8 (for a small machine).
#if NVFP4_GPTQ_BENCH_CUDA
#include <cuda_runtime_api.h>
#endif

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "kernels/backend.h"
#include "kernels/gptq.h"
#include "kernels/testing/synthetic.h"
#if NVFP4_GPTQ_BENCH_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace {

using nvfp4::testing::Distribution;

struct ModelShape {
  int64_t hidden, q, kv, intermediate;
};

// One bf16 weight, generated once.
struct Weight {
  std::string name;
  int64_t rows = 0, cols = 0;
  std::vector<uint16_t> bf16;
  nvfp4::TensorView view() const { return {name, nvfp4::DType::kBF16, {rows, cols}, bf16.data()}; }
};

// A layer's fused group: its weights (indices into the weight list) and its input Gram.
struct Kind {
  std::string name;
  std::vector<int> weights;
  const nvfp4::Calibration* gram = nullptr;
};

int Threads() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

Weight MakeWeight(std::string name, int64_t rows, int64_t cols, uint64_t seed) {
  Weight w;
  w.name = std::move(name);
  w.rows = rows;
  w.cols = cols;
  w.bf16.resize(static_cast<size_t>(rows * cols));
  // Row chunks in parallel, each from its own seed.
  constexpr int64_t kChunkRows = 256;
  nvfp4::HostParallelFor((rows + kChunkRows - 1) / kChunkRows, Threads(), [&](int64_t c) {
    const int64_t r0 = c * kChunkRows, n = std::min(kChunkRows, rows - r0);
    const std::vector<uint16_t> v = nvfp4::testing::ToBf16(
        nvfp4::testing::Sample(Distribution::kGaussian, n * cols, seed * 100003 + c));
    std::copy(v.begin(), v.end(), w.bf16.begin() + r0 * cols);
  });
  return w;
}

// A positive definite Gram like that of real activations: channel scales s (log-normal, every
// 97th channel 4x louder) on a Kac-Murdock-Szego correlation 0.8^|i-j| (positive definite),
// plus a positive semidefinite rank-8 term: G = S (K + V V^T / 16) S.
nvfp4::Calibration MakeGram(int64_t k, uint64_t seed) {
  const std::vector<float> z = nvfp4::testing::Sample(Distribution::kGaussian, k * 9, seed);
  std::vector<double> s(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i) s[i] = std::exp(0.5 * z[i]) * (i % 97 == 0 ? 4.0 : 1.0);
  constexpr int kRank = 8;
  const float* v = z.data() + k;  // [kRank][k]
  nvfp4::Calibration c;
  c.gram.resize(static_cast<size_t>(k * k));
  const double log_rho = std::log(0.8);
  nvfp4::HostParallelFor(k, Threads(), [&](int64_t i) {
    for (int64_t j = 0; j < k; ++j) {
      double low_rank = 0;
      for (int t = 0; t < kRank; ++t) low_rank += static_cast<double>(v[t * k + i]) * v[t * k + j];
      const double corr = std::exp(log_rho * static_cast<double>(std::llabs(i - j)));
      c.gram[i * k + j] = static_cast<float>(s[i] * s[j] * (corr + low_rank / 16.0));
    }
  });
  return c;
}

struct Totals {
  int groups = 0;
  double span_ms = 0, wall_ms = 0, factor_ms = 0, sweep_ms = 0, sweep_kernel_ms = 0, output_ms = 0;
  double output_nmse = 0, nmse_vs_rtn = 0;  // sums over tensors
  int tensors = 0;
  void Add(const Totals& o) {
    groups += o.groups;
    span_ms += o.span_ms;
    wall_ms += o.wall_ms;
    factor_ms += o.factor_ms;
    sweep_ms += o.sweep_ms;
    sweep_kernel_ms += o.sweep_kernel_ms;
    output_ms += o.output_ms;
    output_nmse += o.output_nmse;
    nmse_vs_rtn += o.nmse_vs_rtn;
    tensors += o.tensors;
  }
};

int Usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--layers N] [--device cuda|cuda:N|cpu] [--objective mse|hessian|both] "
               "[--shape 8b|small]\n",
               argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  int layers = 32;
  std::string device = "cuda";
  std::string objective = "both";
  std::string shape = "8b";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--layers" && i + 1 < argc) {
      layers = std::atoi(argv[++i]);
    } else if (a == "--device" && i + 1 < argc) {
      device = argv[++i];
    } else if (a == "--objective" && i + 1 < argc) {
      objective = argv[++i];
    } else if (a == "--shape" && i + 1 < argc) {
      shape = argv[++i];
    } else {
      return Usage(argv[0]);
    }
  }
  if (layers < 1 || (shape != "8b" && shape != "small") ||
      (objective != "mse" && objective != "hessian" && objective != "both")) {
    return Usage(argv[0]);
  }
  const bool gpu = device != "cpu";
#if !NVFP4_GPTQ_BENCH_CUDA
  if (gpu) {
    std::fprintf(stderr, "built without CUDA: use --device cpu\n");
    return 1;
  }
#endif
  auto backend_or = nvfp4::MakeBackend(device);
  if (!backend_or.ok()) {
    std::fprintf(stderr, "%s\n", backend_or.status().ToString().c_str());
    return 1;
  }
  std::unique_ptr<nvfp4::QuantizerBackend> backend = std::move(*backend_or);
  const std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof(date), "%Y-%m-%d", std::gmtime(&now));
  std::printf("nvfp4_gptq_bench: backend %s, %s shapes, %d layer(s), %s (UTC), %d host threads\n",
              backend->name().c_str(), shape.c_str(), layers, date, Threads());
#if NVFP4_GPTQ_BENCH_CUDA
  cudaEvent_t start = nullptr, stop = nullptr;
  if (gpu) {
    const int ordinal = device.size() > 5 ? std::atoi(device.c_str() + 5) : 0;
    cudaDeviceProp prop;
    if (cudaSetDevice(ordinal) != cudaSuccess ||
        cudaGetDeviceProperties(&prop, ordinal) != cudaSuccess ||
        cudaEventCreate(&start) != cudaSuccess || cudaEventCreate(&stop) != cudaSuccess) {
      std::fprintf(stderr, "CUDA setup failed\n");
      return 1;
    }
    std::printf("GPU: %s, %d SMs, %.1f GiB; cuSOLVER %s, cuBLAS %s\n", prop.name,
                prop.multiProcessorCount, prop.totalGlobalMem / 1073741824.0,
                nvfp4::CudaCusolverAvailable() ? "loaded" : "MISSING (host factor)",
                nvfp4::CudaCublasAvailable() ? "loaded" : "MISSING (host output metric)");
  }
#endif

  const ModelShape m =
      shape == "8b" ? ModelShape{4096, 4096, 1024, 14336} : ModelShape{512, 512, 128, 1792};
  const auto t_gen = std::chrono::steady_clock::now();
  std::vector<Weight> w;
  w.push_back(MakeWeight("q_proj", m.q, m.hidden, 1));
  w.push_back(MakeWeight("k_proj", m.kv, m.hidden, 2));
  w.push_back(MakeWeight("v_proj", m.kv, m.hidden, 3));
  w.push_back(MakeWeight("o_proj", m.hidden, m.q, 4));
  w.push_back(MakeWeight("gate_proj", m.intermediate, m.hidden, 5));
  w.push_back(MakeWeight("up_proj", m.intermediate, m.hidden, 6));
  w.push_back(MakeWeight("down_proj", m.hidden, m.intermediate, 7));
  const nvfp4::Calibration gram_hidden = MakeGram(m.hidden, 11);
  const nvfp4::Calibration gram_inter = MakeGram(m.intermediate, 12);
  const std::vector<Kind> kinds = {{"qkv", {0, 1, 2}, &gram_hidden},
                                   {"o_proj", {3}, &gram_hidden},
                                   {"gate_up", {4, 5}, &gram_hidden},
                                   {"down_proj", {6}, &gram_inter}};
  std::printf("synthetic weights and Grams: %.1f s\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t_gen).count());

  std::vector<nvfp4::Objective> objectives;
  if (objective != "hessian") objectives.push_back(nvfp4::Objective::kMse);
  if (objective != "mse") objectives.push_back(nvfp4::Objective::kHessian);

  for (nvfp4::Objective obj : objectives) {
    nvfp4::QuantizeOptions o;
    o.method = nvfp4::Method::kGptq;
    o.objective = obj;
    std::map<std::string, Totals> per_kind;
    // Runs one group; false on error (printed).
    auto run = [&](const Kind& kind, int64_t row_limit, Totals* t) {
      std::vector<nvfp4::TensorView> views;
      std::vector<const nvfp4::Calibration*> cals;
      for (int i : kind.weights) {
        nvfp4::TensorView v = w[i].view();
        v.shape[0] = std::min(v.shape[0], row_limit);
        views.push_back(v);
        cals.push_back(kind.gram);
      }
#if NVFP4_GPTQ_BENCH_CUDA
      if (gpu) cudaEventRecord(start, nullptr);
#endif
      const auto t0 = std::chrono::steady_clock::now();
      auto q = backend->QuantizeGroup(views, o, cals);
      const auto t1 = std::chrono::steady_clock::now();
      if (!q.ok()) {
        std::fprintf(stderr, "%s: %s\n", kind.name.c_str(), q.status().ToString().c_str());
        return false;
      }
      t->groups = 1;
      t->wall_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
      t->span_ms = t->wall_ms;
#if NVFP4_GPTQ_BENCH_CUDA
      if (gpu) {
        cudaEventRecord(stop, nullptr);
        cudaEventSynchronize(stop);
        float ms = 0;
        cudaEventElapsedTime(&ms, start, stop);
        t->span_ms = ms;
        auto st = nvfp4::LastCudaRunStats(*backend);
        if (st.ok()) {
          t->factor_ms = st->gptq_factor_ms;
          t->sweep_ms = st->gptq_sweep_ms;
          t->sweep_kernel_ms = st->gptq_sweep_kernel_ms;
          t->output_ms = st->gptq_output_nmse_ms;
        }
      }
#endif
      for (const nvfp4::QuantizedTensor& qt : *q) {
        t->output_nmse += qt.metrics.output_nmse.value_or(0.0);
        t->nmse_vs_rtn += qt.metrics.nmse_vs_rtn;
        ++t->tensors;
      }
      return true;
    };
    // Warm-up (not counted): handles, kernel loading, workspace growth at both K.
    for (const Kind& kind : {kinds[0], kinds[3]}) {
      Totals ignored;
      if (!run(kind, 256, &ignored)) return 1;
    }
    std::printf("\nobjective %s:\n", std::string(nvfp4::ObjectiveName(obj)).c_str());
    for (int layer = 0; layer < layers; ++layer) {
      Totals layer_total;
      std::printf("  layer %2d:", layer);
      for (const Kind& kind : kinds) {
        Totals t;
        if (!run(kind, INT64_MAX, &t)) return 1;
        per_kind[kind.name].Add(t);
        layer_total.Add(t);
        std::printf(" %s %.3f", kind.name.c_str(), t.span_ms / 1e3);
      }
      std::printf(" = %.3f s (wall %.3f s)\n", layer_total.span_ms / 1e3,
                  layer_total.wall_ms / 1e3);
      std::fflush(stdout);
    }
    // CPU: the span is the wall time and the CUDA breakdown columns stay 0.
    std::printf(
        "\n| layer kind | shape (rows x K) | groups | %s s | per layer ms | wall s | factor s "
        "| sweep s (kernels) | output metric s | mean output nmse | mean nmse vs rtn |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n",
        gpu ? "GPU span" : "span");
    Totals all;
    for (const Kind& kind : kinds) {
      const Totals& t = per_kind[kind.name];
      int64_t rows = 0;
      for (int i : kind.weights) rows += w[i].rows;
      std::printf(
          "| %s | %lld x %lld | %d | %.2f | %.1f | %.2f | %.2f | %.2f (%.2f) | %.2f | %.4g | "
          "%.4f |\n",
          kind.name.c_str(), static_cast<long long>(rows),
          static_cast<long long>(w[kind.weights[0]].cols), t.groups, t.span_ms / 1e3,
          t.span_ms / layers, t.wall_ms / 1e3, t.factor_ms / 1e3, t.sweep_ms / 1e3,
          t.sweep_kernel_ms / 1e3, t.output_ms / 1e3, t.output_nmse / t.tensors,
          t.nmse_vs_rtn / t.tensors);
      all.Add(t);
    }
    std::printf(
        "| **all** | | %d | **%.2f** | %.1f | %.2f | %.2f | %.2f (%.2f) | %.2f | %.4g | %.4f |\n",
        all.groups, all.span_ms / 1e3, all.span_ms / layers, all.wall_ms / 1e3, all.factor_ms / 1e3,
        all.sweep_ms / 1e3, all.sweep_kernel_ms / 1e3, all.output_ms / 1e3,
        all.output_nmse / all.tensors, all.nmse_vs_rtn / all.tensors);
    std::fflush(stdout);
  }
  return 0;
}
