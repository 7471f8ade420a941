// Whole writes to a file descriptor. write(2) and pwrite(2) may write less than asked, and fail
// with EINTR when a signal arrives first; these loop until every byte is written.
//
//   RETURN_IF_ERROR(WriteAll(fd, record, StrCat("cannot write ", path)));
#ifndef NVFP4_BASE_FD_IO_H_
#define NVFP4_BASE_FD_IO_H_

#include <cstdint>
#include <span>
#include <string_view>

#include "absl/status/status.h"

namespace nvfp4 {

// Writes all of `data` at the file offset of `fd`. On an error other than EINTR:
// ErrnoToStatus(errno, what) (base/errno_status.h); some bytes may have been written.
absl::Status WriteAll(int fd, std::span<const uint8_t> data, std::string_view what);
absl::Status WriteAll(int fd, std::string_view data, std::string_view what);

// Writes all of `data` at byte `offset` of `fd` (the file offset is not changed). Errors as
// WriteAll.
absl::Status PWriteAll(int fd, std::span<const uint8_t> data, uint64_t offset,
                       std::string_view what);

}  // namespace nvfp4

#endif  // NVFP4_BASE_FD_IO_H_
