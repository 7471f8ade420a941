// The CUDA backend: the backend-neutral flow (quantize_driver.h: RunQuantizeGroup) with a
// PassExecutor whose passes run the shared block core on the GPU (cuda_kernels.cu).
//
// Per backend (one device): a cuda::Context (cuda_context.h): two streams, a device arena grown
// geometrically and reused by every group (no cudaMalloc per tensor on the hot path), two pinned
// staging buffers for host<->device copies, and lazily created cuBLAS (output-space metric) and
// cuSOLVER (GPTQ factor) handles. Method gptq runs RunGptqGroup (kernels/gptq.h) with the
// CudaGptqDevice of gptq_cuda.h on the same context.
//
// Per group, one of two memory plans:
//  - resident: every tensor is copied to the device once (in Scan, pipelined through the pinned
//    staging buffers; tensor j+1's copy overlaps tensor j's scan on the other stream), all passes
//    run on the device-resident tensor with two code/scale slots, and Fetch copies one slot back;
//  - streamed (the group does not fit the budget, or its allocation failed): each pass copies the
//    tensor through the device in chunks of a multiple of 1024 blocks; codes and scales live on the
//    host. Chunk boundaries are reduction-chunk boundaries, so the results are identical.
// Tensor-wide sums use the canonical tree of reduce.h on the device (bit-identical to the CPU).
//
// cuBLAS is used only for the output-space metric (OutputNmse), which must match the host to fp32
// rounding, not bitwise. The objective data of the search (wmse importances, hessian 16x16 blocks)
// stays host-prepared (calibration.cc) and is uploaded: a cuBLAS X^T X accumulates in a different
// order than the host's sequential token loop, so its fp32 Hessian blocks would differ in the last
// bits and the search could pick different scales than the CPU reference.
#include "kernels/cuda/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/calibration.h"
#include "kernels/cuda/cublas_loader.h"
#include "kernels/cuda/cuda_context.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/cusolver_loader.h"
#include "kernels/cuda/gptq_cuda.h"
#include "kernels/gptq.h"
#include "kernels/parallel.h"
#include "kernels/quantize_driver.h"
#include "kernels/reduce.h"

namespace nvfp4 {
namespace {

using cuda::AlignUp;
using cuda::CudaStatus;
using cuda::Context;
using cuda::ElapsedMs;
using cuda::kSums;

// FP8 views dequantized on the device (the default), or on the host first with
// NVFP4_CUDA_FP8_ON_DEVICE=0.
bool Fp8OnDevice() {
  const char* v = std::getenv("NVFP4_CUDA_FP8_ON_DEVICE");
  return v == nullptr || std::string_view(v) != "0";
}

int64_t EnvBudget() {
  const char* v = std::getenv("NVFP4_CUDA_MAX_CHUNK_BYTES");
  int64_t b = 0;
  if (v != nullptr && absl::SimpleAtoi(v, &b) && b > 0) return b;
  return 0;
}

class CudaExecutor : public PassExecutor {
 public:
  CudaExecutor(std::span<const PreparedTensor> tensors, Context* ctx)
      : PassExecutor(tensors), ctx_(ctx) {}

  ~CudaExecutor() override {
    // Statistics of the group (all work was synchronized by the last pass or fetch).
    CudaRunStats& st = ctx_->last;
    st.streamed = streamed_;
    st.chunk_blocks = streamed_ ? chunk_blocks_ : 0;
    st.passes = passes_;
    st.kernel_ms = kernel_ms_;
    st.cublas_output_nmse = cublas_used_;
    st.fp8_sources_on_device = 0;
    for (const TensorState& t : ts_) st.fp8_sources_on_device += t.fp8 != nullptr ? 1 : 0;
    if (!streamed_ && passes_ > 0 && !ts_.empty() && ts_[0].scan_start != nullptr) {
      st.device_span_ms = ElapsedMs(ts_[0].scan_start, span_end_);
    }
    cudaStreamSynchronize(ctx_->streams[0]);
    cudaStreamSynchronize(ctx_->streams[1]);
    for (TensorState& t : ts_) {
      for (cudaEvent_t e : {t.scan_start, t.scan_stop, t.scan_done}) {
        if (e != nullptr) cudaEventDestroy(e);
      }
    }
    for (cudaEvent_t e : {pass_start_, pass_stop_, span_end_}) {
      if (e != nullptr) cudaEventDestroy(e);
    }
    cudaGetLastError();
  }

