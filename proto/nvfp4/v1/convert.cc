#include "nvfp4/v1/convert.h"

#include "absl/strings/str_cat.h"

namespace nvfp4::v1 {

absl::StatusOr<nvfp4::DType> FromProto(DType d) {
  switch (d) {
    case DTYPE_F32:
      return nvfp4::DType::kF32;
    case DTYPE_F16:
      return nvfp4::DType::kF16;
    case DTYPE_BF16:
      return nvfp4::DType::kBF16;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unsupported dtype ", static_cast<int>(d), " (expected F32, F16 or BF16)"));
  }
}

DType ToProto(nvfp4::DType d) {
  switch (d) {
    case nvfp4::DType::kF32:
      return DTYPE_F32;
    case nvfp4::DType::kF16:
      return DTYPE_F16;
    case nvfp4::DType::kBF16:
      return DTYPE_BF16;
  }
  return DTYPE_UNSPECIFIED;
}

namespace {

// METHOD_UNSPECIFIED -> `unspecified`.
absl::StatusOr<nvfp4::Method> MethodFromProto(Method m, nvfp4::Method unspecified) {
  switch (m) {
    case METHOD_UNSPECIFIED:
      return unspecified;
    case METHOD_RTN:
      return nvfp4::Method::kRtn;
    case METHOD_FOUR_OVER_SIX:
      return nvfp4::Method::kFourOverSix;
    case METHOD_SCALESWEEP:
      return nvfp4::Method::kScaleSweep;
    case METHOD_SOAR:
      return nvfp4::Method::kSoar;
    case METHOD_GPTQ:
      return nvfp4::Method::kGptq;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown method ", m));
  }
}

Method MethodToProto(nvfp4::Method m) {
  switch (m) {
    case nvfp4::Method::kRtn:
      return METHOD_RTN;
    case nvfp4::Method::kFourOverSix:
      return METHOD_FOUR_OVER_SIX;
    case nvfp4::Method::kScaleSweep:
      return METHOD_SCALESWEEP;
    case nvfp4::Method::kSoar:
      return METHOD_SOAR;
    case nvfp4::Method::kGptq:
      return METHOD_GPTQ;
  }
  return METHOD_UNSPECIFIED;
}

absl::StatusOr<nvfp4::GptqOptions> GptqFromProto(const GptqOptions& o) {
  nvfp4::GptqOptions out;
  absl::StatusOr<nvfp4::Method> bs = MethodFromProto(o.block_scales(), out.block_scales);
  if (!bs.ok()) return absl::InvalidArgumentError(absl::StrCat("gptq.block_scales: ", bs.status().message()));
  out.block_scales = *bs;
  if (o.has_dampening()) out.dampening = o.dampening();
  if (o.block_size() != 0) out.block_size = o.block_size();
  switch (o.order()) {
    case GPTQ_ORDER_UNSPECIFIED:
      break;
    case GPTQ_ORDER_NATURAL:
      out.order = nvfp4::GptqOrder::kNatural;
      break;
    case GPTQ_ORDER_STATIC:
      out.order = nvfp4::GptqOrder::kStatic;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown gptq.order ", o.order()));
  }
  switch (o.global_scale()) {
    case GPTQ_GLOBAL_SCALE_UNSPECIFIED:
      break;
    case GPTQ_GLOBAL_SCALE_AMAX:
      out.global_scale = nvfp4::GptqGlobalScale::kAmax;
      break;
    case GPTQ_GLOBAL_SCALE_CJSO:
      out.global_scale = nvfp4::GptqGlobalScale::kCjso;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown gptq.global_scale ", o.global_scale()));
  }
  absl::Status valid = nvfp4::ValidateGptqOptions(out);
  if (!valid.ok()) return absl::InvalidArgumentError(absl::StrCat("gptq: ", valid.message()));
  return out;
}

}  // namespace

absl::StatusOr<nvfp4::QuantizeOptions> FromProto(const QuantizeOptions& o) {
  nvfp4::QuantizeOptions out;
  absl::StatusOr<nvfp4::Method> method = MethodFromProto(o.method(), out.method);
  if (!method.ok()) return method.status();
  out.method = *method;
  absl::StatusOr<nvfp4::GptqOptions> gptq = GptqFromProto(o.gptq());
  if (!gptq.ok()) return gptq.status();
  out.gptq = *gptq;
  switch (o.objective()) {
    case OBJECTIVE_UNSPECIFIED:
      break;
    case OBJECTIVE_MSE:
      out.objective = nvfp4::Objective::kMse;
      break;
    case OBJECTIVE_WMSE:
      out.objective = nvfp4::Objective::kWmse;
      break;
    case OBJECTIVE_HESSIAN:
      out.objective = nvfp4::Objective::kHessian;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown objective ", o.objective()));
  }
  switch (o.error_rule()) {
    case ERROR_RULE_UNSPECIFIED:
      break;
    case ERROR_RULE_MSE:
      out.four_over_six_rule = nvfp4::ErrorRule::kMse;
      break;
    case ERROR_RULE_MAE:
      out.four_over_six_rule = nvfp4::ErrorRule::kMae;
      break;
    case ERROR_RULE_ABSMAX:
      out.four_over_six_rule = nvfp4::ErrorRule::kAbsMax;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown error rule ", o.error_rule()));
  }
  if (o.soar_max_iterations() < 0 || o.soar_max_iterations() > 1000) {
    return absl::InvalidArgumentError("soar_max_iterations must be in [0, 1000]");
  }
  if (o.soar_max_iterations() > 0) out.soar_max_iterations = o.soar_max_iterations();
  if (o.soar_rel_tolerance() < 0 || o.soar_rel_tolerance() >= 1) {
    return absl::InvalidArgumentError("soar_rel_tolerance must be in [0, 1)");
  }
  if (o.soar_rel_tolerance() > 0) out.soar_rel_tolerance = o.soar_rel_tolerance();
  out.compute_metrics = !o.skip_metrics();
  return out;
}

QuantizeOptions ToProto(const nvfp4::QuantizeOptions& o) {
  QuantizeOptions out;
  out.set_method(MethodToProto(o.method));
  GptqOptions* g = out.mutable_gptq();
  g->set_block_scales(MethodToProto(o.gptq.block_scales));
  g->set_dampening(o.gptq.dampening);
  g->set_block_size(o.gptq.block_size);
  g->set_order(o.gptq.order == nvfp4::GptqOrder::kStatic ? GPTQ_ORDER_STATIC : GPTQ_ORDER_NATURAL);
  g->set_global_scale(o.gptq.global_scale == nvfp4::GptqGlobalScale::kCjso
                          ? GPTQ_GLOBAL_SCALE_CJSO
                          : GPTQ_GLOBAL_SCALE_AMAX);
  switch (o.objective) {
    case nvfp4::Objective::kMse:
      out.set_objective(OBJECTIVE_MSE);
      break;
    case nvfp4::Objective::kWmse:
      out.set_objective(OBJECTIVE_WMSE);
      break;
    case nvfp4::Objective::kHessian:
      out.set_objective(OBJECTIVE_HESSIAN);
      break;
  }
  switch (o.four_over_six_rule) {
    case nvfp4::ErrorRule::kMse:
      out.set_error_rule(ERROR_RULE_MSE);
      break;
    case nvfp4::ErrorRule::kMae:
      out.set_error_rule(ERROR_RULE_MAE);
      break;
    case nvfp4::ErrorRule::kAbsMax:
      out.set_error_rule(ERROR_RULE_ABSMAX);
      break;
  }
  out.set_soar_max_iterations(o.soar_max_iterations);
  out.set_soar_rel_tolerance(o.soar_rel_tolerance);
  out.set_skip_metrics(!o.compute_metrics);
  return out;
}

void ToProto(const nvfp4::TensorMetrics& m, TensorMetrics* out) {
  out->set_nmse(m.nmse);
  out->set_sqnr_db(m.sqnr_db);
  out->set_max_abs_err(m.max_abs_err);
  out->set_rtn_nmse(m.rtn_nmse);
  out->set_nmse_vs_rtn(m.nmse_vs_rtn);
  if (m.output_nmse.has_value()) out->set_output_nmse(*m.output_nmse);
  out->set_iterations(m.iterations);
  out->set_gptq_dampening(m.gptq_dampening);
}

nvfp4::TensorMetrics FromProto(const TensorMetrics& m) {
  nvfp4::TensorMetrics out;
  out.nmse = m.nmse();
  out.sqnr_db = m.sqnr_db();
  out.max_abs_err = m.max_abs_err();
  out.rtn_nmse = m.rtn_nmse();
  out.nmse_vs_rtn = m.nmse_vs_rtn();
  if (m.has_output_nmse()) out.output_nmse = m.output_nmse();
  out.iterations = m.iterations();
  out.gptq_dampening = m.gptq_dampening();
  return out;
}

}  // namespace nvfp4::v1
