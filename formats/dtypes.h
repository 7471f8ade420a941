// Safetensors element types: the dtype strings a checkpoint may contain, their sizes, and the
// conversions the service needs (to the kernels' DType, and to fp32 for calibration statistics).
//
// Quantization reads BF16/F16/F32 weights and writes U8 (packed E2M1) and F8_E4M3 (block scales);
// every other dtype listed here is accepted so that non-quantized tensors can be copied unchanged.
#ifndef NVFP4_FORMATS_DTYPES_H_
#define NVFP4_FORMATS_DTYPES_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/types.h"

namespace nvfp4::formats {

// Bytes per element of a safetensors dtype ("BF16" -> 2), or nullopt for a dtype this project does
// not know. Known: BOOL U8 I8 F8_E4M3 F8_E5M2 (1), U16 I16 F16 BF16 (2), U32 I32 F32 (4),
// U64 I64 F64 (8). Case-sensitive, as the format is.
std::optional<int> SafetensorsDTypeSize(std::string_view dtype);

// True for BF16, F16 and F32: the dtypes the quantizer accepts as weights.
bool IsQuantizableDType(std::string_view dtype);

// Kernel element type of a quantizable dtype; nullopt for any other dtype.
std::optional<DType> ToKernelDType(std::string_view dtype);

// Decodes a little-endian BF16, F16, F32 or F64 buffer to fp32 values (F64 is rounded).
// Errors: INVALID_ARGUMENT when the dtype is not one of these or the size is not a whole number
// of elements.
absl::StatusOr<std::vector<float>> DecodeToFloat32(std::string_view dtype,
                                                   std::span<const uint8_t> bytes);

// Elements of a little-endian F64, F32, F16 or BF16 buffer that are NaN or +-Inf (0 for every other
// dtype, whose bytes are not floating point or have no Inf: the FP8 formats are not scanned).
// A trailing partial element is ignored.
int64_t CountNonFinite(std::string_view dtype, std::span<const uint8_t> bytes);

// fp32 -> bf16 bits with round-to-nearest-even (NaN stays NaN). Used to write bf16 tensors.
uint16_t FloatToBf16(float value);

}  // namespace nvfp4::formats

#endif  // NVFP4_FORMATS_DTYPES_H_
