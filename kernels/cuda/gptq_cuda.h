// GPTQ's device work on a CUDA GPU (kernels/gptq.h: GptqDevice), used by the CUDA backend for
// Method::kGptq:
//  - Factor / FactorGram: the host reference's math (HostGptqFactor) with cuSOLVER: Cholesky of
//    the reversed matrix in fp64 (potrf), its triangular inverse (trtri), reversed back and
//    rounded to fp32. FactorGram builds the fp64 matrix on the device from the uploaded fp32
//    Gram (half the bytes of the fp64 matrix, no host copy). Different fp64 arithmetic than the
//    host, so the factor agrees to rounding, not bitwise (docs/NUMERICS.md, "GPTQ", CUDA
//    contract). U stays on the device for the Sweep (*u is left empty). Without cuSOLVER the
//    host reference factors (and fills *u).
//  - Sweep: gptq_kernels.cu; for the same factor, codes and scales equal HostGptqSweep's.
//  - OutputNmse: the backend's cuBLAS output metric (host reference without cuBLAS or memory).
// Device memory, one group at a time: U (fp32 k x k, Context::factor) plus, per call, the
// factor's fp64 k x k matrix and fp32 Gram, or the sweep's W and working copies (about
// 4 bytes x 2 rows k plus the codes).
#ifndef NVFP4_KERNELS_CUDA_GPTQ_CUDA_H_
#define NVFP4_KERNELS_CUDA_GPTQ_CUDA_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_context.h"
#include "kernels/gptq.h"

namespace nvfp4::cuda {

class CudaGptqDevice : public GptqDevice {
 public:
  // Works on ctx's first stream, arena and handles; ctx outlives the device, and the caller
  // holds ctx->mu (one group at a time).
  explicit CudaGptqDevice(Context* ctx) : ctx_(ctx) {}

  absl::StatusOr<bool> Factor(const std::vector<double>& h, int64_t k,
                              std::vector<float>* u) override;
  absl::StatusOr<bool> FactorGram(const GptqGram& gram, double damp,
                                  std::vector<float>* u) override;
  absl::Status Sweep(const GptqSweepInput& in, std::vector<float>& w, const std::vector<float>& u,
                     std::vector<uint8_t>* codes, std::vector<uint8_t>* scales) override;
  absl::StatusOr<std::optional<double>> OutputNmse(const TensorView& w, const Matrix2D& m,
                                                   const QuantizedTensor& q,
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

  absl::StatusOr<double> DeviceOutputNmse(const TensorView& w, const Matrix2D& m,
                                          const QuantizedTensor& q, const Calibration& c);

  Context* ctx_;
  int64_t factor_k_ = 0;  // k of the factor in ctx_->factor (0: none)
  CudaRunStats stats_;
};

}  // namespace nvfp4::cuda

#endif  // NVFP4_KERNELS_CUDA_GPTQ_CUDA_H_
