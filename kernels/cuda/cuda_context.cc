#include "kernels/cuda/cuda_context.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cublas_loader.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/cusolver_loader.h"
#include "kernels/tensor_prep.h"

namespace nvfp4::cuda {
namespace {

constexpr size_t kStagingBytes = size_t{16} << 20;  // per pinned staging buffer (two)
constexpr int kDotBlocks = 1024;                    // partial sums of the output-metric dots

}  // namespace

absl::Status CudaStatus(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  cudaGetLastError();  // clear a non-sticky error so later calls start clean
  const std::string msg = absl::StrCat("CUDA error in ", what, ": ", cudaGetErrorName(e), " (",
                                       cudaGetErrorString(e), ")");
  if (e == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(msg);
  return absl::InternalError(msg);
}

void ParallelMemcpy(void* dst, const void* src, size_t n) {
  constexpr size_t kMinPerThread = size_t{2} << 20;
  const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  const size_t workers = std::min<size_t>({8, hw, std::max<size_t>(1, n / kMinPerThread)});
  if (workers <= 1) {
    std::memcpy(dst, src, n);
    return;
  }
  const size_t part = (n + workers - 1) / workers;
  std::vector<std::thread> pool;
  pool.reserve(workers - 1);
  for (size_t w = 1; w < workers; ++w) {
    const size_t begin = w * part;
    if (begin >= n) break;
    pool.emplace_back([=] {
      std::memcpy(static_cast<uint8_t*>(dst) + begin, static_cast<const uint8_t*>(src) + begin,
                  std::min(part, n - begin));
    });
  }
  std::memcpy(dst, src, std::min(part, n));
  for (std::thread& t : pool) t.join();
}

float ElapsedMs(cudaEvent_t a, cudaEvent_t b) {
  float ms = 0.0f;
  if (cudaEventElapsedTime(&ms, a, b) != cudaSuccess) {
    cudaGetLastError();
    return 0.0f;
  }
  return ms;
}

void DeviceMem::Release() {
  if (p != nullptr) cudaFree(p);
  p = nullptr;
  bytes = 0;
}

absl::Status DeviceMem::Reserve(size_t need) {
  if (bytes >= need) return absl::OkStatus();
  const size_t want = std::max(need, bytes + bytes / 2);
  Release();
  cudaError_t e = cudaMalloc(&p, want);
  size_t got = want;
  if (e == cudaErrorMemoryAllocation && want > need) {
    cudaGetLastError();
    e = cudaMalloc(&p, need);
    got = need;
  }
  if (e != cudaSuccess) {
    cudaGetLastError();  // an allocation failure must not surface at a later launch check
    p = nullptr;
    return CudaStatus(e, "cudaMalloc (device workspace)");
  }
  bytes = got;
  return absl::OkStatus();
}

PinnedMem::~PinnedMem() {
  if (p != nullptr) cudaFreeHost(p);
}

absl::Status PinnedMem::Reserve(size_t need) {
  if (bytes >= need) return absl::OkStatus();
  if (p != nullptr) cudaFreeHost(p);
  p = nullptr;
  bytes = 0;
  NVFP4_CUDA(cudaMallocHost(&p, need));
  bytes = need;
  return absl::OkStatus();
}

Context::~Context() {
  if (cublas != nullptr) {
    if (const CublasApi* api = LoadCublas()) api->destroy(cublas);
  }
  if (cusolver != nullptr) {
    if (const CusolverApi* api = LoadCusolver()) api->destroy(cusolver);
  }
  for (int k = 0; k < 2; ++k) {
    if (staging_free[k] != nullptr) cudaEventDestroy(staging_free[k]);
    if (streams[k] != nullptr) cudaStreamDestroy(streams[k]);
  }
}

absl::Status Context::Init(int device) {
  ordinal = device;
  NVFP4_CUDA(cudaSetDevice(device));
  for (int k = 0; k < 2; ++k) {
    NVFP4_CUDA(cudaStreamCreateWithFlags(&streams[k], cudaStreamNonBlocking));
    NVFP4_CUDA(cudaEventCreateWithFlags(&staging_free[k], cudaEventDisableTiming));
    RETURN_IF_ERROR(staging[k].Reserve(kStagingBytes));
  }
  return absl::OkStatus();
}

absl::Status Context::Upload(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  size_t off = 0;
  while (off < bytes) {
    const int k = next_staging;
    next_staging ^= 1;
    NVFP4_CUDA(cudaEventSynchronize(staging_free[k]));
    const size_t n = std::min(kStagingBytes, bytes - off);
    ParallelMemcpy(staging[k].p, static_cast<const uint8_t*>(src) + off, n);
    NVFP4_CUDA(cudaMemcpyAsync(static_cast<uint8_t*>(dst) + off, staging[k].p, n,
                               cudaMemcpyHostToDevice, stream));
    NVFP4_CUDA(cudaEventRecord(staging_free[k], stream));
    off += n;
  }
  return absl::OkStatus();
}

absl::Status Context::Download(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  struct Piece {
    int k = -1;
    size_t off = 0, n = 0;
  } pending;
  auto drain = [&]() -> absl::Status {
    if (pending.k < 0) return absl::OkStatus();
    NVFP4_CUDA(cudaEventSynchronize(staging_free[pending.k]));
    ParallelMemcpy(static_cast<uint8_t*>(dst) + pending.off, staging[pending.k].p, pending.n);
    pending.k = -1;
    return absl::OkStatus();
  };
  size_t off = 0;
  while (off < bytes) {
    const int k = next_staging;
    next_staging ^= 1;
    NVFP4_CUDA(cudaEventSynchronize(staging_free[k]));
    const size_t n = std::min(kStagingBytes, bytes - off);
    NVFP4_CUDA(cudaMemcpyAsync(staging[k].p, static_cast<const uint8_t*>(src) + off, n,
                               cudaMemcpyDeviceToHost, stream));
    NVFP4_CUDA(cudaEventRecord(staging_free[k], stream));
    RETURN_IF_ERROR(drain());
    pending = {k, off, n};
    off += n;
  }
  return drain();
}

cublasHandle_t Context::Cublas() {
  if (!cublas_tried) {
    cublas_tried = true;
    const CublasApi* api = LoadCublas();
    if (api != nullptr && api->create(&cublas) == CUBLAS_STATUS_SUCCESS) {
      // No TF32 or other reduced-precision paths: the metric must match the fp32/fp64 host
      // reference to fp32 rounding.
      api->set_math_mode(cublas, CUBLAS_PEDANTIC_MATH);
    } else {
      cublas = nullptr;
    }
  }
  return cublas;
}

cusolverDnHandle_t Context::Cusolver() {
  if (!cusolver_tried) {
    cusolver_tried = true;
    const CusolverApi* api = LoadCusolver();
    if (api != nullptr && api->create(&cusolver) == CUSOLVER_STATUS_SUCCESS) {
      // GPTQ's factor must not change from run to run (the default; set where it can be).
      if (api->set_deterministic_mode != nullptr) {
        api->set_deterministic_mode(cusolver, CUSOLVER_DETERMINISTIC_RESULTS);
      }
    } else {
      cusolver = nullptr;
    }
  }
  return cusolver;
}

// With the Gram matrix H: C = H [W; E]^T, num = sum_r e_r . (H e_r), den likewise for w_r; with
// activations X: C = X [W; E]^T, num = ||C_E||^2, den = ||C_W||^2.
absl::StatusOr<double> GpuOutputNmse(Context& ctx, const void* src, DType dtype,
                                     const uint8_t* packed, const uint8_t* scales, float g,
                                     int64_t n, int64_t k, const Calibration& c,
                                     cudaStream_t stream, const float* device_gram) {
  const CublasApi* api = LoadCublas();
  cublasHandle_t h = ctx.Cublas();
  if (api == nullptr || h == nullptr) return absl::InternalError("GpuOutputNmse without cuBLAS");
  const bool gram = !c.gram.empty();
  if (!gram && c.activations == nullptr) {
    return absl::InternalError("GpuOutputNmse without a Gram matrix or activations");
  }
  const int64_t tokens = gram ? 0 : c.tokens;
  if (k > INT32_MAX || 2 * n > INT32_MAX || tokens > INT32_MAX) {
    return absl::ResourceExhaustedError("output metric too large for one GEMM");
  }
  const bool resident = gram && device_gram != nullptr;
  const size_t a_elems = resident ? 0
                         : gram   ? static_cast<size_t>(k * k)
                                  : static_cast<size_t>(tokens * k);
  const size_t s_elems = static_cast<size_t>(2 * n * k);
  const size_t c_elems = gram ? s_elems : static_cast<size_t>(tokens * 2 * n);
  const size_t a_off = 0, s_off = AlignUp(a_elems * 4), c_off = s_off + AlignUp(s_elems * 4),
               d_off = c_off + AlignUp(c_elems * 4);
  RETURN_IF_ERROR(ctx.aux.Reserve(d_off + 2 * kDotBlocks * sizeof(double)));
  const float* A = resident ? device_gram : reinterpret_cast<float*>(ctx.aux.at(a_off));
  float* S = reinterpret_cast<float*>(ctx.aux.at(s_off));
  float* C = reinterpret_cast<float*>(ctx.aux.at(c_off));
  double* partial = reinterpret_cast<double*>(ctx.aux.at(d_off));
  if (resident) {
    // c.gram is on the device already.
  } else if (gram) {
    RETURN_IF_ERROR(ctx.Upload(ctx.aux.at(a_off), c.gram.data(), a_elems * 4, stream));
  } else {
    std::vector<float> x(a_elems);
    ConvertToFloat(c.activations, c.activations_dtype, static_cast<int64_t>(a_elems), x.data());
    RETURN_IF_ERROR(ctx.Upload(ctx.aux.at(a_off), x.data(), a_elems * 4, stream));
  }
  NVFP4_CUDA(LaunchStackWeightAndError(src, dtype, packed, scales, g, n, k, S, stream));
  if (api->set_stream(h, stream) != CUBLAS_STATUS_SUCCESS) {
    return absl::InternalError("cublasSetStream failed");
  }
  const float one = 1.0f, zero = 0.0f;
  cublasStatus_t st;
  if (gram) {
    // Column-major views: A = H^T [K,K], S^T [K,2N]; C = A^T S^T = H S^T, column r = H s_r.
    st = api->sgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(k), static_cast<int>(2 * n),
                    static_cast<int>(k), &one, A, static_cast<int>(k), S, static_cast<int>(k),
                    &zero, C, static_cast<int>(k));
  } else {
    // A = X^T [K,T]; C [T,2N] = X S^T, column r = X s_r.
    st = api->sgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(tokens), static_cast<int>(2 * n),
                    static_cast<int>(k), &one, A, static_cast<int>(k), S, static_cast<int>(k),
                    &zero, C, static_cast<int>(tokens));
  }
  if (st != CUBLAS_STATUS_SUCCESS) {
    return absl::InternalError(
        absl::StrCat("cublasSgemm failed with status ", static_cast<int>(st)));
  }
  const int64_t half = gram ? n * k : tokens * n;
  const float* lhs = C;
  const float* rhs = gram ? S : C;
  NVFP4_CUDA(LaunchDotPartials(lhs, rhs, half, partial, kDotBlocks, stream));
  NVFP4_CUDA(
      LaunchDotPartials(lhs + half, rhs + half, half, partial + kDotBlocks, kDotBlocks, stream));
  std::vector<double> host(2 * kDotBlocks);
  NVFP4_CUDA(cudaMemcpyAsync(host.data(), partial, host.size() * sizeof(double),
                             cudaMemcpyDeviceToHost, stream));
  NVFP4_CUDA(cudaStreamSynchronize(stream));
  double den = 0, num = 0;
  for (int b = 0; b < kDotBlocks; ++b) {
    den += host[b];
    num += host[kDotBlocks + b];
  }
  return den > 0 ? num / den : 0.0;
}

}  // namespace nvfp4::cuda
