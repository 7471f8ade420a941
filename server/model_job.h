// The interface between the job machinery and the checkpoint pipeline.
//
// The JobManager runs a ModelPipeline for each QuantizeModel job. The pipeline reads the input
// checkpoint through the ObjectStore, quantizes the selected weights on devices leased from the
// DevicePool, writes the output atomically, and reports progress through the ProgressSink. It
// checks ProgressSink::Cancelled() between tensors and then returns CANCELLED.
#ifndef NVFP4_SERVER_MODEL_JOB_H_
#define NVFP4_SERVER_MODEL_JOB_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nvfp4/v1/quantizer.pb.h"
#include "pipeline/resume.h"
#include "server/device_pool.h"
#include "storage/router.h"

namespace nvfp4::server {

// Progress reporting for one job (thread-safe).
class ProgressSink {
 public:
  virtual ~ProgressSink() = default;
  // Totals, once known.
  virtual void SetTotals(int64_t tensors, int64_t bytes_in_total) = 0;
  // A tensor started (shown as the job's current tensor).
  virtual void TensorStarted(absl::string_view name) = 0;
  // A tensor finished: `bytes_in` source bytes consumed, `bytes_out` bytes produced.
  virtual void TensorFinished(const v1::TensorResult& result, int64_t bytes_in,
                              int64_t bytes_out) = 0;
  // True once cancellation was requested (by a client or by a server shutdown).
  virtual bool Cancelled() const = 0;
  // True when the cancellation is a server shutdown: the job runs again after the restart, so a
  // resumable run keeps what it staged.
  virtual bool Interrupted() const { return false; }
  // `tensors` of the finished tensors were kept from an interrupted earlier run (not recomputed).
  virtual void SetResumed(int64_t tensors) { (void)tensors; }
  // Of bytes_in_total, the source bytes of the tensors that are quantized (the rest is copied).
  // Copies stream at disk speed and quantization costs far more, so the ETA follows these bytes.
  virtual void SetQuantizedBytesTotal(int64_t bytes) { (void)bytes; }
  // A note for the job's result (Job.warnings), e.g. a copied tensor that holds NaN/Inf values.
  virtual void Warn(absl::string_view message) { (void)message; }
  // Called right before the run publishes its output or discards its staging: OK when this server
  // still owns the job. In a fleet it confirms (and extends) the job's lease: FAILED_PRECONDITION
  // when the lease was lost to another replica (this one stalled past it) or could not be
  // confirmed; the run must then leave the output and the staging alone, and Interrupted() turns
  // true (the new owner resumes from the staging).
  virtual absl::Status CheckOwnership() { return absl::OkStatus(); }
};

// Everything a pipeline run needs. Pointers are owned by the caller and outlive the run.
struct ModelJobContext {
  std::string job_id;
  const v1::QuantizeModelRequest* request = nullptr;
  storage::StorageRouter* store = nullptr;  // the server's storage (null in some tests)
  DevicePool* devices = nullptr;
  ProgressSink* progress = nullptr;
  // Durable servers: where the run journals its finished units and finds those of an interrupted
  // earlier run of the same job (pipeline/resume.h). Null: the run starts from scratch.
  pipeline::ResumeJournal* resume = nullptr;
};

class ModelPipeline {
 public:
  virtual ~ModelPipeline() = default;
  // Validates a request before it is queued (URIs parse, layout known, ...). INVALID_ARGUMENT.
  virtual absl::Status Validate(const v1::QuantizeModelRequest& request) = 0;
  // Runs one job to completion. Returns the output files (size + sha256), or an error status:
  // CANCELLED when ProgressSink::Cancelled() became true, INVALID_ARGUMENT naming the tensor for
  // malformed input, NOT_FOUND for a missing input.
  virtual absl::StatusOr<std::vector<v1::OutputFile>> Run(const ModelJobContext& context) = 0;
  // Removes what an interrupted run of job `job_id` staged for resuming, for a job that ends
  // without running again (cancelled while queued after a restart).
  virtual void DiscardStaged(const std::string& job_id, const v1::QuantizeModelRequest& request,
                             storage::StorageRouter* store) {
    (void)job_id;
    (void)request;
    (void)store;
  }
};

}  // namespace nvfp4::server

#endif  // NVFP4_SERVER_MODEL_JOB_H_