  absl::Status Init() {
    const size_t n = tensors_.size();
    ts_.resize(n);
    size_t small_total = 0;      // per-tensor objective data and sums, shared scratch
    size_t resident_total = 0;   // + sources and both slots
    size_t scratch = 0;
    int max_dsize = 1;
    int64_t max_blocks = 0;
    bool any_fp8 = false;
    for (size_t i = 0; i < n; ++i) {
      const PreparedTensor& p = tensors_[i];
      TensorState& t = ts_[i];
      t.dtype = p.view->dtype;
      t.dsize = DTypeSize(t.dtype);
      t.blocks = p.matrix.blocks();
      if (p.view->fp8 != nullptr) {
        // Codes (1 byte per element) are uploaded and dequantized into an fp32 source on the
        // device (RunQuantizeGroup has checked the view with FoldShape).
        any_fp8 = true;
        t.fp8 = p.view->fp8;
        t.fp8_grid = (p.matrix.rows + t.fp8->block_rows - 1) / t.fp8->block_rows *
                     t.fp8->grid_cols;
        small_total += AlignUp(static_cast<size_t>(t.fp8_grid) * sizeof(float));
        resident_total += AlignUp(static_cast<size_t>(t.blocks) * 16);  // the codes
      }
      t.chunks = (t.blocks + kReduceChunk - 1) / kReduceChunk;
      t.stream = static_cast<int>(i % 2);
      max_dsize = std::max(max_dsize, t.dsize);
      max_blocks = std::max(max_blocks, t.blocks);
      small_total += AlignUp(p.objective.importance.size() * sizeof(float)) +
                     AlignUp(p.objective.hessian_blocks.size() * sizeof(float)) +
                     AlignUp(static_cast<size_t>(t.chunks) * kSums * sizeof(double)) +
                     AlignUp(static_cast<size_t>(t.chunks) * sizeof(float)) +
                     AlignUp(sizeof(cuda::ScanState));
      resident_total += AlignUp(static_cast<size_t>(t.blocks) * 16 * t.dsize) +
                        2 * AlignUp(static_cast<size_t>(t.blocks) * 8) +
                        2 * AlignUp(static_cast<size_t>(t.blocks));
      scratch = std::max(scratch, static_cast<size_t>(cuda::ReduceScratchDoubles(t.chunks)));
    }
    small_total += AlignUp(scratch * sizeof(double)) + AlignUp(sizeof(cuda::PassTotalsDevice));
    resident_total += small_total;

    int64_t budget = EnvBudget();
    if (budget == 0) {
      size_t free_b = 0, total_b = 0;
      NVFP4_CUDA(cudaMemGetInfo(&free_b, &total_b));
      budget = static_cast<int64_t>(static_cast<double>(free_b + ctx_->arena.bytes) * 0.9);
    }
    bool placed = false;
    if (static_cast<int64_t>(resident_total) <= budget) {
      absl::Status s = ctx_->arena.Reserve(resident_total);
      if (s.ok()) {
        placed = true;
        streamed_ = false;
      } else if (!absl::IsResourceExhausted(s)) {
        return s;
      }
    }
    if (!placed) {
      streamed_ = true;
      const size_t per_block = 16 * static_cast<size_t>(max_dsize) + 2 * 9 + (any_fp8 ? 16 : 0);
      const int64_t avail =
          budget > static_cast<int64_t>(small_total) ? budget - static_cast<int64_t>(small_total) : 0;
      int64_t cb = avail / static_cast<int64_t>(per_block) / kReduceChunk * kReduceChunk;
      const int64_t cap = (max_blocks + kReduceChunk - 1) / kReduceChunk * kReduceChunk;
      cb = std::clamp<int64_t>(cb, kReduceChunk, cap);
      while (true) {
        const size_t total = small_total + LaneBytes(cb, max_dsize, any_fp8);
        absl::Status s = ctx_->arena.Reserve(total);
        if (s.ok()) break;
        if (!absl::IsResourceExhausted(s) || cb == kReduceChunk) {
          return absl::ResourceExhaustedError(
              absl::StrCat("CUDA backend: cannot allocate even a 1024-block chunk on device ",
                           ctx_->ordinal, ": ", s.message()));
        }
        cb = std::max<int64_t>(kReduceChunk, cb / 2 / kReduceChunk * kReduceChunk);
      }
      chunk_blocks_ = cb;
    }

    // Carve the arena.
    size_t off = 0;
    auto take = [&](size_t bytes) {
      uint8_t* p = ctx_->arena.at(off);
      off += AlignUp(bytes);
      return p;
    };
    for (size_t i = 0; i < n; ++i) {
      const PreparedTensor& p = tensors_[i];
      TensorState& t = ts_[i];
      if (!p.objective.importance.empty()) {
        t.importance = reinterpret_cast<float*>(take(p.objective.importance.size() * sizeof(float)));
      }
      if (!p.objective.hessian_blocks.empty()) {
        t.hessian =
            reinterpret_cast<float*>(take(p.objective.hessian_blocks.size() * sizeof(float)));
      }
      t.sums = reinterpret_cast<double*>(take(static_cast<size_t>(t.chunks) * kSums * sizeof(double)));
      t.maxes = reinterpret_cast<float*>(take(static_cast<size_t>(t.chunks) * sizeof(float)));
      t.scan = reinterpret_cast<cuda::ScanState*>(take(sizeof(cuda::ScanState)));
      if (t.fp8 != nullptr) {
        t.fp8_scales = reinterpret_cast<float*>(take(static_cast<size_t>(t.fp8_grid) * sizeof(float)));
      }
      if (!streamed_) {
        t.src = take(static_cast<size_t>(t.blocks) * 16 * t.dsize);
        if (t.fp8 != nullptr) t.codes = take(static_cast<size_t>(t.blocks) * 16);
        for (int k = 0; k < 2; ++k) {
          t.packed[k] = take(static_cast<size_t>(t.blocks) * 8);
          t.scales[k] = take(static_cast<size_t>(t.blocks));
        }
      }
    }
    scratch_ = reinterpret_cast<double*>(take(scratch * sizeof(double)));
    totals_dev_ = reinterpret_cast<cuda::PassTotalsDevice*>(take(sizeof(cuda::PassTotalsDevice)));
    if (streamed_) {
      lane_.src = take(static_cast<size_t>(chunk_blocks_) * 16 * max_dsize);
      lane_.prev_packed = take(static_cast<size_t>(chunk_blocks_) * 8);
      lane_.prev_scales = take(static_cast<size_t>(chunk_blocks_));
      lane_.out_packed = take(static_cast<size_t>(chunk_blocks_) * 8);
      lane_.out_scales = take(static_cast<size_t>(chunk_blocks_));
      if (any_fp8) lane_.codes = take(static_cast<size_t>(chunk_blocks_) * 16);
    }
    if (off > ctx_->arena.bytes) return absl::InternalError("CUDA backend: arena plan overflow");

    // Pinned host mirrors: scan states, pass totals.
    RETURN_IF_ERROR(
        ctx_->small.Reserve(n * sizeof(cuda::ScanState) + sizeof(cuda::PassTotalsDevice)));
    scan_host_ = reinterpret_cast<cuda::ScanState*>(ctx_->small.bytes_at(0));
    totals_host_ = reinterpret_cast<cuda::PassTotalsDevice*>(
        ctx_->small.bytes_at(n * sizeof(cuda::ScanState)));
    for (TensorState& t : ts_) {
      NVFP4_CUDA(cudaEventCreate(&t.scan_start));
      NVFP4_CUDA(cudaEventCreate(&t.scan_stop));
      NVFP4_CUDA(cudaEventCreateWithFlags(&t.scan_done, cudaEventDisableTiming));
    }
    NVFP4_CUDA(cudaEventCreate(&pass_start_));
    NVFP4_CUDA(cudaEventCreate(&pass_stop_));
    NVFP4_CUDA(cudaEventCreate(&span_end_));
    return absl::OkStatus();
  }

