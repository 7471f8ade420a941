// GPTQ's device kernels. The sweep runs gptq_core.h's per-row steps (GptqRowBatch, the block
// core's scale choice) one thread per row, and the lazy update as a tiled fp32 product that keeps
// GptqLazyDelta's order (acc from 0, t ascending, then w - acc; --fmad=false keeps every multiply
// and add separate), so codes and scales equal the host reference's bit for bit.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/block_core.h"
#include "kernels/codec.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/gptq_kernels.h"
#include "kernels/gptq_core.h"
#include "kernels/tensor_prep.h"

namespace nvfp4::cuda {
namespace {

// ---- Scale-choice specialization ------------------------------------------------------------

// The block-scale method as a compile-time parameter (the block core then folds its switches, as
// the block pass kernels do); kSoar = the window search plus CJSO refinement steps.
enum class ScaleKind { kRtn, kFourOverSix, kWindow, kSoar };

// `p` with the fields that select code paths replaced by the constants they were checked to hold
// (SpecializedScaleKernel): the same values, known to the compiler.
template <ScaleKind C, BlockErrorKind S, BlockErrorKind O>
__device__ __forceinline__ GptqScaleParams Specialize(GptqScaleParams p) {
  p.pass.method = C == ScaleKind::kRtn           ? BlockMethod::kRtn
                  : C == ScaleKind::kFourOverSix ? BlockMethod::kFourOverSix
                                                 : BlockMethod::kWindow;
  p.pass.search_kind = S;
  p.pass.decoupled = false;
  p.pass.rtn_metric = false;  // only feeds BlockResult::rtn_sq_err, which the choice ignores
  p.objective_kind = O;
  if constexpr (C == ScaleKind::kSoar) {
    p.refine.method = BlockMethod::kSoarRefine;
    p.refine.search_kind = S;
    p.refine.decoupled = false;
    p.refine.rtn_metric = false;
  } else {
    p.soar_refine_steps = 0;
  }
  return p;
}

// Calls f.template operator()<C, S, O>() for the kernel specialization matching p, or returns
// cudaErrorInvalidValue for a combination the GPTQ flow never builds.
template <typename F>
cudaError_t SpecializedScaleKernel(const GptqScaleParams& p, F&& f) {
  using K = BlockErrorKind;
  if (p.pass.decoupled || p.soar_refine_steps < 0) return cudaErrorInvalidValue;
  if ((p.objective_kind == K::kWeightedSquared && p.importance == nullptr) ||
      (p.objective_kind == K::kHessian && p.hessian == nullptr)) {
    return cudaErrorInvalidValue;
  }
  switch (p.pass.method) {
    case BlockMethod::kRtn:
      if (p.soar_refine_steps != 0 || p.pass.search_kind != K::kSquared ||
          p.objective_kind != K::kSquared) {
        return cudaErrorInvalidValue;
      }
      return f.template operator()<ScaleKind::kRtn, K::kSquared, K::kSquared>();
    case BlockMethod::kFourOverSix:
      if (p.soar_refine_steps != 0 || p.objective_kind != K::kSquared) {
        return cudaErrorInvalidValue;
      }
      switch (p.pass.search_kind) {
        case K::kSquared:
          return f.template operator()<ScaleKind::kFourOverSix, K::kSquared, K::kSquared>();
        case K::kAbs:
          return f.template operator()<ScaleKind::kFourOverSix, K::kAbs, K::kSquared>();
        case K::kMaxAbs:
          return f.template operator()<ScaleKind::kFourOverSix, K::kMaxAbs, K::kSquared>();
        default:
          return cudaErrorInvalidValue;
      }
    case BlockMethod::kWindow: {
      if (p.pass.search_kind != p.objective_kind) return cudaErrorInvalidValue;
      if (p.soar_refine_steps > 0 &&
          (p.refine.method != BlockMethod::kSoarRefine || p.refine.decoupled ||
           p.refine.search_kind != p.objective_kind)) {
        return cudaErrorInvalidValue;
      }
      const bool soar = p.soar_refine_steps > 0;
      switch (p.objective_kind) {
        case K::kSquared:
          return soar ? f.template operator()<ScaleKind::kSoar, K::kSquared, K::kSquared>()
                      : f.template operator()<ScaleKind::kWindow, K::kSquared, K::kSquared>();
        case K::kWeightedSquared:
          return soar ? f.template
                        operator()<ScaleKind::kSoar, K::kWeightedSquared, K::kWeightedSquared>()
                      : f.template
                        operator()<ScaleKind::kWindow, K::kWeightedSquared, K::kWeightedSquared>();
        case K::kHessian:
          return soar ? f.template operator()<ScaleKind::kSoar, K::kHessian, K::kHessian>()
                      : f.template operator()<ScaleKind::kWindow, K::kHessian, K::kHessian>();
        default:
          return cudaErrorInvalidValue;
      }
    }
    case BlockMethod::kSoarRefine:
      return cudaErrorInvalidValue;
  }
  return cudaErrorInvalidValue;
}

// ---- Sweep kernels ---------------------------------------------------------------------------

constexpr int kTile = 32;  // transposes: 32 x 32 tiles, 32 x 8 threads
constexpr int kTileRows = 8;

// wt[p][r] = w[r][perm[p]]: the values in processing order, column-major.
__global__ void TransposeInKernel(const float* __restrict__ w, const int32_t* __restrict__ perm,
                                  int64_t rows, int64_t cols, int64_t ld, float* __restrict__ wt) {
  __shared__ float tile[kTile][kTile + 1];
  const int64_t p0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kTile;
  for (int i = threadIdx.y; i < kTile; i += kTileRows) {
    const int64_t r = r0 + i, p = p0 + threadIdx.x;
    if (r < rows && p < cols) tile[i][threadIdx.x] = w[r * cols + (perm == nullptr ? p : perm[p])];
  }
  __syncthreads();
  for (int i = threadIdx.y; i < kTile; i += kTileRows) {
    const int64_t p = p0 + i, r = r0 + threadIdx.x;
    if (p < cols && r < rows) wt[p * ld + r] = tile[threadIdx.x][i];
  }
}

// out[r][c] = in[c][r] for r < rows, c < n (in: column-major bytes with leading dimension ld).
__global__ void TransposeOutKernel(const uint8_t* __restrict__ in, int64_t ld, int64_t rows,
                                   int64_t n, uint8_t* __restrict__ out) {
  __shared__ uint8_t tile[kTile][kTile + 1];
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kTile;
  for (int i = threadIdx.y; i < kTile; i += kTileRows) {
    const int64_t c = c0 + i, r = r0 + threadIdx.x;
    if (c < n && r < rows) tile[i][threadIdx.x] = in[c * ld + r];
  }
  __syncthreads();
  for (int i = threadIdx.y; i < kTile; i += kTileRows) {
    const int64_t r = r0 + i, c = c0 + threadIdx.x;
    if (r < rows && c < n) out[r * n + c] = tile[threadIdx.x][i];
  }
}

// Static order: every block's scale from the source values, one thread per block (as
// HostGptqSweep before its sweep).
template <ScaleKind C, BlockErrorKind S, BlockErrorKind O>
__global__ void __launch_bounds__(128) StaticScalesKernel(const GptqSweepLaunch a) {
  const int64_t blocks_per_row = a.cols / kBlock;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= blocks_per_row * a.rows) return;
  const int64_t j = idx / a.rows, r = idx % a.rows;  // r fastest: coalesced scale stores
  const float4* src = reinterpret_cast<const float4*>(a.w + r * a.cols + j * kBlock);
  float x[kBlock];
#pragma unroll
  for (int q = 0; q < kBlock / 4; ++q) {
    const float4 v = __ldg(src + q);
    x[4 * q] = v.x;
    x[4 * q + 1] = v.y;
    x[4 * q + 2] = v.z;
    x[4 * q + 3] = v.w;
  }
  a.scales_t[j * a.ld + r] = ChooseGptqBlockScale(x, j, Specialize<C, S, O>(a.scale));
}

// The batch step: one warp-sized CTA of rows, one thread per row, positions [c0, c0 + nb). A
// thread touches its own row only, so there is no barrier; the row's batch values are staged in
// shared memory (interleaved by thread, conflict-free) when they fit, else updated in place.
constexpr int kBatchThreads = 32;     // one warp per CTA: rows / 32 CTAs spread over the SMs
constexpr int kMaxStagedBatch = 256;  // 256 x 32 floats = 32 KB of shared memory

template <ScaleKind C, BlockErrorKind S, BlockErrorKind O>
__global__ void __launch_bounds__(kBatchThreads)
    BatchKernel(const GptqSweepLaunch a, int64_t c0, int nb) {
  extern __shared__ float s_w[];  // [nb][kBatchThreads] when staged
  const int lane = threadIdx.x;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kBatchThreads + lane;
  if (r >= a.rows) return;
  float* col = a.wt + c0 * a.ld + r;
  Strided<float> w{col, a.ld};
  if (nb <= kMaxStagedBatch) {
    for (int i = 0; i < nb; ++i) s_w[i * kBatchThreads + lane] = col[i * a.ld];
    w = {s_w + lane, kBatchThreads};
  }
  // The batch's values are not needed afterwards (their codes are final): no write-back.
  GptqRowBatch(w, a.u + c0 * a.cols + c0, a.cols, nb, c0, a.perm, !a.static_scales, a.g,
               Specialize<C, S, O>(a.scale), {a.codes_t + r, a.ld}, {a.scales_t + r, a.ld},
               {a.err_t + r, a.ld});
}

// The lazy update of positions p >= c0 + nb: wt[p][r] -= sum_t err_t[t][r] * U[c0 + t][p], the
// sum from 0 with t ascending (GptqLazyDelta). A CTA computes a 128 x 128 tile (positions x rows),
// 8 x 8 per thread, stepping t through double-buffered shared-memory slices of 8; each thread's
// accumulators see the products in t order, so the tiling does not change a single rounding.
constexpr int kLazyTile = 128;
constexpr int kLazyDepth = 8;
constexpr int kLazyThreads = 256;

__global__ void __launch_bounds__(kLazyThreads, 2)
    LazyUpdateKernel(const float* __restrict__ u, int64_t cols, const float* __restrict__ err_t,
                     float* __restrict__ wt, int64_t ld, int64_t c0, int nb) {
  __shared__ __align__(16) float s_u[2][kLazyDepth][kLazyTile];
  __shared__ __align__(16) float s_e[2][kLazyDepth][kLazyTile];
  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;  // rows tx*4 (+64), positions ty*4 (+64)
  const int64_t p0 = c0 + nb + static_cast<int64_t>(blockIdx.y) * kLazyTile;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kLazyTile;

  // Loads: one float4 of each operand slice per thread (depth row lt, columns l4..l4+3). cols and
  // p0 are multiples of 16 and ld of 4, so a float4 is either wholly inside or wholly outside.
  const int lt = tid / 32, l4 = (tid % 32) * 4;
  const bool u_in = p0 + l4 < cols;
  const bool e_in = r0 + l4 < ld;
  const float* u_src = u + (c0 + lt) * cols + p0 + l4;
  const float* e_src = err_t + lt * ld + r0 + l4;
  const float4 zero4 = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  float4 ru = u_in ? __ldg(reinterpret_cast<const float4*>(u_src)) : zero4;
  float4 re = e_in ? __ldg(reinterpret_cast<const float4*>(e_src)) : zero4;
  *reinterpret_cast<float4*>(&s_u[0][lt][l4]) = ru;
  *reinterpret_cast<float4*>(&s_e[0][lt][l4]) = re;
  __syncthreads();

  float acc[8][8];
#pragma unroll
  for (int i = 0; i < 8; ++i) {
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j] = 0.0f;
  }
  int buf = 0;
  for (int t0 = 0; t0 < nb; t0 += kLazyDepth) {
    const bool more = t0 + kLazyDepth < nb;
    if (more) {
      const int64_t t = t0 + kLazyDepth;
      ru = u_in ? __ldg(reinterpret_cast<const float4*>(u_src + t * cols)) : zero4;
      re = e_in ? __ldg(reinterpret_cast<const float4*>(e_src + t * ld)) : zero4;
    }
#pragma unroll
    for (int t = 0; t < kLazyDepth; ++t) {
      const float4 a0 = *reinterpret_cast<const float4*>(&s_u[buf][t][ty * 4]);
      const float4 a1 = *reinterpret_cast<const float4*>(&s_u[buf][t][64 + ty * 4]);
      const float4 b0 = *reinterpret_cast<const float4*>(&s_e[buf][t][tx * 4]);
      const float4 b1 = *reinterpret_cast<const float4*>(&s_e[buf][t][64 + tx * 4]);
      const float av[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
      const float bv[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
      for (int i = 0; i < 8; ++i) {
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = acc[i][j] + av[i] * bv[j];
      }
    }
    if (more) {
      // The other buffer was last read before the previous barrier: safe to overwrite.
      *reinterpret_cast<float4*>(&s_u[buf ^ 1][lt][l4]) = ru;
      *reinterpret_cast<float4*>(&s_e[buf ^ 1][lt][l4]) = re;
      __syncthreads();
      buf ^= 1;
    }
  }

#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int64_t p = p0 + (i < 4 ? ty * 4 + i : 64 + ty * 4 + (i - 4));
    if (p >= cols) continue;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t r = r0 + h * 64 + tx * 4;
      if (r >= ld) continue;
      float4* dst = reinterpret_cast<float4*>(wt + p * ld + r);
      float4 v = *dst;
      v.x = v.x - acc[i][4 * h];
      v.y = v.y - acc[i][4 * h + 1];
      v.z = v.z - acc[i][4 * h + 2];
      v.w = v.w - acc[i][4 * h + 3];
      *dst = v;
    }
  }
}

