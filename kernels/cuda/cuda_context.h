// Per-device state shared by the CUDA backend's executors (cuda_backend.cc) and its GPTQ device
// (gptq_cuda.h): streams, a geometrically grown device arena, pinned staging buffers for
// host<->device copies, lazily created cuBLAS / cuSOLVER handles, and the GPU output-space metric.
// Also the translation of cudaError_t into absl::Status used at every host boundary.
#ifndef NVFP4_KERNELS_CUDA_CUDA_CONTEXT_H_
#define NVFP4_KERNELS_CUDA_CUDA_CONTEXT_H_

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cusolverDn.h>

#include <cstddef>
#include <cstdint>
#include <mutex>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/status_macros.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/types.h"

namespace nvfp4::cuda {

// OK for cudaSuccess; RESOURCE_EXHAUSTED for an allocation failure, INTERNAL otherwise (the
// message names `what`). Clears a non-sticky error so later calls start clean.
absl::Status CudaStatus(cudaError_t e, const char* what);

#define NVFP4_CUDA(expr) RETURN_IF_ERROR(::nvfp4::cuda::CudaStatus((expr), #expr))

inline constexpr size_t kAlign = 256;
inline size_t AlignUp(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

// memcpy split over a few threads for large pieces: one host thread copies only ~5-10 GB/s, well
// under what pinned PCIe transfers take.
void ParallelMemcpy(void* dst, const void* src, size_t n);

// Milliseconds between two recorded events (0 when they cannot be read).
float ElapsedMs(cudaEvent_t a, cudaEvent_t b);

// Device memory grown geometrically (x1.5); the exact size is tried when the larger one fails.
// Reserve() keeps no contents. A failed allocation is RESOURCE_EXHAUSTED with the error cleared.
struct DeviceMem {
  void* p = nullptr;
  size_t bytes = 0;
  DeviceMem() = default;
  DeviceMem(const DeviceMem&) = delete;
  DeviceMem& operator=(const DeviceMem&) = delete;
  ~DeviceMem() { Release(); }
  void Release();
  absl::Status Reserve(size_t need);
  uint8_t* at(size_t offset) const { return static_cast<uint8_t*>(p) + offset; }
};

struct PinnedMem {
  void* p = nullptr;
  size_t bytes = 0;
  PinnedMem() = default;
  PinnedMem(const PinnedMem&) = delete;
  PinnedMem& operator=(const PinnedMem&) = delete;
  ~PinnedMem();
  absl::Status Reserve(size_t need);
  uint8_t* bytes_at(size_t offset) const { return static_cast<uint8_t*>(p) + offset; }
};

// Per-backend device state.
struct Context {
  int ordinal = 0;
  cudaStream_t streams[2] = {nullptr, nullptr};
  PinnedMem staging[2];
  cudaEvent_t staging_free[2] = {nullptr, nullptr};
  int next_staging = 0;
  DeviceMem arena;   // the group's tensors, slots and sums (GPTQ: the factor's or sweep's buffers)
  DeviceMem aux;     // output-metric GEMM operands
  DeviceMem factor;  // GPTQ: the factor U, kept from Factor for the Sweep (fp32 [k, k])
  DeviceMem gptq_weights;  // GPTQ: the group's sources and stacked fp32 weight (LoadWeights)
  DeviceMem gptq_gram;     // GPTQ: the group's fp32 input Gram (FactorGram; the output metric)
  PinnedMem small;   // scan states and pass totals (host side)
  cublasHandle_t cublas = nullptr;
  bool cublas_tried = false;
  cusolverDnHandle_t cusolver = nullptr;
  bool cusolver_tried = false;
  std::mutex mu;
  CudaRunStats last;

  Context() = default;
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  ~Context();

  absl::Status Init(int device);

  // Host -> device through the pinned staging buffers: the host copy of piece k+1 overlaps the
  // DMA of piece k.
  absl::Status Upload(void* dst, const void* src, size_t bytes, cudaStream_t stream);
  // Device -> host through the staging buffers (the DMA of piece k overlaps the host copy of k-1).
  absl::Status Download(void* dst, const void* src, size_t bytes, cudaStream_t stream);

  // The cuBLAS handle (pedantic fp32 math), or nullptr when cuBLAS is unavailable.
  cublasHandle_t Cublas();
  // The cuSOLVER handle (deterministic mode where the library has the switch), or nullptr when
  // cuSOLVER is unavailable.
  cusolverDnHandle_t Cusolver();
};

// The output-space metric ||X W^T - X W_hat^T||^2 / ||X W^T||^2 of one device-resident tensor
// (source `src` [n, k] of `dtype`, packed codes and scales, global scale g) with cuBLAS SGEMMs
// (fp32, pedantic math) and fp64 dots, from the Gram matrix or the activations of `c` (one of them
// must be present). Needs ctx.Cublas(). RESOURCE_EXHAUSTED when the GEMM operands do not fit
// (callers fall back to the host reference). `device_gram`, when given, is c.gram already in
// device memory (fp32 [k, k]): it is used instead of an upload.
absl::StatusOr<double> GpuOutputNmse(Context& ctx, const void* src, DType dtype,
                                     const uint8_t* packed, const uint8_t* scales, float g,
                                     int64_t n, int64_t k, const Calibration& c,
                                     cudaStream_t stream, const float* device_gram = nullptr);

}  // namespace nvfp4::cuda

#endif  // NVFP4_KERNELS_CUDA_CUDA_CONTEXT_H_
