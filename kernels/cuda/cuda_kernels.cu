// The CUDA backend's kernels. The block pass runs the shared host/device core
// (kernels/block_core.h: QuantizeBlock) per block and reduces the per-block values with exactly the
// canonical tree of kernels/reduce.h, so its bytes and sums equal the CPU reference's bit for bit.
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "kernels/block_core.h"
#include "kernels/codec.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/reduce.h"
#include "kernels/tensor_prep.h"

namespace nvfp4::cuda {
namespace {

static_assert(kReduceChunk == 4 * kPassThreads, "a CTA covers one reduction chunk, 4 blocks a thread");

constexpr unsigned kFull = 0xFFFFFFFFu;

// ---- Source loading (16 elements = one block; vector loads, same values as LoadBlock) ---------

template <DType D>
struct Raw;
template <>
struct Raw<DType::kBF16> {
  uint4 a, b;
};
template <>
struct Raw<DType::kF16> {
  uint4 a, b;
};
template <>
struct Raw<DType::kF32> {
  uint4 a, b, c, d;
};

template <DType D>
__device__ __forceinline__ void LoadRaw(const void* src, int64_t block, Raw<D>& r) {
  if constexpr (D == DType::kF32) {
    const uint4* p = static_cast<const uint4*>(src) + block * 4;
    r.a = __ldg(p);
    r.b = __ldg(p + 1);
    r.c = __ldg(p + 2);
    r.d = __ldg(p + 3);
  } else {
    const uint4* p = static_cast<const uint4*>(src) + block * 2;
    r.a = __ldg(p);
    r.b = __ldg(p + 1);
  }
}

template <DType D>
__device__ __forceinline__ float Half(uint32_t h) {
  if constexpr (D == DType::kBF16) {
    return Bf16ToFloat(static_cast<uint16_t>(h));
  } else {
    return F16ToFloat(static_cast<uint16_t>(h));
  }
}

template <DType D>
__device__ __forceinline__ void ToFloat(const Raw<D>& r, float* x) {
  if constexpr (D == DType::kF32) {
    const uint32_t w[16] = {r.a.x, r.a.y, r.a.z, r.a.w, r.b.x, r.b.y, r.b.z, r.b.w,
                            r.c.x, r.c.y, r.c.z, r.c.w, r.d.x, r.d.y, r.d.z, r.d.w};
#pragma unroll
    for (int i = 0; i < 16; ++i) x[i] = __uint_as_float(w[i]);
  } else {
    const uint32_t w[8] = {r.a.x, r.a.y, r.a.z, r.a.w, r.b.x, r.b.y, r.b.z, r.b.w};
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      x[2 * i] = Half<D>(w[i] & 0xFFFFu);  // little-endian: element 2i in the low half
      x[2 * i + 1] = Half<D>(w[i] >> 16);
    }
  }
}

// ---- Scan: max |x| over finite elements and the first non-finite flat index -----------------

template <DType D>
__device__ __forceinline__ void ScanWord(uint32_t h, int64_t index, uint32_t& max_abs,
                                         unsigned long long& bad) {
  // Works on the source bits: for finite values |x| orders like its bits (sign cleared).
  constexpr uint32_t kAbs = D == DType::kF32 ? 0x7FFFFFFFu : 0x7FFFu;
  constexpr uint32_t kExp = D == DType::kF32 ? 0x7F800000u : (D == DType::kBF16 ? 0x7F80u : 0x7C00u);
  if ((h & kExp) == kExp) {
    if (static_cast<unsigned long long>(index) < bad) bad = static_cast<unsigned long long>(index);
  } else {
    const uint32_t a = h & kAbs;
    max_abs = a > max_abs ? a : max_abs;
  }
}

template <DType D>
__global__ void __launch_bounds__(256) ScanKernel(const void* __restrict__ src, int64_t blocks,
                                                  int64_t first_element, ScanState* s) {
  uint32_t max_abs = 0;
  unsigned long long bad = ~0ull;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; b < blocks;
       b += stride) {
    Raw<D> r;
    LoadRaw<D>(src, b, r);
    const int64_t base = first_element + b * 16;
    if constexpr (D == DType::kF32) {
      const uint32_t w[16] = {r.a.x, r.a.y, r.a.z, r.a.w, r.b.x, r.b.y, r.b.z, r.b.w,
                              r.c.x, r.c.y, r.c.z, r.c.w, r.d.x, r.d.y, r.d.z, r.d.w};
#pragma unroll
      for (int i = 0; i < 16; ++i) ScanWord<D>(w[i], base + i, max_abs, bad);
    } else {
      const uint32_t w[8] = {r.a.x, r.a.y, r.a.z, r.a.w, r.b.x, r.b.y, r.b.z, r.b.w};
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        ScanWord<D>(w[i] & 0xFFFFu, base + 2 * i, max_abs, bad);
        ScanWord<D>(w[i] >> 16, base + 2 * i + 1, max_abs, bad);
      }
    }
  }
  // Source bits -> fp32 bits of |x| (exact conversions, monotonic).
  uint32_t fbits;
  if constexpr (D == DType::kF32) {
    fbits = max_abs;
  } else if constexpr (D == DType::kBF16) {
    fbits = max_abs << 16;
  } else {
    fbits = __float_as_uint(F16ToFloat(static_cast<uint16_t>(max_abs)));
  }
  fbits = __reduce_max_sync(kFull, fbits);
  for (int off = 16; off >= 1; off >>= 1) {
    const unsigned long long o = __shfl_down_sync(kFull, bad, off);
    bad = o < bad ? o : bad;
  }
  __shared__ uint32_t s_max[8];
  __shared__ unsigned long long s_bad[8];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) {
    s_max[warp] = fbits;
    s_bad[warp] = bad;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    uint32_t m = 0;
    unsigned long long b = ~0ull;
    for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w) {
      m = s_max[w] > m ? s_max[w] : m;
      b = s_bad[w] < b ? s_bad[w] : b;
    }
    if (m != 0) atomicMax(&s->amax_bits, m);
    if (b != ~0ull) atomicMin(&s->first_bad, b);
  }
}

