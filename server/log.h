// Minimal structured logging to stderr (Debian's abseil 20220623 has no absl/log).
// One line per event: "<RFC3339 time> nvfp4d <message>".
#ifndef NVFP4_SERVER_LOG_H_
#define NVFP4_SERVER_LOG_H_

#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace nvfp4::server {

template <typename... Args>
void LogLine(const Args&... args) {
  std::string line =
      absl::StrCat(absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()),
                   " nvfp4d ", args..., "\n");
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace nvfp4::server

#endif  // NVFP4_SERVER_LOG_H_
