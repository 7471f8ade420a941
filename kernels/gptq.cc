#include "kernels/gptq.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/calibration.h"
#include "kernels/quantize_driver.h"
#include "kernels/tensor_prep.h"

namespace nvfp4 {

absl::StatusOr<bool> GptqDevice::FactorGram(const GptqGram& gram, double damp,
                                             std::vector<float>* u) {
  std::vector<double> h;
  BuildGptqGram(gram, damp, &h,
                HostThreadCount());
  return Factor(h, gram.k, u);
}

void BuildGptqGram(const GptqGram& gram, double damp, std::vector<double>* h, int threads) {
  const int64_t k = gram.k;
  h->resize(static_cast<size_t>(k * k));
  HostParallelFor(k, threads, [&](int64_t a) {
    const int64_t pa = gram.perm == nullptr ? a : gram.perm[a];
    double* row = h->data() + a * k;
    for (int64_t b = 0; b < k; ++b) {
      const int64_t pb = gram.perm == nullptr ? b : gram.perm[b];
      row[b] = a == b ? gram.diag[a] + damp
                      : 0.5 * (static_cast<double>(gram.gram[pa * k + pb]) +
                               static_cast<double>(gram.gram[pb * k + pa]));
    }
  });
}

bool HostGptqFactor(const std::vector<double>& h, int64_t k, std::vector<float>* u, int threads) {
  // Cholesky (lower, row-major) of the reversed matrix A[i][j] = h[k-1-i][k-1-j].
  std::vector<double> l(static_cast<size_t>(k * k), 0.0);
  for (int64_t i = 0; i < k; ++i) {
    double* li = l.data() + i * k;
    for (int64_t j = 0; j <= i; ++j) {
      const double* lj = l.data() + j * k;
      double s = h[(k - 1 - i) * k + (k - 1 - j)];
      for (int64_t p = 0; p < j; ++p) s -= li[p] * lj[p];
      if (j == i) {
        if (!(s > 0) || !std::isfinite(s)) return false;
        li[i] = std::sqrt(s);
      } else {
        li[j] = s / lj[j];
      }
    }
  }
  // M = L^-1 column by column (forward substitution; columns are independent).
  std::vector<double> minv(static_cast<size_t>(k * k), 0.0);
  std::atomic<bool> finite{true};
  HostParallelFor(k, threads, [&](int64_t q) {
    std::vector<double> m(static_cast<size_t>(k), 0.0);
    for (int64_t i = q; i < k; ++i) {
      const double* li = l.data() + i * k;
      double s = i == q ? 1.0 : 0.0;
      for (int64_t p = q; p < i; ++p) s -= li[p] * m[p];
      m[i] = s / li[i];
      if (!std::isfinite(m[i])) finite = false;
      minv[i * k + q] = m[i];
    }
  });
  if (!finite) return false;
  // U[a][b] = M[k-1-a][k-1-b] (upper): U^T U = h^-1.
  u->assign(static_cast<size_t>(k * k), 0.0f);
  for (int64_t a = 0; a < k; ++a) {
    for (int64_t b = a; b < k; ++b) {
      (*u)[a * k + b] = static_cast<float>(minv[(k - 1 - a) * k + (k - 1 - b)]);
    }
  }
  return true;
}

absl::Status HostGptqSweep(const GptqSweepInput& in, const std::vector<float>& w,
                           const std::vector<float>& u, std::vector<uint8_t>* codes,
                           std::vector<uint8_t>* scales, int threads) {
  const int64_t n = in.rows, k = in.cols;
  codes->assign(static_cast<size_t>(n * k), 0);
  scales->assign(static_cast<size_t>(n * (k / kBlock)), kE4M3One);
  HostParallelFor(n, threads, [&](int64_t r) {
    const float* row = w.data() + r * k;
    uint8_t* row_codes = codes->data() + r * k;
    uint8_t* row_scales = scales->data() + r * (k / kBlock);
    if (in.static_scales) {
      for (int64_t j = 0; j < k / kBlock; ++j) {
        row_scales[j] = ChooseGptqBlockScale(row + j * kBlock, j, in.scale);
      }
    }
    std::vector<float> wp(static_cast<size_t>(k));
    for (int64_t p = 0; p < k; ++p) wp[p] = row[in.perm == nullptr ? p : in.perm[p]];
    std::vector<float> err(static_cast<size_t>(in.block_size));
    std::vector<float> acc(static_cast<size_t>(k));
    for (int64_t c0 = 0; c0 < k; c0 += in.block_size) {
      const int nb = static_cast<int>(std::min<int64_t>(in.block_size, k - c0));
      GptqRowBatch({wp.data() + c0, 1}, u.data() + c0 * k + c0, k, nb, c0, in.perm,
                   !in.static_scales, in.g, in.scale, {row_codes, 1}, {row_scales, 1},
                   {err.data(), 1});
      const int64_t rest = c0 + nb;
      if (rest >= k) break;
      // Same order as GptqLazyDelta (t ascending, acc from 0), laid out for contiguous reads.
      std::fill(acc.begin() + rest, acc.end(), 0.0f);
      for (int t = 0; t < nb; ++t) {
        const float e = err[t];
        const float* ut = u.data() + (c0 + t) * k;
        for (int64_t p = rest; p < k; ++p) acc[p] = acc[p] + e * ut[p];
      }
      for (int64_t p = rest; p < k; ++p) wp[p] = wp[p] - acc[p];
    }
  });
  return absl::OkStatus();
}

namespace {

std::string Named(const TensorView& t) {
  return absl::StrCat("tensor '", t.name, "' (shape ", ShapeString(t.shape), ")");
}

// X^T X (fp64) of tensor 0's calibration activations [tokens, K].
absl::StatusOr<std::vector<double>> ActivationsGram(const TensorView& t, const Calibration& c,
                                                    int64_t k) {
  std::vector<double> h(static_cast<size_t>(k * k), 0.0);
  std::vector<float> x(static_cast<size_t>(c.tokens * k));
  ConvertToFloat(c.activations, c.activations_dtype, c.tokens * k, x.data());
  for (int64_t tok = 0; tok < c.tokens; ++tok) {
    const float* xr = x.data() + tok * k;
    for (int64_t i = 0; i < k; ++i) {
      if (!std::isfinite(xr[i])) {
        return absl::InvalidArgumentError(absl::StrCat(
            "calibration for ", Named(t), ": input_activations has a non-finite value at [",
            tok, ", ", i, "]"));
      }
      for (int64_t j = 0; j <= i; ++j) h[i * k + j] += static_cast<double>(xr[i]) * xr[j];
    }
  }
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = i + 1; j < k; ++j) h[i * k + j] = h[j * k + i];
  return h;
}

// Factors the damped Gram, raising the dampening tenfold until the factor exists. `attempt`
// factors with dampening `damp` added to the diagonal.
struct DampedFactor {
  std::vector<float> u;  // empty when the device keeps the factor
  double dampening = 0;
};
absl::StatusOr<DampedFactor> FactorWithDampening(
    const std::vector<double>& diag, double dampening, const TensorView& t,
    const std::function<absl::StatusOr<bool>(double, std::vector<float>*)>& attempt) {
  const int64_t k = static_cast<int64_t>(diag.size());
  double mean_diag = 0;
  for (int64_t i = 0; i < k; ++i) mean_diag += diag[i];
  mean_diag /= static_cast<double>(k);
  if (!(mean_diag > 0)) mean_diag = 1;
  constexpr int kAttempts = 9;
  DampedFactor out;
  double d = dampening;
  for (int i = 0; i < kAttempts; ++i) {
    ASSIGN_OR_RETURN(bool ok, attempt(d * mean_diag, &out.u));
    if (ok) {
      out.dampening = d;
      return out;
    }
    d = d > 0 ? d * 10 : 1e-6;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "method gptq: the input Gram of ", Named(t), " is not positive definite even with ",
      "dampening ", d / 10, " x mean diagonal (is it a Gram matrix X^T X?)"));
}

