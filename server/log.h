// Minimal structured logging to stderr (Debian's abseil 20220623 has no absl/log).
// One line per event: "<RFC3339 time> nvfp4d <message>" (--log_format=text, the default) or one
// JSON object (--log_format=json); control bytes, newlines and invalid UTF-8 in the message are
// escaped, so a URI or a tensor name cannot forge or break lines (server/log_format.h).
#ifndef NVFP4_SERVER_LOG_H_
#define NVFP4_SERVER_LOG_H_

#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/log_format.h"

namespace nvfp4::server {

template <typename... Args>
void LogLine(const Args&... args) {
  WriteLogMessage(absl::StrCat(args...));
}

}  // namespace nvfp4::server

#endif  // NVFP4_SERVER_LOG_H_