__global__ void ScanInitKernel(ScanState* s) {
  s->amax_bits = 0;
  s->pad = 0;
  s->first_bad = ~0ull;
}

// ---- The block pass ------------------------------------------------------------------------

// Final levels of the canonical tree for one value per thread of a 256-thread CTA, where the
// value of thread t is a[t] after levels 512 and 256: levels 128, 64 in shared memory, 32 by a
// read, 16..1 by shuffles (a[i] += a[i + s]; fp addition is commutative, so only the pairing
// matters, and it is the pairing of reduce.h's TreeReduceChunk).
template <int kCount>
__device__ __forceinline__ void TreeTail(double (*sm)[kPassThreads], const double* d, double* out) {
  const int t = threadIdx.x;
#pragma unroll
  for (int q = 0; q < kCount; ++q) sm[q][t] = d[q];
  __syncthreads();
  if (t < 128) {
#pragma unroll
    for (int q = 0; q < kCount; ++q) sm[q][t] = sm[q][t] + sm[q][t + 128];
  }
  __syncthreads();
  if (t < 64) {
#pragma unroll
    for (int q = 0; q < kCount; ++q) sm[q][t] = sm[q][t] + sm[q][t + 64];
  }
  __syncthreads();
  const int warp = t >> 5, lane = t & 31;
  if (warp < kCount) {
    double v = sm[warp][lane] + sm[warp][lane + 32];
#pragma unroll
    for (int s = 16; s >= 1; s >>= 1) v = v + __shfl_down_sync(kFull, v, s);
    if (lane == 0) out[warp] = v;
  }
}