// ---- Factor kernels --------------------------------------------------------------------------

// out[x*k + y] = in[(k-1-y)*k + (k-1-x)] (both the reversal into cuSOLVER's column-major input
// and the reversal of L^-1 into the row-major U are this map). kToFactor: fp32 output, zero
// below the diagonal (y < x), non-finite used entries flagged.
template <bool kToFactor, typename Out>
__global__ void ReverseTransposeKernel(const double* __restrict__ in, int64_t k,
                                       Out* __restrict__ out, int* bad) {
  __shared__ double tile[kTile][kTile + 1];  // [y - y0][x - x0]
  const int64_t x0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t y0 = static_cast<int64_t>(blockIdx.x) * kTile;
  for (int i = threadIdx.y; i < kTile; i += kTileRows) {
    const int64_t y = y0 + i, x = x0 + threadIdx.x;
    if (x < k && y < k) tile[i][threadIdx.x] = in[(k - 1 - y) * k + (k - 1 - x)];
  }
  __syncthreads();
  bool finite = true;
  for (int i = threadIdx.y; i < kTile; i += kTileRows) {
    const int64_t x = x0 + i, y = y0 + threadIdx.x;
    if (x >= k || y >= k) continue;
    const double v = tile[threadIdx.x][i];
    if constexpr (kToFactor) {
      if (y >= x) {
        finite = finite && isfinite(v);
        out[x * k + y] = static_cast<float>(v);
      } else {
        out[x * k + y] = 0.0f;
      }
    } else {
      out[x * k + y] = v;
    }
  }
  if constexpr (kToFactor) {
    if (!finite) *bad = 1;
  }
}