  absl::StatusOr<TensorScan> Scan(int i) override {
    if (!scans_launched_) {
      scans_launched_ = true;
      for (size_t j = 0; j < ts_.size(); ++j) RETURN_IF_ERROR(LaunchScan(static_cast<int>(j)));
    }
    TensorState& t = ts_[i];
    NVFP4_CUDA(cudaEventSynchronize(t.scan_done));
    kernel_ms_ += streamed_ ? 0.0 : ElapsedMs(t.scan_start, t.scan_stop);
    const cuda::ScanState s = scan_host_[i];
    TensorScan out;
    if (s.first_bad != ~0ull) {
      out.first_non_finite = static_cast<int64_t>(s.first_bad);
      ViewToFloat(*tensors_[i].view, out.first_non_finite, 1, &out.non_finite_value);
      return out;
    }
    std::memcpy(&out.amax, &s.amax_bits, sizeof(float));
    return out;
  }

  absl::StatusOr<PassTotals> RunPass(int i, const BlockPassParams& params, int src,
                                     int dst) override {
    TensorState& t = ts_[i];
    const PreparedTensor& p = tensors_[i];
    cudaStream_t stream = ctx_->streams[t.stream];
    const bool refine = params.method == BlockMethod::kSoarRefine;
    cuda::PassLaunch a;
    a.dtype = t.dtype;
    a.blocks_per_row = p.matrix.cols / kBlock;
    a.objective = p.objective.kind;
    a.importance = t.importance;
    a.hessian = t.hessian;
    a.chunk_sums = t.sums;
    a.sum_stride = t.chunks;
    a.chunk_max = t.maxes;
    a.params = params;
    NVFP4_CUDA(cudaEventRecord(pass_start_, stream));
    if (!streamed_) {
      a.src = t.src;
      a.block_begin = 0;
      a.blocks = t.blocks;
      a.prev_packed = refine ? t.packed[src] : nullptr;
      a.prev_scales = refine ? t.scales[src] : nullptr;
      a.out_packed = t.packed[dst];
      a.out_scales = t.scales[dst];
      RETURN_IF_ERROR(CheckLaunch(cuda::LaunchBlockPass(a, stream), p));
    } else {
      t.h_packed[dst].resize(static_cast<size_t>(t.blocks) * 8);
      t.h_scales[dst].resize(static_cast<size_t>(t.blocks));
      if (refine && t.h_packed[src].size() != t.h_packed[dst].size()) {
        return absl::InternalError("CUDA backend: refine pass without a previous pass");
      }
      for (int64_t b0 = 0; b0 < t.blocks; b0 += chunk_blocks_) {
        const int64_t nb = std::min(chunk_blocks_, t.blocks - b0);
        RETURN_IF_ERROR(StageSource(i, lane_.src, b0, nb, stream));
        if (refine) {
          NVFP4_CUDA(cudaMemcpyAsync(lane_.prev_packed, t.h_packed[src].data() + b0 * 8, nb * 8,
                                     cudaMemcpyHostToDevice, stream));
          NVFP4_CUDA(cudaMemcpyAsync(lane_.prev_scales, t.h_scales[src].data() + b0, nb,
                                     cudaMemcpyHostToDevice, stream));
        }
        a.src = lane_.src;
        a.block_begin = b0;
        a.blocks = nb;
        a.prev_packed = refine ? lane_.prev_packed : nullptr;
        a.prev_scales = refine ? lane_.prev_scales : nullptr;
        a.out_packed = lane_.out_packed;
        a.out_scales = lane_.out_scales;
        RETURN_IF_ERROR(CheckLaunch(cuda::LaunchBlockPass(a, stream), p));
        NVFP4_CUDA(cudaMemcpyAsync(t.h_packed[dst].data() + b0 * 8, lane_.out_packed, nb * 8,
                                   cudaMemcpyDeviceToHost, stream));
        NVFP4_CUDA(cudaMemcpyAsync(t.h_scales[dst].data() + b0, lane_.out_scales, nb,
                                   cudaMemcpyDeviceToHost, stream));
      }
    }
    NVFP4_CUDA(cuda::LaunchReduceTotals(t.sums, t.maxes, t.chunks, scratch_, totals_dev_, stream));
    NVFP4_CUDA(cudaEventRecord(pass_stop_, stream));
    NVFP4_CUDA(cudaEventRecord(span_end_, stream));
    NVFP4_CUDA(cudaMemcpyAsync(totals_host_, totals_dev_, sizeof(cuda::PassTotalsDevice),
                               cudaMemcpyDeviceToHost, stream));
    NVFP4_CUDA(cudaStreamSynchronize(stream));
    ++passes_;
    if (!streamed_) kernel_ms_ += ElapsedMs(pass_start_, pass_stop_);
    const cuda::PassTotalsDevice& d = *totals_host_;
    PassTotals out;
    out.obj_err = d.sums[0];
    out.sq_err = d.sums[1];
    out.rtn_sq_err = d.sums[2];
    out.x_sq = d.sums[3];
    out.s1 = d.sums[4];
    out.s2 = d.sums[5];
    out.max_abs_err = d.max_abs_err;
    return out;
  }

