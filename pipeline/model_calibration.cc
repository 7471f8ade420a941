#include "pipeline/model_calibration.h"

#include <cmath>

#include "base/status_macros.h"
#include "base/str_util.h"
#include "formats/dtypes.h"

namespace nvfp4::pipeline {

absl::StatusOr<std::unique_ptr<ModelCalibration>> ModelCalibration::Open(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<formats::LocalFileSource> src,
                   formats::LocalFileSource::Open(path));
  return Open(std::unique_ptr<formats::RandomAccessSource>(std::move(src)));
}

absl::StatusOr<std::unique_ptr<ModelCalibration>> ModelCalibration::Open(
    std::unique_ptr<formats::RandomAccessSource> source) {
  ASSIGN_OR_RETURN(std::unique_ptr<formats::SafetensorsReader> reader,
                   formats::SafetensorsReader::Open(std::move(source)));
  return std::unique_ptr<ModelCalibration>(new ModelCalibration(std::move(reader)));
}

std::optional<std::string> ModelCalibration::KeyFor(std::string_view module) const {
  for (std::string key : {std::string(module), StrCat(module, ".weight")}) {
    if (formats::HasCalibrationFor(*reader_, key) ||
        reader_->Find(StrCat(key, kInputAmaxSuffix)) != nullptr) {
      return key;
    }
  }
  return std::nullopt;
}

bool ModelCalibration::Has(std::string_view module) const { return KeyFor(module).has_value(); }

bool ModelCalibration::HasStatistics(std::string_view module) const {
  std::optional<std::string> key = KeyFor(module);
  return key.has_value() && formats::HasCalibrationFor(*reader_, *key);
}

bool ModelCalibration::HasGram(std::string_view module) const {
  std::optional<std::string> key = KeyFor(module);
  return key.has_value() && formats::HasGramFor(*reader_, *key);
}

absl::StatusOr<std::unique_ptr<formats::LoadedCalibration>> ModelCalibration::Load(
    std::string_view module, int64_t k) const {
  std::optional<std::string> key = KeyFor(module);
  if (!key) return std::make_unique<formats::LoadedCalibration>();
  return formats::LoadCalibration(*reader_, *key, k);
}

absl::StatusOr<std::optional<float>> ModelCalibration::InputAmax(std::string_view module) const {
  std::optional<std::string> key = KeyFor(module);
  if (!key) return std::optional<float>();
  const formats::TensorInfo* info = reader_->Find(StrCat(*key, kInputAmaxSuffix));
  if (info == nullptr) return std::optional<float>();
  if (info->numel() != 1 || info->shape.size() > 1 || !formats::IsQuantizableDType(info->dtype)) {
    return absl::InvalidArgumentError(StrCat(reader_->name(), ": calibration entry '", info->name,
                                             "' must be a F32/F16/BF16 scalar ([] or [1])"));
  }
  ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, reader_->ReadTensor(*info));
  ASSIGN_OR_RETURN(std::vector<float> v, formats::DecodeToFloat32(info->dtype, bytes));
  if (!std::isfinite(v[0]) || v[0] <= 0.0f) {
    return absl::InvalidArgumentError(StrCat(reader_->name(), ": calibration entry '", info->name,
                                             "' = ", v[0], " must be finite and positive"));
  }
  return std::optional<float>(v[0]);
}

bool ModelCalibration::HasAnyInputAmax() const {
  for (const formats::TensorInfo& t : reader_->tensors()) {
    if (t.name.size() > kInputAmaxSuffix.size() &&
        std::string_view(t.name).substr(t.name.size() - kInputAmaxSuffix.size()) ==
            kInputAmaxSuffix) {
      return true;
    }
  }
  return false;
}

}  // namespace nvfp4::pipeline