template <DType D, BlockMethod M, BlockErrorKind S, BlockErrorKind O, bool kDecoupled>
// 3 CTAs/SM for the light methods (rtn, 4over6: measured +6% on 4over6); 2 for the window searches,
// whose registers would spill at the 3-CTA cap (measured 2-8% slower) and for the Hessian kernels.
__global__ void __launch_bounds__(kPassThreads,
                                  (M == BlockMethod::kRtn || M == BlockMethod::kFourOverSix) ? 3 : 2)
    BlockPassKernel(const PassLaunch a) {
  __shared__ double sm[kSums][kPassThreads];
  __shared__ float s_max[kPassThreads / 32];
  __shared__ double s_out[kSums];
  const int t = threadIdx.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kReduceChunk;
  BlockPassParams p = a.params;
  p.method = M;
  p.search_kind = S;
  p.decoupled = kDecoupled;

  constexpr bool kPrefetch = D != DType::kF32;
  Raw<D> raw[4];
  if constexpr (kPrefetch) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t lb = first + t + kPassThreads * j;
      if (lb < a.blocks) LoadRaw<D>(a.src, lb, raw[j]);
    }
  }
  float v[4][kSums];
  float max_abs = 0.0f;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int64_t lb = first + t + kPassThreads * j;
#pragma unroll
    for (int q = 0; q < kSums; ++q) v[j][q] = 0.0f;
    if (lb >= a.blocks) continue;
    if constexpr (!kPrefetch) LoadRaw<D>(a.src, lb, raw[j]);
    float x[kBlock];
    ToFloat<D>(raw[j], x);
    BlockObjective obj;
    obj.kind = O;
    if constexpr (O == BlockErrorKind::kWeightedSquared || O == BlockErrorKind::kHessian) {
      const int64_t col = (a.block_begin + lb) % a.blocks_per_row;
      if constexpr (O == BlockErrorKind::kWeightedSquared) obj.importance = a.importance + col * 16;
      if constexpr (O == BlockErrorKind::kHessian) obj.hessian = a.hessian + col * 256;
    }
    uint8_t prev[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    uint32_t prev_scale = kE4M3One;
    if constexpr (M == BlockMethod::kSoarRefine) {
      const uint2 pp = __ldg(reinterpret_cast<const uint2*>(a.prev_packed) + lb);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        prev[k] = static_cast<uint8_t>(pp.x >> (8 * k));
        prev[4 + k] = static_cast<uint8_t>(pp.y >> (8 * k));
      }
      prev_scale = a.prev_scales[lb];
    }
    BlockResult r;
    QuantizeBlock(x, p, obj, prev, prev_scale, &r);
    uint2 out;
    out.x = static_cast<uint32_t>(r.packed[0]) | (static_cast<uint32_t>(r.packed[1]) << 8) |
            (static_cast<uint32_t>(r.packed[2]) << 16) | (static_cast<uint32_t>(r.packed[3]) << 24);
    out.y = static_cast<uint32_t>(r.packed[4]) | (static_cast<uint32_t>(r.packed[5]) << 8) |
            (static_cast<uint32_t>(r.packed[6]) << 16) | (static_cast<uint32_t>(r.packed[7]) << 24);
    reinterpret_cast<uint2*>(a.out_packed)[lb] = out;
    a.out_scales[lb] = r.scale;
    v[j][0] = r.obj_err;
    v[j][1] = r.sq_err;
    v[j][2] = r.rtn_sq_err;
    v[j][3] = r.x_sq;
    v[j][4] = r.s1;
    v[j][5] = r.s2;
    max_abs = fmaxf(max_abs, r.max_abs_err);
  }
  // Levels 512 and 256 of the canonical tree are thread-local: thread t holds a[t], a[t+256],
  // a[t+512], a[t+768]; level 512 gives a[t] + a[t+512] and a[t+256] + a[t+768], level 256 adds
  // those two.
  double d[kSums];