  absl::Status Fetch(int i, int slot, QuantizedTensor* out) override {
    TensorState& t = ts_[i];
    t.fetched_slot = slot;
    if (streamed_) {
      out->packed = std::move(t.h_packed[slot]);
      out->scales = std::move(t.h_scales[slot]);
      return absl::OkStatus();
    }
    cudaStream_t stream = ctx_->streams[t.stream];
    out->packed.resize(static_cast<size_t>(t.blocks) * 8);
    out->scales.resize(static_cast<size_t>(t.blocks));
    RETURN_IF_ERROR(ctx_->Download(out->packed.data(), t.packed[slot], out->packed.size(), stream));
    RETURN_IF_ERROR(ctx_->Download(out->scales.data(), t.scales[slot], out->scales.size(), stream));
    return absl::OkStatus();
  }

  absl::StatusOr<std::optional<double>> OutputNmse(int i, const QuantizedTensor& q) override {
    const Calibration* c = tensors_[i].calibration;
    if (c == nullptr || (c->gram.empty() && c->activations == nullptr)) return std::nullopt;
    if (!streamed_ && ts_[i].fetched_slot >= 0 && ctx_->Cublas() != nullptr) {
      absl::StatusOr<double> r = GpuOutputNmse(i, q, *c);
      if (r.ok()) {
        cublas_used_ = true;
        return std::optional<double>(*r);
      }
      if (!absl::IsResourceExhausted(r.status())) return r.status();
      // Not enough device memory for the GEMM operands: the host reference below.
    }
    return PassExecutor::OutputNmse(i, q);
  }

