#include "client/remote/quantizer_client.h"

#include <cstring>
#include <fstream>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/status_macros.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/security/credentials.h"
#include "nvfp4/v1/convert.h"

namespace nvfp4::client {
namespace {

void SetDeadline(grpc::ClientContext* ctx, absl::Duration timeout) {
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read ", path));
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

void QuantizerClient::PrepareContext(grpc::ClientContext* ctx) const {
  if (!options_.token.empty()) ctx->AddMetadata("authorization", "Bearer " + options_.token);
}

absl::Status FromGrpcStatus(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

absl::StatusOr<std::unique_ptr<QuantizerClient>> QuantizerClient::Connect(
    const ClientOptions& options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (options.tls || !options.tls_ca_file.empty() || !options.tls_cert_file.empty() ||
      !options.tls_key_file.empty()) {
    if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
      return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
    }
    grpc::SslCredentialsOptions ssl;
    if (!options.tls_ca_file.empty()) {
      ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadFile(options.tls_ca_file));
    }
    if (!options.tls_cert_file.empty()) {
      ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadFile(options.tls_cert_file));
      ASSIGN_OR_RETURN(ssl.pem_private_key, ReadFile(options.tls_key_file));
    }
    creds = grpc::SslCredentials(ssl);
    if (!options.tls_server_name.empty()) {
      args.SetSslTargetNameOverride(options.tls_server_name);
    }
  }
  std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(options.target, creds, args);
  if (!channel->WaitForConnected(absl::ToChronoTime(absl::Now() + options.connect_timeout))) {
    return absl::UnavailableError(absl::StrCat("cannot connect to nvfp4d at ", options.target));
  }
  return std::make_unique<QuantizerClient>(std::move(channel), options);
}

QuantizerClient::QuantizerClient(std::shared_ptr<grpc::Channel> channel,
                                 const ClientOptions& options)
    : options_(options), channel_(std::move(channel)), stub_(v1::Quantizer::NewStub(channel_)) {}

QuantizerClient::~QuantizerClient() = default;

absl::StatusOr<std::string> QuantizerClient::Health(const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(channel_);
  grpc::ClientContext ctx;
  PrepareContext(&ctx);
  SetDeadline(&ctx, options_.rpc_timeout);
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(service);
  grpc::health::v1::HealthCheckResponse resp;
  RETURN_IF_ERROR(FromGrpcStatus(stub->Check(&ctx, req, &resp)));
  return grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status());
}

absl::StatusOr<QuantizedTensor> QuantizerClient::QuantizeTensor(
    const TensorView& tensor, const QuantizeOptions& options, const std::vector<float>* importance,
    QuantizeTensorInfo* info, const std::vector<float>* gram) {
  int64_t numel = 1;
  for (int64_t d : tensor.shape) numel *= d;
  const size_t bytes = static_cast<size_t>(numel) * static_cast<size_t>(DTypeSize(tensor.dtype));
  grpc::ClientContext ctx;
  PrepareContext(&ctx);
  auto stream = stub_->QuantizeTensor(&ctx);

  v1::QuantizeTensorRequest req;
  v1::TensorHeader* h = req.mutable_header();
  h->set_name(tensor.name);
  h->set_dtype(v1::ToProto(tensor.dtype));
  for (int64_t d : tensor.shape) h->add_shape(d);
  *h->mutable_options() = v1::ToProto(options);
  if (importance != nullptr) h->mutable_importance()->Add(importance->begin(), importance->end());
  h->set_response_chunk_bytes(options_.chunk_bytes);
  const bool send_gram = gram != nullptr && !gram->empty();
  h->set_has_gram(send_gram);
  bool ok = stream->Write(req);
  auto send = [&](v1::Part part, const char* data, size_t size) {
    for (size_t off = 0; ok && off < size; off += static_cast<size_t>(options_.chunk_bytes)) {
      const size_t n = std::min(size - off, static_cast<size_t>(options_.chunk_bytes));
      req.Clear();
      v1::DataChunk* c = req.mutable_chunk();
      c->set_part(part);
      c->set_offset(off);
      c->set_data(data + off, n);
      ok = stream->Write(req);
    }
  };
  send(v1::PART_SOURCE, static_cast<const char*>(tensor.data), bytes);
  if (send_gram) {
    send(v1::PART_GRAM, reinterpret_cast<const char*>(gram->data()), gram->size() * sizeof(float));
  }
  stream->WritesDone();  // a failed write means the server already answered; read its status

  QuantizedTensor out;
  v1::QuantizeTensorResponse resp;
  bool have_header = false;
  uint64_t packed_bytes = 0, scales_bytes = 0;
  absl::Status protocol;
  while (stream->Read(&resp)) {
    if (resp.has_header()) {
      const v1::QuantizedTensorHeader& qh = resp.header();
      have_header = true;
      out.name = qh.name();
      out.rows = qh.rows();
      out.cols = qh.cols();
      out.source_shape.assign(qh.source_shape().begin(), qh.source_shape().end());
      out.global_scale = qh.global_scale();
      out.metrics = v1::FromProto(qh.metrics());
      packed_bytes = qh.packed_bytes();
      scales_bytes = qh.scales_bytes();
      out.packed.reserve(packed_bytes);
      out.scales.reserve(scales_bytes);
      if (info != nullptr) {
        info->device = qh.device();
        info->quantize_seconds = qh.quantize_seconds();
      }
      continue;
    }
    const v1::DataChunk& c = resp.chunk();
    std::vector<uint8_t>* dst = c.part() == v1::PART_PACKED   ? &out.packed
                                : c.part() == v1::PART_SCALES ? &out.scales
                                                              : nullptr;
    if (!have_header || dst == nullptr || c.offset() != dst->size()) {
      protocol = absl::InternalError("malformed QuantizeTensor response stream");
      ctx.TryCancel();
      break;
    }
    dst->insert(dst->end(), c.data().begin(), c.data().end());
  }
  absl::Status status = FromGrpcStatus(stream->Finish());
  RETURN_IF_ERROR(status);
  RETURN_IF_ERROR(protocol);
  if (!have_header || out.packed.size() != packed_bytes || out.scales.size() != scales_bytes) {
    return absl::InternalError(
        absl::StrCat("incomplete QuantizeTensor response for '", tensor.name, "'"));
  }
  return out;
}

