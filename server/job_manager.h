// Job queue and workers for QuantizeModel jobs.
//
// Jobs are admitted into a bounded queue (UNAVAILABLE when full or draining) and run by one worker
// thread per device. Every state change is saved to the JobStore, logged as one line with timing,
// and wakes WatchJob streams. Submission is idempotent per request_id. Cancellation is checked by
// the pipeline between tensors. On shutdown, running jobs that did not finish within the drain
// timeout are interrupted and saved as QUEUED, so a restarted server runs them again; after a
// crash, jobs saved as RUNNING are queued again too. With a durable JobStore (JobJournal) such a
// run resumes from the last unit it journaled instead of starting over.
//
// Shared mode (the JobStore is a SharedJobStore, e.g. PostgreSQL for a fleet): the store is the
// source of truth and this manager one replica of many. Submit inserts into the store; workers
// claim QUEUED jobs (or RUNNING ones whose owner's lease expired) from it; a keeper thread renews
// the leases of the jobs this replica runs every `lease_poll`, saves their progress and finished
// tensors, and turns a cancellation requested through any replica into a cancel between tensors.
// Get/List/Watch/Cancel answer from the store for jobs run anywhere (Watch polls it every
// `lease_poll`). Draining and Stop hand running jobs back (QUEUED, lease released) so that another
// replica resumes them; a replica that lost a lease (it stalled past `lease`) abandons the run.
#ifndef NVFP4_SERVER_JOB_MANAGER_H_
#define NVFP4_SERVER_JOB_MANAGER_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "nvfp4/v1/quantizer.pb.h"
#include "server/device_pool.h"
#include "server/job_store.h"
#include "server/metrics.h"
#include "server/model_job.h"
#include "storage/router.h"

namespace nvfp4::server {

struct JobManagerOptions {
  int queue_capacity = 64;  // QUEUED jobs at most
  int workers = 1;          // usually the number of devices
  absl::Duration default_heartbeat = absl::Seconds(5);
  // Retention of finished jobs (memory and journal stay bounded on a long-running server): the
  // oldest finished jobs are forgotten (GetJob/WatchJob/ReadResult answer NOT_FOUND, the job store
  // deletes them) when more than `max_finished_jobs` are kept or once they finished more than
  // `finished_job_ttl` ago. A job that a WatchJob stream is reading is kept until it ends.
  int64_t max_finished_jobs = 10000;
  absl::Duration finished_job_ttl = absl::Hours(7 * 24);
  // Shared mode only (see above): how long a claim lasts without renewal, how often leases are
  // renewed (and cancellations and progress exchanged, and watchers poll), and how often an idle
  // worker looks for a claimable job.
  absl::Duration lease = absl::Seconds(30);
  absl::Duration lease_poll = absl::Milliseconds(250);
  absl::Duration claim_poll = absl::Seconds(1);
};

class JobManager {
 public:
  // `metrics` may be null. Nothing runs until Start().
  JobManager(JobManagerOptions options, ModelPipeline* pipeline, storage::StorageRouter* store,
             DevicePool* devices, JobStore* job_store, Metrics* metrics);
  ~JobManager();

  // Reloads saved jobs (unfinished ones are queued again) and starts the workers.
  absl::Status Start();

  // Creates a job (or returns the existing one for a repeated request_id with equal params).
  // INVALID_ARGUMENT (pipeline validation), ALREADY_EXISTS (request_id reused with other params),
  // UNAVAILABLE (queue full or draining).
  absl::StatusOr<v1::Job> Submit(const v1::QuantizeModelRequest& request);
  // NOT_FOUND for an unknown id.
  absl::StatusOr<v1::Job> Get(const std::string& job_id);
  // Idempotent; a queued job is cancelled at once, a running one between tensors.
  absl::StatusOr<v1::Job> Cancel(const std::string& job_id);
  // Newest first. INVALID_ARGUMENT for a malformed page token.
  absl::StatusOr<v1::ListJobsResponse> List(const v1::ListJobsRequest& request);

  // Streams a job to `send` (returns false when the client is gone): snapshot, progress events,
  // heartbeats, and the terminal event. Returns when the terminal event was sent (OK), when
  // `cancelled()` turns true or `send` fails (CANCELLED), or at shutdown (UNAVAILABLE).
  absl::Status Watch(const std::string& job_id, absl::Duration heartbeat,
                     const std::function<bool(const v1::JobEvent&)>& send,
                     const std::function<bool()>& cancelled);

  // Refuses new jobs from now on and stops starting queued ones.
  void BeginDrain();
  bool draining() const { return draining_.load(); }
  // Waits until no job is running; false on timeout.
  bool WaitIdle(absl::Duration timeout);
  // Interrupts running jobs (they are saved as QUEUED), stops the workers and ends watch streams.
  void Stop();

  int64_t running() const;
  int64_t queued() const;

 private:
  struct Record;
  class Sink;
  // Shared mode: renews the lease of a job this replica runs, right before its output is
  // published or its staging discarded (ProgressSink::CheckOwnership); OK without a shared store.
  // When the lease is lost (or the store does not answer within one lease) the run is marked
  // interrupted and lease-lost, and FAILED_PRECONDITION is returned.
  absl::Status ConfirmLease(Record* rec);
  void WorkerLoop(int worker_index);
  // Shared mode (see above).
  void SharedWorkerLoop(int worker_index);
  void KeeperLoop();
  absl::StatusOr<v1::Job> SharedSubmit(const v1::QuantizeModelRequest& request);
  absl::StatusOr<v1::ListJobsResponse> SharedList(const v1::ListJobsRequest& request);
  absl::Status SharedWatch(const std::string& job_id, absl::Duration heartbeat,
                           const std::function<bool(const v1::JobEvent&)>& send,
                           const std::function<bool()>& cancelled);
  // Saves the outcome of a run in shared mode and forgets the local record.
  void SharedFinish(Record* rec, int worker_index, absl::Duration run, bool interrupted,
                    const std::string& detail);
  void RunJob(Record* rec, int worker_index);
  absl::StatusOr<v1::Job> CancelImpl(const std::string& job_id, bool* discard);
  void SaveLocked(const Record& rec) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records that `job_id` just finished and forgets finished jobs beyond the retention limits.
  void FinishedLocked(const std::string& job_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EvictLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateGaugesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::Job SnapshotLocked(const Record& rec) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const JobManagerOptions options_;
  ModelPipeline* const pipeline_;
  storage::StorageRouter* const store_;
  DevicePool* const devices_;
  JobStore* const job_store_;
  SharedJobStore* const shared_;  // job_store_ in shared mode, else null
  Metrics* const metrics_;

  mutable absl::Mutex mu_;
  absl::CondVar changed_;  // any job changed, queue changed, or stopping
  std::map<std::string, std::unique_ptr<Record>> jobs_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> by_request_id_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> queue_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> finished_ ABSL_GUARDED_BY(mu_);  // finished jobs, oldest end first
  int64_t next_seq_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t running_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<bool> draining_{false};
  std::vector<std::thread> workers_;
  std::thread keeper_;                              // shared mode
  absl::CondVar claimable_;                         // shared mode: a job was submitted here
  int64_t shared_queued_ ABSL_GUARDED_BY(mu_) = 0;  // shared mode: fleet-wide, refreshed
};

// "QUEUED", "RUNNING", ... (the enum name without the JOB_STATE_ prefix).
std::string JobStateName(v1::JobState state);
bool IsTerminal(v1::JobState state);

}  // namespace nvfp4::server

#endif  // NVFP4_SERVER_JOB_MANAGER_H_