// Rows of the stacked group as fp32 (converted in parallel row chunks), with the first
// non-finite value reported.
absl::Status StackWeights(std::span<const TensorView> tensors, std::span<const Matrix2D> m,
                          std::vector<float>* w, float* amax, int threads) {
  int64_t total = 0;
  for (const Matrix2D& mi : m) total += mi.rows * mi.cols;
  w->resize(static_cast<size_t>(total));
  int64_t offset = 0;
  *amax = 0.0f;
  constexpr int64_t kChunk = int64_t{1} << 16;  // elements (a multiple of 16)
  for (size_t i = 0; i < tensors.size(); ++i) {
    const int64_t count = m[i].rows * m[i].cols;
    float* dst = w->data() + offset;
    const int64_t chunks = (count + kChunk - 1) / kChunk;
    std::vector<float> chunk_max(static_cast<size_t>(chunks), 0.0f);
    std::vector<int64_t> chunk_bad(static_cast<size_t>(chunks), -1);
    HostParallelFor(chunks, threads, [&](int64_t c) {
      const int64_t begin = c * kChunk, n = std::min(kChunk, count - begin);
      ConvertToFloat(static_cast<const uint8_t*>(tensors[i].data) +
                         begin * DTypeSize(tensors[i].dtype),
                     tensors[i].dtype, n, dst + begin);
      float mx = 0.0f;
      for (int64_t e = begin; e < begin + n; ++e) {
        if (!std::isfinite(dst[e])) {
          chunk_bad[c] = e;
          return;
        }
        mx = std::max(mx, std::fabs(dst[e]));  // finite here: no NaN rule needed
      }
      chunk_max[c] = mx;
    });
    for (int64_t c = 0; c < chunks; ++c) {
      if (chunk_bad[c] >= 0) {
        return NonFiniteError(tensors[i], m[i], chunk_bad[c], dst[chunk_bad[c]]);
      }
      *amax = std::fmax(*amax, chunk_max[c]);
    }
    offset += count;
  }
  return absl::OkStatus();
}

}  // namespace

