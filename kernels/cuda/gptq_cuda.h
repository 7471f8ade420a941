// GPTQ's device work on a CUDA GPU (kernels/gptq.h: GptqDevice), used by the CUDA backend for
// Method::kGptq:
//  - Factor / FactorGram: the host reference's math (HostGptqFactor) with cuSOLVER: Cholesky of
//    the reversed matrix in fp64 (potrf), its triangular inverse (trtri), reversed back and
//    rounded to fp32. FactorGram builds the fp64 matrix on the device from the uploaded fp32
//    Gram (half the bytes of the fp64 matrix, no host copy). Different fp64 arithmetic than the
//    host, so the factor agrees to rounding, not bitwise (docs/NUMERICS.md, "GPTQ", CUDA
//    contract). U stays on the device for the Sweep (*u is left empty). Without cuSOLVER the
//    host reference factors (and fills *u).
//  - LoadWeights: the sources are uploaded as they are (bf16: half the bytes of fp32), scanned
//    for NaN/Inf and amax and converted to fp32 on the device; they stay there (Context::
//    gptq_weights) for the Sweep and the Metrics, so no host conversion and one upload.
//  - Sweep: gptq_kernels.cu; for the same factor, codes and scales equal HostGptqSweep's.
//  - Metrics: GptqHostMetrics' sums on the device (bit for bit) and the backend's cuBLAS output
//    metric (the host reference without cuBLAS or memory for the GEMM).
// Device memory, one group at a time: the sources and the stacked fp32 weight (Context::
// gptq_weights), the fp32 Gram (Context::gptq_gram), U (fp32 k x k, Context::factor) plus, per call, the factor's fp64 k x k matrix
// and fp32 Gram, or the sweep's working copies (about 4 bytes x rows x k plus the codes).
#ifndef NVFP4_KERNELS_CUDA_GPTQ_CUDA_H_
#define NVFP4_KERNELS_CUDA_GPTQ_CUDA_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_context.h"
#include "kernels/gptq.h"

namespace nvfp4::cuda {

class CudaGptqDevice : public GptqDevice {
 public:
  // Works on ctx's first stream, arena and handles; ctx outlives the device, and the caller
  // holds ctx->mu (one group at a time: a device lives for one group, whose host Gram and
  // sources do not change meanwhile; the Gram is uploaded once and found again by address).
  explicit CudaGptqDevice(Context* ctx) : ctx_(ctx) {}

  absl::StatusOr<bool> Factor(const std::vector<double>& h, int64_t k,
                              std::vector<float>* u) override;
  absl::StatusOr<bool> FactorGram(const GptqGram& gram, double damp,
                                  std::vector<float>* u) override;
  absl::StatusOr<float> LoadWeights(std::span<const TensorView> tensors,
                                    std::span<const Matrix2D> m) override;
  absl::Status Sweep(const GptqSweepInput& in, const std::vector<float>& u,
                     std::vector<uint8_t>* codes, std::vector<uint8_t>* scales) override;
  absl::StatusOr<TensorMetrics> Metrics(size_t member, int64_t row0, const TensorView& t,
                                        const Matrix2D& m, const QuantizedTensor& q, float g_rtn,
                                        const Calibration* calibration) override;

  // A host copy of the factor kept by the last successful Factor / FactorGram (tests).
  absl::StatusOr<std::vector<float>> DownloadFactor();

  // The gptq_* fields and cublas_output_nmse of CudaRunStats, summed over this device's calls.
  const CudaRunStats& stats() const { return stats_; }

 private:
  // Factors the reversed matrix that `build` writes into `a` (column-major fp64 k x k device
  // memory) from its `input_bytes` of device memory at `input`, and keeps U in ctx_->factor.
  absl::StatusOr<bool> FactorOnDevice(
      int64_t k, size_t input_bytes,
      const std::function<absl::Status(double* a, uint8_t* input)>& build);

  // The loaded group (LoadWeights) in ctx_->gptq_weights.
  struct Loaded {
    std::vector<size_t> src_off;  // each member's source, as uploaded
    std::vector<DType> dtype;
    size_t w_off = 0;             // the stacked fp32 weight
    int64_t rows = 0, cols = 0;
  };

  Context* ctx_;
  int64_t factor_k_ = 0;  // k of the factor in ctx_->factor (0: none)
  std::optional<Loaded> loaded_;
  // The host Gram whose copy is in ctx_->gptq_gram (FactorGram), and its k.
  const float* gram_host_ = nullptr;
  int64_t gram_k_ = 0;
  CudaRunStats stats_;
};

}  // namespace nvfp4::cuda

#endif  // NVFP4_KERNELS_CUDA_GPTQ_CUDA_H_
