#include "kernels/cuda/gptq_cuda.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/block_core.h"
#include "kernels/calibration.h"
#include "kernels/tensor_prep.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/cusolver_loader.h"
#include "kernels/cuda/gptq_kernels.h"

namespace nvfp4::cuda {
namespace {

using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// Consecutive aligned pieces of one device buffer: Add() returns a piece's offset; reserve
// total() bytes, then address the pieces with DeviceMem::at().
class ArenaPlan {
 public:
  size_t Add(size_t bytes) {
    const size_t at = total_;
    total_ += AlignUp(bytes);
    return at;
  }
  size_t total() const { return total_; }

 private:
  size_t total_ = 0;
};

absl::Status SolverStatus(cusolverStatus_t s, const char* what) {
  if (s == CUSOLVER_STATUS_SUCCESS) return absl::OkStatus();
  if (s == CUSOLVER_STATUS_ALLOC_FAILED) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": cuSOLVER could not allocate"));
  }
  return absl::InternalError(
      absl::StrCat(what, " failed with cuSOLVER status ", static_cast<int>(s)));
}

// A launch the shapes validated above cannot make inconsistent: an invalid value is a bug.
absl::Status LaunchStatus(cudaError_t e, const char* what) {
  if (e == cudaErrorInvalidValue) {
    cudaGetLastError();
    return absl::InternalError(absl::StrCat("CUDA GPTQ: inconsistent launch of ", what));
  }
  return CudaStatus(e, what);
}

// RAII pair of timing events.
struct EventPair {
  cudaEvent_t start = nullptr, stop = nullptr;
  ~EventPair() {
    if (start != nullptr) cudaEventDestroy(start);
    if (stop != nullptr) cudaEventDestroy(stop);
  }
  absl::Status Create() {
    NVFP4_CUDA(cudaEventCreate(&start));
    NVFP4_CUDA(cudaEventCreate(&stop));
    return absl::OkStatus();
  }
};

}  // namespace

absl::StatusOr<bool> CudaGptqDevice::Factor(const std::vector<double>& h, int64_t k,
                                            std::vector<float>* u) {
  if (k <= 0 || h.size() != static_cast<size_t>(k * k)) {
    return absl::InvalidArgumentError(
        absl::StrCat("GPTQ factor: matrix of ", h.size(), " values for k = ", k));
  }
  if (ctx_->Cusolver() == nullptr) {
    const Clock::time_point start = Clock::now();
    const bool ok = HostGptqFactor(h, k, u, HostThreadCount());
    stats_.gptq_factor_ms += MsSince(start);
    return ok;
  }
  u->clear();
  return FactorOnDevice(k, k * k * sizeof(double), [&](double* a, uint8_t* input) {
    cudaStream_t stream = ctx_->streams[0];
    double* hd = reinterpret_cast<double*>(input);
    RETURN_IF_ERROR(ctx_->Upload(hd, h.data(), h.size() * sizeof(double), stream));
    return LaunchStatus(LaunchGptqReverse(hd, k, a, stream), "the GPTQ reversal");
  });
}