#pragma unroll
  for (int q = 0; q < kSums; ++q) {
    d[q] = (static_cast<double>(v[0][q]) + static_cast<double>(v[2][q])) +
           (static_cast<double>(v[1][q]) + static_cast<double>(v[3][q]));
  }
#pragma unroll
  for (int off = 16; off >= 1; off >>= 1) max_abs = fmaxf(max_abs, __shfl_xor_sync(kFull, max_abs, off));
  if ((t & 31) == 0) s_max[t >> 5] = max_abs;
  TreeTail<kSums>(sm, d, s_out);
  __syncthreads();
  const int64_t chunk = a.block_begin / kReduceChunk + blockIdx.x;
  if (t < kSums) a.chunk_sums[t * a.sum_stride + chunk] = s_out[t];
  if (t == kSums) {
    float m = 0.0f;
#pragma unroll
    for (int w = 0; w < kPassThreads / 32; ++w) m = fmaxf(m, s_max[w]);
    a.chunk_max[chunk] = m;
  }
}

// One level of the canonical tree over chunk sums: CTA (c, q) reduces in[q][1024c, 1024c+1024)
// (zero-padded) to out[q][c].
__global__ void __launch_bounds__(kPassThreads) ReduceLevelKernel(const double* __restrict__ in,
                                                                   int64_t n_in, double* out,
                                                                   int64_t n_out) {
  __shared__ double sm[1][kPassThreads];
  __shared__ double s_out[1];
  const int q = blockIdx.y, t = threadIdx.x;
  const int64_t base = static_cast<int64_t>(blockIdx.x) * kReduceChunk;
  const double* row = in + q * n_in;
  auto ld = [&](int64_t i) { return i < n_in ? row[i] : 0.0; };
  const double d = (ld(base + t) + ld(base + t + 512)) + (ld(base + t + 256) + ld(base + t + 768));
  TreeTail<1>(sm, &d, s_out);
  if (t == 0) out[q * n_out + blockIdx.x] = s_out[0];
}

// Copies the final sums (stride 1) and reduces the chunk maxima (order-free) into *totals.
__global__ void FinalizeKernel(const double* sums, int64_t sum_stride, const float* chunk_max,
                               int64_t chunks, PassTotalsDevice* totals) {
  float m = 0.0f;
  for (int64_t i = threadIdx.x; i < chunks; i += blockDim.x) m = fmaxf(m, chunk_max[i]);
  for (int off = 16; off >= 1; off >>= 1) m = fmaxf(m, __shfl_xor_sync(kFull, m, off));
  __shared__ float s_max[32];
  if ((threadIdx.x & 31) == 0) s_max[threadIdx.x >> 5] = m;
  __syncthreads();
  if (threadIdx.x == 0) {
    float r = 0.0f;
    for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w) r = fmaxf(r, s_max[w]);
    totals->max_abs_err = r;
    totals->pad = 0.0f;
    for (int q = 0; q < kSums; ++q) totals->sums[q] = sums[q * sum_stride];
  }
}

// ---- OutputNmse helpers ---------------------------------------------------------------------

template <DType D>
__global__ void StackKernel(const void* __restrict__ src, const uint8_t* __restrict__ packed,
                            const uint8_t* __restrict__ scales, float g, int64_t blocks,
                            float* out) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t n_elem = blocks * 16;
  for (int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; b < blocks;
       b += stride) {
    Raw<D> r;
    LoadRaw<D>(src, b, r);
    float x[16];
    ToFloat<D>(r, x);
    const float s = DecodeE4M3(scales[b]);
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const uint8_t byte = packed[b * 8 + i / 2];
      const uint32_t code = (i % 2 == 0) ? (byte & 0xFu) : (byte >> 4);
      const float wh = DecodeE2M1(code) * s * g;  // calibration.cc Dequantize's expression
      out[b * 16 + i] = x[i];
      out[n_elem + b * 16 + i] = x[i] - wh;
    }
  }
}

