// The job store of a fleet of nvfp4d replicas (--job_store=postgresql://...): job records, leases,
// finished tensors and resume journals in one PostgreSQL database, through libpq.
//
// Schema (created at Connect, idempotently, under an advisory lock so that replicas starting
// together do not race):
//   nvfp4_jobs         one row per job: the serialized nvfp4.v1.Job, its state, request_id
//                      (unique when not empty), seq (submission order), version (bumped by every
//                      change), owner + lease_expires (the lease of a RUNNING job),
//                      cancel_requested, end_at.
//   nvfp4_job_units    the resume journal of unfinished jobs (encoded pipeline::JournaledUnit),
//                      dropped when the job finishes or its run starts over.
//   nvfp4_job_tensors  finished tensors of a job (serialized nvfp4.v1.TensorResult), for WatchJob
//                      streams on any replica.
// Claims use `SELECT ... FOR UPDATE SKIP LOCKED`, so that replicas never claim the same job;
// lease times come from the database's clock (now()), so replicas' clocks do not matter. Writes of
// an owner (Renew, Release, resume journal appends) check `owner = replica_id` and fail once
// another replica claimed the job.
//
// One connection per store, used one call at a time; a broken connection is reset and the call
// retried once.
#ifndef NVFP4_SERVER_POSTGRES_JOB_STORE_H_
#define NVFP4_SERVER_POSTGRES_JOB_STORE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/job_store.h"

typedef struct pg_conn PGconn;
typedef struct pg_result PGresult;

namespace nvfp4::server {

class PostgresJobStore : public SharedJobStore {
 public:
  // Connects to `uri` (a libpq connection URI, postgresql://user:password@host:port/db?...) and
  // creates the schema when missing. `replica_id` names this replica in leases (unique per
  // process: e.g. the pod name plus a random suffix). UNAVAILABLE when the server cannot be
  // reached. The URI's password is never logged or returned in a status.
  static absl::StatusOr<std::unique_ptr<PostgresJobStore>> Connect(const std::string& uri,
                                                                   const std::string& replica_id);
  ~PostgresJobStore() override;

  // JobStore.
  absl::Status Save(const v1::Job& job) override;
  absl::StatusOr<std::vector<v1::Job>> LoadAll() override;
  absl::Status Delete(const std::string& job_id) override;
  std::unique_ptr<pipeline::ResumeJournal> ResumeJournalFor(const std::string& job_id) override;

  // SharedJobStore.
  const std::string& replica_id() const override { return replica_id_; }
  absl::StatusOr<v1::Job> Insert(const v1::Job& job, int queue_capacity, bool* existed) override;
  absl::StatusOr<StoredJob> Get(const std::string& job_id) override;
  absl::StatusOr<std::vector<StoredJob>> List(const std::vector<v1::JobState>& states,
                                              int64_t before_seq, int limit) override;
  absl::StatusOr<std::optional<v1::Job>> Claim(absl::Duration lease, absl::Time now) override;
  absl::StatusOr<LeaseRenewal> Renew(const std::string& job_id, absl::Duration lease,
                                     const v1::Job* progress,
                                     const std::vector<v1::TensorResult>& new_tensors) override;
  absl::Status Release(const v1::Job& job) override;
  absl::StatusOr<v1::Job> RequestCancel(const std::string& job_id, absl::Time now,
                                        bool* was_queued) override;
  absl::StatusOr<std::vector<v1::TensorResult>> TensorsAfter(const std::string& job_id,
                                                             int64_t after, int64_t* last) override;
  absl::StatusOr<int64_t> Prune(int64_t max_finished, absl::Duration ttl) override;
  absl::StatusOr<int64_t> Count(v1::JobState state) override;

  // The resume journal's records (encoded pipeline::JournaledUnit), oldest first.
  absl::StatusOr<std::vector<std::string>> Units(const std::string& job_id);
  // Appends a unit record while this replica holds the job (or nobody does: a job run outside a
  // lease, as in tests); FAILED_PRECONDITION once another replica claimed it.
  absl::Status AppendUnit(const std::string& job_id, const std::string& encoded_unit);
  absl::Status ResetUnits(const std::string& job_id);

  // One query result; rows of text values (bytea decoded to raw bytes). Public for the
  // implementation's helpers.
  struct Rows {
    std::vector<std::vector<std::string>> rows;
    int64_t affected = 0;
  };
  struct Param {
    std::string value;
    bool binary = false;  // bytea
    bool null = false;
  };

 private:
  PostgresJobStore(std::string conninfo, std::string replica_id)
      : conninfo_(std::move(conninfo)), replica_id_(std::move(replica_id)) {}
  absl::Status ConnectLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs one statement; resets a broken connection and retries once when `retry`.
  absl::StatusOr<Rows> ExecLocked(const std::string& sql, const std::vector<Param>& params,
                                  bool retry = true) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<Rows> Exec(const std::string& sql, const std::vector<Param>& params);
  absl::Status CreateSchema();
  void RollbackLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The bodies of Claim's and RequestCancel's transactions.
  absl::StatusOr<std::optional<v1::Job>> ClaimOneLocked(absl::Duration lease, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<v1::Job> RequestCancelLocked(const std::string& job_id, absl::Time now,
                                              bool* was_queued) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string conninfo_;
  const std::string replica_id_;
  absl::Mutex mu_;
  PGconn* conn_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace nvfp4::server

#endif  // NVFP4_SERVER_POSTGRES_JOB_STORE_H_