TensorMetrics GptqMetricsFromRows(std::span<const double> sq_err, std::span<const double> x_sq,
                                  std::span<const double> rtn_sq, std::span<const float> max_err) {
  double s = 0, x2 = 0, rt = 0;
  TensorMetrics out;
  for (size_t r = 0; r < sq_err.size(); ++r) {
    s += sq_err[r];
    x2 += x_sq[r];
    rt += rtn_sq[r];
    out.max_abs_err = std::fmax(out.max_abs_err, static_cast<double>(max_err[r]));
  }
  out.nmse = x2 > 0 ? s / x2 : 0.0;
  out.sqnr_db = out.nmse > 0 ? -10.0 * std::log10(out.nmse)
                             : std::numeric_limits<double>::infinity();
  out.rtn_nmse = x2 > 0 ? rt / x2 : 0.0;
  out.nmse_vs_rtn = out.rtn_nmse > 0 ? out.nmse / out.rtn_nmse : 1.0;
  return out;
}

TensorMetrics GptqHostMetrics(const TensorView& t, const Matrix2D& m, const QuantizedTensor& q,
                              float g_rtn, int threads) {
  const int64_t n = m.rows, k = m.cols, bpr = k / kBlock;
  std::vector<double> sq(n), xsq(n), rtn(n);
  std::vector<float> mx(n);
  HostParallelFor(n, threads, [&](int64_t r) {
    double s = 0, x2 = 0, rt = 0;
    float ma = 0;
    for (int64_t b = 0; b < bpr; ++b) {
      float x[kBlock] = {};  // LoadBlock fills it (every DType)
      LoadBlock(t.data, t.dtype, (r * bpr + b) * kBlock, x);
      const GptqBlockSums bs = GptqMetricBlock(x, q.packed.data() + (r * bpr + b) * (kBlock / 2),
                                               q.scales[r * bpr + b], q.global_scale, g_rtn);
      s += bs.sq_err;
      x2 += bs.x_sq;
      rt += bs.rtn_sq;
      ma = std::fmax(ma, bs.max_err);
    }
    sq[r] = s;
    xsq[r] = x2;
    rtn[r] = rt;
    mx[r] = ma;
  });
  return GptqMetricsFromRows(sq, xsq, rtn, mx);
}

