#include "server/quantizer_service.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/status_macros.h"
#include "nvfp4/v1/convert.h"
#include "server/grpc_status.h"
#include "server/tensor_request.h"

namespace nvfp4::server {
namespace {

// Decrements an atomic counter on scope exit.
class InflightGuard {
 public:
  explicit InflightGuard(std::atomic<int>* c) : c_(c) {}
  ~InflightGuard() { c_->fetch_sub(1); }

 private:
  std::atomic<int>* c_;
};

// Streams `data` as chunks of `part`, `chunk` bytes each.
absl::Status SendChunks(
    grpc::ServerReaderWriter<v1::QuantizeTensorResponse, v1::QuantizeTensorRequest>* stream,
    v1::Part part, const std::vector<uint8_t>& data, int chunk) {
  v1::QuantizeTensorResponse msg;
  for (size_t off = 0; off < data.size(); off += static_cast<size_t>(chunk)) {
    const size_t n = std::min(data.size() - off, static_cast<size_t>(chunk));
    v1::DataChunk* c = msg.mutable_chunk();
    c->set_part(part);
    c->set_offset(off);
    c->set_data(data.data() + off, n);
    if (!stream->Write(msg))
      return absl::CancelledError("client went away while receiving results");
  }
  return absl::OkStatus();
}

}  // namespace

int ClampChunkBytes(int requested, int fallback) {
  int v = requested > 0 ? requested : fallback;
  return std::clamp(v, kMinChunkBytes, kMaxChunkBytes);
}

QuantizerService::QuantizerService(ServiceOptions options, JobManager* jobs, DevicePool* devices,
                                   storage::StorageRouter* store, Metrics* metrics)
    : options_(options), jobs_(jobs), devices_(devices), store_(store), metrics_(metrics) {}

grpc::Status QuantizerService::Authorize(const grpc::ServerContext& context) {
  if (options_.auth == nullptr) return grpc::Status::OK;
  grpc::Status s = options_.auth->Check(context);
  if (!s.ok() && metrics_ != nullptr) metrics_->AuthFailure();
  return s;
}

grpc::Status QuantizerService::QuantizeTensor(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::QuantizeTensorResponse, v1::QuantizeTensorRequest>* stream) {
  if (grpc::Status auth = Authorize(*context); !auth.ok()) return auth;
  return ToGrpcStatus(DoQuantizeTensor(context, stream));
}

absl::Status QuantizerService::DoQuantizeTensor(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::QuantizeTensorResponse, v1::QuantizeTensorRequest>* stream) {
  if (jobs_->draining())
    return absl::UnavailableError("server is draining; not accepting new work");
  if (inflight_tensors_.fetch_add(1) >= options_.max_inflight_tensors) {
    inflight_tensors_.fetch_sub(1);
    return absl::UnavailableError(absl::StrCat("too many tensors in flight (",
                                               options_.max_inflight_tensors, "); retry later"));
  }
  InflightGuard guard(&inflight_tensors_);
  const absl::Time t0 = absl::Now();
  // A client that stops sending (or never sends) is cut off; its slot is freed.
  const std::unique_ptr<StreamDeadlines::Watch> watch =
      deadlines_.Add(context, options_.tensor_stream_idle_timeout,
                     absl::DeadlineExceededError(absl::StrCat(
                         "no QuantizeTensor message for ",
                         absl::FormatDuration(options_.tensor_stream_idle_timeout),
                         " while uploading (--tensor_stream_idle_timeout); the stream is closed")),
                     options_.tensor_stream_deadline,
                     absl::DeadlineExceededError(
                         absl::StrCat("QuantizeTensor call open for longer than ",
                                      absl::FormatDuration(options_.tensor_stream_deadline),
                                      " (--tensor_stream_deadline); the stream is closed")));
  auto cut_off = [&watch] {
    absl::Status s = watch->expired();
    return s.ok() ? absl::CancelledError("client cancelled") : s;
  };

  // Validate the header, then reassemble the source bytes (server/tensor_request.h, fuzzed by
  // tests/fuzz/fuzz_tensor_request.cc). Memory grows with the bytes received, not the bytes a
  // header claims.
  v1::QuantizeTensorRequest msg;
  if (!stream->Read(&msg)) {
    if (context->IsCancelled()) return cut_off();
    return absl::InvalidArgumentError("empty QuantizeTensor stream");
  }
  watch->Touch();
  RETURN_IF_ERROR(CheckTensorHeader(msg.header(), options_.limits));
  ASSIGN_OR_RETURN(const TensorRequest request,
                   ValidateTensorHeader(msg, options_.max_tensor_bytes));
  const v1::TensorHeader& header = request.header;
  const std::string& name = header.name();
  const nvfp4::QuantizeOptions* options = &request.options;
  SourceAssembler source(request);
  while (stream->Read(&msg)) {
    watch->Touch();
    if (context->IsCancelled()) return cut_off();
    RETURN_IF_ERROR(source.Add(msg));
  }
  if (context->IsCancelled()) return cut_off();
  watch->StopIdle();  // the overall deadline still bounds the device wait and the download
  RETURN_IF_ERROR(source.Finish());
  const int64_t bytes = request.bytes;
  if (metrics_ != nullptr) {
    metrics_->JobSubmitted("tensor");
    metrics_->InputBytes(bytes);
  }

  nvfp4::TensorView view;
  view.name = name;
  view.dtype = request.dtype;
  view.shape.assign(header.shape().begin(), header.shape().end());
  view.data = source.data().data();
  nvfp4::Calibration calibration;
  calibration.importance.assign(header.importance().begin(), header.importance().end());
  calibration.gram = source.Gram();

  // A tensor counted as submitted is counted once as finished: succeeded, failed, or cancelled
  // (the client went away while it waited for a device or received the result).
  auto finished = [&](absl::Status s) {
    if (metrics_ != nullptr) {
      const char* outcome = s.ok() ? "succeeded" : absl::IsCancelled(s) ? "cancelled" : "failed";
      metrics_->JobFinished("tensor", outcome, absl::ToDoubleSeconds(absl::Now() - t0));
    }
    return s;
  };
  absl::StatusOr<nvfp4::QuantizedTensor> q;
  std::string device;
  double quantize_seconds = 0;
  {
    absl::StatusOr<DevicePool::Lease> lease =
        devices_->Acquire([context] { return context->IsCancelled(); });
    if (!lease.ok()) return finished(lease.status());
    device = lease->backend()->name();
    const absl::Time q0 = absl::Now();
    q = lease->backend()->Quantize(view, *options, calibration.empty() ? nullptr : &calibration);
    quantize_seconds = absl::ToDoubleSeconds(absl::Now() - q0);
  }
  if (!q.ok()) return finished(q.status());
  if (metrics_ != nullptr) {
    metrics_->TensorQuantized(std::string(MethodName(options->method)), device, quantize_seconds,
                              q->metrics.nmse_vs_rtn);
    metrics_->OutputBytes(static_cast<int64_t>(q->packed.size() + q->scales.size()));
  }
  v1::QuantizeTensorResponse out;
  v1::QuantizedTensorHeader* h = out.mutable_header();
  h->set_name(name);
  h->set_rows(q->rows);
  h->set_cols(q->cols);
  for (int64_t d : q->source_shape) h->add_source_shape(d);
  h->set_global_scale(q->global_scale);
  h->set_packed_bytes(q->packed.size());
  h->set_scales_bytes(q->scales.size());
  if (options->compute_metrics) v1::ToProto(q->metrics, h->mutable_metrics());
  h->set_device(device);
  h->set_quantize_seconds(quantize_seconds);
  if (!stream->Write(out)) return finished(absl::CancelledError("client went away"));
  const int chunk = ClampChunkBytes(header.response_chunk_bytes(), options_.chunk_bytes);
  absl::Status sent = SendChunks(stream, v1::PART_PACKED, q->packed, chunk);
  if (sent.ok()) sent = SendChunks(stream, v1::PART_SCALES, q->scales, chunk);
  return finished(sent);
}

grpc::Status QuantizerService::QuantizeModel(grpc::ServerContext* context,
                                             const v1::QuantizeModelRequest* request,
                                             v1::Job* response) {
  if (grpc::Status auth = Authorize(*context); !auth.ok()) return auth;
  // Everything checkable before queueing is checked here: a bad request never becomes a job.
  if (absl::Status s = CheckQuantizeModelRequest(*request, options_.limits, store_); !s.ok()) {
    return ToGrpcStatus(s);
  }
  absl::StatusOr<v1::Job> job = jobs_->Submit(*request);
  if (!job.ok()) return ToGrpcStatus(job.status());
  *response = *std::move(job);
  return grpc::Status::OK;
}

grpc::Status QuantizerService::GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                                      v1::Job* response) {
  if (grpc::Status auth = Authorize(*context); !auth.ok()) return auth;
  if (absl::Status s = CheckJobId(request->job_id(), options_.limits); !s.ok()) {
    return ToGrpcStatus(s);
  }
  absl::StatusOr<v1::Job> job = jobs_->Get(request->job_id());
  if (!job.ok()) return ToGrpcStatus(job.status());
  *response = *std::move(job);
  return grpc::Status::OK;
}

