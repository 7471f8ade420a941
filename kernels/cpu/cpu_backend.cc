#include "kernels/cpu/cpu_backend.h"

#include <algorithm>
#include <atomic>
#include <cmath>

#include "base/status_macros.h"
#include "kernels/gptq.h"
#include "kernels/parallel.h"
#include "kernels/quantize_driver.h"
#include "kernels/reduce.h"
#include "kernels/tensor_prep.h"

namespace nvfp4 {
namespace {

class CpuExecutor : public PassExecutor {
 public:
  CpuExecutor(std::span<const PreparedTensor> tensors, int threads)
      : PassExecutor(tensors), threads_(threads), slots_(tensors.size()) {}

  absl::StatusOr<TensorScan> Scan(int i) override {
    const PreparedTensor& t = tensors_[i];
    const int64_t blocks = t.matrix.blocks();
    const int64_t chunks = (blocks + kReduceChunk - 1) / kReduceChunk;
    std::vector<TensorScan> partial(chunks);
    HostParallelFor(chunks, threads_, [&](int64_t c) {
      TensorScan s;
      const int64_t end = std::min(blocks, (c + 1) * kReduceChunk);
      float x[kBlock];
      for (int64_t b = c * kReduceChunk; b < end; ++b) {
        LoadBlock(t.view->data, t.view->dtype, b * kBlock, x);
        for (int e = 0; e < kBlock; ++e) {
          if (!std::isfinite(x[e])) {
            if (s.first_non_finite < 0) {
              s.first_non_finite = b * kBlock + e;
              s.non_finite_value = x[e];
            }
          } else {
            s.amax = std::fmax(s.amax, std::fabs(x[e]));
          }
        }
        if (s.first_non_finite >= 0) break;
      }
      partial[c] = s;
    });
    TensorScan total;
    for (const TensorScan& s : partial) {
      if (s.first_non_finite >= 0) return s;  // chunks are in order: the first bad one wins
      total.amax = std::fmax(total.amax, s.amax);
    }
    return total;
  }

  absl::StatusOr<PassTotals> RunPass(int i, const BlockPassParams& params, int src,
                                     int dst) override {
    const PreparedTensor& t = tensors_[i];
    const int64_t blocks = t.matrix.blocks();
    const int64_t blocks_per_row = t.matrix.cols / kBlock;
    const int64_t chunks = (blocks + kReduceChunk - 1) / kReduceChunk;
    Slot& out = slots_[i][dst];
    out.packed.resize(static_cast<size_t>(blocks * 8));
    out.scales.resize(static_cast<size_t>(blocks));
    const Slot& prev = slots_[i][src];
    constexpr int kSums = 6;
    std::vector<double> chunk_sums(static_cast<size_t>(chunks * kSums));
    std::vector<float> chunk_max(chunks);
    HostParallelFor(chunks, threads_, [&](int64_t c) {
      double acc[kSums][kReduceChunk] = {};
      float max_abs = 0.0f;
      const int64_t begin = c * kReduceChunk;
      const int64_t end = std::min(blocks, begin + kReduceChunk);
      float x[kBlock];
      BlockResult r;
      for (int64_t b = begin; b < end; ++b) {
        LoadBlock(t.view->data, t.view->dtype, b * kBlock, x);
        const bool refine = params.method == BlockMethod::kSoarRefine;
        QuantizeBlock(x, params, t.objective.ForBlockColumn(b % blocks_per_row),
                      refine ? prev.packed.data() + b * 8 : nullptr,
                      refine ? prev.scales[b] : kE4M3One, &r);
        std::copy(r.packed, r.packed + 8, out.packed.begin() + b * 8);
        out.scales[b] = r.scale;
        const int64_t k = b - begin;
        acc[0][k] = r.obj_err;
        acc[1][k] = r.sq_err;
        acc[2][k] = r.rtn_sq_err;
        acc[3][k] = r.x_sq;
        acc[4][k] = r.s1;
        acc[5][k] = r.s2;
        max_abs = std::fmax(max_abs, r.max_abs_err);
      }
      for (int q = 0; q < kSums; ++q) chunk_sums[c * kSums + q] = TreeReduceChunk(acc[q]);
      chunk_max[c] = max_abs;
    });
    double totals[kSums];
    for (int q = 0; q < kSums; ++q) {
      std::vector<double> level(chunks);
      for (int64_t c = 0; c < chunks; ++c) level[c] = chunk_sums[c * kSums + q];
      totals[q] = ReduceChunkSums(std::move(level));
    }
    PassTotals p;
    p.obj_err = totals[0];
    p.sq_err = totals[1];
    p.rtn_sq_err = totals[2];
    p.x_sq = totals[3];
    p.s1 = totals[4];
    p.s2 = totals[5];
    for (float m : chunk_max) p.max_abs_err = std::fmax(p.max_abs_err, m);
    return p;
  }

  absl::Status Fetch(int i, int slot, QuantizedTensor* out) override {
    Slot& s = slots_[i][slot];
    out->packed = std::move(s.packed);
    out->scales = std::move(s.scales);
    return absl::OkStatus();
  }

 private:
  struct Slot {
    std::vector<uint8_t> packed;
    std::vector<uint8_t> scales;
  };
  int threads_;
  std::vector<std::array<Slot, 2>> slots_;
};

}  // namespace

CpuBackend::CpuBackend(int threads)
    : threads_(threads > 0 ? threads
                           : HostThreadCount()) {}

absl::StatusOr<std::vector<QuantizedTensor>> CpuBackend::QuantizeGroup(
    std::span<const TensorView> tensors, const QuantizeOptions& options,
    std::span<const Calibration* const> calibration) {
  const int threads = threads_;
  if (options.method == Method::kGptq) {
    HostGptqDevice device(threads);
    return RunGptqGroup(tensors, options, calibration, device,
                        [this](std::span<const TensorView> t, const QuantizeOptions& o,
                               std::span<const Calibration* const> c) {
                          return QuantizeGroup(t, o, c);
                        });
  }
  return RunQuantizeGroup(
      tensors, options, calibration,
      [threads](std::span<const PreparedTensor> prepared)
          -> absl::StatusOr<std::unique_ptr<PassExecutor>> {
        return std::make_unique<CpuExecutor>(prepared, threads);
      });
}

std::unique_ptr<QuantizerBackend> MakeCpuBackend(int threads) {
  return std::make_unique<CpuBackend>(threads);
}

}  // namespace nvfp4