__global__ void DotPartialsKernel(const float* __restrict__ a, const float* __restrict__ b,
                                  int64_t n, double* partial) {
  double acc = 0.0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    acc += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  }
  for (int off = 16; off >= 1; off >>= 1) acc += __shfl_down_sync(kFull, acc, off);
  __shared__ double s[32];
  if ((threadIdx.x & 31) == 0) s[threadIdx.x >> 5] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    double r = 0.0;
    for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w) r += s[w];
    partial[blockIdx.x] = r;
  }
}

// CTAs for a grid-stride kernel over `work` items of `threads` each: enough to fill the device
// `per_sm` times over (these kernels' results do not depend on the grid size).
int GridFor(int64_t work, int threads, int per_sm) {
  const int cap = SmCount() * per_sm;
  const int64_t g = (work + threads - 1) / threads;
  return static_cast<int>(g < 1 ? 1 : (g > cap ? cap : g));
}

// ---- Pass dispatch --------------------------------------------------------------------------

template <DType D, BlockMethod M, BlockErrorKind S, BlockErrorKind O, bool kDec>
cudaError_t Launch(const PassLaunch& a, cudaStream_t stream) {
  const int64_t ctas = (a.blocks + kReduceChunk - 1) / kReduceChunk;
  BlockPassKernel<D, M, S, O, kDec><<<static_cast<unsigned>(ctas), kPassThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

template <DType D>
cudaError_t DispatchMethod(const PassLaunch& a, cudaStream_t stream) {
  using K = BlockErrorKind;
  const BlockPassParams& p = a.params;
  switch (p.method) {
    case BlockMethod::kRtn:
      return Launch<D, BlockMethod::kRtn, K::kSquared, K::kSquared, false>(a, stream);
    case BlockMethod::kFourOverSix:
      if (a.objective != K::kSquared) return cudaErrorInvalidValue;
      switch (p.search_kind) {
        case K::kSquared:
          return Launch<D, BlockMethod::kFourOverSix, K::kSquared, K::kSquared, false>(a, stream);
        case K::kAbs:
          return Launch<D, BlockMethod::kFourOverSix, K::kAbs, K::kSquared, false>(a, stream);
        case K::kMaxAbs:
          return Launch<D, BlockMethod::kFourOverSix, K::kMaxAbs, K::kSquared, false>(a, stream);
        default:
          return cudaErrorInvalidValue;
      }
    case BlockMethod::kWindow:
      if (p.search_kind != a.objective) return cudaErrorInvalidValue;
      switch (a.objective) {
        case K::kSquared:
          return Launch<D, BlockMethod::kWindow, K::kSquared, K::kSquared, false>(a, stream);
        case K::kWeightedSquared:
          return Launch<D, BlockMethod::kWindow, K::kWeightedSquared, K::kWeightedSquared, false>(
              a, stream);
        case K::kHessian:
          return Launch<D, BlockMethod::kWindow, K::kHessian, K::kHessian, false>(a, stream);
        default:
          return cudaErrorInvalidValue;
      }
    case BlockMethod::kSoarRefine:
      if (p.search_kind != a.objective) return cudaErrorInvalidValue;
      switch (a.objective) {
        case K::kSquared:
          if (p.decoupled) return cudaErrorInvalidValue;
          return Launch<D, BlockMethod::kSoarRefine, K::kSquared, K::kSquared, false>(a, stream);
        case K::kWeightedSquared:
          if (p.decoupled) return cudaErrorInvalidValue;
          return Launch<D, BlockMethod::kSoarRefine, K::kWeightedSquared, K::kWeightedSquared,
                        false>(a, stream);
        case K::kHessian:
          if (p.decoupled) {
            return Launch<D, BlockMethod::kSoarRefine, K::kHessian, K::kHessian, true>(a, stream);
          }
          return Launch<D, BlockMethod::kSoarRefine, K::kHessian, K::kHessian, false>(a, stream);
        default:
          return cudaErrorInvalidValue;
      }
  }
  return cudaErrorInvalidValue;
}

// FP8 dequantization (docs/NUMERICS.md 7): 4 consecutive elements per thread (a 4-byte code load,
// a 16-byte store). `first` is a multiple of 16 and K % 16 == 0, so the 4 share a row.
__global__ void DequantFp8Kernel(const uint8_t* __restrict__ codes, int64_t quads, int64_t first,
                                 int64_t cols, Fp8Scales scales, float* __restrict__ out) {
  for (int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; q < quads;
       q += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uchar4 c = reinterpret_cast<const uchar4*>(codes)[q];
    const int64_t e = first + q * 4;
    const int64_t row = e / cols, col = e % cols;
    float4 v;
    v.x = DequantFp8(c.x, scales.at(row, col));
    v.y = DequantFp8(c.y, scales.at(row, col + 1));
    v.z = DequantFp8(c.z, scales.at(row, col + 2));
    v.w = DequantFp8(c.w, scales.at(row, col + 3));
    reinterpret_cast<float4*>(out)[q] = v;
  }
}

}  // namespace

