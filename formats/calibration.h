// Calibration files: per-weight statistics of the activations that feed each Linear layer.
//
// A calibration file is a safetensors file. For a weight tensor `X` of shape [N, K] it may hold
//   `X.input_sq`           [K]          sum of squared activations per input channel -> importance
//   `X.input_gram`         [K, K]       X^T X                                         -> gram
//   `X.input_activations`  [tokens, K]  raw activations (or [..., K], leading dims folded)
// `input_sq` and `input_gram` may be F32, F16 or BF16 (converted to fp32); activations are kept
// in their dtype (F32, F16 or BF16) for the backend.
#ifndef NVFP4_FORMATS_CALIBRATION_H_
#define NVFP4_FORMATS_CALIBRATION_H_

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "formats/safetensors.h"
#include "kernels/types.h"

namespace nvfp4::formats {

inline constexpr std::string_view kInputSqSuffix = ".input_sq";
inline constexpr std::string_view kInputGramSuffix = ".input_gram";
inline constexpr std::string_view kInputActivationsSuffix = ".input_activations";

// Calibration for one weight together with the storage its `activations` pointer refers to.
// Not copyable or movable (the pointer would dangle); held by unique_ptr.
struct LoadedCalibration {
  LoadedCalibration() = default;
  LoadedCalibration(const LoadedCalibration&) = delete;
  LoadedCalibration& operator=(const LoadedCalibration&) = delete;

  Calibration calibration;
  std::vector<uint8_t> activation_bytes;  // backing store of calibration.activations
};

// True when `reader` holds any calibration entry for weight `tensor`.
bool HasCalibrationFor(const SafetensorsReader& reader, std::string_view tensor);
// True when `reader` holds an input Gram (or raw activations) for weight `tensor` (method gptq).
bool HasGramFor(const SafetensorsReader& reader, std::string_view tensor);

// Loads the calibration entries for weight `tensor` whose input dimension is `k`. Returns an
// empty calibration when the file has none. Errors (INVALID_ARGUMENT, naming the calibration file,
// the entry, its shape and the expected shape): wrong rank, a dimension that is not K, a dtype that
// is not F32/F16/BF16, zero tokens.
absl::StatusOr<std::unique_ptr<LoadedCalibration>> LoadCalibration(const SafetensorsReader& reader,
                                                                   std::string_view tensor,
                                                                   int64_t k);

}  // namespace nvfp4::formats

#endif  // NVFP4_FORMATS_CALIBRATION_H_