 private:
  struct TensorState {
    DType dtype = DType::kBF16;  // of the source on the device (kF32 for an FP8 source)
    int dsize = 2;               // its bytes per element
    const Fp8Scales* fp8 = nullptr;  // FP8 source: the host scales
    int64_t fp8_grid = 0;            // FP8: number of scales
    float* fp8_scales = nullptr;     // FP8: the scales on the device
    uint8_t* codes = nullptr;        // FP8, resident plan: the uploaded codes
    int64_t blocks = 0, chunks = 0;
    int stream = 0;
    uint8_t* src = nullptr;  // resident plan
    uint8_t* packed[2] = {nullptr, nullptr};
    uint8_t* scales[2] = {nullptr, nullptr};
    float* importance = nullptr;
    float* hessian = nullptr;
    double* sums = nullptr;
    float* maxes = nullptr;
    cuda::ScanState* scan = nullptr;
    std::vector<uint8_t> h_packed[2], h_scales[2];  // streamed plan
    cudaEvent_t scan_start = nullptr, scan_stop = nullptr, scan_done = nullptr;
    int fetched_slot = -1;
  };
  struct Lane {
    uint8_t* src = nullptr;
    uint8_t* prev_packed = nullptr;
    uint8_t* prev_scales = nullptr;
    uint8_t* out_packed = nullptr;
    uint8_t* out_scales = nullptr;
    uint8_t* codes = nullptr;  // FP8 codes of a chunk (when the group has an FP8 source)
  };

  static size_t LaneBytes(int64_t chunk_blocks, int dsize, bool fp8) {
    const size_t cb = static_cast<size_t>(chunk_blocks);
    return AlignUp(cb * 16 * dsize) + 2 * AlignUp(cb * 8) + 2 * AlignUp(cb) +
           (fp8 ? AlignUp(cb * 16) : 0);
  }

  // Puts source blocks [b0, b0 + nb) of tensor i at `dst` on the device, in its device dtype: a
  // copy, or for an FP8 source a copy of the codes (a quarter of the fp32 bytes) and the
  // dequantization kernel (the host's DequantFp8, bit-identical).
  absl::Status StageSource(int i, uint8_t* dst, int64_t b0, int64_t nb, cudaStream_t stream) {
    const TensorState& t = ts_[i];
    const PreparedTensor& p = tensors_[i];
    const int host_size = t.fp8 != nullptr ? 1 : t.dsize;  // bytes per element of the view
    const uint8_t* host = static_cast<const uint8_t*>(p.view->data) + b0 * 16 * host_size;
    const size_t bytes = static_cast<size_t>(nb) * 16 * host_size;
    if (t.fp8 == nullptr) return ctx_->Upload(dst, host, bytes, stream);
    uint8_t* codes = streamed_ ? lane_.codes : t.codes + b0 * 16;
    RETURN_IF_ERROR(ctx_->Upload(codes, host, bytes, stream));
    Fp8Scales on_device = *t.fp8;
    on_device.scale = t.fp8_scales;
    NVFP4_CUDA(cuda::LaunchDequantFp8(codes, nb * 16, b0 * 16, p.matrix.cols, on_device,
                                      reinterpret_cast<float*>(dst), stream));
    return absl::OkStatus();
  }

