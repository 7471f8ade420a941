#include "base/errno_status.h"

#include <cerrno>
#include <cstring>
#include <string>

#include "gtest/gtest.h"

namespace nvfp4 {
namespace {

TEST(ErrnoToStatusTest, OneAnswerPerErrno) {
  EXPECT_EQ(ErrnoToStatus(ENOENT, "x").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ErrnoToStatus(ENOTDIR, "x").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ErrnoToStatus(EACCES, "x").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ErrnoToStatus(EPERM, "x").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ErrnoToStatus(ENOSPC, "x").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ErrnoToStatus(EDQUOT, "x").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ErrnoToStatus(EIO, "x").code(), absl::StatusCode::kInternal);
  EXPECT_EQ(ErrnoToStatus(EBADF, "x").code(), absl::StatusCode::kInternal);
}

TEST(ErrnoToStatusTest, MessageNamesWhatAndWhy) {
  const absl::Status s = ErrnoToStatus(ENOSPC, "cannot write /data/out.tmp");
  EXPECT_EQ(s.message(), std::string("cannot write /data/out.tmp: ") + std::strerror(ENOSPC));
}

}  // namespace
}  // namespace nvfp4