absl::StatusOr<TensorMetrics> GptqDevice::Metrics(size_t /*member*/, int64_t /*row0*/,
                                                  const TensorView& t, const Matrix2D& m,
                                                  const QuantizedTensor& q, float g_rtn,
                                                  const Calibration* calibration) {
  const int threads = HostThreadCount();
  TensorMetrics out = GptqHostMetrics(t, m, q, g_rtn, threads);
  out.output_nmse = OutputSpaceNmse(t, m, q, calibration);
  return out;
}

absl::StatusOr<float> HostGptqDevice::LoadWeights(std::span<const TensorView> tensors,
                                                  std::span<const Matrix2D> m) {
  float amax = 0.0f;
  RETURN_IF_ERROR(StackWeights(tensors, m, &w_, &amax, threads_));
  return amax;
}

absl::StatusOr<bool> HostGptqDevice::Factor(const std::vector<double>& h, int64_t k,
                                            std::vector<float>* u) {
  return HostGptqFactor(h, k, u, threads_);
}

absl::Status HostGptqDevice::Sweep(const GptqSweepInput& in, const std::vector<float>& u,
                                   std::vector<uint8_t>* codes, std::vector<uint8_t>* scales) {
  if (w_.size() != static_cast<size_t>(in.rows * in.cols)) {
    return absl::FailedPreconditionError(absl::StrCat("GPTQ sweep: [", in.rows, ", ", in.cols,
                                                      "] but ", w_.size(), " values loaded"));
  }
  return HostGptqSweep(in, w_, u, codes, scales, threads_);
}

