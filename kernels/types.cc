#include "kernels/types.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace nvfp4 {

int DTypeSize(DType d) { return d == DType::kF32 ? 4 : 2; }

std::string_view DTypeName(DType d) {
  switch (d) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
  }
  return "?";
}

absl::StatusOr<DType> ParseDType(std::string_view name) {
  const std::string n = absl::AsciiStrToLower(absl::string_view(name.data(), name.size()));
  if (n == "f32" || n == "float32" || n == "fp32" || n == "float") return DType::kF32;
  if (n == "f16" || n == "float16" || n == "fp16" || n == "half") return DType::kF16;
  if (n == "bf16" || n == "bfloat16") return DType::kBF16;
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported dtype '", std::string(name), "' (expected BF16, F16 or F32)"));
}

std::string_view MethodName(Method m) {
  switch (m) {
    case Method::kRtn: return "rtn";
    case Method::kFourOverSix: return "4over6";
    case Method::kScaleSweep: return "scalesweep";
    case Method::kSoar: return "soar";
  }
  return "?";
}

absl::StatusOr<Method> ParseMethod(std::string_view name) {
  const std::string n = absl::AsciiStrToLower(absl::string_view(name.data(), name.size()));
  if (n == "rtn" || n == "absmax") return Method::kRtn;
  if (n == "4over6" || n == "four_over_six" || n == "fouroversix") return Method::kFourOverSix;
  if (n == "scalesweep" || n == "scale_sweep") return Method::kScaleSweep;
  if (n == "soar") return Method::kSoar;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown method '", std::string(name), "' (expected rtn, 4over6, scalesweep or soar)"));
}

std::string_view ObjectiveName(Objective o) {
  switch (o) {
    case Objective::kMse: return "mse";
    case Objective::kWmse: return "wmse";
    case Objective::kHessian: return "hessian";
  }
  return "?";
}

absl::StatusOr<Objective> ParseObjective(std::string_view name) {
  const std::string n = absl::AsciiStrToLower(absl::string_view(name.data(), name.size()));
  if (n == "mse") return Objective::kMse;
  if (n == "wmse") return Objective::kWmse;
  if (n == "hessian") return Objective::kHessian;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown objective '", std::string(name), "' (expected mse, wmse or hessian)"));
}

std::string_view ErrorRuleName(ErrorRule r) {
  switch (r) {
    case ErrorRule::kMse: return "mse";
    case ErrorRule::kMae: return "mae";
    case ErrorRule::kAbsMax: return "absmax";
  }
  return "?";
}

absl::StatusOr<ErrorRule> ParseErrorRule(std::string_view name) {
  const std::string n = absl::AsciiStrToLower(absl::string_view(name.data(), name.size()));
  if (n == "mse") return ErrorRule::kMse;
  if (n == "mae") return ErrorRule::kMae;
  if (n == "absmax") return ErrorRule::kAbsMax;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown 4over6 error rule '", std::string(name), "' (expected mse, mae or absmax)"));
}

}  // namespace nvfp4
