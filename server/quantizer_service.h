// gRPC handlers of nvfp4.v1.Quantizer. Thin: they validate and convert requests, call the
// JobManager / DevicePool / ObjectStore, and map absl::Status to grpc::Status once, here.
#ifndef NVFP4_SERVER_QUANTIZER_SERVICE_H_
#define NVFP4_SERVER_QUANTIZER_SERVICE_H_

#include <atomic>
#include <cstdint>

#include "nvfp4/v1/quantizer.grpc.pb.h"
#include "server/auth.h"
#include "server/device_pool.h"
#include "server/job_manager.h"
#include "server/metrics.h"
#include "server/request_limits.h"
#include "server/stream_deadlines.h"
#include "storage/router.h"

namespace nvfp4::server {

struct ServiceOptions {
  int chunk_bytes = 1 << 20;             // default response chunk size
  int64_t max_tensor_bytes = 4ll << 30;  // QuantizeTensor source size limit
  int max_inflight_tensors = 64;         // concurrent QuantizeTensor calls (admission)
  absl::Duration default_heartbeat = absl::Seconds(5);
  // QuantizeTensor: a stream without a message for `tensor_stream_idle_timeout` while the client
  // uploads, or open longer than `tensor_stream_deadline` in all, is cancelled with
  // DEADLINE_EXCEEDED (server/stream_deadlines.h), freeing its in-flight slot. Zero: no bound.
  absl::Duration tensor_stream_idle_timeout = absl::Seconds(30);
  absl::Duration tensor_stream_deadline = absl::Minutes(30);
  // Concurrent WatchJob streams (each holds a server thread); more get RESOURCE_EXHAUSTED.
  int max_watch_streams = 256;
  // Bearer-token check of every call (null: no authentication). Not owned.
  TokenAuthenticator* auth = nullptr;
  // Bounds of every request field and of ListJobs pages (server/request_limits.h).
  RequestLimits limits;
};

inline constexpr int kMinChunkBytes = 256 << 10;
inline constexpr int kMaxChunkBytes = 4 << 20;

class QuantizerService final : public v1::Quantizer::Service {
 public:
  // `metrics` may be null.
  QuantizerService(ServiceOptions options, JobManager* jobs, DevicePool* devices,
                   storage::StorageRouter* store, Metrics* metrics);

  grpc::Status QuantizeTensor(grpc::ServerContext* context,
                              grpc::ServerReaderWriter<v1::QuantizeTensorResponse,
                                                       v1::QuantizeTensorRequest>* stream) override;
  grpc::Status QuantizeModel(grpc::ServerContext* context, const v1::QuantizeModelRequest* request,
                             v1::Job* response) override;
  grpc::Status GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                      v1::Job* response) override;
  grpc::Status WatchJob(grpc::ServerContext* context, const v1::WatchJobRequest* request,
                        grpc::ServerWriter<v1::JobEvent>* writer) override;
  grpc::Status CancelJob(grpc::ServerContext* context, const v1::CancelJobRequest* request,
                         v1::Job* response) override;
  grpc::Status ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override;
  grpc::Status ReadResult(grpc::ServerContext* context, const v1::ReadResultRequest* request,
                          grpc::ServerWriter<v1::ReadResultResponse>* writer) override;

 private:
  grpc::Status Authorize(const grpc::ServerContext& context);
  absl::Status DoQuantizeTensor(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::QuantizeTensorResponse, v1::QuantizeTensorRequest>* stream);
  absl::Status DoReadResult(grpc::ServerContext* context, const v1::ReadResultRequest& request,
                            grpc::ServerWriter<v1::ReadResultResponse>* writer);

  const ServiceOptions options_;
  JobManager* const jobs_;
  DevicePool* const devices_;
  storage::StorageRouter* const store_;
  Metrics* const metrics_;
  std::atomic<int> inflight_tensors_{0};
  std::atomic<int> watch_streams_{0};
  StreamDeadlines deadlines_;
};

// Clamps a requested chunk size (0 = `fallback`) to [256 KiB, 4 MiB].
int ClampChunkBytes(int requested, int fallback);

}  // namespace nvfp4::server

#endif  // NVFP4_SERVER_QUANTIZER_SERVICE_H_