// a[i + j*k] = h[k-1-i][k-1-j] for the h of GptqGram. One thread per element, i fastest: the
// writes are coalesced, one of the two Gram reads is strided (a few ms for the largest k).
__global__ void ReverseGramKernel(const GptqGram g, double damp, double* __restrict__ a) {
  const int64_t k = g.k;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < k * k;
       idx += stride) {
    const int64_t x = k - 1 - idx % k, y = k - 1 - idx / k;  // h[x][y]
    double v;
    if (x == y) {
      v = g.diag[x] + damp;
    } else {
      const int64_t px = g.perm == nullptr ? x : g.perm[x];
      const int64_t py = g.perm == nullptr ? y : g.perm[y];
      v = 0.5 *
          (static_cast<double>(g.gram[px * k + py]) + static_cast<double>(g.gram[py * k + px]));
    }
    a[idx] = v;
  }
}

// ---- Weights and metrics ---------------------------------------------------------------------

// Grid-stride over 16-element blocks: one thread converts one block (64 bytes out).
__global__ void __launch_bounds__(256) ToFloatKernel(const void* __restrict__ src, DType dtype,
                                                     int64_t blocks, float* __restrict__ dst) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; b < blocks;
       b += stride) {
    float x[kBlock];
    LoadBlock(src, dtype, b * kBlock, x);
    float4* out = reinterpret_cast<float4*>(dst + b * kBlock);
#pragma unroll
    for (int i = 0; i < kBlock / 4; ++i) {
      out[i] = make_float4(x[4 * i], x[4 * i + 1], x[4 * i + 2], x[4 * i + 3]);
    }
  }
}