absl::StatusOr<bool> CudaGptqDevice::FactorGram(const GptqGram& gram, double damp,
                                                std::vector<float>* u) {
  const int64_t k = gram.k;
  if (k <= 0 || gram.gram == nullptr || gram.diag == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("GPTQ factor: no Gram for k = ", k));
  }
  if (ctx_->Cusolver() == nullptr) return GptqDevice::FactorGram(gram, damp, u);
  u->clear();
  const size_t gram_bytes = static_cast<size_t>(k * k) * sizeof(float);
  // The Gram is uploaded once per group: dampening retries and the output metric reuse it.
  if (gram_host_ != gram.gram || gram_k_ != k) {
    gram_host_ = nullptr;
    RETURN_IF_ERROR(ctx_->gptq_gram.Reserve(gram_bytes));
    RETURN_IF_ERROR(ctx_->Upload(ctx_->gptq_gram.p, gram.gram, gram_bytes, ctx_->streams[0]));
    gram_host_ = gram.gram;
    gram_k_ = k;
  }
  const size_t perm_bytes = gram.perm != nullptr ? k * sizeof(int32_t) : 0;
  const size_t input_bytes = AlignUp(k * sizeof(double)) + perm_bytes;
  return FactorOnDevice(k, input_bytes, [&](double* a, uint8_t* input) {
    cudaStream_t stream = ctx_->streams[0];
    GptqGram d;
    d.k = k;
    d.gram = static_cast<const float*>(ctx_->gptq_gram.p);
    d.diag = reinterpret_cast<const double*>(input);
    RETURN_IF_ERROR(ctx_->Upload(input, gram.diag, k * sizeof(double), stream));
    if (gram.perm != nullptr) {
      uint8_t* perm = input + AlignUp(k * sizeof(double));
      RETURN_IF_ERROR(ctx_->Upload(perm, gram.perm, perm_bytes, stream));
      d.perm = reinterpret_cast<const int32_t*>(perm);
    }
    return LaunchStatus(LaunchGptqReverseGram(d, damp, a, stream), "the GPTQ Gram reversal");
  });
}

absl::StatusOr<bool> CudaGptqDevice::FactorOnDevice(
    int64_t k, size_t input_bytes,
    const std::function<absl::Status(double* a, uint8_t* input)>& build) {
  if (k > INT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("GPTQ factor: k = ", k, " is too large"));
  }
  const Clock::time_point start = Clock::now();
  const CusolverApi* api = LoadCusolver();
  cusolverDnHandle_t solver = ctx_->Cusolver();
  cudaStream_t stream = ctx_->streams[0];
  RETURN_IF_ERROR(SolverStatus(api->set_stream(solver, stream), "cusolverDnSetStream"));
  const int n = static_cast<int>(k);
  const size_t kk = static_cast<size_t>(k * k);
  factor_k_ = 0;  // until this factor is complete
  RETURN_IF_ERROR(ctx_->factor.Reserve(kk * sizeof(float)));
  ArenaPlan plan;
  const size_t a_off = plan.Add(kk * sizeof(double));  // reversed H -> L -> L^-1
  const size_t info_off = plan.Add(3 * sizeof(int));   // potrf info, trtri info, non-finite flag
  const size_t input_off = plan.Add(input_bytes);
  RETURN_IF_ERROR(ctx_->arena.Reserve(plan.total()));
  int lwork = 0;
  size_t trtri_device = 0, trtri_host = 0;
  {
    double* a = reinterpret_cast<double*>(ctx_->arena.at(a_off));
    RETURN_IF_ERROR(
        SolverStatus(api->dpotrf_buffer_size(solver, CUBLAS_FILL_MODE_LOWER, n, a, n, &lwork),
                     "cusolverDnDpotrf_bufferSize"));
    RETURN_IF_ERROR(
        SolverStatus(api->xtrtri_buffer_size(solver, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT,
                                             k, CUDA_R_64F, a, k, &trtri_device, &trtri_host),
                     "cusolverDnXtrtri_bufferSize"));
  }
  // potrf's and trtri's workspace reuses the input's memory: `build` has consumed the input
  // before potrf runs (stream order).
  const size_t work_bytes =
      std::max(static_cast<size_t>(std::max(lwork, 1)) * sizeof(double), trtri_device);
  if (work_bytes > input_bytes) plan.Add(work_bytes - input_bytes);
  RETURN_IF_ERROR(ctx_->arena.Reserve(plan.total()));
  double* a = reinterpret_cast<double*>(ctx_->arena.at(a_off));
  int* info = reinterpret_cast<int*>(ctx_->arena.at(info_off));
  uint8_t* input = ctx_->arena.at(input_off);
  void* work = input;
  std::vector<uint8_t> host_work(std::max<size_t>(trtri_host, 1));

  NVFP4_CUDA(cudaMemsetAsync(info, 0, 3 * sizeof(int), stream));
  RETURN_IF_ERROR(build(a, input));
  RETURN_IF_ERROR(SolverStatus(
      api->dpotrf(solver, CUBLAS_FILL_MODE_LOWER, n, a, n, static_cast<double*>(work), lwork, info),
      "cusolverDnDpotrf"));
  // Runs even when potrf failed (checked below, with one synchronization for both).
  RETURN_IF_ERROR(
      SolverStatus(api->xtrtri(solver, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, k, CUDA_R_64F,
                               a, k, work, trtri_device, host_work.data(), trtri_host, info + 1),
                   "cusolverDnXtrtri"));
  float* uf = reinterpret_cast<float*>(ctx_->factor.p);
  RETURN_IF_ERROR(LaunchStatus(LaunchGptqFactorOut(a, k, uf, info + 2, stream), "the GPTQ factor"));
  int host_info[3] = {0, 0, 0};
  NVFP4_CUDA(cudaMemcpyAsync(host_info, info, sizeof(host_info), cudaMemcpyDeviceToHost, stream));
  NVFP4_CUDA(cudaStreamSynchronize(stream));
  stats_.gptq_factor_on_gpu = true;
  stats_.gptq_factor_ms += MsSince(start);
  if (host_info[0] < 0 || host_info[1] < 0) {
    return absl::InternalError(absl::StrCat("GPTQ factor: cuSOLVER rejected argument ",
                                            -std::min(host_info[0], host_info[1])));
  }
  // potrf: a non-positive pivot; trtri: a zero diagonal; else a non-finite entry of L^-1.
  const bool ok = host_info[0] == 0 && host_info[1] == 0 && host_info[2] == 0;
  if (ok) factor_k_ = k;
  return ok;
}

