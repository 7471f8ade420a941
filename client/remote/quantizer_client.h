// C++ client of the nvfp4d service (nvfp4.v1.Quantizer + grpc.health.v1).
//
//   ASSIGN_OR_RETURN(auto client, QuantizerClient::Connect({.target = "localhost:50051"}));
//   ASSIGN_OR_RETURN(QuantizedTensor q, client->QuantizeTensor(view, options));
//   ASSIGN_OR_RETURN(v1::Job job, client->QuantizeModel(request));
//   ASSIGN_OR_RETURN(job, client->WatchJob(job.job_id(), [](const v1::JobEvent& e) { ... }));
//
// Every call returns absl::Status with the server's canonical code and message. Tensors stream in
// chunks (default 1 MiB); unary calls have a deadline.
#ifndef NVFP4_CLIENT_REMOTE_QUANTIZER_CLIENT_H_
#define NVFP4_CLIENT_REMOTE_QUANTIZER_CLIENT_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "kernels/types.h"
#include "nvfp4/v1/quantizer.grpc.pb.h"

namespace grpc {
class Channel;
class ClientContext;
class Status;
}  // namespace grpc

namespace nvfp4::client {

struct ClientOptions {
  std::string target = "localhost:50051";
  int chunk_bytes = 1 << 20;                       // upload/download chunk size
  int max_message_bytes = 8 << 20;                 // receive limit
  absl::Duration rpc_timeout = absl::Seconds(30);  // unary calls
  absl::Duration connect_timeout = absl::Seconds(5);
  // TLS: on when `tls` or any file is given. `tls_ca_file`: PEM roots that verify the server
  // (empty: the system roots); `tls_cert_file` + `tls_key_file`: the client certificate for
  // mutual TLS. `tls_server_name`: expected name in the server certificate (default: the host).
  bool tls = false;
  std::string tls_ca_file, tls_cert_file, tls_key_file, tls_server_name;
  // Bearer token sent as `authorization: Bearer <token>` on every call (empty: none).
  std::string token;
};

// Per-call information from QuantizeTensor.
struct QuantizeTensorInfo {
  std::string device;
  double quantize_seconds = 0;
};

class QuantizerClient {
 public:
  // Creates the channel and waits up to connect_timeout for it (UNAVAILABLE if it never connects).
  static absl::StatusOr<std::unique_ptr<QuantizerClient>> Connect(const ClientOptions& options);
  // Wraps an existing channel (tests).
  QuantizerClient(std::shared_ptr<grpc::Channel> channel, const ClientOptions& options);
  ~QuantizerClient();

  // grpc.health.v1 Check: "SERVING", "NOT_SERVING", "UNKNOWN" or "SERVICE_UNKNOWN".
  absl::StatusOr<std::string> Health(const std::string& service = "");

  // Quantizes one tensor remotely. `importance` ([K]) and `gram` ([K*K], the input Gram X^T X:
  // objective hessian, method gptq, output_nmse) are optional.
  absl::StatusOr<QuantizedTensor> QuantizeTensor(const TensorView& tensor,
                                                 const QuantizeOptions& options,
                                                 const std::vector<float>* importance = nullptr,
                                                 QuantizeTensorInfo* info = nullptr,
                                                 const std::vector<float>* gram = nullptr);

  absl::StatusOr<v1::Job> QuantizeModel(const v1::QuantizeModelRequest& request);
  absl::StatusOr<v1::Job> GetJob(const std::string& job_id);
  absl::StatusOr<v1::Job> CancelJob(const std::string& job_id);
  absl::StatusOr<v1::ListJobsResponse> ListJobs(const v1::ListJobsRequest& request);

  // Streams events to `on_event` until the terminal event; returns the final job. A stream that
  // ends without the terminal event with OK, UNAVAILABLE (server draining or restarting, no
  // connection) or CANCELLED (ended by the server or the transport) is re-attached with backoff
  // (0.5 s doubling to 8 s); it gives up after `reattach_attempts` attempts in a row that
  // delivered no event (the default waits about 75 s: a drain plus a restart). `on_reattach`, when
  // set, hears each interruption (the status that ended the stream) and the wait before the next
  // attempt.
  absl::StatusOr<v1::Job> WatchJob(
      const std::string& job_id, const std::function<void(const v1::JobEvent&)>& on_event,
      int heartbeat_seconds = 0, int reattach_attempts = 12,
      const std::function<void(const absl::Status&, absl::Duration)>& on_reattach = nullptr);

  // Downloads output `name` of a job from `offset`, passing each chunk to `sink`.
  absl::Status ReadResult(
      const std::string& job_id, const std::string& name, int64_t offset,
      const std::function<absl::Status(int64_t offset, absl::string_view data)>& sink);

  v1::Quantizer::Stub* stub() { return stub_.get(); }

 private:
  // Adds the bearer token (when configured) to a call.
  void PrepareContext(grpc::ClientContext* ctx) const;
  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Quantizer::Stub> stub_;
};

// grpc::Status -> absl::Status (same code and message).
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace nvfp4::client

#endif  // NVFP4_CLIENT_REMOTE_QUANTIZER_CLIENT_H_