// One warp per row: lane l takes the row's blocks l, l + 32, ...; lane 0 adds the 32 blocks'
// sums of each round in block order (shuffles), so the fp64 row sums are the host's.
constexpr int kMetricThreads = 256;
__global__ void __launch_bounds__(kMetricThreads) RowMetricsKernel(const GptqRowMetricsLaunch a) {
  const int lane = threadIdx.x & 31;
  const int64_t r =
      (static_cast<int64_t>(blockIdx.x) * kMetricThreads + threadIdx.x) / 32;
  if (r >= a.rows) return;  // whole warps leave together
  const int64_t bpr = a.blocks_per_row;
  double s = 0, x2 = 0, rt = 0;
  float ma = 0.0f;
  for (int64_t b0 = 0; b0 < bpr; b0 += 32) {
    const int64_t b = b0 + lane;
    GptqBlockSums bs;
    if (b < bpr) {
      const int64_t blk = r * bpr + b;
      float x[kBlock];
      LoadBlock(a.src, a.dtype, blk * kBlock, x);
      bs = GptqMetricBlock(x, a.packed + blk * (kBlock / 2), a.scales[blk], a.g, a.g_rtn);
    }
    const int count = bpr - b0 < 32 ? static_cast<int>(bpr - b0) : 32;
    for (int j = 0; j < count; ++j) {
      const float sq = __shfl_sync(0xFFFFFFFFu, bs.sq_err, j);
      const float xx = __shfl_sync(0xFFFFFFFFu, bs.x_sq, j);
      const float rr = __shfl_sync(0xFFFFFFFFu, bs.rtn_sq, j);
      const float mm = __shfl_sync(0xFFFFFFFFu, bs.max_err, j);
      s += sq;
      x2 += xx;
      rt += rr;
      ma = fmaxf(ma, mm);
    }
  }
  if (lane == 0) {
    a.sq_err[r] = s;
    a.x_sq[r] = x2;
    a.rtn_sq[r] = rt;
    a.max_err[r] = ma;
  }
}

