#include "storage/local_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/errno_status.h"
#include "base/fd_io.h"
#include "base/status_macros.h"

namespace nvfp4::storage {
namespace fs = std::filesystem;

namespace {

// "<what> '<path>': <strerror>" (base/errno_status.h).
absl::Status ErrnoStatus(int err, absl::string_view what, const fs::path& p) {
  return ErrnoToStatus(err, absl::StrCat(what, " '", p.string(), "'"));
}

bool IsWithin(const fs::path& p, const fs::path& root) {
  auto pi = p.begin();
  for (auto ri = root.begin(); ri != root.end(); ++ri, ++pi) {
    if (pi == p.end() || *pi != *ri) return false;
  }
  return true;
}

class LocalWriter : public ObjectWriter {
 public:
  LocalWriter(fs::path final_path, fs::path temp_path, int fd)
      : final_(std::move(final_path)), temp_(std::move(temp_path)), fd_(fd) {}
  ~LocalWriter() override { Abort(); }

  absl::Status Append(absl::string_view data) override {
    if (fd_ < 0) return absl::FailedPreconditionError("writer is closed");
    if (absl::Status s = WriteAll(fd_, std::string_view(data.data(), data.size()),
                                  absl::StrCat("write '", temp_.string(), "'"));
        !s.ok()) {
      Abort();
      return s;
    }
    written_ += data.size();
    return absl::OkStatus();
  }

  absl::Status Commit() override {
    if (fd_ < 0) return absl::FailedPreconditionError("writer is closed");
    if (::fsync(fd_) != 0 || ::close(fd_) != 0) {
      absl::Status s = ErrnoStatus(errno, "fsync/close", temp_);
      fd_ = -1;
      Abort();
      return s;
    }
    fd_ = -1;
    if (::rename(temp_.c_str(), final_.c_str()) != 0) {
      absl::Status s = ErrnoStatus(errno, "rename to", final_);
      ::unlink(temp_.c_str());
      return s;
    }
    committed_ = true;
    return absl::OkStatus();
  }

  void Abort() override {
    if (committed_) return;
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
    if (!temp_.empty()) {
      ::unlink(temp_.c_str());
      temp_.clear();
    }
  }

  int64_t bytes_written() const override { return written_; }