absl::StatusOr<std::vector<QuantizedTensor>> RunGptqGroup(
    std::span<const TensorView> tensors, const QuantizeOptions& options,
    std::span<const Calibration* const> calibration, GptqDevice& device,
    const GroupQuantizer& without_feedback) {
  if (tensors.empty()) return absl::InvalidArgumentError("empty tensor group");
  // The sweep reads fp32 columns on the host or the device: FP8 sources are dequantized first.
  std::vector<std::vector<float>> widened;
  ASSIGN_OR_RETURN(const std::vector<TensorView> views,
                   WidenFp8Views(tensors, HostThreadCount(), &widened));
  tensors = views;
  RETURN_IF_ERROR(ValidateGptqOptions(options.gptq));
  if (!calibration.empty() && calibration.size() != tensors.size()) {
    return absl::InvalidArgumentError(absl::StrCat("calibration has ", calibration.size(),
                                                   " entries for ", tensors.size(), " tensors"));
  }
  const GptqOptions& go = options.gptq;
  const int threads = HostThreadCount();
  std::vector<Matrix2D> m(tensors.size());
  int64_t rows = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    ASSIGN_OR_RETURN(m[i], FoldShape(tensors[i]));
    if (m[i].cols != m[0].cols) {
      return absl::InvalidArgumentError(absl::StrCat(
          "method gptq: the fused group's tensors must share K (they read one input): ",
          Named(tensors[0]), " vs ", Named(tensors[i])));
    }
    // A fused group usually shares one calibration: check each distinct one once.
    const Calibration* c = calibration.empty() ? nullptr : calibration[i];
    const bool seen = c != nullptr && std::find(calibration.begin(), calibration.begin() + i, c) !=
                                          calibration.begin() + i;
    if (c != nullptr && !c->empty() && !seen) {
      RETURN_IF_ERROR(ValidateCalibration(tensors[i], m[i], *c));
    }
    rows += m[i].rows;
  }
  const int64_t k = m[0].cols;
  bool all_grams = true;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Calibration* c = calibration.empty() ? nullptr : calibration[i];
    if (c == nullptr || (c->gram.empty() && c->activations == nullptr)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "method gptq needs the input Gram of ", Named(tensors[i]),
          ": calibration input_gram [K, K] (or input_activations [tokens, K]), K = ", k));
    }
    all_grams = all_grams && !c->gram.empty();
  }
  const Calibration* cal = calibration[0];
  // A fused group's members read one input, so their Grams are normally identical; when they
  // differ (collected separately), the group uses their mean.
  Calibration mean_cal;
  if (all_grams && tensors.size() > 1) {
    bool same = true;
    for (size_t i = 1; i < tensors.size() && same; ++i) {
      same = calibration[i] == cal || calibration[i]->gram == cal->gram;
    }
    if (!same) {
      mean_cal.gram.resize(static_cast<size_t>(k * k));
      const double inv = 1.0 / static_cast<double>(tensors.size());
      HostParallelFor(k, threads, [&](int64_t r) {
        for (int64_t j = r * k; j < (r + 1) * k; ++j) {
          double sum = 0;
          for (const Calibration* c : calibration) sum += c->gram[j];
          mean_cal.gram[j] = static_cast<float>(sum * inv);
        }
      });
      cal = &mean_cal;
    }
  }
  // The Gram's diagonal (dead inputs set to 1); H itself stays the fp32 input_gram, built in
  // fp64 by the device (FactorGram), or X^T X of the activations in fp64 on the host.
  std::vector<double> h;
  if (cal->gram.empty()) {
    ASSIGN_OR_RETURN(h, ActivationsGram(tensors[0], *cal, k));
  }
  std::vector<double> diag(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i) {
    diag[i] = h.empty() ? static_cast<double>(cal->gram[i * k + i]) : h[i * k + i];
    if (diag[i] == 0.0) diag[i] = 1.0;
  }

  ASSIGN_OR_RETURN(const float amax, device.LoadWeights(tensors, m));

  // Order, dampening, factor.
  std::vector<int32_t> perm;
  if (go.order == GptqOrder::kStatic) {
    perm.resize(static_cast<size_t>(k));
    std::iota(perm.begin(), perm.end(), 0);
    std::stable_sort(perm.begin(), perm.end(),
                     [&](int32_t a, int32_t b) { return diag[a] > diag[b]; });
    std::vector<double> permuted(static_cast<size_t>(k));
    for (int64_t a = 0; a < k; ++a) permuted[a] = diag[perm[a]];
    diag.swap(permuted);
  }
  std::function<absl::StatusOr<bool>(double, std::vector<float>*)> attempt;
  if (h.empty()) {
    const GptqGram gram{cal->gram.data(), k, perm.empty() ? nullptr : perm.data(), diag.data()};
    attempt = [&device, gram](double damp, std::vector<float>* u) {
      return device.FactorGram(gram, damp, u);
    };
  } else {
    // The activations' Gram in processing order, its diagonal set per attempt.
    if (!perm.empty()) {
      std::vector<double> hp(h.size());
      HostParallelFor(k, threads, [&](int64_t a) {
        for (int64_t b = 0; b < k; ++b) hp[a * k + b] = h[perm[a] * k + perm[b]];
      });
      h.swap(hp);
    }
    attempt = [&](double damp, std::vector<float>* u) {
      for (int64_t i = 0; i < k; ++i) h[i * k + i] = diag[i] + damp;
      return device.Factor(h, k, u);
    };
  }
  ASSIGN_OR_RETURN(DampedFactor factor,
                   FactorWithDampening(diag, go.dampening, tensors[0], attempt));
  h = {};

  // Global scale.
  const Method scale_method = go.block_scales;
  float g = InitialGlobalScale(scale_method, amax);
  const float g_rtn = InitialGlobalScale(Method::kRtn, amax);
  if (go.global_scale == GptqGlobalScale::kCjso && amax > 0.0f) {
    QuantizeOptions soar = options;
    soar.method = Method::kSoar;
    soar.compute_metrics = false;
    // Under mse this run reads no calibration: pass none, which also skips re-checking the Gram.
    const std::span<const Calibration* const> soar_calibration =
        options.objective == Objective::kMse ? std::span<const Calibration* const>() : calibration;
    ASSIGN_OR_RETURN(std::vector<QuantizedTensor> base,
                     without_feedback(tensors, soar, soar_calibration));
    g = base[0].global_scale;
  }

  // Block-scale candidates and objective.
  QuantizeOptions scale_options = options;
  scale_options.method = scale_method;
  const Objective objective = UsesObjective(scale_method) ? options.objective : Objective::kMse;
  ASSIGN_OR_RETURN(ObjectiveData od, PrepareObjective(tensors[0], m[0], objective, cal));
  GptqSweepInput in;
  in.rows = rows;
  in.cols = k;
  in.block_size = go.block_size;
  in.g = g;
  in.perm = perm.empty() ? nullptr : perm.data();
  in.static_scales = go.order == GptqOrder::kStatic;
  in.scale.pass = FirstPassParams(scale_options, g, g_rtn);
  in.scale.pass.rtn_metric = false;
  if (scale_method == Method::kSoar) {
    in.scale.soar_refine_steps = 4;
    in.scale.refine = in.scale.pass;
    in.scale.refine.method = BlockMethod::kSoarRefine;
    in.scale.refine.decoupled = false;
  }
  in.scale.objective_kind = od.kind;
  in.scale.importance = od.importance.empty() ? nullptr : od.importance.data();
  in.scale.hessian = od.hessian_blocks.empty() ? nullptr : od.hessian_blocks.data();
  in.importance_size = static_cast<int64_t>(od.importance.size());
  in.hessian_size = static_cast<int64_t>(od.hessian_blocks.size());

  std::vector<uint8_t> codes, scales;
  RETURN_IF_ERROR(device.Sweep(in, factor.u, &codes, &scales));
  factor.u = {};

  std::vector<QuantizedTensor> out(tensors.size());
  int64_t row0 = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    QuantizedTensor& q = out[i];
    q.name = tensors[i].name;
    q.rows = m[i].rows;
    q.cols = k;
    q.source_shape = tensors[i].shape;
    q.global_scale = g;
    q.packed.resize(static_cast<size_t>(m[i].rows * k / 2));
    const uint8_t* c = codes.data() + row0 * k;
    HostParallelFor(m[i].rows, threads, [&](int64_t r) {
      for (int64_t j = r * k / 2; j < (r + 1) * k / 2; ++j) {
        q.packed[j] = PackPair(c[2 * j], c[2 * j + 1]);
      }
    });
    q.scales.assign(scales.begin() + row0 * (k / kBlock),
                    scales.begin() + (row0 + m[i].rows) * (k / kBlock));
    if (options.compute_metrics) {
      const Calibration* ci = calibration.empty() ? nullptr : calibration[i];
      ASSIGN_OR_RETURN(q.metrics, device.Metrics(i, row0, tensors[i], m[i], q, g_rtn,
                                                 ci != nullptr ? ci : cal));
    }
    row0 += m[i].rows;
    q.metrics.gptq_dampening = factor.dampening;
  }
  return out;
}

}  // namespace nvfp4
