#include "kernels/parallel.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

namespace nvfp4 {

int HostThreadCount() {
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

void HostParallelFor(int64_t count, int threads, const std::function<void(int64_t)>& fn) {
  const int workers = static_cast<int>(std::min<int64_t>(std::max(threads, 1), count));
  if (workers <= 1) {
    for (int64_t i = 0; i < count; ++i) fn(i);
    return;
  }
  std::atomic<int64_t> next{0};
  auto work = [&] {
    for (int64_t i = next.fetch_add(1); i < count; i = next.fetch_add(1)) fn(i);
  };
  std::vector<std::thread> pool;
  pool.reserve(workers - 1);
  for (int w = 1; w < workers; ++w) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
}

}  // namespace nvfp4