absl::StatusOr<std::vector<float>> CudaGptqDevice::DownloadFactor() {
  if (factor_k_ == 0) return absl::FailedPreconditionError("no GPTQ factor on the device");
  std::vector<float> u(static_cast<size_t>(factor_k_ * factor_k_));
  RETURN_IF_ERROR(
      ctx_->Download(u.data(), ctx_->factor.p, u.size() * sizeof(float), ctx_->streams[0]));
  return u;
}

absl::StatusOr<float> CudaGptqDevice::LoadWeights(std::span<const TensorView> tensors,
                                                   std::span<const Matrix2D> m) {
  if (tensors.empty() || tensors.size() != m.size()) {
    return absl::InvalidArgumentError("GPTQ load: no tensors, or shapes that do not match them");
  }
  const Clock::time_point start = Clock::now();
  loaded_.reset();
  Loaded l;
  l.cols = m[0].cols;
  ArenaPlan plan;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (m[i].cols != l.cols || m[i].cols % kBlock != 0 || tensors[i].data == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("GPTQ load: member ", i, " is [", m[i].rows,
                                                     ", ", m[i].cols, "], K = ", l.cols));
    }
    l.src_off.push_back(plan.Add(static_cast<size_t>(m[i].rows * m[i].cols) *
                                 DTypeSize(tensors[i].dtype)));
    l.dtype.push_back(tensors[i].dtype);
    l.rows += m[i].rows;
  }
  const size_t scan_off = plan.Add(tensors.size() * sizeof(ScanState));
  l.w_off = plan.Add(static_cast<size_t>(l.rows * l.cols) * sizeof(float));
  RETURN_IF_ERROR(ctx_->gptq_weights.Reserve(plan.total()));
  DeviceMem& d = ctx_->gptq_weights;
  cudaStream_t stream = ctx_->streams[0];
  auto* scans = reinterpret_cast<ScanState*>(d.at(scan_off));
  int64_t row0 = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const int64_t elements = m[i].rows * m[i].cols;
    NVFP4_CUDA(LaunchScanInit(scans + i, stream));
    RETURN_IF_ERROR(ctx_->Upload(d.at(l.src_off[i]), tensors[i].data,
                                 static_cast<size_t>(elements) * DTypeSize(tensors[i].dtype),
                                 stream));
    RETURN_IF_ERROR(LaunchStatus(
        LaunchScan(d.at(l.src_off[i]), tensors[i].dtype, elements, 0, scans + i, stream),
        "the GPTQ source scan"));
    RETURN_IF_ERROR(LaunchStatus(
        LaunchGptqToFloat(d.at(l.src_off[i]), tensors[i].dtype, elements,
                          reinterpret_cast<float*>(d.at(l.w_off)) + row0 * l.cols, stream),
        "the GPTQ conversion"));
    row0 += m[i].rows;
  }
  std::vector<ScanState> host(tensors.size());
  NVFP4_CUDA(cudaMemcpyAsync(host.data(), scans, host.size() * sizeof(ScanState),
                             cudaMemcpyDeviceToHost, stream));
  NVFP4_CUDA(cudaStreamSynchronize(stream));
  stats_.gptq_load_ms += MsSince(start);
  float amax = 0.0f;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (host[i].first_bad != ~0ull) {
      const int64_t index = static_cast<int64_t>(host[i].first_bad);
      float value = 0.0f;
      ConvertToFloat(static_cast<const uint8_t*>(tensors[i].data) +
                         index * DTypeSize(tensors[i].dtype),
                     tensors[i].dtype, 1, &value);
      return NonFiniteError(tensors[i], m[i], index, value);
    }
    float a = 0.0f;
    std::memcpy(&a, &host[i].amax_bits, sizeof(float));
    amax = std::max(amax, a);
  }
  loaded_ = std::move(l);
  return amax;
}