dim3 TileGrid(int64_t x_extent, int64_t y_extent) {
  return dim3(static_cast<unsigned>((x_extent + kTile - 1) / kTile),
              static_cast<unsigned>((y_extent + kTile - 1) / kTile));
}

bool TileGridFits(int64_t x_extent, int64_t y_extent) {
  return (x_extent + kTile - 1) / kTile <= 0x7FFFFFFF && (y_extent + kTile - 1) / kTile <= 65535;
}

}  // namespace

cudaError_t LaunchGptqSweep(const GptqSweepLaunch& a, cudaStream_t stream) {
  if (a.rows <= 0 || a.cols <= 0 || a.cols % kBlock != 0 || a.ld < a.rows || a.ld % 4 != 0 ||
      a.block_size < kBlock || a.block_size % kBlock != 0 || a.w == nullptr || a.u == nullptr ||
      a.wt == nullptr || a.err_t == nullptr || a.codes_t == nullptr || a.scales_t == nullptr ||
      a.codes == nullptr || a.scales == nullptr || !TileGridFits(a.cols, a.rows) ||
      (a.rows + kBatchThreads - 1) / kBatchThreads > 0x7FFFFFFF ||
      (a.ld + kLazyTile - 1) / kLazyTile > 0x7FFFFFFF ||
      (a.cols + kLazyTile - 1) / kLazyTile > 65535) {
    return cudaErrorInvalidValue;
  }
  // Padded rows [rows, ld) are never swept; zero them so the lazy update reads defined values.
  if (a.ld != a.rows) {
    const cudaError_t e = cudaMemsetAsync(a.wt, 0, a.cols * a.ld * sizeof(float), stream);
    if (e != cudaSuccess) return e;
  }
  const cudaError_t cleared =
      cudaMemsetAsync(a.err_t, 0, a.block_size * a.ld * sizeof(float), stream);
  if (cleared != cudaSuccess) return cleared;
  TransposeInKernel<<<TileGrid(a.cols, a.rows), dim3(kTile, kTileRows), 0, stream>>>(
      a.w, a.perm, a.rows, a.cols, a.ld, a.wt);
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  return SpecializedScaleKernel(
      a.scale, [&]<ScaleKind C, BlockErrorKind S, BlockErrorKind O>() -> cudaError_t {
        if (a.static_scales) {
          const int64_t blocks = a.rows * (a.cols / kBlock);
          StaticScalesKernel<C, S, O>
              <<<static_cast<unsigned>((blocks + 127) / 128), 128, 0, stream>>>(a);
          if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
        }
        const unsigned row_ctas =
            static_cast<unsigned>((a.rows + kBatchThreads - 1) / kBatchThreads);
        for (int64_t c0 = 0; c0 < a.cols; c0 += a.block_size) {
          const int nb = static_cast<int>(a.block_size < a.cols - c0 ? a.block_size : a.cols - c0);
          const size_t smem =
              nb <= kMaxStagedBatch ? static_cast<size_t>(nb) * kBatchThreads * sizeof(float) : 0;
          BatchKernel<C, S, O><<<row_ctas, kBatchThreads, smem, stream>>>(a, c0, nb);
          if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
          const int64_t rest = c0 + nb;
          if (rest >= a.cols) break;
          const dim3 grid(static_cast<unsigned>((a.ld + kLazyTile - 1) / kLazyTile),
                          static_cast<unsigned>((a.cols - rest + kLazyTile - 1) / kLazyTile));
          LazyUpdateKernel<<<grid, kLazyThreads, 0, stream>>>(a.u, a.cols, a.err_t, a.wt, a.ld, c0,
                                                              nb);
          if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
        }
        TransposeOutKernel<<<TileGrid(a.cols, a.rows), dim3(kTile, kTileRows), 0, stream>>>(
            a.codes_t, a.ld, a.rows, a.cols, a.codes);
        if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
        TransposeOutKernel<<<TileGrid(a.cols / kBlock, a.rows), dim3(kTile, kTileRows), 0,
                             stream>>>(a.scales_t, a.ld, a.rows, a.cols / kBlock, a.scales);
        return cudaGetLastError();
      });
}

