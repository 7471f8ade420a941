// Host thread fan-out shared by the CPU backend and the GPTQ flow.
#ifndef NVFP4_KERNELS_PARALLEL_H_
#define NVFP4_KERNELS_PARALLEL_H_

#include <cstdint>
#include <functional>

namespace nvfp4 {

// Runs fn(i) for i in [0, count) on up to `threads` threads (dynamic schedule: each thread takes
// the next index). Which thread runs an index never changes a result the callers compute.
void HostParallelFor(int64_t count, int threads, const std::function<void(int64_t)>& fn);

// The host's hardware threads (at least 1): the default `threads` of the host code.
int HostThreadCount();

}  // namespace nvfp4

#endif  // NVFP4_KERNELS_PARALLEL_H_
