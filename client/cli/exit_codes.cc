#include "client/cli/exit_codes.h"

#include <iostream>
#include <string>

namespace nvfp4::cli {

int ExitCodeFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return kExitOk;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnimplemented:
      return kExitUsage;
    default:
      return kExitInternal;
  }
}

int ReportError(const absl::Status& status) {
  std::cerr << "nvfp4ctl: error: " << std::string(status.message()) << "\n";
  return ExitCodeFor(status);
}

}  // namespace nvfp4::cli
