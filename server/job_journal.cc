#include "server/job_journal.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "base/errno_status.h"
#include "base/fd_io.h"
#include "base/le_codec.h"
#include "base/status_macros.h"
#include "server/job_manager.h"
#include "server/log.h"
#include "server/utf8_fields.h"

namespace nvfp4::server {
namespace {
namespace fs = std::filesystem;

constexpr std::string_view kMagic = "NVFP4JL1";
constexpr uint8_t kJob = 1, kUnit = 2, kReset = 3, kDelete = 4;
constexpr uint32_t kMaxRecord = 64u << 20;

std::array<uint32_t, 256> MakeCrcTable() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[i] = c;
  }
  return t;
}

// One framed record: u32 length | u32 CRC-32C | type + payload.
std::string Frame(uint8_t type, std::string_view payload) {
  std::string body;
  body.reserve(1 + payload.size());
  body.push_back(static_cast<char>(type));
  body.append(payload.data(), payload.size());
  LeWriter out;
  out.U32(static_cast<uint32_t>(body.size()));
  out.U32(Crc32c(body));
  out.Raw(body);
  return out.Take();
}

// A UNIT record's payload: the job id (u32-length-prefixed), then the encoded unit.
std::string UnitPayload(const std::string& job_id, std::string_view unit) {
  LeWriter p;
  p.Str(job_id);
  p.Raw(unit);
  return p.Take();
}

absl::Status ErrnoStatus(const std::string& what) { return ErrnoToStatus(errno, what); }

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::string();
    return ErrnoStatus(absl::StrCat("cannot open ", path));
  }
  std::string out;
  char buf[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ::close(fd);
      return ErrnoStatus(absl::StrCat("cannot read ", path));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

// A ResumeJournal over the UNIT records of one job; times its appends.
class JobResumeJournal : public pipeline::ResumeJournal {
 public:
  JobResumeJournal(JobJournal* journal, std::string job_id)
      : journal_(journal), job_id_(std::move(job_id)) {}

  absl::StatusOr<std::vector<pipeline::JournaledUnit>> Load() override {
    std::vector<pipeline::JournaledUnit> out;
    for (const std::string& r : journal_->Units(job_id_)) {
      absl::StatusOr<pipeline::JournaledUnit> u = pipeline::DecodeJournaledUnit(r);
      if (!u.ok()) {  // CRC-checked, so another encoding version: not trusted, redone
        LogLine("job ", job_id_, " journal: ignoring a unit record: ", u.status().ToString());
        continue;
      }
      out.push_back(*std::move(u));
    }
    return out;
  }
  absl::Status Append(const pipeline::JournaledUnit& unit) override {
    return journal_->AppendUnit(job_id_, pipeline::EncodeJournaledUnit(unit));
  }
  absl::Status Reset() override { return journal_->ResetUnits(job_id_); }

 private:
  JobJournal* journal_;
  std::string job_id_;
};

}  // namespace