absl::StatusOr<v1::Job> QuantizerClient::QuantizeModel(const v1::QuantizeModelRequest& request) {
  grpc::ClientContext ctx;
  PrepareContext(&ctx);
  SetDeadline(&ctx, options_.rpc_timeout);
  v1::Job job;
  RETURN_IF_ERROR(FromGrpcStatus(stub_->QuantizeModel(&ctx, request, &job)));
  return job;
}

absl::StatusOr<v1::Job> QuantizerClient::GetJob(const std::string& job_id) {
  grpc::ClientContext ctx;
  PrepareContext(&ctx);
  SetDeadline(&ctx, options_.rpc_timeout);
  v1::GetJobRequest req;
  req.set_job_id(job_id);
  v1::Job job;
  RETURN_IF_ERROR(FromGrpcStatus(stub_->GetJob(&ctx, req, &job)));
  return job;
}

absl::StatusOr<v1::Job> QuantizerClient::CancelJob(const std::string& job_id) {
  grpc::ClientContext ctx;
  PrepareContext(&ctx);
  SetDeadline(&ctx, options_.rpc_timeout);
  v1::CancelJobRequest req;
  req.set_job_id(job_id);
  v1::Job job;
  RETURN_IF_ERROR(FromGrpcStatus(stub_->CancelJob(&ctx, req, &job)));
  return job;
}

absl::StatusOr<v1::ListJobsResponse> QuantizerClient::ListJobs(const v1::ListJobsRequest& request) {
  grpc::ClientContext ctx;
  PrepareContext(&ctx);
  SetDeadline(&ctx, options_.rpc_timeout);
  v1::ListJobsResponse resp;
  RETURN_IF_ERROR(FromGrpcStatus(stub_->ListJobs(&ctx, request, &resp)));
  return resp;
}

absl::StatusOr<v1::Job> QuantizerClient::WatchJob(
    const std::string& job_id, const std::function<void(const v1::JobEvent&)>& on_event,
    int heartbeat_seconds, int reattach_attempts,
    const std::function<void(const absl::Status&, absl::Duration)>& on_reattach) {
  absl::Status last;
  int failed = 0;  // consecutive attempts that delivered no event
  while (true) {
    grpc::ClientContext ctx;
    PrepareContext(&ctx);
    v1::WatchJobRequest req;
    req.set_job_id(job_id);
    req.set_heartbeat_seconds(heartbeat_seconds);
    auto reader = stub_->WatchJob(&ctx, req);
    v1::JobEvent event;
    std::optional<v1::Job> terminal;
    bool delivered = false;
    while (reader->Read(&event)) {
      delivered = true;
      if (on_event) on_event(event);
      if (event.type() == v1::EVENT_TYPE_TERMINAL) terminal = event.job();
    }
    last = FromGrpcStatus(reader->Finish());
    if (terminal.has_value()) return *terminal;
    // Re-attach: OK without a terminal event, UNAVAILABLE (a draining or restarting server, no
    // connection) and CANCELLED (this client never cancels a watch: the server or the transport
    // ended the call, e.g. calls cancelled at the end of a drain). Anything else is an answer.
    if (!last.ok() && !absl::IsUnavailable(last) && !absl::IsCancelled(last)) return last;
    if (last.ok()) last = absl::UnavailableError("watch stream ended before the job finished");
    failed = delivered ? 1 : failed + 1;
    if (failed > reattach_attempts) break;
    // 0.5 s, 1 s, 2 s, 4 s, then every 8 s: about a minute and a quarter with the default.
    const absl::Duration wait = absl::Milliseconds(500) * (1 << std::min(failed - 1, 4));
    if (on_reattach) on_reattach(last, wait);
    absl::SleepFor(wait);
  }
  return absl::Status(
      last.code(), absl::StrCat(last.message(), " (gave up re-attaching to job ", job_id, " after ",
                                reattach_attempts, " attempts)"));
}

absl::Status QuantizerClient::ReadResult(
    const std::string& job_id, const std::string& name, int64_t offset,
    const std::function<absl::Status(int64_t, absl::string_view)>& sink) {
  grpc::ClientContext ctx;
  PrepareContext(&ctx);
  v1::ReadResultRequest req;
  req.set_job_id(job_id);
  req.set_name(name);
  req.set_offset(offset);
  req.set_chunk_bytes(options_.chunk_bytes);
  auto reader = stub_->ReadResult(&ctx, req);
  v1::ReadResultResponse resp;
  absl::Status sink_status;
  while (reader->Read(&resp)) {
    if (resp.data().empty()) continue;
    sink_status = sink(resp.offset(), resp.data());
    if (!sink_status.ok()) {
      ctx.TryCancel();
      break;
    }
  }
  absl::Status s = FromGrpcStatus(reader->Finish());
  if (!sink_status.ok()) return sink_status;
  return s;
}

}  // namespace nvfp4::client
