#include "kernels/reduce.h"

#include <algorithm>

namespace nvfp4 {

double ReduceChunkSums(std::vector<double> sums) {
  if (sums.empty()) return 0.0;
  while (sums.size() > 1) {
    std::vector<double> next((sums.size() + kReduceChunk - 1) / kReduceChunk);
    double chunk[kReduceChunk];
    for (size_t c = 0; c < next.size(); ++c) {
      const size_t begin = c * kReduceChunk;
      const size_t n = std::min<size_t>(kReduceChunk, sums.size() - begin);
      std::fill(chunk, chunk + kReduceChunk, 0.0);
      std::copy(sums.begin() + begin, sums.begin() + begin + n, chunk);
      next[c] = TreeReduceChunk(chunk);
    }
    sums.swap(next);
  }
  return sums[0];
}

double CanonicalSum(const std::vector<double>& block_values) {
  std::vector<double> chunk_sums((block_values.size() + kReduceChunk - 1) / kReduceChunk);
  double chunk[kReduceChunk];
  for (size_t c = 0; c < chunk_sums.size(); ++c) {
    const size_t begin = c * kReduceChunk;
    const size_t n = std::min<size_t>(kReduceChunk, block_values.size() - begin);
    std::fill(chunk, chunk + kReduceChunk, 0.0);
    std::copy(block_values.begin() + begin, block_values.begin() + begin + n, chunk);
    chunk_sums[c] = TreeReduceChunk(chunk);
  }
  return ReduceChunkSums(std::move(chunk_sums));
}

}  // namespace nvfp4
