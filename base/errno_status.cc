#include "base/errno_status.h"

#include <cerrno>
#include <cstring>
#include <string>

#include "base/str_util.h"

namespace nvfp4 {

absl::Status ErrnoToStatus(int err, std::string_view what) {
  const std::string msg = StrCat(what, ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return absl::NotFoundError(msg);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(msg);
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(msg);
    default:
      return absl::InternalError(msg);
  }
}

}  // namespace nvfp4
