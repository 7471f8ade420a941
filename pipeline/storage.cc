#include "pipeline/storage.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "base/status_macros.h"
#include "base/str_util.h"

namespace nvfp4::pipeline {
namespace fs = std::filesystem;

absl::StatusOr<std::string> InputDirectory::ReadSmallFile(const std::string& name,
                                                          uint64_t max_bytes) {
  ASSIGN_OR_RETURN(std::unique_ptr<formats::RandomAccessSource> src, OpenFile(name));
  ASSIGN_OR_RETURN(uint64_t size, src->Size());
  if (size > max_bytes) {
    return absl::InvalidArgumentError(
        StrCat(src->Describe(), ": ", size, " bytes, more than the ", max_bytes, " expected"));
  }
  std::string text(size, '\0');
  RETURN_IF_ERROR(
      src->ReadAt(0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(text.data()), text.size())));
  return text;
}

absl::StatusOr<std::unique_ptr<LocalInputDirectory>> LocalInputDirectory::Open(
    const std::string& root) {
  std::error_code ec;
  if (!fs::exists(root, ec)) return absl::NotFoundError(StrCat(root, ": no such directory"));
  if (!fs::is_directory(root, ec)) {
    return absl::FailedPreconditionError(StrCat(root, ": not a directory"));
  }
  return std::unique_ptr<LocalInputDirectory>(new LocalInputDirectory(root));
}

