// Persistence of job records. The JobManager keeps jobs in memory and saves every state change
// here; at startup it reloads them (unfinished jobs are queued again).
#ifndef NVFP4_SERVER_JOB_STORE_H_
#define NVFP4_SERVER_JOB_STORE_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "nvfp4/v1/quantizer.pb.h"
#include "pipeline/resume.h"

namespace nvfp4::server {

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
