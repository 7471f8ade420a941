#include "kernels/quantize_driver.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/parallel.h"
#include "kernels/tensor_prep.h"

namespace nvfp4 {

absl::StatusOr<std::optional<double>> PassExecutor::OutputNmse(int i, const QuantizedTensor& q) {
  const PreparedTensor& t = tensors_[i];
  return OutputSpaceNmse(*t.view, t.matrix, q, t.calibration);
}

float InitialGlobalScale(Method method, float amax) {
  if (amax == 0.0f) return 1.0f;
  return method == Method::kRtn ? amax / 2688.0f : amax / 1536.0f;
}

namespace {

BlockErrorKind ObjectiveKind(Objective o) {
  switch (o) {
    case Objective::kMse: return BlockErrorKind::kSquared;
    case Objective::kWmse: return BlockErrorKind::kWeightedSquared;
    case Objective::kHessian: return BlockErrorKind::kHessian;
  }
  return BlockErrorKind::kSquared;
}

BlockErrorKind RuleKind(ErrorRule r) {
  switch (r) {
    case ErrorRule::kMse: return BlockErrorKind::kSquared;
    case ErrorRule::kMae: return BlockErrorKind::kAbs;
    case ErrorRule::kAbsMax: return BlockErrorKind::kMaxAbs;
  }
  return BlockErrorKind::kSquared;
}

TensorMetrics MetricsFrom(const PassTotals& final_pass, double rtn_sq_err, int iterations) {
  TensorMetrics m;
  const double x_sq = final_pass.x_sq;
  m.nmse = x_sq > 0 ? final_pass.sq_err / x_sq : 0.0;
  m.sqnr_db = m.nmse > 0 ? -10.0 * std::log10(m.nmse) : std::numeric_limits<double>::infinity();
  m.max_abs_err = final_pass.max_abs_err;
  m.rtn_nmse = x_sq > 0 ? rtn_sq_err / x_sq : 0.0;
  m.nmse_vs_rtn = m.rtn_nmse > 0 ? m.nmse / m.rtn_nmse : 1.0;
  m.iterations = iterations;
  return m;
}

}  // namespace

BlockPassParams FirstPassParams(const QuantizeOptions& options, float g, float g_rtn) {
  BlockPassParams p;
  p.g = g;
  p.g_rtn = g_rtn;
  p.rtn_metric = options.compute_metrics && options.method != Method::kRtn;
  switch (options.method) {
    case Method::kRtn:
    case Method::kGptq:  // never a pass of its own (gptq.h picks its block-scale method)
      p.method = BlockMethod::kRtn;
      break;
    case Method::kFourOverSix:
      p.method = BlockMethod::kFourOverSix;
      p.search_kind = RuleKind(options.four_over_six_rule);
      break;
    case Method::kScaleSweep:
    case Method::kSoar:  // SOAR starts from the scalesweep solution
      p.method = BlockMethod::kWindow;
      p.search_kind = ObjectiveKind(options.objective);
      break;
  }
  // MSE window [-3, +7] (proven); weighted objectives [-8, +7] (docs/NUMERICS.md 3.3).
  p.window_lo = options.objective == Objective::kMse ? -3 : -8;
  p.window_hi = 7;
  return p;
}

absl::StatusOr<std::vector<QuantizedTensor>> RunQuantizeGroup(
    std::span<const TensorView> tensors, const QuantizeOptions& options,
    std::span<const Calibration* const> calibration, const ExecutorFactory& make_executor,
    bool executor_reads_fp8) {
  if (tensors.empty()) return absl::InvalidArgumentError("empty tensor group");
  std::vector<std::vector<float>> widened;
  std::vector<TensorView> views;
  if (!executor_reads_fp8) {
    ASSIGN_OR_RETURN(views, WidenFp8Views(tensors, HostThreadCount(), &widened));
    tensors = views;
  }
  if (options.method == Method::kGptq) {
    return absl::InternalError("method gptq runs through RunGptqGroup (kernels/gptq.h)");
  }
  if (!calibration.empty() && calibration.size() != tensors.size()) {
    return absl::InvalidArgumentError(absl::StrCat("calibration has ", calibration.size(),
                                                   " entries for ", tensors.size(), " tensors"));
  }
  if (options.soar_max_iterations < 0 || options.soar_max_iterations > 1000 ||
      !(options.soar_rel_tolerance >= 0)) {
    return absl::InvalidArgumentError("soar iterations must be in [0, 1000], tolerance >= 0");
  }
  std::vector<PreparedTensor> prepared(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    PreparedTensor& p = prepared[i];
    p.view = &tensors[i];
    ASSIGN_OR_RETURN(p.matrix, FoldShape(tensors[i]));
    p.calibration = calibration.empty() ? nullptr : calibration[i];
    if (p.calibration != nullptr && !p.calibration->empty()) {
      RETURN_IF_ERROR(ValidateCalibration(tensors[i], p.matrix, *p.calibration));
    }
    const Objective objective =
        UsesObjective(options.method) ? options.objective : Objective::kMse;
    ASSIGN_OR_RETURN(p.objective, PrepareObjective(tensors[i], p.matrix, objective, p.calibration));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<PassExecutor> exec, make_executor(prepared));

  float amax = 0.0f;
  for (size_t i = 0; i < prepared.size(); ++i) {
    ASSIGN_OR_RETURN(TensorScan scan, exec->Scan(static_cast<int>(i)));
    if (scan.first_non_finite >= 0) {
      return NonFiniteError(tensors[i], prepared[i].matrix, scan.first_non_finite,
                            scan.non_finite_value);
    }
    amax = std::fmax(amax, scan.amax);
  }
  const float g0 = InitialGlobalScale(options.method, amax);
  const float g_rtn = InitialGlobalScale(Method::kRtn, amax);
  const BlockPassParams first = FirstPassParams(options, g0, g_rtn);

  const size_t n = prepared.size();
  std::vector<PassTotals> current(n);
  std::vector<double> rtn_sq_err(n);
  for (size_t i = 0; i < n; ++i) {
    ASSIGN_OR_RETURN(current[i], exec->RunPass(static_cast<int>(i), first, 0, 0));
    rtn_sq_err[i] = first.rtn_metric ? current[i].rtn_sq_err : current[i].sq_err;
  }
  float g = g0;
  int slot = 0;
  int iterations = 0;
  if (options.method == Method::kSoar && amax > 0.0f) {
    // CJSO + DSS (docs/NUMERICS.md 3.4). Group-wide sums in tensor order, each a canonical sum.
    auto total = [&](const std::vector<PassTotals>& t, double PassTotals::*f) {
      double s = 0;
      for (const PassTotals& p : t) s += p.*f;
      return s;
    };
    double err = total(current, &PassTotals::obj_err);
    BlockPassParams refine = first;
    refine.method = BlockMethod::kSoarRefine;
    refine.rtn_metric = false;
    refine.decoupled = options.objective == Objective::kHessian;  // separable: beta == 1 is optimal
    std::vector<PassTotals> next(n);
    for (int it = 0; it < options.soar_max_iterations && err > 0; ++it) {
      const double s1 = total(current, &PassTotals::s1);
      const double s2 = total(current, &PassTotals::s2);
      if (!(s2 > 0)) break;
      const float alpha = static_cast<float>(s1 / s2);  // CJSO global step
      if (!(alpha > 0.0f) || !std::isfinite(alpha)) break;
      refine.g = alpha;
      for (size_t i = 0; i < n; ++i) {
        ASSIGN_OR_RETURN(next[i], exec->RunPass(static_cast<int>(i), refine, slot, 1 - slot));
      }
      const double new_err = total(next, &PassTotals::obj_err);
      if (!(new_err < err)) break;  // keep the old scales when a step does not help
      const double rel = (err - new_err) / err;
      current.swap(next);
      err = new_err;
      g = alpha;
      slot = 1 - slot;
      ++iterations;
      if (rel < options.soar_rel_tolerance) break;
    }
  }

  std::vector<QuantizedTensor> out(n);
  for (size_t i = 0; i < n; ++i) {
    QuantizedTensor& q = out[i];
    q.name = tensors[i].name;
    q.rows = prepared[i].matrix.rows;
    q.cols = prepared[i].matrix.cols;
    q.source_shape = tensors[i].shape;
    q.global_scale = g;
    RETURN_IF_ERROR(exec->Fetch(static_cast<int>(i), slot, &q));
    q.metrics = MetricsFrom(current[i], rtn_sq_err[i], iterations);
    if (options.compute_metrics) {
      ASSIGN_OR_RETURN(q.metrics.output_nmse, exec->OutputNmse(static_cast<int>(i), q));
    }
  }
  return out;
}

}  // namespace nvfp4
