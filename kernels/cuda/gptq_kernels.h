// Host-callable launchers of GPTQ's device kernels (gptq_kernels.cu). Raw launchers: they check
// their arguments (cudaErrorInvalidValue when inconsistent) and return the launch status; the
// GPTQ device (gptq_cuda.h) validates shapes first and translates errors to absl::Status.
#ifndef NVFP4_KERNELS_CUDA_GPTQ_KERNELS_H_
#define NVFP4_KERNELS_CUDA_GPTQ_KERNELS_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/gptq.h"
#include "kernels/gptq_core.h"

namespace nvfp4::cuda {

// One GPTQ sweep over a [rows, cols] weight, all pointers in device memory. The working copies
// are column-major with leading dimension `ld` (rows rounded up to a multiple of 4), so the
// batch kernel's threads (one per row) and the lazy update's tiles access consecutive addresses.
struct GptqSweepLaunch {
  int64_t rows = 0;
  int64_t cols = 0;  // a multiple of 16
  int64_t ld = 0;    // >= rows, a multiple of 4
  int block_size = 128;
  float g = 1.0f;
  bool static_scales = false;     // scales from the source values first, then the sweep
  const int32_t* perm = nullptr;  // [cols] processing position -> column; nullptr = natural
  GptqScaleParams scale;          // importance / hessian point at device arrays
  const float* w = nullptr;       // [rows, cols] source values, original column order
  const float* u = nullptr;       // [cols, cols] upper factor (of the permuted Gram)
  float* wt = nullptr;            // scratch [cols, ld]: the values in processing order
  float* err_t = nullptr;         // scratch [block_size, ld]: one batch's scaled errors
  uint8_t* codes_t = nullptr;     // scratch [cols, ld]: codes, original column order
  uint8_t* scales_t = nullptr;    // scratch [cols / 16, ld]
  uint8_t* codes = nullptr;       // out [rows, cols]: one E2M1 code per byte
  uint8_t* scales = nullptr;      // out [rows, cols / 16]: E4M3
};

// The whole sweep on `stream` (no host round trip): transpose into processing order, the static
// order's scales, then per batch the rows' batch step and the lazy update of the later columns,
// and the transposes of codes and scales into row-major order. Codes and scales equal
// HostGptqSweep's bit for bit for the same inputs and factor.
cudaError_t LaunchGptqSweep(const GptqSweepLaunch& a, cudaStream_t stream);

// dst[i] = float(src[i]) for i in [0, elements) (elements a multiple of 16; exact conversions).
cudaError_t LaunchGptqToFloat(const void* src, DType dtype, int64_t elements, float* dst,
                              cudaStream_t stream);

// Per-row metric sums of a quantized [rows, blocks_per_row * 16] tensor against its source:
// GptqMetricBlock per block, fp64 sums over the row's blocks in order (GptqHostMetrics' rows,
// bit for bit). Outputs [rows] each.
struct GptqRowMetricsLaunch {
  const void* src = nullptr;
  DType dtype = DType::kBF16;
  const uint8_t* packed = nullptr;  // [rows, blocks_per_row * 8]
  const uint8_t* scales = nullptr;  // [rows, blocks_per_row]
  float g = 1.0f;
  float g_rtn = 1.0f;
  int64_t rows = 0;
  int64_t blocks_per_row = 0;
  double* sq_err = nullptr;
  double* x_sq = nullptr;
  double* rtn_sq = nullptr;
  float* max_err = nullptr;
};
cudaError_t LaunchGptqRowMetrics(const GptqRowMetricsLaunch& a, cudaStream_t stream);

// Factor helpers (k x k, fp64 unless noted). Both build the column-major reversed matrix that
// cuSOLVER factors, a[i + j*k] = h[k-1-i][k-1-j]:
// from h (row-major fp64),
cudaError_t LaunchGptqReverse(const double* h, int64_t k, double* a, cudaStream_t stream);
// or from the matrix a GptqGram describes (gptq.h; gram, perm and diag in device memory), with
// dampening `damp`: the same fp64 operations as BuildGptqGram, so the same values.
cudaError_t LaunchGptqReverseGram(const GptqGram& gram, double damp, double* a,
                                  cudaStream_t stream);
// u = the fp32 upper factor from M = L^-1 (column-major, lower): u[x*k + y] = float(M[k-1-x]
// [k-1-y]) for y >= x, 0 below the diagonal. *bad (set to 0 beforehand) becomes 1 when a used
// entry of M is not finite.
cudaError_t LaunchGptqFactorOut(const double* m, int64_t k, float* u, int* bad,
                                cudaStream_t stream);

}  // namespace nvfp4::cuda

#endif  // NVFP4_KERNELS_CUDA_GPTQ_KERNELS_H_
