// errno -> absl::Status, with one answer for every caller:
//   ENOENT, ENOTDIR  NOT_FOUND
//   EACCES, EPERM    PERMISSION_DENIED
//   ENOSPC, EDQUOT   RESOURCE_EXHAUSTED (the file system is full)
//   anything else    INTERNAL
// The message is "<what>: <strerror(err)>".
//
//   const int fd = ::open(path.c_str(), O_RDONLY);
//   if (fd < 0) return ErrnoToStatus(errno, StrCat("cannot open ", path));
#ifndef NVFP4_BASE_ERRNO_STATUS_H_
#define NVFP4_BASE_ERRNO_STATUS_H_

#include <string_view>

#include "absl/status/status.h"

namespace nvfp4 {

absl::Status ErrnoToStatus(int err, std::string_view what);

}  // namespace nvfp4

#endif  // NVFP4_BASE_ERRNO_STATUS_H_
