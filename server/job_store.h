// Persistence of job records. The JobManager keeps jobs in memory and saves every state change
// here; at startup it reloads them (unfinished jobs are queued again).
//
// A SharedJobStore (server/postgres_job_store.h) is instead the source of truth of a fleet of
// replicas: every replica submits into it, claims queued jobs from it with a lease, and answers
// GetJob/ListJobs/WatchJob/CancelJob from it (JobManager's shared mode).
#ifndef NVFP4_SERVER_JOB_STORE_H_
#define NVFP4_SERVER_JOB_STORE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "nvfp4/v1/quantizer.pb.h"
#include "pipeline/resume.h"

namespace nvfp4::server {

class SharedJobStore;

class JobStore {
 public:
  virtual ~JobStore() = default;
  // Inserts or replaces the record of `job.job_id()`.
  virtual absl::Status Save(const v1::Job& job) = 0;
  // Every saved job, in no particular order.
  virtual absl::StatusOr<std::vector<v1::Job>> LoadAll() = 0;
  // Forgets a finished job (retention, JobManagerOptions::max_finished_jobs); OK when unknown.
  virtual absl::Status Delete(const std::string& job_id) = 0;
  // Where a run of job `job_id` journals its finished units so that it can resume after a crash
  // (pipeline/resume.h), or null when this store is not durable.
  virtual std::unique_ptr<pipeline::ResumeJournal> ResumeJournalFor(const std::string& job_id) {
    (void)job_id;
    return nullptr;
  }
  // This store as a store shared by a fleet of replicas, or null (the default: one replica).
  virtual SharedJobStore* AsShared() { return nullptr; }
};

// The progress journaled units stand for (an interrupted run's finished units, pipeline/resume.h),
// counted as a run's progress sink counts them (a quantized unit: one tensor per module; a copied
// one: one): each unit once (a redone unit is journaled again), of the latest plan only.
// tensors_resumed = tensors_done; eta_seconds -1.
v1::JobProgress JournaledProgress(const std::vector<pipeline::JournaledUnit>& units);

// A job as a SharedJobStore holds it.
struct StoredJob {
  v1::Job job;          // job.cancel_requested() is set once any replica requested cancellation
  int64_t seq = 0;      // submission order (ListJobs pages by it)
  int64_t version = 0;  // bumped by every change (WatchJob polls it)
  std::string owner;    // replica holding the lease of a RUNNING job ("" otherwise)
};

// What the owner of a running job learns when it renews its lease.
struct LeaseRenewal {
  bool held = false;              // false: the lease expired and another replica claimed the job
  bool cancel_requested = false;  // a replica's CancelJob reached the job
};

// A job store shared by the replicas of a fleet. Each instance speaks for one replica
// (replica_id()); a RUNNING job belongs to the replica holding its lease, which renews it while it
// runs; once a lease expires any replica may claim the job and resume it from its journaled units
// (ResumeJournalFor). Writes of the owner are fenced: they fail once the lease is lost.
class SharedJobStore : public JobStore {
 public:
  SharedJobStore* AsShared() override { return this; }
  virtual const std::string& replica_id() const = 0;

  // Inserts `job` (QUEUED). When its request_id names an existing job, nothing is inserted and
  // that job is returned with *existed = true. UNAVAILABLE when `queue_capacity` jobs are queued.
  virtual absl::StatusOr<v1::Job> Insert(const v1::Job& job, int queue_capacity, bool* existed) = 0;
  // NOT_FOUND for an unknown id.
  virtual absl::StatusOr<StoredJob> Get(const std::string& job_id) = 0;
  // Jobs with seq < before_seq (0: no bound) in one of `states` (empty: any), newest first, at
  // most `limit`.
  virtual absl::StatusOr<std::vector<StoredJob>> List(const std::vector<v1::JobState>& states,
                                                      int64_t before_seq, int limit) = 0;
  // Claims the oldest QUEUED job, or a RUNNING one whose lease expired, for this replica: it is
  // saved RUNNING (start_time `now`, progress cleared) with a lease of `lease`. nullopt when
  // there is none. A claimed job whose cancellation was requested is saved CANCELLED instead.
  virtual absl::StatusOr<std::optional<v1::Job>> Claim(absl::Duration lease, absl::Time now) = 0;
  // Extends the lease of a job this replica runs; saves `progress` (the job's current record)
  // too when not null, and appends `new_tensors` (finished tensors, for watchers).
  virtual absl::StatusOr<LeaseRenewal> Renew(const std::string& job_id, absl::Duration lease,
                                             const v1::Job* progress,
                                             const std::vector<v1::TensorResult>& new_tensors) = 0;
  // Saves a job this replica runs, leaving RUNNING (terminal, or QUEUED to hand it back): the
  // lease is released. FAILED_PRECONDITION when this replica no longer holds the lease.
  virtual absl::Status Release(const v1::Job& job) = 0;
  // Requests cancellation: a QUEUED job becomes CANCELLED at once (*was_queued = true, with the
  // error and end time set), a RUNNING one is flagged for its owner. NOT_FOUND when unknown.
  virtual absl::StatusOr<v1::Job> RequestCancel(const std::string& job_id, absl::Time now,
                                                bool* was_queued) = 0;
  // Finished tensors of a job after the `after`-th one (for watchers); *last is set to the index
  // of the last one returned (unchanged when none).
  virtual absl::StatusOr<std::vector<v1::TensorResult>> TensorsAfter(const std::string& job_id,
                                                                     int64_t after,
                                                                     int64_t* last) = 0;
  // Forgets finished jobs beyond `max_finished` (oldest first) or older than `ttl`; returns
  // how many.
  virtual absl::StatusOr<int64_t> Prune(int64_t max_finished, absl::Duration ttl) = 0;
  // Jobs in `state`, all replicas together.
  virtual absl::StatusOr<int64_t> Count(v1::JobState state) = 0;
};

// Keeps records in memory only (tests; servers without --state_dir).
class MemoryJobStore : public JobStore {
 public:
  absl::Status Save(const v1::Job& job) override;
  absl::StatusOr<std::vector<v1::Job>> LoadAll() override;
  absl::Status Delete(const std::string& job_id) override;

 private:
  absl::Mutex mu_;
  std::map<std::string, v1::Job> jobs_ ABSL_GUARDED_BY(mu_);
};

// One binary proto file per job under `<state_dir>/jobs/`, replaced atomically (temp + rename).
// Superseded by JobJournal (server/job_journal.h), which imports these records.
class FileJobStore : public JobStore {
 public:
  static absl::StatusOr<std::unique_ptr<FileJobStore>> Create(const std::string& state_dir);
  absl::Status Save(const v1::Job& job) override;
  absl::StatusOr<std::vector<v1::Job>> LoadAll() override;
  absl::Status Delete(const std::string& job_id) override;

 private:
  explicit FileJobStore(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
};

}  // namespace nvfp4::server

#endif  // NVFP4_SERVER_JOB_STORE_H_
