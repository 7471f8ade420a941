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
    case Method::kGptq: return "gptq";
  }
  return "?";
}

absl::StatusOr<Method> ParseMethod(std::string_view name) {
  const std::string n = absl::AsciiStrToLower(absl::string_view(name.data(), name.size()));
  if (n == "rtn" || n == "absmax") return Method::kRtn;
  if (n == "4over6" || n == "four_over_six" || n == "fouroversix") return Method::kFourOverSix;
  if (n == "scalesweep" || n == "scale_sweep") return Method::kScaleSweep;
  if (n == "soar") return Method::kSoar;
  if (n == "gptq") return Method::kGptq;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown method '", std::string(name), "' (expected rtn, 4over6, scalesweep, soar or gptq)"));
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

std::string_view GptqOrderName(GptqOrder o) {
  return o == GptqOrder::kStatic ? "static" : "natural";
}

absl::StatusOr<GptqOrder> ParseGptqOrder(std::string_view name) {
  const std::string n = absl::AsciiStrToLower(absl::string_view(name.data(), name.size()));
  if (n == "natural") return GptqOrder::kNatural;
  if (n == "static" || n == "actorder" || n == "act_order") return GptqOrder::kStatic;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown gptq order '", std::string(name), "' (expected natural or static)"));
}

std::string_view GptqGlobalScaleName(GptqGlobalScale g) {
  return g == GptqGlobalScale::kCjso ? "cjso" : "amax";
}

absl::StatusOr<GptqGlobalScale> ParseGptqGlobalScale(std::string_view name) {
  const std::string n = absl::AsciiStrToLower(absl::string_view(name.data(), name.size()));
  if (n == "amax") return GptqGlobalScale::kAmax;
  if (n == "cjso") return GptqGlobalScale::kCjso;
  return absl::InvalidArgumentError(absl::StrCat("unknown gptq global scale '", std::string(name),
                                                 "' (expected amax or cjso)"));
}

absl::Status ValidateGptqOptions(const GptqOptions& o) {
  if (o.block_scales == Method::kGptq) {
    return absl::InvalidArgumentError(
        "gptq block scales must be rtn, 4over6, scalesweep or soar (not gptq)");
  }
  if (!(o.dampening >= 0 && o.dampening <= 10)) {
    return absl::InvalidArgumentError(
        absl::StrCat("gptq dampening ", o.dampening, " is out of range (expected [0, 10])"));
  }
  if (o.block_size < 16 || o.block_size > 4096 || o.block_size % 16 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "gptq block size ", o.block_size, " must be a multiple of 16 in [16, 4096]"));
  }
  return absl::OkStatus();
}

}  // namespace nvfp4