 private:
  fs::path final_;
  fs::path temp_;
  int fd_;
  int64_t written_ = 0;
  bool committed_ = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<LocalObjectStore>> LocalObjectStore::Create(
    const std::vector<std::string>& roots) {
  if (roots.empty()) return absl::InvalidArgumentError("no data roots configured");
  std::vector<fs::path> canon;
  for (const std::string& r : roots) {
    std::error_code ec;
    fs::create_directories(r, ec);
    fs::path c = fs::canonical(r, ec);
    if (ec) return absl::InvalidArgumentError(absl::StrCat("data root '", r, "': ", ec.message()));
    canon.push_back(c);
  }
  return std::unique_ptr<LocalObjectStore>(new LocalObjectStore(std::move(canon)));
}

LocalObjectStore& LocalObjectStore::Unconfined() {
  static LocalObjectStore* const store = new LocalObjectStore({}, /*confined=*/false);
  return *store;
}

absl::StatusOr<std::optional<std::string>> LocalObjectStore::LocalPath(absl::string_view uri) {
  ASSIGN_OR_RETURN(fs::path p, Resolve(uri));
  return p.string();
}

absl::StatusOr<fs::path> LocalObjectStore::Resolve(absl::string_view uri) const {
  absl::string_view raw = uri;
  if (absl::StartsWith(raw, "file://")) raw.remove_prefix(7);
  if (raw.empty()) return absl::InvalidArgumentError("empty path");
  if (!confined_) {
    std::error_code ec;
    fs::path p = fs::absolute(fs::path(std::string(raw)), ec).lexically_normal();
    if (ec) return absl::InvalidArgumentError(absl::StrCat("path '", raw, "': ", ec.message()));
    if (p.has_relative_path() && p.filename().empty()) p = p.parent_path();  // trailing '/'
    return p;
  }
  fs::path p{std::string(raw)};
  for (const fs::path& part : p) {
    if (part == "..") {
      return absl::InvalidArgumentError(absl::StrCat("path '", raw, "' contains '..'"));
    }
  }
  if (p.is_relative()) p = roots_.front() / p;
  p = p.lexically_normal();
  if (!p.empty() && p.filename().empty()) p = p.parent_path();  // trailing '/'
  // Resolve symlinks in the deepest existing ancestor; the rest does not exist yet.
  fs::path existing = p;
  fs::path tail;
  std::error_code ec;
  while (!fs::exists(fs::symlink_status(existing, ec)) && existing.has_relative_path()) {
    tail = existing.filename() / tail;
    existing = existing.parent_path();
  }
  fs::path real = fs::canonical(existing, ec);
  if (ec) return absl::NotFoundError(absl::StrCat("path '", raw, "': ", ec.message()));
  fs::path full = tail.empty() ? real : (real / tail).lexically_normal();
  if (!full.empty() && full.filename().empty()) full = full.parent_path();
  for (const fs::path& root : roots_) {
    if (IsWithin(full, root)) return full;
  }
  return absl::PermissionDeniedError(
      absl::StrCat("path '", raw, "' is outside the allowed data roots"));
}

absl::StatusOr<int64_t> LocalObjectStore::Size(absl::string_view uri) {
  ASSIGN_OR_RETURN(fs::path p, Resolve(uri));
  struct stat st;
  if (::stat(p.c_str(), &st) != 0) return ErrnoStatus(errno, "stat", p);
  if (!S_ISREG(st.st_mode))
    return absl::NotFoundError(absl::StrCat("'", p.string(), "' is not a file"));
  return static_cast<int64_t>(st.st_size);
}

absl::Status LocalObjectStore::ReadAt(absl::string_view uri, int64_t offset, int64_t length,
                                      char* dst) {
  ASSIGN_OR_RETURN(fs::path p, Resolve(uri));
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "open", p);
  int64_t done = 0;
  absl::Status status;
  while (done < length) {
    ssize_t n = ::pread(fd, dst + done, static_cast<size_t>(length - done), offset + done);
    if (n < 0) {
      if (errno == EINTR) continue;
      status = ErrnoStatus(errno, "read", p);
      break;
    }
    if (n == 0) {
      status = absl::OutOfRangeError(absl::StrCat("read of ", length, " bytes at ", offset,
                                                  " is past the end of '", p.string(), "'"));
      break;
    }
    done += n;
  }
  ::close(fd);
  return status;
}

absl::StatusOr<std::vector<ObjectInfo>> LocalObjectStore::List(absl::string_view prefix_uri) {
  ASSIGN_OR_RETURN(fs::path dir, Resolve(prefix_uri));
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat("'", dir.string(), "' is not a directory"));
  }
  std::vector<ObjectInfo> out;
  // Does not follow directory symlinks; file symlinks are re-checked by Resolve on read.
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    std::string rel = fs::relative(it->path(), dir, ec).generic_string();
    if (rel.empty() || (confined_ && rel.front() == '.')) continue;  // hidden temp files
    out.push_back({rel, static_cast<int64_t>(it->file_size(ec))});
  }
  if (ec) return absl::InternalError(absl::StrCat("list '", dir.string(), "': ", ec.message()));
  std::sort(out.begin(), out.end(),
            [](const ObjectInfo& a, const ObjectInfo& b) { return a.name < b.name; });
  return out;
}

absl::StatusOr<std::unique_ptr<ObjectWriter>> LocalObjectStore::OpenWrite(absl::string_view uri) {
  ASSIGN_OR_RETURN(fs::path p, Resolve(uri));
  std::error_code ec;
  fs::create_directories(p.parent_path(), ec);
  if (ec)
    return absl::InternalError(
        absl::StrCat("mkdir '", p.parent_path().string(), "': ", ec.message()));
  // Re-check after mkdir: a symlink could have been raced in, so resolve the parent again.
  ASSIGN_OR_RETURN(fs::path p2, Resolve(p.string()));
  if (fs::is_directory(p2, ec)) {
    return absl::FailedPreconditionError(absl::StrCat("'", p2.string(), "' is a directory"));
  }
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  fs::path temp =
      p2.parent_path() / absl::StrCat(".", p2.filename().string(), ".tmp.", rng() % 1000000007);
  int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, "create", temp);
  return std::unique_ptr<ObjectWriter>(new LocalWriter(p2, temp, fd));
}

absl::Status LocalObjectStore::Delete(absl::string_view uri) {
  ASSIGN_OR_RETURN(fs::path p, Resolve(uri));
  if (::unlink(p.c_str()) != 0 && errno != ENOENT) return ErrnoStatus(errno, "unlink", p);
  return absl::OkStatus();
}

}  // namespace nvfp4::storage
