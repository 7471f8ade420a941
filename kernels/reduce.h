// Canonical deterministic summation of per-block partial values (docs/ARCHITECTURE.md): chunks of
// 1024 consecutive blocks, each summed by a fixed halving tree in fp64, then the chunk sums reduced
// the same way. The CUDA backend runs the same tree in shared memory (one CTA per chunk), so both
// backends produce bit-identical tensor-wide sums.
#ifndef NVFP4_KERNELS_REDUCE_H_
#define NVFP4_KERNELS_REDUCE_H_

#include <cstdint>
#include <vector>

#include "kernels/hd.h"

namespace nvfp4 {

inline constexpr int kReduceChunk = 1024;

// In-place halving tree over a[0..1024): for s = 512..1: a[i] += a[i + s]. Returns a[0].
NVFP4_HD double TreeReduceChunk(double* a) {
  for (int s = kReduceChunk / 2; s >= 1; s >>= 1) {
    for (int i = 0; i < s; ++i) a[i] = a[i] + a[i + s];
  }
  return a[0];
}

// Reduces chunk sums (level 1 and up) to one value with the same tree, zero-padded.
double ReduceChunkSums(std::vector<double> sums);

// Convenience for tests and small inputs: the full canonical sum of per-block values.
double CanonicalSum(const std::vector<double>& block_values);

}  // namespace nvfp4

#endif  // NVFP4_KERNELS_REDUCE_H_