absl::Status CudaGptqDevice::Sweep(const GptqSweepInput& in, const std::vector<float>& u,
                                   std::vector<uint8_t>* codes, std::vector<uint8_t>* scales) {
  const int64_t rows = in.rows, cols = in.cols;
  const bool kept = u.empty();
  if (!loaded_ || loaded_->rows != rows || loaded_->cols != cols) {
    return absl::FailedPreconditionError(
        absl::StrCat("GPTQ sweep: weight [", rows, ", ", cols, "] is not the loaded one"));
  }
  if (rows <= 0 || cols <= 0 || cols % kBlock != 0 ||
      (!kept && u.size() != static_cast<size_t>(cols * cols))) {
    return absl::InvalidArgumentError(
        absl::StrCat("GPTQ sweep: weight [", rows, ", ", cols, "] (K % 16 == 0) with a factor of ",
                     u.size(), " values"));
  }
  if (kept && factor_k_ != cols) {
    return absl::FailedPreconditionError(absl::StrCat(
        "GPTQ sweep: no factor of k = ", cols, " on the device (kept: k = ", factor_k_, ")"));
  }
  if (in.block_size < kBlock || in.block_size > 4096 || in.block_size % kBlock != 0) {
    return absl::InvalidArgumentError(absl::StrCat("GPTQ sweep: block size ", in.block_size,
                                                   " (a multiple of 16 in [16, 4096])"));
  }
  const bool need_importance = in.scale.objective_kind == BlockErrorKind::kWeightedSquared;
  const bool need_hessian = in.scale.objective_kind == BlockErrorKind::kHessian;
  if ((need_importance && (in.scale.importance == nullptr || in.importance_size < cols)) ||
      (need_hessian && (in.scale.hessian == nullptr || in.hessian_size < cols * kBlock))) {
    return absl::InvalidArgumentError(
        absl::StrCat("GPTQ sweep: the objective needs ", need_importance ? cols : cols * kBlock,
                     " values of importance / Hessian blocks, got ",
                     need_importance ? in.importance_size : in.hessian_size));
  }
  const Clock::time_point start = Clock::now();
  cudaStream_t stream = ctx_->streams[0];
  const int64_t ld = (rows + 3) / 4 * 4;
  const size_t rc = static_cast<size_t>(rows * cols), lc = static_cast<size_t>(ld * cols);
  ArenaPlan plan;
  const size_t u_off = plan.Add(kept ? 0 : u.size() * sizeof(float));
  const size_t wt_off = plan.Add(lc * sizeof(float));
  const size_t err_off = plan.Add(static_cast<size_t>(in.block_size * ld) * sizeof(float));
  const size_t codes_t_off = plan.Add(lc);
  const size_t scales_t_off = plan.Add(lc / kBlock);
  const size_t codes_off = plan.Add(rc);
  const size_t scales_off = plan.Add(rc / kBlock);
  const size_t perm_off = plan.Add(in.perm != nullptr ? cols * sizeof(int32_t) : 0);
  const size_t imp_off = plan.Add(need_importance ? cols * sizeof(float) : 0);
  const size_t hess_off = plan.Add(need_hessian ? cols * kBlock * sizeof(float) : 0);
  RETURN_IF_ERROR(ctx_->arena.Reserve(plan.total()));
  DeviceMem& m = ctx_->arena;

  GptqSweepLaunch a;
  a.rows = rows;
  a.cols = cols;
  a.ld = ld;
  a.block_size = in.block_size;
  a.g = in.g;
  a.static_scales = in.static_scales;
  a.scale = in.scale;
  a.u = reinterpret_cast<const float*>(kept ? ctx_->factor.p : m.at(u_off));
  a.w = reinterpret_cast<const float*>(ctx_->gptq_weights.at(loaded_->w_off));
  a.wt = reinterpret_cast<float*>(m.at(wt_off));
  a.err_t = reinterpret_cast<float*>(m.at(err_off));
  a.codes_t = m.at(codes_t_off);
  a.scales_t = m.at(scales_t_off);
  a.codes = m.at(codes_off);
  a.scales = m.at(scales_off);
  if (!kept) RETURN_IF_ERROR(ctx_->Upload(m.at(u_off), u.data(), u.size() * sizeof(float), stream));
  if (in.perm != nullptr) {
    a.perm = reinterpret_cast<const int32_t*>(m.at(perm_off));
    RETURN_IF_ERROR(ctx_->Upload(m.at(perm_off), in.perm, cols * sizeof(int32_t), stream));
  }
  a.scale.importance = nullptr;
  a.scale.hessian = nullptr;
  if (need_importance) {
    a.scale.importance = reinterpret_cast<const float*>(m.at(imp_off));
    RETURN_IF_ERROR(ctx_->Upload(m.at(imp_off), in.scale.importance, cols * sizeof(float), stream));
  }
  if (need_hessian) {
    a.scale.hessian = reinterpret_cast<const float*>(m.at(hess_off));
    RETURN_IF_ERROR(
        ctx_->Upload(m.at(hess_off), in.scale.hessian, cols * kBlock * sizeof(float), stream));
  }
  EventPair ev;
  RETURN_IF_ERROR(ev.Create());
  NVFP4_CUDA(cudaEventRecord(ev.start, stream));
  RETURN_IF_ERROR(LaunchStatus(LaunchGptqSweep(a, stream), "the GPTQ sweep"));
  NVFP4_CUDA(cudaEventRecord(ev.stop, stream));
  codes->resize(rc);
  scales->resize(rc / kBlock);
  RETURN_IF_ERROR(ctx_->Download(codes->data(), a.codes, rc, stream));
  RETURN_IF_ERROR(ctx_->Download(scales->data(), a.scales, rc / kBlock, stream));
  stats_.gptq_sweep_kernel_ms += ElapsedMs(ev.start, ev.stop);
  stats_.gptq_sweep_ms += MsSince(start);
  return absl::OkStatus();
}