grpc::Status QuantizerService::WatchJob(grpc::ServerContext* context,
                                        const v1::WatchJobRequest* request,
                                        grpc::ServerWriter<v1::JobEvent>* writer) {
  if (grpc::Status auth = Authorize(*context); !auth.ok()) return auth;
  if (absl::Status s = CheckJobId(request->job_id(), options_.limits); !s.ok()) {
    return ToGrpcStatus(s);
  }
  // Each stream holds a server thread for as long as the job runs: bounded.
  if (watch_streams_.fetch_add(1) >= options_.max_watch_streams) {
    watch_streams_.fetch_sub(1);
    return ToGrpcStatus(absl::ResourceExhaustedError(
        absl::StrCat("too many WatchJob streams open (", options_.max_watch_streams,
                     ", --max_watch_streams); retry later or poll GetJob")));
  }
  InflightGuard watching(&watch_streams_);
  absl::Duration heartbeat = options_.default_heartbeat;
  if (request->heartbeat_seconds() > 0) {
    heartbeat = absl::Seconds(std::clamp(request->heartbeat_seconds(), 1, 60));
  }
  return ToGrpcStatus(jobs_->Watch(
      request->job_id(), heartbeat, [writer](const v1::JobEvent& e) { return writer->Write(e); },
      [context] { return context->IsCancelled(); }));
}

