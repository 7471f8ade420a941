// Helpers for the kernels tests: tensors in each dtype, and independent reference encoders
// (exhaustive nearest-value search) to check the production codec against.
#ifndef NVFP4_TESTS_KERNELS_TEST_UTIL_H_
#define NVFP4_TESTS_KERNELS_TEST_UTIL_H_

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/codec.h"
#include "kernels/types.h"

namespace nvfp4::testing {

// Owns the bytes behind a TensorView.
struct OwnedTensor {
  std::vector<uint8_t> bytes;
  TensorView view;
};

inline OwnedTensor MakeF32(std::string name, std::vector<int64_t> shape,
                           const std::vector<float>& v) {
  OwnedTensor t;
  t.bytes.resize(v.size() * 4);
  if (!v.empty()) std::memcpy(t.bytes.data(), v.data(), t.bytes.size());  // memcpy(nullptr, .., 0) is UB
  t.view = {std::move(name), DType::kF32, std::move(shape), nullptr};
  t.view.data = t.bytes.data();
  return t;
}

inline OwnedTensor MakeU16(std::string name, DType dtype, std::vector<int64_t> shape,
                           const std::vector<uint16_t>& v) {
  OwnedTensor t;
  t.bytes.resize(v.size() * 2);
  if (!v.empty()) std::memcpy(t.bytes.data(), v.data(), t.bytes.size());  // memcpy(nullptr, .., 0) is UB
  t.view = {std::move(name), dtype, std::move(shape), nullptr};
  t.view.data = t.bytes.data();
  return t;
}

// Reference E4M3 scale encoder: clamp to [2^-9, 448], nearest of the 126 values, ties to even.
inline uint8_t RefE4M3(float v) {
  v = std::fmin(std::fmax(v, 0.001953125f), 448.0f);
  int best = 1;
  for (int c = 2; c <= 126; ++c) {
    const double d = std::fabs(double(v) - DecodeE4M3(c));
    const double db = std::fabs(double(v) - DecodeE4M3(best));
    if (d < db || (d == db && c % 2 == 0)) best = c;
  }
  return static_cast<uint8_t>(best);
}

// Reference E2M1 encoder: nearest of the 8 magnitudes, ties to even code, sign for y < 0.
inline uint32_t RefE2M1(float y) {
  const float values[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
  const float a = std::fabs(y);
  int best = 0;
  for (int c = 1; c < 8; ++c) {
    const float d = std::fabs(a - values[c]), db = std::fabs(a - values[best]);
    if (d < db || (d == db && c % 2 == 0)) best = c;
  }
  return static_cast<uint32_t>(best) | (y < 0 ? 8u : 0u);
}

inline uint32_t NibbleAt(const std::vector<uint8_t>& packed, int64_t i) {
  return (i % 2 == 0) ? (packed[i / 2] & 0xF) : (packed[i / 2] >> 4);
}

}  // namespace nvfp4::testing

#endif  // NVFP4_TESTS_KERNELS_TEST_UTIL_H_