  static absl::Status CheckLaunch(cudaError_t e, const PreparedTensor& p) {
    if (e == cudaSuccess) return absl::OkStatus();
    if (e == cudaErrorInvalidValue) {
      cudaGetLastError();
      return absl::InternalError(absl::StrCat("CUDA backend: inconsistent block-pass launch for tensor '",
                                              p.view->name, "' (", p.matrix.rows, " x ",
                                              p.matrix.cols, ")"));
    }
    return CudaStatus(e, "block pass launch");
  }

  // Copies tensor j (and its objective data) to the device and scans it on its stream.
  absl::Status LaunchScan(int j) {
    TensorState& t = ts_[j];
    const PreparedTensor& p = tensors_[j];
    cudaStream_t stream = ctx_->streams[t.stream];
    if (t.importance != nullptr) {
      RETURN_IF_ERROR(ctx_->Upload(t.importance, p.objective.importance.data(),
                                   p.objective.importance.size() * sizeof(float), stream));
    }
    if (t.hessian != nullptr) {
      RETURN_IF_ERROR(ctx_->Upload(t.hessian, p.objective.hessian_blocks.data(),
                                   p.objective.hessian_blocks.size() * sizeof(float), stream));
    }
    if (t.fp8 != nullptr) {
      RETURN_IF_ERROR(ctx_->Upload(t.fp8_scales, t.fp8->scale,
                                   static_cast<size_t>(t.fp8_grid) * sizeof(float), stream));
    }
    NVFP4_CUDA(cuda::LaunchScanInit(t.scan, stream));
    if (!streamed_) {
      RETURN_IF_ERROR(StageSource(j, t.src, 0, t.blocks, stream));
      NVFP4_CUDA(cudaEventRecord(t.scan_start, stream));
      NVFP4_CUDA(cuda::LaunchScan(t.src, t.dtype, t.blocks * 16, 0, t.scan, stream));
      NVFP4_CUDA(cudaEventRecord(t.scan_stop, stream));
    } else {
      NVFP4_CUDA(cudaEventRecord(t.scan_start, stream));
      for (int64_t b0 = 0; b0 < t.blocks; b0 += chunk_blocks_) {
        const int64_t nb = std::min(chunk_blocks_, t.blocks - b0);
        RETURN_IF_ERROR(StageSource(j, lane_.src, b0, nb, stream));
        NVFP4_CUDA(cuda::LaunchScan(lane_.src, t.dtype, nb * 16, b0 * 16, t.scan, stream));
      }
      NVFP4_CUDA(cudaEventRecord(t.scan_stop, stream));
      // The lane is shared by all tensors: finish before the next tensor (other stream) uses it.
      NVFP4_CUDA(cudaStreamSynchronize(stream));
    }
    NVFP4_CUDA(cudaMemcpyAsync(&scan_host_[j], t.scan, sizeof(cuda::ScanState),
                               cudaMemcpyDeviceToHost, stream));
    NVFP4_CUDA(cudaEventRecord(t.scan_done, stream));
    return absl::OkStatus();
  }

  // The GPU output metric of tensor i's fetched slot (device-resident source and codes).
  absl::StatusOr<double> GpuOutputNmse(int i, const QuantizedTensor& q, const Calibration& c) {
    const TensorState& t = ts_[i];
    const Matrix2D& m = tensors_[i].matrix;
    const int slot = t.fetched_slot;
    return cuda::GpuOutputNmse(*ctx_, t.src, t.dtype, t.packed[slot], t.scales[slot],
                               q.global_scale, m.rows, m.cols, c, ctx_->streams[t.stream]);
  }