cudaError_t LaunchGptqToFloat(const void* src, DType dtype, int64_t elements, float* dst,
                              cudaStream_t stream) {
  if (src == nullptr || dst == nullptr || elements < 0 || elements % kBlock != 0) {
    return cudaErrorInvalidValue;
  }
  const int64_t blocks = elements / kBlock;
  if (blocks == 0) return cudaSuccess;
  const int64_t cap = static_cast<int64_t>(SmCount()) * 16;  // grid-stride beyond
  const int64_t ctas = (blocks + 255) / 256;
  ToFloatKernel<<<static_cast<unsigned>(ctas < cap ? ctas : cap), 256, 0, stream>>>(
      src, dtype, blocks, dst);
  return cudaGetLastError();
}

cudaError_t LaunchGptqRowMetrics(const GptqRowMetricsLaunch& a, cudaStream_t stream) {
  if (a.src == nullptr || a.packed == nullptr || a.scales == nullptr || a.sq_err == nullptr ||
      a.x_sq == nullptr || a.rtn_sq == nullptr || a.max_err == nullptr || a.rows < 0 ||
      a.blocks_per_row <= 0) {
    return cudaErrorInvalidValue;
  }
  if (a.rows == 0) return cudaSuccess;
  constexpr int64_t kRowsPerCta = kMetricThreads / 32;
  const int64_t ctas = (a.rows + kRowsPerCta - 1) / kRowsPerCta;
  if (ctas > 0x7FFFFFFF) return cudaErrorInvalidValue;
  RowMetricsKernel<<<static_cast<unsigned>(ctas), kMetricThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

cudaError_t LaunchGptqReverse(const double* h, int64_t k, double* a, cudaStream_t stream) {
  if (h == nullptr || a == nullptr || k <= 0 || !TileGridFits(k, k)) return cudaErrorInvalidValue;
  ReverseTransposeKernel<false, double>
      <<<TileGrid(k, k), dim3(kTile, kTileRows), 0, stream>>>(h, k, a, nullptr);
  return cudaGetLastError();
}

cudaError_t LaunchGptqReverseGram(const GptqGram& gram, double damp, double* a,
                                  cudaStream_t stream) {
  if (gram.gram == nullptr || gram.diag == nullptr || a == nullptr || gram.k <= 0) {
    return cudaErrorInvalidValue;
  }
  constexpr int kThreads = 256;
  const int64_t ctas = (gram.k * gram.k + kThreads - 1) / kThreads;
  const int64_t cap = static_cast<int64_t>(SmCount()) * 32;
  ReverseGramKernel<<<static_cast<unsigned>(ctas < cap ? ctas : cap), kThreads, 0,
                      stream>>>(gram, damp, a);
  return cudaGetLastError();
}

cudaError_t LaunchGptqFactorOut(const double* m, int64_t k, float* u, int* bad,
                                cudaStream_t stream) {
  if (m == nullptr || u == nullptr || bad == nullptr || k <= 0 || !TileGridFits(k, k)) {
    return cudaErrorInvalidValue;
  }
  ReverseTransposeKernel<true, float>
      <<<TileGrid(k, k), dim3(kTile, kTileRows), 0, stream>>>(m, k, u, bad);
  return cudaGetLastError();
}

}  // namespace nvfp4::cuda
