// The CUDA backend (kernels/cuda/*.cu): the same PassExecutor flow and block core as the CPU
// reference, on a GPU. Only compiled when the build has CUDA (NVFP4_HAVE_CUDA).
#ifndef NVFP4_KERNELS_CUDA_CUDA_BACKEND_H_
#define NVFP4_KERNELS_CUDA_CUDA_BACKEND_H_

#include <memory>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace nvfp4 {

// Visible CUDA devices (CUDA_VISIBLE_DEVICES honored); 0 when there is no driver or GPU.
int CudaVisibleDeviceCount();

// A backend bound to device `ordinal`. NOT_FOUND when it does not exist.
absl::StatusOr<std::unique_ptr<QuantizerBackend>> MakeCudaBackend(int ordinal);

// What the last QuantizeGroup call of a CUDA backend did and how long it took (benchmarks, tests).
// Device memory budget: the environment variable NVFP4_CUDA_MAX_CHUNK_BYTES (bytes), else 90% of
// the free device memory. A group whose tensors do not fit is streamed in chunks of a multiple of
// 1024 blocks (identical results); so is one whose device allocation fails.
// FP8 views (TensorView::fp8): the codes and scales are uploaded and dequantized on the device (a
// quarter of the fp32 upload; bit-identical to the host's dequantization, checked on an H100 by
// tests/kernels/cuda on 2026-12-06); NVFP4_CUDA_FP8_ON_DEVICE=0 dequantizes them on the host's
// threads first instead.
// Kernels are loaded eagerly (CUDA_MODULE_LOADING=EAGER unless set), so that a launch never needs
// device memory that a nearly full GPU lacks.
struct CudaRunStats {
  bool streamed = false;        // the group ran in chunks (did not fit the budget)
  int64_t chunk_blocks = 0;     // blocks per chunk when streamed
  int passes = 0;               // block passes run (all tensors)
  double wall_ms = 0;           // whole QuantizeGroup, host clock (H2D and D2H included)
  double device_span_ms = 0;    // first scan kernel start to last pass end (CUDA events; host
                                // round trips between passes included, PCIe transfers of the
                                // resident inputs/outputs excluded); 0 when streamed
  double kernel_ms = 0;         // sum of scan and pass (+ reduction) kernel times (CUDA events)
  bool cublas_output_nmse = false;  // OutputNmse computed on the GPU with cuBLAS
  int fp8_sources_on_device = 0;    // FP8 views uploaded as codes and dequantized on the GPU
  // Method gptq (the fields above other than wall_ms and cublas_output_nmse stay 0): host-clock
  // time of the GPTQ device calls (each ends synchronized), summed over the group.
  double gptq_load_ms = 0;          // source upload, NaN/Inf scan and amax, fp32 conversion
  double gptq_factor_ms = 0;        // Gram upload, cuSOLVER Cholesky + inverse (all dampening
                                    // attempts)
  double gptq_sweep_ms = 0;         // the sweep, codes and scales download
  double gptq_sweep_kernel_ms = 0;  // the sweep's kernels alone (CUDA events)
  double gptq_output_nmse_ms = 0;   // the metrics of the group's tensors (nmse, rtn baseline,
                                    // output metric)
  bool gptq_factor_on_gpu = false;  // cuSOLVER factored (else the host reference did)
};
// The stats of the last completed QuantizeGroup of `backend` (INVALID_ARGUMENT if it is not a
// CUDA backend).
absl::StatusOr<CudaRunStats> LastCudaRunStats(const QuantizerBackend& backend);

// Whether cuSOLVER could be loaded (libcusolver.so.12/.11 via dlopen); without it the GPTQ
// factor is computed by the host reference.
bool CudaCusolverAvailable();

// Whether cuBLAS could be loaded (libcublas.so.13/.12 via dlopen); without it the output-space
// metric falls back to the host reference.
bool CudaCublasAvailable();

}  // namespace nvfp4

#endif  // NVFP4_KERNELS_CUDA_CUDA_BACKEND_H_