  Context* ctx_;
  std::vector<TensorState> ts_;
  bool streamed_ = false;
  int64_t chunk_blocks_ = 0;
  Lane lane_;
  double* scratch_ = nullptr;
  cuda::PassTotalsDevice* totals_dev_ = nullptr;
  cuda::PassTotalsDevice* totals_host_ = nullptr;
  cuda::ScanState* scan_host_ = nullptr;
  bool scans_launched_ = false;
  cudaEvent_t pass_start_ = nullptr, pass_stop_ = nullptr, span_end_ = nullptr;
  int passes_ = 0;
  double kernel_ms_ = 0;
  bool cublas_used_ = false;
};

class CudaBackend : public QuantizerBackend {
 public:
  explicit CudaBackend(std::unique_ptr<Context> ctx) : ctx_(std::move(ctx)) {}

  std::string name() const override { return absl::StrCat("cuda:", ctx_->ordinal); }

  absl::StatusOr<std::vector<QuantizedTensor>> QuantizeGroup(
      std::span<const TensorView> tensors, const QuantizeOptions& options,
      std::span<const Calibration* const> calibration) override {
    std::lock_guard<std::mutex> lock(ctx_->mu);
    NVFP4_CUDA(cudaSetDevice(ctx_->ordinal));
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<std::vector<QuantizedTensor>> out;
    if (options.method == Method::kGptq) {
      cuda::CudaGptqDevice device(ctx_.get());
      // The cjso global scale quantizes the group without feedback: the lock is already held.
      out = RunGptqGroup(tensors, options, calibration, device,
                         [this](std::span<const TensorView> t, const QuantizeOptions& o,
                                std::span<const Calibration* const> c) {
                           return QuantizeGroupLocked(t, o, c);
                         });
      ctx_->last = device.stats();
    } else {
      out = QuantizeGroupLocked(tensors, options, calibration);
    }
    ctx_->last.wall_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    return out;
  }

  CudaRunStats last_stats() const {
    std::lock_guard<std::mutex> lock(ctx_->mu);
    return ctx_->last;
  }

 private:
  // The block-pass methods (RunQuantizeGroup); the caller holds ctx_->mu. Sets ctx_->last.
  absl::StatusOr<std::vector<QuantizedTensor>> QuantizeGroupLocked(
      std::span<const TensorView> tensors, const QuantizeOptions& options,
      std::span<const Calibration* const> calibration) {
    ctx_->last = CudaRunStats();
    Context* ctx = ctx_.get();
    return RunQuantizeGroup(tensors, options, calibration,
                            [ctx](std::span<const PreparedTensor> prepared)
                                -> absl::StatusOr<std::unique_ptr<PassExecutor>> {
                              auto exec = std::make_unique<CudaExecutor>(prepared, ctx);
                              RETURN_IF_ERROR(exec->Init());
                              return exec;
                            },
                            /*executor_reads_fp8=*/Fp8OnDevice());
  }

  std::unique_ptr<Context> ctx_;
};

}  // namespace

int CudaVisibleDeviceCount() {
  // Load every kernel when the CUDA context is created, not at its first launch (CUDA's default
  // is lazy loading): a kernel first launched while the device memory is full fails to load and
  // then fails every later launch with cudaErrorUnknown, even after memory is freed (seen on an
  // H200, tests/kernels/cuda OutOfDeviceMemoryFallsBackToChunks). Effective only before the first
  // CUDA call of the process; this is the first in nvfp4d and nvfp4ctl. A value the user set wins.
  static const bool kEager = [] { return ::setenv("CUDA_MODULE_LOADING", "EAGER", 0) == 0; }();
  (void)kEager;
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

absl::StatusOr<std::unique_ptr<QuantizerBackend>> MakeCudaBackend(int ordinal) {
  const int count = CudaVisibleDeviceCount();
  if (ordinal < 0 || ordinal >= count) {
    return absl::NotFoundError(absl::StrCat("CUDA device cuda:", ordinal, " not found (", count,
                                            " visible device", count == 1 ? "" : "s", ")"));
  }
  auto ctx = std::make_unique<Context>();
  RETURN_IF_ERROR(ctx->Init(ordinal));
  return std::unique_ptr<QuantizerBackend>(new CudaBackend(std::move(ctx)));
}

absl::StatusOr<CudaRunStats> LastCudaRunStats(const QuantizerBackend& backend) {
  const auto* b = dynamic_cast<const CudaBackend*>(&backend);
  if (b == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("backend '", backend.name(), "' is not CUDA"));
  }
  return b->last_stats();
}

bool CudaCublasAvailable() { return cuda::LoadCublas() != nullptr; }

bool CudaCusolverAvailable() { return cuda::LoadCusolver() != nullptr; }

}  // namespace nvfp4
