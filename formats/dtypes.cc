#include "formats/dtypes.h"

#include <bit>
#include <cstring>

#include "absl/status/status.h"
#include "base/str_util.h"
#include "kernels/hd.h"

namespace nvfp4::formats {

std::optional<int> SafetensorsDTypeSize(std::string_view dtype) {
  struct Entry {
    std::string_view name;
    int size;
  };
  static constexpr Entry kTable[] = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E4M3", 1}, {"F8_E5M2", 1},
      {"U16", 2},  {"I16", 2}, {"F16", 2}, {"BF16", 2},    {"U32", 4},
      {"I32", 4},  {"F32", 4}, {"U64", 8}, {"I64", 8},     {"F64", 8},
  };
  for (const Entry& e : kTable) {
    if (e.name == dtype) return e.size;
  }
  return std::nullopt;
}

bool IsQuantizableDType(std::string_view dtype) { return ToKernelDType(dtype).has_value(); }

std::optional<DType> ToKernelDType(std::string_view dtype) {
  if (dtype == "F32") return DType::kF32;
  if (dtype == "F16") return DType::kF16;
  if (dtype == "BF16") return DType::kBF16;
  return std::nullopt;
}

absl::StatusOr<std::vector<float>> DecodeToFloat32(std::string_view dtype,
                                                   std::span<const uint8_t> bytes) {
  int size = 0;
  if (dtype == "F32") {
    size = 4;
  } else if (dtype == "F16" || dtype == "BF16") {
    size = 2;
  } else if (dtype == "F64") {
    size = 8;
  } else {
    return absl::InvalidArgumentError(
        StrCat("dtype ", dtype, " is not a floating-point type (expected F32, F16, BF16 or F64)"));
  }
  if (bytes.size() % size != 0) {
    return absl::InvalidArgumentError(
        StrCat(bytes.size(), " bytes is not a whole number of ", dtype, " elements"));
  }
  const size_t n = bytes.size() / size;
  std::vector<float> out(n);
  const uint8_t* p = bytes.data();
  for (size_t i = 0; i < n; ++i, p += size) {
    if (size == 4) {
      std::memcpy(&out[i], p, 4);
    } else if (size == 8) {
      double d;
      std::memcpy(&d, p, 8);
      out[i] = static_cast<float>(d);
    } else {
      const uint16_t h = static_cast<uint16_t>(p[0] | (p[1] << 8));
      out[i] = dtype == "BF16" ? Bf16ToFloat(h) : F16ToFloat(h);
    }
  }
  return out;
}

uint16_t FloatToBf16(float value) {
  uint32_t bits = FloatBits(value);
  if ((bits & 0x7F800000u) == 0x7F800000u && (bits & 0x7FFFFFu) != 0) {
    return static_cast<uint16_t>((bits >> 16) | 0x40u);  // quiet NaN
  }
  const uint32_t rounding = 0x7FFFu + ((bits >> 16) & 1u);
  bits += rounding;
  return static_cast<uint16_t>(bits >> 16);
}

namespace {

// Elements of `n` little-endian `T` values at `p` whose bits under `exponent` are all ones. The
// loads go through memcpy so that the loop vectorizes (it runs over every copied tensor).
template <typename T>
int64_t CountAllOnes(const uint8_t* p, size_t n, T exponent) {
  int64_t count = 0;
  for (size_t i = 0; i < n; ++i) {
    T bits;
    if constexpr (std::endian::native == std::endian::little) {
      std::memcpy(&bits, p + i * sizeof(T), sizeof(T));
    } else {
      bits = 0;
      for (int k = static_cast<int>(sizeof(T)) - 1; k >= 0; --k) {
        bits = static_cast<T>((bits << 8) | p[i * sizeof(T) + static_cast<size_t>(k)]);
      }
    }
    count += (bits & exponent) == exponent ? 1 : 0;
  }
  return count;
}

}  // namespace

int64_t CountNonFinite(std::string_view dtype, std::span<const uint8_t> bytes) {
  // The exponent field all ones: Inf (zero mantissa) or NaN.
  const uint8_t* p = bytes.data();
  if (dtype == "F64") return CountAllOnes<uint64_t>(p, bytes.size() / 8, 0x7FF0000000000000ull);
  if (dtype == "F32") return CountAllOnes<uint32_t>(p, bytes.size() / 4, 0x7F800000u);
  if (dtype == "F16") return CountAllOnes<uint16_t>(p, bytes.size() / 2, 0x7C00u);
  if (dtype == "BF16") return CountAllOnes<uint16_t>(p, bytes.size() / 2, 0x7F80u);
  return 0;
}

}  // namespace nvfp4::formats
