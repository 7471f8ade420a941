// The durable job journal of nvfp4d (--state_dir): every job record and every finished unit of a
// running model job, in one append-only file, fsync'd record by record.
//
// Layout of the state directory:
//   <state_dir>/LOCK             flock'd while a server uses it (one server per state dir)
//   <state_dir>/jobs.journal     the journal
//   <state_dir>/work/<job_id>/   staging of s3:// outputs of resumable jobs
//                                (<scratch_dir>/<job_id>/ when --scratch_dir is given)
// (file:// outputs stage next to their target, in `.<name>.resume-<job_id>`, so that the final
// rename stays on one filesystem.)
//
// File format: the 8-byte magic "NVFP4JL1", then records
//   u32 length (LE) | u32 CRC-32C of the body (LE) | body = u8 type + payload
//   type 1 JOB:   a serialized nvfp4.v1.Job (the latest record of a job id wins)
//   type 2 UNIT:  u32 job id length, job id, an encoded pipeline::JournaledUnit
//   type 3 RESET: a job id: forget the job's UNIT records (its run starts over)
// Every append is written with one write(2) and fdatasync'd before it returns; a new file and a
// compacted file are fsync'd and so is the directory after the rename. Replay stops at the first
// record that is short, oversized or fails its CRC (a torn tail from a crash): what precedes it is
// kept, the rest is ignored. Open() then compacts the journal (the latest record of every job, and
// the UNIT records of unfinished jobs only) into a new file (temp + fsync + rename + directory
// fsync), which also drops the torn tail; it compacts again when the file has grown well past its
// live size. UNIT records of a job are dropped once a terminal JOB record is saved.
//
// Job records of the older one-file-per-job store (<state_dir>/jobs/*.pb) are imported once (the
// directory is removed once they are in the compacted journal).
#ifndef NVFP4_SERVER_JOB_JOURNAL_H_
#define NVFP4_SERVER_JOB_JOURNAL_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "pipeline/resume.h"
#include "server/job_store.h"

namespace nvfp4::server {

// CRC-32C (Castagnoli) of `data`, as the journal frames records.
uint32_t Crc32c(std::string_view data);

class JobJournal : public JobStore {
 public:
  struct Options {
    bool sync = true;  // fdatasync appends, fsync new files and the directory
    // Compact when the file exceeds this many bytes and twice its size after the last compaction.
    int64_t compact_min_bytes = 64 << 20;
  };
  struct Stats {
    int64_t records_replayed = 0;  // at Open
    int64_t torn_bytes = 0;        // ignored at Open (a torn tail)
    int64_t appends = 0;
    int64_t file_syncs = 0;   // fdatasync of the journal
    int64_t dir_syncs = 0;    // fsync of the state directory
    double sync_seconds = 0;  // time spent in file_syncs
    int64_t compactions = 0;
    int64_t file_bytes = 0;  // current size of the journal file
  };

  // Opens (or creates) the journal in `state_dir`, replays and compacts it. FAILED_PRECONDITION
  // when another process holds the state directory, DATA_LOSS when the file is not a journal.
  static absl::StatusOr<std::unique_ptr<JobJournal>> Open(const std::string& state_dir,
                                                          Options options);
  static absl::StatusOr<std::unique_ptr<JobJournal>> Open(const std::string& state_dir) {
    return Open(state_dir, Options());
  }
  ~JobJournal() override;

  // JobStore.
  absl::Status Save(const v1::Job& job) override;
  absl::StatusOr<std::vector<v1::Job>> LoadAll() override;
  absl::Status Delete(const std::string& job_id) override;
  std::unique_ptr<pipeline::ResumeJournal> ResumeJournalFor(const std::string& job_id) override;

  // The UNIT records of a job (encoded pipeline::JournaledUnit), oldest first.
  std::vector<std::string> Units(const std::string& job_id) const;
  absl::Status AppendUnit(const std::string& job_id, std::string_view encoded_unit);
  absl::Status ResetUnits(const std::string& job_id);

  Stats stats() const;
  const std::string& path() const { return path_; }
  static constexpr char kFileName[] = "jobs.journal";

 private:
  JobJournal(std::string dir, Options options) : dir_(std::move(dir)), options_(options) {}
  absl::Status AppendLocked(uint8_t type, std::string_view payload)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CompactLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status SyncDirLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Apply(uint8_t type, std::string_view payload) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string dir_;
  const Options options_;
  std::string path_;
  int lock_fd_ = -1;
  mutable absl::Mutex mu_;
  int fd_ ABSL_GUARDED_BY(mu_) = -1;
  std::map<std::string, v1::Job> jobs_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::vector<std::string>> units_ ABSL_GUARDED_BY(mu_);
  int64_t compacted_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  Stats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace nvfp4::server

#endif  // NVFP4_SERVER_JOB_JOURNAL_H_
