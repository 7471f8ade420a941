#include "kernels/reduce.h"

#include <random>

#include "gtest/gtest.h"

namespace nvfp4 {
namespace {

TEST(ReduceTest, ExactForIntegers) {
  for (size_t n : {0u, 1u, 1023u, 1024u, 1025u, 5000u, 1024u * 1024u + 7u}) {
    std::vector<double> v(n);
    double expect = 0;
    for (size_t i = 0; i < n; ++i) {
      v[i] = static_cast<double>(i % 97);
      expect += v[i];
    }
    EXPECT_EQ(CanonicalSum(v), expect) << n;
  }
}

TEST(ReduceTest, FollowsTheHalvingTreeOrder) {
  // Values whose fp64 sum depends on the order: the tree pairs a[i] with a[i + 512] first.
  std::vector<double> v(1024, 0.0);
  v[0] = 1e16;
  v[512] = -1e16;
  v[1] = 1.0;
  EXPECT_EQ(CanonicalSum(v), 1.0);  // (1e16 + -1e16) + 1 == 1; a left fold would lose the 1
  std::vector<double> w(1024, 0.0);
  w[0] = 1e16;
  w[1] = 1.0;
  w[2] = -1e16;
  // Tree: level 512..4 keep them apart; at s=2, a[0] += a[2] -> 0, then + a[1] = 1.
  EXPECT_EQ(CanonicalSum(w), 1.0);
}

TEST(ReduceTest, ChunkSumsReduceLikeTheFlatSum) {
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> u(-1, 1);
  std::vector<double> v(3 * 1024 * 1024 + 11);
  for (double& x : v) x = u(rng);
  std::vector<double> chunks;
  for (size_t c = 0; c < v.size(); c += 1024) {
    double a[1024] = {};
    for (size_t i = c; i < std::min(v.size(), c + 1024); ++i) a[i - c] = v[i];
    chunks.push_back(TreeReduceChunk(a));
  }
  EXPECT_EQ(ReduceChunkSums(chunks), CanonicalSum(v));
}

}  // namespace
}  // namespace nvfp4