grpc::Status QuantizerService::CancelJob(grpc::ServerContext* context, const v1::CancelJobRequest* request,
                                         v1::Job* response) {
  if (grpc::Status auth = Authorize(*context); !auth.ok()) return auth;
  if (absl::Status s = CheckJobId(request->job_id(), options_.limits); !s.ok()) {
    return ToGrpcStatus(s);
  }
  absl::StatusOr<v1::Job> job = jobs_->Cancel(request->job_id());
  if (!job.ok()) return ToGrpcStatus(job.status());
  *response = *std::move(job);
  return grpc::Status::OK;
}

grpc::Status QuantizerService::ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest* request,
                                        v1::ListJobsResponse* response) {
  if (grpc::Status auth = Authorize(*context); !auth.ok()) return auth;
  if (absl::Status s = CheckListJobsRequest(*request, options_.limits); !s.ok()) {
    return ToGrpcStatus(s);
  }
  absl::StatusOr<v1::ListJobsResponse> r = BoundListJobsPage(
      *request, options_.limits.max_list_page_bytes,
      [this](const v1::ListJobsRequest& page) { return jobs_->List(page); });
  if (!r.ok()) return ToGrpcStatus(r.status());
  *response = *std::move(r);
  return grpc::Status::OK;
}

grpc::Status QuantizerService::ReadResult(grpc::ServerContext* context,
                                          const v1::ReadResultRequest* request,
                                          grpc::ServerWriter<v1::ReadResultResponse>* writer) {
  if (grpc::Status auth = Authorize(*context); !auth.ok()) return auth;
  if (absl::Status s = CheckReadResultRequest(*request, options_.limits); !s.ok()) {
    return ToGrpcStatus(s);
  }
  return ToGrpcStatus(DoReadResult(context, *request, writer));
}

absl::Status QuantizerService::DoReadResult(grpc::ServerContext* context,
                                            const v1::ReadResultRequest& request,
                                            grpc::ServerWriter<v1::ReadResultResponse>* writer) {
  ASSIGN_OR_RETURN(v1::Job job, jobs_->Get(request.job_id()));
  const v1::OutputFile* file = nullptr;
  for (const v1::OutputFile& f : job.outputs()) {
    if (f.name() == request.name()) file = &f;
  }
  if (job.state() != v1::JOB_STATE_SUCCEEDED) {
    return absl::FailedPreconditionError(absl::StrCat("job ", job.job_id(), " is ",
                                                      JobStateName(job.state()),
                                                      "; results exist only for SUCCEEDED jobs"));
  }
  if (file == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("job ", job.job_id(), " has no output named '", request.name(), "'"));
  }
  const int64_t size = file->size_bytes();
  if (request.offset() < 0 || request.offset() > size) {
    return absl::OutOfRangeError(absl::StrCat("offset ", request.offset(), " is outside '",
                                              request.name(), "' (", size, " bytes)"));
  }
  int64_t end = size;
  if (request.limit() > 0) end = std::min(end, request.offset() + request.limit());
  const int chunk = ClampChunkBytes(request.chunk_bytes(), options_.chunk_bytes);
  std::string buf;
  v1::ReadResultResponse msg;
  for (int64_t off = request.offset(); off < end; off += chunk) {
    if (context->IsCancelled()) return absl::CancelledError("client cancelled");
    const int64_t n = std::min<int64_t>(chunk, end - off);
    buf.resize(static_cast<size_t>(n));
    RETURN_IF_ERROR(store_->ReadAt(file->uri(), off, n, buf.data()));
    msg.set_offset(off);
    msg.set_data(buf);
    msg.set_size_bytes(size);
    if (!writer->Write(msg)) return absl::CancelledError("client went away");
  }
  if (request.offset() == end) {  // empty read: still report the size
    msg.set_offset(end);
    msg.set_size_bytes(size);
    writer->Write(msg);
  }
  return absl::OkStatus();
}

}  // namespace nvfp4::server