absl::StatusOr<TensorMetrics> CudaGptqDevice::Metrics(size_t member, int64_t row0,
                                                      const TensorView& t, const Matrix2D& m,
                                                      const QuantizedTensor& q, float g_rtn,
                                                      const Calibration* calibration) {
  if (!loaded_ || member >= loaded_->src_off.size() || loaded_->cols != m.cols ||
      row0 + m.rows > loaded_->rows) {
    return absl::FailedPreconditionError(
        absl::StrCat("GPTQ metrics: member ", member, " is not in the loaded group"));
  }
  const int64_t bpr = m.cols / kBlock;
  if (q.packed.size() * 2 != static_cast<size_t>(m.rows * m.cols) ||
      q.scales.size() != static_cast<size_t>(m.rows * bpr)) {
    return absl::InternalError("GPTQ metrics: codes and scales do not match the weight");
  }
  const Clock::time_point start = Clock::now();
  cudaStream_t stream = ctx_->streams[0];
  const size_t n = static_cast<size_t>(m.rows);
  ArenaPlan plan;
  const size_t packed_off = plan.Add(q.packed.size());
  const size_t scales_off = plan.Add(q.scales.size());
  const size_t sums_off = plan.Add(3 * n * sizeof(double));
  const size_t max_off = plan.Add(n * sizeof(float));
  RETURN_IF_ERROR(ctx_->arena.Reserve(plan.total()));
  DeviceMem& d = ctx_->arena;
  const void* src = ctx_->gptq_weights.at(loaded_->src_off[member]);
  const DType dtype = loaded_->dtype[member];
  RETURN_IF_ERROR(ctx_->Upload(d.at(packed_off), q.packed.data(), q.packed.size(), stream));
  RETURN_IF_ERROR(ctx_->Upload(d.at(scales_off), q.scales.data(), q.scales.size(), stream));
  GptqRowMetricsLaunch a;
  a.src = src;
  a.dtype = dtype;
  a.packed = d.at(packed_off);
  a.scales = d.at(scales_off);
  a.g = q.global_scale;
  a.g_rtn = g_rtn;
  a.rows = m.rows;
  a.blocks_per_row = bpr;
  auto* sums = reinterpret_cast<double*>(d.at(sums_off));
  a.sq_err = sums;
  a.x_sq = sums + n;
  a.rtn_sq = sums + 2 * n;
  a.max_err = reinterpret_cast<float*>(d.at(max_off));
  RETURN_IF_ERROR(LaunchStatus(LaunchGptqRowMetrics(a, stream), "the GPTQ metrics"));
  std::vector<double> host_sums(3 * n);
  std::vector<float> host_max(n);
  NVFP4_CUDA(cudaMemcpyAsync(host_sums.data(), sums, host_sums.size() * sizeof(double),
                             cudaMemcpyDeviceToHost, stream));
  NVFP4_CUDA(cudaMemcpyAsync(host_max.data(), a.max_err, n * sizeof(float),
                             cudaMemcpyDeviceToHost, stream));
  NVFP4_CUDA(cudaStreamSynchronize(stream));
  const std::span<const double> all(host_sums);
  TensorMetrics out = GptqMetricsFromRows(all.subspan(0, n), all.subspan(n, n),
                                          all.subspan(2 * n, n), host_max);
  if (calibration != nullptr &&
      (!calibration->gram.empty() || calibration->activations != nullptr)) {
    absl::StatusOr<double> r = absl::ResourceExhaustedError("no cuBLAS");
    if (ctx_->Cublas() != nullptr) {
      const bool resident = gram_host_ != nullptr && gram_host_ == calibration->gram.data() &&
                            gram_k_ == m.cols;
      r = GpuOutputNmse(*ctx_, src, dtype, a.packed, a.scales, q.global_scale, m.rows, m.cols,
                        *calibration, stream,
                        resident ? static_cast<const float*>(ctx_->gptq_gram.p) : nullptr);
    }
    if (r.ok()) {
      stats_.cublas_output_nmse = true;
      out.output_nmse = *r;
    } else if (absl::IsResourceExhausted(r.status())) {
      // No cuBLAS, or not enough device memory for the GEMM operands: the host reference.
      out.output_nmse = OutputSpaceNmse(t, m, q, calibration);
    } else {
      return r.status();
    }
  }
  stats_.gptq_output_nmse_ms += MsSince(start);
  return out;
}

}  // namespace nvfp4::cuda
