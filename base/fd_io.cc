#include "base/fd_io.h"

#include <sys/types.h>
#include <unistd.h>

#include <cerrno>

#include "base/errno_status.h"

namespace nvfp4 {

absl::Status WriteAll(int fd, std::span<const uint8_t> data, std::string_view what) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoToStatus(errno, what);
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status WriteAll(int fd, std::string_view data, std::string_view what) {
  return WriteAll(
      fd, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), data.size()),
      what);
}

absl::Status PWriteAll(int fd, std::span<const uint8_t> data, uint64_t offset,
                       std::string_view what) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n =
        ::pwrite(fd, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoToStatus(errno, what);
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace nvfp4
