// Exit codes of nvfp4ctl and the mapping from absl::Status to them.
//
//   0  success
//   1  internal error (a bug, an I/O failure, a server-side fault)
//   2  user error (bad flags, a missing or malformed input file, a tensor that cannot be quantized)
//   3  (remote commands) the job ended FAILED or CANCELLED
#ifndef NVFP4_CLIENT_CLI_EXIT_CODES_H_
#define NVFP4_CLIENT_CLI_EXIT_CODES_H_

#include "absl/status/status.h"

namespace nvfp4::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitInternal = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitJobFailed = 3;

// kExitOk for OK; kExitUsage for the codes that describe the caller's input (INVALID_ARGUMENT,
// NOT_FOUND, FAILED_PRECONDITION, OUT_OF_RANGE, ALREADY_EXISTS, PERMISSION_DENIED,
// UNIMPLEMENTED); kExitInternal for everything else.
int ExitCodeFor(const absl::Status& status);

// Prints "nvfp4ctl: error: <message>" to stderr and returns ExitCodeFor(status).
int ReportError(const absl::Status& status);

}  // namespace nvfp4::cli

#endif  // NVFP4_CLIENT_CLI_EXIT_CODES_H_
