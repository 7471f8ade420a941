// Keeps nvfp4d's resident memory close to the memory it actually uses (glibc malloc).
//
// Under load the server allocates and frees tens of MiB per request (QuantizeTensor sources and
// results, gRPC message buffers) from many gRPC threads. glibc serves them from up to 8 arenas per
// core and keeps freed memory inside the arenas, and its dynamic mmap threshold rises to 32 MiB
// after the first large free, so later tensor buffers come from the arenas too. The load test
// (bench/load_test.sh, docs/BENCHMARKS.md "Load test") measured the result: with 64 clients the
// bytes in use stayed flat (~280 MB under load, 13 MB idle) while RSS kept climbing (600 -> 760
// MiB in 10 minutes) and stayed there when idle; malloc_trim(0) dropped it to 204 MiB.
//
// ConfigureHeap() fixes the mmap threshold (large buffers are mmapped and unmapped on free), and a
// HeapTrimmer thread calls malloc_trim(0) periodically, which returns the free pages of every arena
// to the kernel. Both are no-ops on other C libraries.
#ifndef NVFP4_SERVER_HEAP_TRIM_H_
#define NVFP4_SERVER_HEAP_TRIM_H_

#include <cstdint>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace nvfp4::server {

// Allocations of at least `mmap_threshold_bytes` are served by mmap and returned on free
// (mallopt M_MMAP_THRESHOLD, which also turns off glibc's dynamic threshold). <= 0: unchanged.
void ConfigureHeap(int64_t mmap_threshold_bytes);

// Calls malloc_trim(0) every `interval` on its own thread until destroyed (no thread when the
// interval is not positive).
class HeapTrimmer {
 public:
  explicit HeapTrimmer(absl::Duration interval);
  ~HeapTrimmer();
  HeapTrimmer(const HeapTrimmer&) = delete;
  HeapTrimmer& operator=(const HeapTrimmer&) = delete;

  // Number of malloc_trim calls so far.
  int64_t trims() const;

 private:
  void Loop(absl::Duration interval);
  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  int64_t trims_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

}  // namespace nvfp4::server

#endif  // NVFP4_SERVER_HEAP_TRIM_H_
