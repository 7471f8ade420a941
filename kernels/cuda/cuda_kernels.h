// Host-callable launchers of the CUDA backend's kernels (kernels/cuda/cuda_kernels.cu). Only the
// CUDA runtime types appear here, so the executor (cuda_backend.cc) is plain C++.
#ifndef NVFP4_KERNELS_CUDA_CUDA_KERNELS_H_
#define NVFP4_KERNELS_CUDA_CUDA_KERNELS_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/block_core.h"
#include "kernels/types.h"

namespace nvfp4::cuda {

inline constexpr int kPassThreads = 256;  // one CTA per 1024-block chunk, 4 blocks per thread
inline constexpr int kSums = 6;           // obj_err, sq_err, rtn_sq_err, x_sq, s1, s2

// Result of a scan, device side. amax_bits: bits of max |x| over finite elements (non-negative
// floats order like their bits); first_bad: smallest flat index of a NaN/Inf (~0 when none).
struct ScanState {
  unsigned int amax_bits;
  unsigned int pad;
  unsigned long long first_bad;
};

// Final totals of one pass, device side (copied to the host in one transfer).
struct PassTotalsDevice {
  double sums[kSums];
  float max_abs_err;
  float pad;
};

// Sets *s to the empty scan.
cudaError_t LaunchScanInit(ScanState* s, cudaStream_t stream);
// Scans `elements` elements (a multiple of 16) at `src`; flat indices are reported relative to
// `first_element` (the global index of src[0]).
cudaError_t LaunchScan(const void* src, DType dtype, int64_t elements, int64_t first_element,
                       ScanState* s, cudaStream_t stream);

// Dequantizes `elements` FP8 codes (a multiple of 16; global flat indices from `first_element`, a
// multiple of 16, of a weight with `cols` columns) into fp32 at `out`: DequantFp8(code,
// scales.at(r, c)), the host's expression, so the values are bit-identical. `scales.scale` is a
// device pointer to the whole grid.
cudaError_t LaunchDequantFp8(const uint8_t* codes, int64_t elements, int64_t first_element,
                             int64_t cols, const Fp8Scales& scales, float* out,
                             cudaStream_t stream);

// One block pass over `blocks` consecutive blocks starting at global block `block_begin` (a
// multiple of 1024). Source and slot pointers are relative to the launch's first block.
struct PassLaunch {
  const void* src = nullptr;
  DType dtype = DType::kBF16;
  int64_t block_begin = 0;
  int64_t blocks = 0;
  int64_t blocks_per_row = 0;
  BlockErrorKind objective = BlockErrorKind::kSquared;
  const float* importance = nullptr;  // [K] (kWeightedSquared)
  const float* hessian = nullptr;     // [K/16][256] (kHessian)
  const uint8_t* prev_packed = nullptr;  // kSoarRefine only
  const uint8_t* prev_scales = nullptr;
  uint8_t* out_packed = nullptr;
  uint8_t* out_scales = nullptr;
  double* chunk_sums = nullptr;  // [kSums][sum_stride]; chunk c of the tensor at [q*stride + c]
  int64_t sum_stride = 0;        // chunks of the whole tensor
  float* chunk_max = nullptr;    // [sum_stride]
  BlockPassParams params;
};
// INVALID_VALUE-style errors (cudaErrorInvalidValue) for inconsistent launches.
cudaError_t LaunchBlockPass(const PassLaunch& launch, cudaStream_t stream);

// Reduces the [kSums][chunks] chunk sums with the canonical tree (reduce.h) and the chunk maxima
// to *totals. `scratch` holds 2 * kSums * ceil(chunks / 1024) doubles.
cudaError_t LaunchReduceTotals(double* chunk_sums, const float* chunk_max, int64_t chunks,
                               double* scratch, PassTotalsDevice* totals, cudaStream_t stream);
inline int64_t ReduceScratchDoubles(int64_t chunks) {
  return 2 * kSums * ((chunks + 1023) / 1024);
}

// For OutputNmse: out[r*K + c] = W (rows [0, N)) and W - W_hat (rows [N, 2N)) as fp32, for a
// resident tensor (`src` [N, K] of `dtype`, codes/scales of one slot, global scale g).
cudaError_t LaunchStackWeightAndError(const void* src, DType dtype, const uint8_t* packed,
                                      const uint8_t* scales, float g, int64_t rows, int64_t cols,
                                      float* out, cudaStream_t stream);
// partial[b] = fp64 sum over its share of a[i] * b[i], i in [0, n) (deterministic; `blocks`
// partials, summed by the host in order).
cudaError_t LaunchDotPartials(const float* a, const float* b, int64_t n, double* partial,
                              int blocks, cudaStream_t stream);

// The current device's multiprocessor count (cached per device; 132 if it cannot be asked): the
// grid-size caps of grid-stride kernels.
int SmCount();

}  // namespace nvfp4::cuda

#endif  // NVFP4_KERNELS_CUDA_CUDA_KERNELS_H_