absl::StatusOr<std::vector<std::string>> LocalInputDirectory::ListFiles() {
  std::vector<std::string> files;
  std::error_code ec;
  fs::recursive_directory_iterator it(root_, ec), end;
  if (ec) return absl::InternalError(StrCat(root_, ": cannot list: ", ec.message()));
  for (; it != end; it.increment(ec)) {
    if (ec) return absl::InternalError(StrCat(root_, ": cannot list: ", ec.message()));
    if (it->is_regular_file(ec)) {
      files.push_back(fs::relative(it->path(), root_, ec).generic_string());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

absl::StatusOr<std::unique_ptr<formats::RandomAccessSource>> LocalInputDirectory::OpenFile(
    const std::string& name) {
  ASSIGN_OR_RETURN(std::unique_ptr<formats::LocalFileSource> src,
                   formats::LocalFileSource::Open((fs::path(root_) / name).string()));
  return std::unique_ptr<formats::RandomAccessSource>(std::move(src));
}

bool LocalInputDirectory::Exists(const std::string& name) {
  std::error_code ec;
  return fs::is_regular_file(fs::path(root_) / name, ec);
}

absl::Status OutputDirectory::SetResumeKey(const std::string& /*key*/) {
  return absl::UnimplementedError(StrCat(Describe(), ": this output cannot resume a run"));
}

absl::Status ValidateResumeKey(const std::string& key) {
  bool ok = !key.empty() && key.size() <= 128 && key[0] != '.';
  for (char c : key) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '.' || c == '_' || c == '-');
  }
  if (!ok) return absl::InvalidArgumentError(StrCat("invalid resume key '", key, "'"));
  return absl::OkStatus();
}

LocalOutputDirectory::LocalOutputDirectory(std::string target, bool overwrite)
    : target_(std::move(target)), overwrite_(overwrite) {
  while (target_.size() > 1 && target_.back() == '/') target_.pop_back();
}

LocalOutputDirectory::~LocalOutputDirectory() { Abort(); }

absl::StatusOr<std::string> LocalOutputDirectory::Begin() {
  if (!staging_.empty()) return absl::FailedPreconditionError("output already begun");
  std::error_code ec;
  const fs::path target = fs::absolute(target_, ec);
  if (fs::exists(target, ec)) {
    if (!fs::is_directory(target, ec)) {
      return absl::AlreadyExistsError(StrCat(target_, ": exists and is not a directory"));
    }
    if (!overwrite_ && !fs::is_empty(target, ec)) {
      return absl::AlreadyExistsError(
          StrCat(target_, ": exists and is not empty (choose another output or remove it)"));
    }
  }
  const fs::path parent = target.parent_path();
  if (!fs::is_directory(parent, ec)) {
    return absl::NotFoundError(StrCat(parent.string(), ": parent of the output does not exist"));
  }
  if (!resume_key_.empty()) {  // reused when an interrupted run left it
    const std::string staging = ResumeStagingPath();
    fs::create_directory(staging, ec);
    if (ec || !fs::is_directory(staging, ec)) {
      return absl::PermissionDeniedError(
          StrCat(staging, ": cannot create staging directory: ", ec.message()));
    }
    staging_ = staging;
    return staging_;
  }
  static std::atomic<int> counter{0};
  for (int attempt = 0; attempt < 100; ++attempt) {
    const fs::path staging =
        parent / StrCat(".", target.filename().string(), ".tmp-", static_cast<int64_t>(getpid()),
                        "-", counter.fetch_add(1));
    if (fs::create_directory(staging, ec)) {
      staging_ = staging.string();
      return staging_;
    }
    if (ec) {
      return absl::PermissionDeniedError(
          StrCat(staging.string(), ": cannot create staging directory: ", ec.message()));
    }
  }
  return absl::InternalError(StrCat(target_, ": cannot find a free staging directory name"));
}

absl::Status LocalOutputDirectory::Commit() {
  if (staging_.empty()) return absl::FailedPreconditionError("Commit() without Begin()");
  std::error_code ec;
  const fs::path target = fs::absolute(target_, ec);
  fs::path old;
  if (fs::exists(target, ec)) {
    if (fs::is_directory(target, ec) && fs::is_empty(target, ec)) {
      fs::remove(target, ec);
    } else if (overwrite_) {
      old = fs::path(staging_ + ".old");
      fs::rename(target, old, ec);
      if (ec) {
        return absl::InternalError(StrCat(target_, ": cannot move aside: ", ec.message()));
      }
    } else {
      return absl::AlreadyExistsError(
          StrCat(target_, ": appeared while writing; output kept in ", staging_));
    }
  }
  fs::rename(staging_, target, ec);
  if (ec) {
    if (!old.empty()) fs::rename(old, target, ec);
    return absl::InternalError(
        StrCat("cannot rename ", staging_, " to ", target_, ": ", ec.message()));
  }
  staging_.clear();
  if (!old.empty()) fs::remove_all(old, ec);
  return absl::OkStatus();
}

void LocalOutputDirectory::Abort() {
  if (staging_.empty()) return;
  std::error_code ec;
  if (resume_key_.empty()) fs::remove_all(staging_, ec);  // a resumable one is kept
  staging_.clear();
}

absl::Status LocalOutputDirectory::SetResumeKey(const std::string& key) {
  if (!staging_.empty()) return absl::FailedPreconditionError("SetResumeKey() after Begin()");
  if (absl::Status s = ValidateResumeKey(key); !s.ok()) return s;
  resume_key_ = key;
  return absl::OkStatus();
}

std::string LocalOutputDirectory::ResumeStagingPath() const {
  std::error_code ec;
  const fs::path target = fs::absolute(target_, ec);
  return (target.parent_path() / StrCat(".", target.filename().string(), ".resume-", resume_key_))
      .string();
}

void LocalOutputDirectory::Discard() {
  std::error_code ec;
  if (!resume_key_.empty()) {
    fs::remove_all(ResumeStagingPath(), ec);
    staging_.clear();
    return;
  }
  Abort();
}

absl::Status CopyFileToLocal(InputDirectory& in, const std::string& name, const std::string& dest) {
  ASSIGN_OR_RETURN(std::unique_ptr<formats::RandomAccessSource> src, in.OpenFile(name));
  ASSIGN_OR_RETURN(uint64_t size, src->Size());
  std::error_code ec;
  fs::create_directories(fs::path(dest).parent_path(), ec);
  errno = 0;
  std::ofstream out(dest, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(StrCat(dest, ": cannot create"));
  // errno tells why a write failed (e.g. ENOSPC: "No space left on device").
  auto write_failed = [&dest] {
    return absl::InternalError(
        StrCat(dest, ": write failed: ", errno != 0 ? std::strerror(errno) : "stream error"));
  };
  std::vector<uint8_t> buf(std::min<uint64_t>(size, 8u << 20));
  for (uint64_t off = 0; off < size;) {
    const uint64_t n = std::min<uint64_t>(buf.size(), size - off);
    RETURN_IF_ERROR(src->ReadAt(off, std::span<uint8_t>(buf.data(), n)));
    out.write(reinterpret_cast<const char*>(buf.data()), static_cast<std::streamsize>(n));
    if (!out) return write_failed();
    off += n;
  }
  out.close();
  if (!out) return write_failed();
  return absl::OkStatus();
}

}  // namespace nvfp4::pipeline
