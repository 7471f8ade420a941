#include "server/heap_trim.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <climits>

#include "absl/time/clock.h"

namespace nvfp4::server {

void ConfigureHeap(int64_t mmap_threshold_bytes) {
#if defined(__GLIBC__)
  if (mmap_threshold_bytes > 0) {
    mallopt(M_MMAP_THRESHOLD, static_cast<int>(std::min<int64_t>(mmap_threshold_bytes, INT_MAX)));
  }
#else
  (void)mmap_threshold_bytes;
#endif
}

HeapTrimmer::HeapTrimmer(absl::Duration interval) {
  if (interval > absl::ZeroDuration()) thread_ = std::thread([this, interval] { Loop(interval); });
}

HeapTrimmer::~HeapTrimmer() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

int64_t HeapTrimmer::trims() const {
  absl::MutexLock lock(&mu_);
  return trims_;
}

void HeapTrimmer::Loop(absl::Duration interval) {
  absl::MutexLock lock(&mu_);
  while (true) {
    const absl::Time deadline = absl::Now() + interval;
    while (!stop_ && absl::Now() < deadline) {
      mu_.AwaitWithDeadline(absl::Condition(&stop_), deadline);
    }
    if (stop_) return;
    mu_.Unlock();
#if defined(__GLIBC__)
    malloc_trim(0);
#endif
    mu_.Lock();
    ++trims_;
  }
}

}  // namespace nvfp4::server