uint32_t Crc32c(std::string_view data) {
  static const std::array<uint32_t, 256> table = MakeCrcTable();
  uint32_t c = 0xFFFFFFFFu;
  for (char ch : data) c = table[(c ^ static_cast<uint8_t>(ch)) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

absl::StatusOr<std::unique_ptr<JobJournal>> JobJournal::Open(const std::string& state_dir,
                                                             Options options) {
  std::error_code ec;
  fs::create_directories(state_dir, ec);
  if (ec || !fs::is_directory(state_dir, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat("state dir '", state_dir, "': ", ec ? ec.message() : "not a directory"));
  }
  std::unique_ptr<JobJournal> j(new JobJournal(state_dir, options));
  j->path_ = (fs::path(state_dir) / kFileName).string();

  // One server per state directory.
  const std::string lock_path = (fs::path(state_dir) / "LOCK").string();
  j->lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (j->lock_fd_ < 0) return ErrnoStatus(absl::StrCat("cannot open ", lock_path));
  if (::flock(j->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "state dir '", state_dir, "' is in use by another process (", lock_path, " is locked)"));
  }

  absl::MutexLock lock(&j->mu_);
  // Replay.
  absl::StatusOr<std::string> data = ReadWholeFile(j->path_);
  if (!data.ok()) return data.status();
  std::string_view rest(*data);
  if (!rest.empty()) {
    if (rest.size() >= kMagic.size() && rest.substr(0, kMagic.size()) != kMagic) {
      return absl::DataLossError(absl::StrCat(j->path_, ": not an nvfp4d job journal"));
    }
    if (rest.size() < kMagic.size()) {
      if (kMagic.substr(0, rest.size()) != rest) {
        return absl::DataLossError(absl::StrCat(j->path_, ": not an nvfp4d job journal"));
      }
      j->stats_.torn_bytes = static_cast<int64_t>(rest.size());  // torn while being created
      rest = {};
    } else {
      rest.remove_prefix(kMagic.size());
    }
  }
  while (!rest.empty()) {
    if (rest.size() < 8) break;
    LeReader frame(rest);
    const uint32_t len = frame.U32();
    const uint32_t crc = frame.U32();
    if (len == 0 || len > kMaxRecord || len > rest.size() - 8) break;
    const std::string_view body = rest.substr(8, len);
    if (Crc32c(body) != crc) break;
    j->Apply(static_cast<uint8_t>(body[0]), body.substr(1));
    ++j->stats_.records_replayed;
    rest.remove_prefix(8 + len);
  }
  if (!rest.empty()) {
    j->stats_.torn_bytes = static_cast<int64_t>(rest.size());
    LogLine("journal ", j->path_, ": ignoring ", rest.size(),
            " bytes of a torn or corrupt tail after ", j->stats_.records_replayed, " records");
  }

  // Import the records of the one-file-per-job store, once: its directory is removed after the
  // compaction below made them durable here.
  const fs::path legacy_dir = fs::path(state_dir) / "jobs";
  bool imported = false;
  if (fs::is_directory(legacy_dir, ec)) {
    absl::StatusOr<std::unique_ptr<FileJobStore>> old = FileJobStore::Create(state_dir);
    if (old.ok()) {
      absl::StatusOr<std::vector<v1::Job>> jobs = (*old)->LoadAll();
      if (jobs.ok()) {
        for (v1::Job& job : *jobs) {
          if (!j->jobs_.count(job.job_id())) j->jobs_[job.job_id()] = std::move(job);
        }
        imported = true;
      } else {
        LogLine("journal: cannot import ", state_dir, "/jobs: ", jobs.status().ToString());
      }
    }
  }
  // Units of finished jobs are garbage.
  for (auto it = j->units_.begin(); it != j->units_.end();) {
    auto job = j->jobs_.find(it->first);
    if (job == j->jobs_.end() || IsTerminal(job->second.state())) {
      it = j->units_.erase(it);
    } else {
      ++it;
    }
  }
  RETURN_IF_ERROR(j->CompactLocked());
  if (imported) {
    fs::remove_all(legacy_dir, ec);
    if (ec) LogLine("journal: cannot remove the imported ", legacy_dir.string(), ": ", ec.message());
  }
  return j;
}

JobJournal::~JobJournal() {
  absl::MutexLock lock(&mu_);
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
  lock_fd_ = -1;
}

void JobJournal::Apply(uint8_t type, std::string_view payload) {
  switch (type) {
    case kJob: {
      // A record refused by the parser for invalid UTF-8 (written by an nvfp4d before the
      // escaping of server/utf8_fields.h) is recovered with its strings escaped: skipping it would
      // bring back the job's previous record, and a finished job would run again.
      v1::Job job;
      int dropped = 0;
      if (!ParseRepairingUtf8(payload, &job, &dropped) || job.job_id().empty()) {
        LogLine("journal ", path_, ": skipping a job record that is not a job (", payload.size(),
                " bytes)");
        return;
      }
      if (dropped > 0) {
        LogLine("journal ", path_, ": job ", job.job_id(), ": ", dropped,
                " unreadable field(s) of its record dropped");
      }
      if (IsTerminal(job.state())) units_.erase(job.job_id());
      jobs_[job.job_id()] = std::move(job);
      return;
    }
    case kUnit: {
      LeReader r(payload);
      const std::string_view job_id = r.StrView();
      if (!r.ok()) return;
      units_[std::string(job_id)].emplace_back(r.Rest());
      return;
    }
    case kReset:
      units_.erase(std::string(payload));
      return;
    case kDelete:
      units_.erase(std::string(payload));
      jobs_.erase(std::string(payload));
      return;
    default:
      LogLine("journal ", path_, ": skipping a record of unknown type ", type);
  }
}

absl::Status JobJournal::SyncDirLocked() {
  if (!options_.sync) return absl::OkStatus();
  const int dfd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return ErrnoStatus(absl::StrCat("cannot open ", dir_));
  const int rc = ::fsync(dfd);
  ::close(dfd);
  if (rc != 0) return ErrnoStatus(absl::StrCat("cannot fsync ", dir_));
  ++stats_.dir_syncs;
  return absl::OkStatus();
}

absl::Status JobJournal::CompactLocked() {
  std::string data(kMagic);
  for (const auto& [id, job] : jobs_) data += Frame(kJob, job.SerializeAsString());
  for (const auto& [id, units] : units_) {
    for (const std::string& u : units) data += Frame(kUnit, UnitPayload(id, u));
  }
  const std::string tmp = path_ + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(absl::StrCat("cannot create ", tmp));
  absl::Status s = WriteAll(fd, data, absl::StrCat("cannot write ", tmp));
  if (s.ok() && options_.sync && ::fdatasync(fd) != 0) {
    s = ErrnoStatus(absl::StrCat("cannot sync ", tmp));
  }
  ::close(fd);
  if (s.ok() && std::rename(tmp.c_str(), path_.c_str()) != 0) {
    s = ErrnoStatus(absl::StrCat("cannot rename ", tmp, " to ", path_));
  }
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  RETURN_IF_ERROR(SyncDirLocked());
  if (fd_ >= 0) ::close(fd_);
  fd_ = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd_ < 0) return ErrnoStatus(absl::StrCat("cannot open ", path_));
  compacted_bytes_ = static_cast<int64_t>(data.size());
  stats_.file_bytes = compacted_bytes_;
  ++stats_.compactions;
  return absl::OkStatus();
}

