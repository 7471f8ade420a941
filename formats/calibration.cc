#include "formats/calibration.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "base/str_util.h"
#include "formats/dtypes.h"

namespace nvfp4::formats {
namespace {

std::string ShapeString(const std::vector<int64_t>& shape) {
  return StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::Status EntryError(const SafetensorsReader& reader, const TensorInfo& info,
                        std::string_view what) {
  return absl::InvalidArgumentError(StrCat(reader.name(), ": calibration entry '", info.name, "' ",
                                           info.dtype, " ", ShapeString(info.shape), ": ", what));
}

absl::StatusOr<std::vector<float>> ReadAsFloat(const SafetensorsReader& reader,
                                               const TensorInfo& info) {
  if (!IsQuantizableDType(info.dtype)) {
    return EntryError(reader, info, "dtype must be F32, F16 or BF16");
  }
  ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, reader.ReadTensor(info));
  return DecodeToFloat32(info.dtype, bytes);
}

}  // namespace

bool HasCalibrationFor(const SafetensorsReader& reader, std::string_view tensor) {
  for (std::string_view suffix : {kInputSqSuffix, kInputGramSuffix, kInputActivationsSuffix}) {
    if (reader.Find(StrCat(tensor, suffix)) != nullptr) return true;
  }
  return false;
}

bool HasGramFor(const SafetensorsReader& reader, std::string_view tensor) {
  for (std::string_view suffix : {kInputGramSuffix, kInputActivationsSuffix}) {
    if (reader.Find(StrCat(tensor, suffix)) != nullptr) return true;
  }
  return false;
}

absl::StatusOr<std::unique_ptr<LoadedCalibration>> LoadCalibration(const SafetensorsReader& reader,
                                                                   std::string_view tensor,
                                                                   int64_t k) {
  auto loaded = std::make_unique<LoadedCalibration>();
  Calibration& cal = loaded->calibration;

  if (const TensorInfo* sq = reader.Find(StrCat(tensor, kInputSqSuffix))) {
    if (sq->shape.size() != 1 || sq->shape[0] != k) {
      return EntryError(reader, *sq, StrCat("expected shape [", k, "] (K of '", tensor, "')"));
    }
    ASSIGN_OR_RETURN(cal.importance, ReadAsFloat(reader, *sq));
  }
  if (const TensorInfo* gram = reader.Find(StrCat(tensor, kInputGramSuffix))) {
    if (gram->shape.size() != 2 || gram->shape[0] != k || gram->shape[1] != k) {
      return EntryError(reader, *gram,
                        StrCat("expected shape [", k, ", ", k, "] (K of '", tensor, "')"));
    }
    ASSIGN_OR_RETURN(cal.gram, ReadAsFloat(reader, *gram));
  }
  if (const TensorInfo* act = reader.Find(StrCat(tensor, kInputActivationsSuffix))) {
    const std::optional<DType> dtype = ToKernelDType(act->dtype);
    if (!dtype) return EntryError(reader, *act, "dtype must be F32, F16 or BF16");
    if (act->shape.size() < 2 || act->shape.back() != k) {
      return EntryError(reader, *act,
                        StrCat("expected shape [tokens, ", k, "] (K of '", tensor, "')"));
    }
    const int64_t tokens = act->numel() / k;
    if (tokens == 0) return EntryError(reader, *act, "has no tokens");
    ASSIGN_OR_RETURN(loaded->activation_bytes, reader.ReadTensor(*act));
    cal.activations = loaded->activation_bytes.data();
    cal.activations_dtype = *dtype;
    cal.tokens = tokens;
  }
  return loaded;
}

}  // namespace nvfp4::formats
