// Helpers for formats tests: hand-made safetensors files (TempDir, ReadFile, WriteFile:
// tests/testing/).
#ifndef NVFP4_TESTS_FORMATS_TEST_UTIL_H_
#define NVFP4_TESTS_FORMATS_TEST_UTIL_H_

#include <cstdint>
#include <string>
#include <vector>

namespace nvfp4::formats::testing {

// 8-byte little-endian length `n` (default: header.size()), the header, and `data_size` bytes of
// data (value i & 0xFF at position i).
inline std::string RawSafetensors(const std::string& header, uint64_t data_size,
                                  uint64_t n = UINT64_MAX) {
  if (n == UINT64_MAX) n = header.size();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  out += header;
  for (uint64_t i = 0; i < data_size; ++i) out.push_back(static_cast<char>(i & 0xFF));
  return out;
}

inline std::vector<uint8_t> Bytes(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + 7 * i);
  return v;
}

}  // namespace nvfp4::formats::testing

#endif  // NVFP4_TESTS_FORMATS_TEST_UTIL_H_
