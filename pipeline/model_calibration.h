// Calibration statistics of a whole model (docs/CALIBRATION.md): one safetensors file keyed by
// Linear module name `<m>` (e.g. `model.layers.0.self_attn.q_proj`):
//   `<m>.input_sq`    [K]     sum over tokens of x_k^2   (importance for the wmse objective)
//   `<m>.input_gram`  [K, K]  X^T X                       (hessian objective, output-space nmse)
//   `<m>.input_amax`  [] / [1] max |x| over tokens        (W4A4: the activation global scale)
// Keys of the weight tensor (`<m>.weight.input_sq`, ...) are accepted too. Entries are read one
// module at a time; the file is never loaded whole.
#ifndef NVFP4_PIPELINE_MODEL_CALIBRATION_H_
#define NVFP4_PIPELINE_MODEL_CALIBRATION_H_

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "formats/calibration.h"
#include "formats/random_access_source.h"
#include "formats/safetensors.h"

namespace nvfp4::pipeline {

inline constexpr std::string_view kInputAmaxSuffix = ".input_amax";

class ModelCalibration {
 public:
  static absl::StatusOr<std::unique_ptr<ModelCalibration>> Open(const std::string& path);
  static absl::StatusOr<std::unique_ptr<ModelCalibration>> Open(
      std::unique_ptr<formats::RandomAccessSource> source);

  // True when the file has any statistics for `module`.
  bool Has(std::string_view module) const;
  // True when the file has input_sq, the input Gram or raw activations of `module` (objective
  // wmse); input_amax alone is not enough.
  bool HasStatistics(std::string_view module) const;
  // True when the file has the input Gram (or raw activations) of `module` (method gptq).
  bool HasGram(std::string_view module) const;
  // The statistics of `module` (input dimension `k`); an empty calibration when there are none.
  // INVALID_ARGUMENT (naming the file and entry) for mis-shaped entries.
  absl::StatusOr<std::unique_ptr<formats::LoadedCalibration>> Load(std::string_view module,
                                                                   int64_t k) const;
  // `<m>.input_amax`, or nullopt. INVALID_ARGUMENT for a non-scalar, a non-float dtype, or a value
  // that is not finite and positive.
  absl::StatusOr<std::optional<float>> InputAmax(std::string_view module) const;
  // True when any `*.input_amax` entry exists.
  bool HasAnyInputAmax() const;

  const formats::SafetensorsReader& reader() const { return *reader_; }

 private:
  explicit ModelCalibration(std::unique_ptr<formats::SafetensorsReader> reader)
      : reader_(std::move(reader)) {}
  // The key prefix used for `module` ("<m>" or "<m>.weight"), or nullopt.
  std::optional<std::string> KeyFor(std::string_view module) const;

  std::unique_ptr<formats::SafetensorsReader> reader_;
};

}  // namespace nvfp4::pipeline

#endif  // NVFP4_PIPELINE_MODEL_CALIBRATION_H_
