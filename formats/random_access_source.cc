#include "formats/random_access_source.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "base/errno_status.h"
#include "base/str_util.h"

namespace nvfp4::formats {
namespace {

absl::Status CheckRange(uint64_t offset, uint64_t length, uint64_t size, const std::string& name) {
  if (offset > size || length > size - offset) {
    return absl::OutOfRangeError(StrCat(name, ": read of ", length, " bytes at offset ", offset,
                                        " extends past the end (", size, " bytes)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<LocalFileSource>> LocalFileSource::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, StrCat("cannot open ", path));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return ErrnoToStatus(err, StrCat("cannot stat ", path));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    return absl::FailedPreconditionError(StrCat(path, " is a directory, not a file"));
  }
  return std::unique_ptr<LocalFileSource>(
      new LocalFileSource(fd, static_cast<uint64_t>(st.st_size), path));
}

LocalFileSource::LocalFileSource(int fd, uint64_t size, std::string path)
    : fd_(fd), size_(size), path_(std::move(path)) {}

LocalFileSource::~LocalFileSource() { ::close(fd_); }

absl::StatusOr<uint64_t> LocalFileSource::Size() { return size_; }

absl::Status LocalFileSource::ReadAt(uint64_t offset, std::span<uint8_t> out) {
  if (absl::Status s = CheckRange(offset, out.size(), size_, path_); !s.ok()) return s;
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n =
        ::pread(fd_, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoToStatus(errno, StrCat("read of ", path_, " at offset ", offset + done));
    }
    if (n == 0) {
      return absl::DataLossError(StrCat(path_, ": file ended at offset ", offset + done,
                                        " (was it truncated while being read?)"));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

std::string LocalFileSource::Describe() { return path_; }

MemorySource::MemorySource(std::vector<uint8_t> bytes, std::string name)
    : bytes_(std::move(bytes)), name_(std::move(name)) {}

absl::StatusOr<uint64_t> MemorySource::Size() { return bytes_.size(); }

absl::Status MemorySource::ReadAt(uint64_t offset, std::span<uint8_t> out) {
  if (absl::Status s = CheckRange(offset, out.size(), bytes_.size(), name_); !s.ok()) return s;
  if (!out.empty()) std::memcpy(out.data(), bytes_.data() + offset, out.size());
  return absl::OkStatus();
}

std::string MemorySource::Describe() { return name_; }

}  // namespace nvfp4::formats