absl::Status JobJournal::AppendLocked(uint8_t type, std::string_view payload) {
  if (fd_ < 0) return absl::FailedPreconditionError("journal is not open");
  const std::string rec = Frame(type, payload);
  // One write(2): a crash leaves the record whole or torn at the end, never interleaved.
  if (absl::Status s = WriteAll(fd_, rec, absl::StrCat("cannot write ", path_)); !s.ok()) {
    // Cut a partial record off so that later appends stay readable.
    if (::ftruncate(fd_, stats_.file_bytes) != 0) LogLine("journal: cannot truncate ", path_);
    return s;
  }
  stats_.file_bytes += static_cast<int64_t>(rec.size());
  ++stats_.appends;
  if (options_.sync) {
    const auto t0 = std::chrono::steady_clock::now();
    if (::fdatasync(fd_) != 0) return ErrnoStatus(absl::StrCat("cannot sync ", path_));
    stats_.sync_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++stats_.file_syncs;
  }
  return absl::OkStatus();
}

absl::Status JobJournal::Save(const v1::Job& job) {
  absl::MutexLock lock(&mu_);
  const std::string payload = job.SerializeAsString();
  RETURN_IF_ERROR(AppendLocked(kJob, payload));
  Apply(kJob, payload);
  if (stats_.file_bytes > options_.compact_min_bytes && stats_.file_bytes > 2 * compacted_bytes_) {
    if (absl::Status s = CompactLocked(); !s.ok()) {
      LogLine("journal ", path_, ": compaction failed: ", s.ToString());
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::Job>> JobJournal::LoadAll() {
  absl::MutexLock lock(&mu_);
  std::vector<v1::Job> out;
  out.reserve(jobs_.size());
  for (const auto& [id, job] : jobs_) out.push_back(job);
  return out;
}

std::unique_ptr<pipeline::ResumeJournal> JobJournal::ResumeJournalFor(const std::string& job_id) {
  return std::make_unique<JobResumeJournal>(this, job_id);
}

std::vector<std::string> JobJournal::Units(const std::string& job_id) const {
  absl::MutexLock lock(&mu_);
  auto it = units_.find(job_id);
  return it == units_.end() ? std::vector<std::string>() : it->second;
}

absl::Status JobJournal::AppendUnit(const std::string& job_id, std::string_view encoded_unit) {
  absl::MutexLock lock(&mu_);
  const std::string payload = UnitPayload(job_id, encoded_unit);
  RETURN_IF_ERROR(AppendLocked(kUnit, payload));
  Apply(kUnit, payload);
  return absl::OkStatus();
}

absl::Status JobJournal::Delete(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  if (!jobs_.count(job_id) && !units_.count(job_id)) return absl::OkStatus();
  RETURN_IF_ERROR(AppendLocked(kDelete, job_id));
  Apply(kDelete, job_id);
  return absl::OkStatus();
}

absl::Status JobJournal::ResetUnits(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(AppendLocked(kReset, job_id));
  Apply(kReset, job_id);
  return absl::OkStatus();
}

JobJournal::Stats JobJournal::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace nvfp4::server
