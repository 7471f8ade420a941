#include "server/job_store.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <system_error>

#include "absl/strings/str_cat.h"

namespace nvfp4::server {
namespace fs = std::filesystem;

absl::Status MemoryJobStore::Save(const v1::Job& job) {
  absl::MutexLock lock(&mu_);
  jobs_[job.job_id()] = job;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::Job>> MemoryJobStore::LoadAll() {
  absl::MutexLock lock(&mu_);
  std::vector<v1::Job> out;
  for (const auto& [id, job] : jobs_) out.push_back(job);
  return out;
}

absl::Status MemoryJobStore::Delete(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  jobs_.erase(job_id);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<FileJobStore>> FileJobStore::Create(const std::string& state_dir) {
  std::error_code ec;
  fs::path dir = fs::path(state_dir) / "jobs";
  fs::create_directories(dir, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("state dir '", dir.string(), "': ", ec.message()));
  }
  return std::unique_ptr<FileJobStore>(new FileJobStore(dir.string()));
}

absl::Status FileJobStore::Save(const v1::Job& job) {
  fs::path final_path = fs::path(dir_) / absl::StrCat(job.job_id(), ".pb");
  fs::path temp = fs::path(dir_) / absl::StrCat(".", job.job_id(), ".pb.tmp");
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    if (!out || !job.SerializeToOstream(&out)) {
      return absl::InternalError(absl::StrCat("cannot write job record '", temp.string(), "'"));
    }
  }
  std::error_code ec;
  fs::rename(temp, final_path, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot rename job record '", final_path.string(), "': ", ec.message()));
  }
  return absl::OkStatus();
}

absl::Status FileJobStore::Delete(const std::string& job_id) {
  std::error_code ec;
  fs::remove(fs::path(dir_) / absl::StrCat(job_id, ".pb"), ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot remove the record of job '", job_id, "': ", ec.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::Job>> FileJobStore::LoadAll() {
  std::vector<v1::Job> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    if (entry.path().extension() != ".pb" || entry.path().filename().string()[0] == '.') continue;
    std::ifstream in(entry.path(), std::ios::binary);
    v1::Job job;
    if (!job.ParseFromIstream(&in)) {
      return absl::DataLossError(absl::StrCat("corrupt job record '", entry.path().string(), "'"));
    }
    out.push_back(std::move(job));
  }
  if (ec) return absl::InternalError(absl::StrCat("list '", dir_, "': ", ec.message()));
  return out;
}

v1::JobProgress JournaledProgress(const std::vector<pipeline::JournaledUnit>& units) {
  v1::JobProgress p;
  p.set_eta_seconds(-1);
  if (units.empty()) return p;
  std::map<int64_t, const pipeline::JournaledUnit*> latest;
  for (const pipeline::JournaledUnit& u : units) {
    if (u.plan == units.back().plan) latest[u.unit] = &u;
  }
  for (const auto& [index, unit] : latest) {
    const pipeline::JournaledUnit& u = *unit;
    p.set_tensors_done(p.tensors_done() +
                       std::max<int64_t>(1, static_cast<int64_t>(u.modules.size())));
    p.set_bytes_in(p.bytes_in() + static_cast<int64_t>(u.bytes_in));
    p.set_bytes_out(p.bytes_out() + static_cast<int64_t>(u.bytes_out));
  }
  p.set_tensors_resumed(p.tensors_done());
  return p;
}

}  // namespace nvfp4::server