cudaError_t LaunchScanInit(ScanState* s, cudaStream_t stream) {
  ScanInitKernel<<<1, 1, 0, stream>>>(s);
  return cudaGetLastError();
}

cudaError_t LaunchScan(const void* src, DType dtype, int64_t elements, int64_t first_element,
                       ScanState* s, cudaStream_t stream) {
  if (src == nullptr || s == nullptr || elements < 0 || elements % 16 != 0) {
    return cudaErrorInvalidValue;
  }
  const int64_t blocks = elements / 16;
  if (blocks == 0) return cudaSuccess;
  // Enough CTAs to fill the GPU several times over; each thread strides over blocks.
  const int grid = GridFor(blocks, 256, 16);
  switch (dtype) {
    case DType::kBF16:
      ScanKernel<DType::kBF16><<<grid, 256, 0, stream>>>(src, blocks, first_element, s);
      break;
    case DType::kF16:
      ScanKernel<DType::kF16><<<grid, 256, 0, stream>>>(src, blocks, first_element, s);
      break;
    case DType::kF32:
      ScanKernel<DType::kF32><<<grid, 256, 0, stream>>>(src, blocks, first_element, s);
      break;
  }
  return cudaGetLastError();
}

cudaError_t LaunchBlockPass(const PassLaunch& a, cudaStream_t stream) {
  if (a.src == nullptr || a.blocks <= 0 || a.block_begin < 0 || a.block_begin % kReduceChunk != 0 ||
      a.blocks_per_row <= 0 || a.out_packed == nullptr || a.out_scales == nullptr ||
      a.chunk_sums == nullptr || a.chunk_max == nullptr ||
      a.sum_stride < (a.block_begin + a.blocks + kReduceChunk - 1) / kReduceChunk) {
    return cudaErrorInvalidValue;
  }
  if (a.params.method == BlockMethod::kSoarRefine &&
      (a.prev_packed == nullptr || a.prev_scales == nullptr)) {
    return cudaErrorInvalidValue;
  }
  if ((a.objective == BlockErrorKind::kWeightedSquared && a.importance == nullptr) ||
      (a.objective == BlockErrorKind::kHessian && a.hessian == nullptr)) {
    return cudaErrorInvalidValue;
  }
  switch (a.dtype) {
    case DType::kBF16: return DispatchMethod<DType::kBF16>(a, stream);
    case DType::kF16: return DispatchMethod<DType::kF16>(a, stream);
    case DType::kF32: return DispatchMethod<DType::kF32>(a, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t LaunchReduceTotals(double* chunk_sums, const float* chunk_max, int64_t chunks,
                               double* scratch, PassTotalsDevice* totals, cudaStream_t stream) {
  if (chunks <= 0) return cudaErrorInvalidValue;
  const int64_t half = kSums * ((chunks + kReduceChunk - 1) / kReduceChunk);
  double* bufs[2] = {scratch, scratch + half};
  const double* cur = chunk_sums;
  int64_t n = chunks;
  int k = 0;
  while (n > 1) {
    const int64_t n_out = (n + kReduceChunk - 1) / kReduceChunk;
    ReduceLevelKernel<<<dim3(static_cast<unsigned>(n_out), kSums), kPassThreads, 0, stream>>>(
        cur, n, bufs[k], n_out);
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
    cur = bufs[k];
    k ^= 1;
    n = n_out;
  }
  FinalizeKernel<<<1, 256, 0, stream>>>(cur, 1, chunk_max, chunks, totals);
  return cudaGetLastError();
}

cudaError_t LaunchStackWeightAndError(const void* src, DType dtype, const uint8_t* packed,
                                      const uint8_t* scales, float g, int64_t rows, int64_t cols,
                                      float* out, cudaStream_t stream) {
  if (src == nullptr || packed == nullptr || scales == nullptr || out == nullptr || rows <= 0 ||
      cols <= 0 || cols % 16 != 0) {
    return cudaErrorInvalidValue;
  }
  const int64_t blocks = rows * cols / 16;
  const int grid = GridFor(blocks, 256, 16);
  switch (dtype) {
    case DType::kBF16:
      StackKernel<DType::kBF16><<<grid, 256, 0, stream>>>(src, packed, scales, g, blocks, out);
      break;
    case DType::kF16:
      StackKernel<DType::kF16><<<grid, 256, 0, stream>>>(src, packed, scales, g, blocks, out);
      break;
    case DType::kF32:
      StackKernel<DType::kF32><<<grid, 256, 0, stream>>>(src, packed, scales, g, blocks, out);
      break;
  }
  return cudaGetLastError();
}

cudaError_t LaunchDotPartials(const float* a, const float* b, int64_t n, double* partial,
                              int blocks, cudaStream_t stream) {
  if (a == nullptr || b == nullptr || partial == nullptr || n < 0 || blocks <= 0) {
    return cudaErrorInvalidValue;
  }
  DotPartialsKernel<<<blocks, 256, 0, stream>>>(a, b, n, partial);
  return cudaGetLastError();
}

int SmCount() {
  // Per device ordinal, asked once (the attribute does not change while the process runs).
  static std::atomic<int> cache[64];
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 132;
  if (device < 0 || device >= 64) {
    int n = 0;
    return cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device) == cudaSuccess && n > 0
               ? n
               : 132;
  }
  int n = cache[device].load(std::memory_order_relaxed);
  if (n == 0) {
    if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
        n <= 0) {
      n = 132;  // only a grid-size cap: any value is correct
    }
    cache[device].store(n, std::memory_order_relaxed);
  }
  return n;
}

cudaError_t LaunchDequantFp8(const uint8_t* codes, int64_t elements, int64_t first_element,
                             int64_t cols, const Fp8Scales& scales, float* out,
                             cudaStream_t stream) {
  if (codes == nullptr || out == nullptr || scales.scale == nullptr || elements < 0 ||
      elements % 16 != 0 || first_element % 16 != 0 || cols <= 0 || cols % 16 != 0 ||
      scales.block_rows <= 0 || scales.block_cols <= 0) {
    return cudaErrorInvalidValue;
  }
  const int64_t quads = elements / 4;
  if (quads == 0) return cudaSuccess;
  DequantFp8Kernel<<<GridFor(quads, 256, 4), 256, 0, stream>>>(codes, quads, first_element, cols,
                                                                scales, out);
  return cudaGetLastError();
}

}  // namespace nvfp4::cuda
