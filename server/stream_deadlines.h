// Idle timeouts and overall deadlines of streaming calls of the synchronous gRPC server.
//
// A sync handler blocked in Read() cannot notice time passing, so a client that opens a
// QuantizeTensor stream and then sends nothing would hold its in-flight slot forever. A
// StreamDeadlines keeps a watchdog thread over the calls registered with Watch(): a call with no
// Touch() for `idle`, or open longer than `total`, is cancelled with its status and message
// (grpc_call_cancel_with_status): the client receives that status (e.g. DEADLINE_EXCEEDED "no
// QuantizeTensor message for 30s ..."), the handler's Read() returns false and
// ServerContext::IsCancelled() turns true, so the handler returns and frees what it holds.
#ifndef NVFP4_SERVER_STREAM_DEADLINES_H_
#define NVFP4_SERVER_STREAM_DEADLINES_H_

#include <memory>
#include <set>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/server_context.h"

namespace nvfp4::server {

class StreamDeadlines {
 public:
  // `poll`: how often the watchdog looks (the precision of the timeouts).
  explicit StreamDeadlines(absl::Duration poll = absl::Milliseconds(100));
  ~StreamDeadlines();
  StreamDeadlines(const StreamDeadlines&) = delete;
  StreamDeadlines& operator=(const StreamDeadlines&) = delete;

  class Watch;
  // Watches `context` (which must outlive the returned Watch) from now on: once no Touch() came
  // for `idle` it is cancelled with `idle_status`, once it is open for `total` with
  // `total_status`. A zero or infinite duration disables that bound.
  std::unique_ptr<Watch> Add(grpc::ServerContext* context, absl::Duration idle,
                             absl::Status idle_status, absl::Duration total,
                             absl::Status total_status);

  // Calls cancelled so far (for tests and metrics).
  int64_t cancelled() const;

 private:
  void Loop();
  void Remove(Watch* w);

  const absl::Duration poll_;
  mutable absl::Mutex mu_;
  std::set<Watch*> watches_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  int64_t cancelled_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

// One watched call; unregisters on destruction.
class StreamDeadlines::Watch {
 public:
  ~Watch();
  // The call made progress: the idle clock restarts.
  void Touch();
  // Stops the idle bound (e.g. once the upload is complete); the overall deadline stays.
  void StopIdle();
  // The status the call was cancelled with, or OK when it was not.
  absl::Status expired() const;

 private:
  friend class StreamDeadlines;
  Watch(StreamDeadlines* owner, grpc::ServerContext* context) : owner_(owner), context_(context) {}
  StreamDeadlines* const owner_;
  grpc::ServerContext* const context_;
  // Guarded by owner_->mu_.
  absl::Duration idle_;
  absl::Status idle_status_, total_status_;
  absl::Time last_, deadline_;
  absl::Status expired_;
};

}  // namespace nvfp4::server

#endif  // NVFP4_SERVER_STREAM_DEADLINES_H_
