#include "kernels/testing/synthetic.h"

#include <cmath>
#include <cstring>
#include <random>

#include "kernels/codec.h"

namespace nvfp4::testing {

std::vector<float> Sample(Distribution d, int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<float> v(static_cast<size_t>(n));
  switch (d) {
    case Distribution::kGaussian: {
      std::normal_distribution<double> dist(0.0, 1.0);
      for (auto& x : v) x = static_cast<float>(dist(rng));
      break;
    }
    case Distribution::kLaplace: {
      std::exponential_distribution<double> e(1.0);
      std::bernoulli_distribution sign(0.5);
      for (auto& x : v) x = static_cast<float>(sign(rng) ? e(rng) : -e(rng));
      break;
    }
    case Distribution::kStudentT3: {
      std::student_t_distribution<double> dist(3.0);
      for (auto& x : v) x = static_cast<float>(dist(rng));
      break;
    }
  }
  return v;
}

void AddOutlierColumns(std::vector<float>& m, int64_t cols, int64_t period, float factor) {
  for (size_t i = 0; i < m.size(); ++i) {
    if (static_cast<int64_t>(i % cols) % period == 0) m[i] *= factor;
  }
}

uint16_t FloatToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

uint16_t FloatToF16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const float a = std::fabs(f);
  if (std::isnan(f)) return sign | 0x7E00;
  if (a >= 65520.0f) return sign | 0x7C00;
  if (a < 6.103515625e-05f) {  // subnormal: multiples of 2^-24
    return sign | static_cast<uint16_t>(std::nearbyint(a * 16777216.0f));
  }
  uint32_t b;
  std::memcpy(&b, &a, 4);
  b += 0xFFFu + ((b >> 13) & 1u);
  return sign | static_cast<uint16_t>(((b >> 13) - (112u << 10)) & 0x7FFFu);
}

std::vector<uint16_t> ToBf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = FloatToBf16(v[i]);
  return out;
}

std::vector<uint16_t> ToF16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = FloatToF16(v[i]);
  return out;
}

std::vector<float> CorrelatedGram(int64_t k, int64_t tokens, uint64_t seed) {
  const std::vector<float> z = Sample(Distribution::kGaussian, tokens * k, seed);
  std::vector<double> g(static_cast<size_t>(k * k), 0.0);
  std::vector<double> x(static_cast<size_t>(k));
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t i = 0; i < k; ++i) {
      x[i] = z[t * k + i] + 0.8 * z[t * k + (i + 1) % k];
      if (i % 13 == 0) x[i] *= 4.0;
    }
    for (int64_t i = 0; i < k; ++i) {
      for (int64_t j = 0; j < k; ++j) g[i * k + j] += x[i] * x[j];
    }
  }
  return std::vector<float>(g.begin(), g.end());
}

Fp8Sample SampleFp8(int64_t rows, int64_t cols, int64_t block_rows, int64_t block_cols,
                    uint64_t seed) {
  Fp8Sample out;
  const std::vector<float> v = Sample(Distribution::kStudentT3, rows * cols, seed);
  out.codes.resize(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    // |x| * 64 on the E4M3 grid (saturating at 448, flushed below 2^-9), with the sign bit.
    const float a = std::fabs(v[i]) * 64.0f;
    const uint8_t mag = a < 0.001953125f ? 0 : static_cast<uint8_t>(EncodeE4M3Scale(a));
    out.codes[i] = static_cast<uint8_t>(mag | (std::signbit(v[i]) ? 0x80 : 0));
  }
  out.grid_cols = (cols + block_cols - 1) / block_cols;
  const int64_t grid_rows = (rows + block_rows - 1) / block_rows;
  std::mt19937_64 rng(seed ^ 0x9E3779B97F4A7C15ull);
  std::uniform_real_distribution<double> u(std::log(1e-4), std::log(1e-2));
  out.scales.resize(static_cast<size_t>(grid_rows * out.grid_cols));
  for (float& s : out.scales) s = static_cast<float>(std::exp(u(rng)));
  return out;
}

}  // namespace nvfp4::testing
