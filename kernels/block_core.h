// The one block-quantization core (docs/NUMERICS.md section 3), compiled for host and device so the
// CPU reference and the CUDA backend make identical choices. A block is 16 consecutive elements
// of a row. Each method is a candidate generator (which E4M3 scales to try, and for DSS which
// decoupled quantization scales) plus an objective (how a candidate's error is measured); the
// search itself is shared.
//
// Fast-search / exact-emit rule (docs/NUMERICS.md 2): a candidate's error is evaluated with one
// reciprocal per candidate (x * (1/(s*g))); the chosen scale's codes are emitted with a true fp32
// division x / (s*g), and the block's reported error is recomputed from the emitted codes.
#ifndef NVFP4_KERNELS_BLOCK_CORE_H_
#define NVFP4_KERNELS_BLOCK_CORE_H_

#include <cstdint>

#include "kernels/codec.h"
#include "kernels/hd.h"

namespace nvfp4 {

inline constexpr int kBlock = 16;

// How one block's error is measured.
enum class BlockErrorKind : uint8_t {
  kSquared,          // sum r^2                     (mse; 4over6 rule mse)
  kAbs,              // sum |r|                     (4over6 rule mae)
  kMaxAbs,           // max |r|                     (4over6 rule absmax)
  kWeightedSquared,  // sum imp_i r_i^2             (wmse)
  kHessian,          // r^T H_j r, H_j 16x16        (hessian)
};

struct BlockObjective {
  BlockErrorKind kind = BlockErrorKind::kSquared;
  const float* importance = nullptr;  // this block's 16 channel importances (kWeightedSquared)
  const float* hessian = nullptr;     // this block's 16x16 row-major Gram block (kHessian)
};

NVFP4_HD float PositiveInfinity() { return BitsToFloat(0x7F800000u); }

// Error of reconstructing x by qv * sg under `obj` (fp32, fixed evaluation order).
NVFP4_HD float BlockError(const float* x, const float* qv, float sg, const BlockObjective& obj) {
  float r[kBlock];
  for (int i = 0; i < kBlock; ++i) r[i] = x[i] - qv[i] * sg;
  float err = 0.0f;
  switch (obj.kind) {
    case BlockErrorKind::kSquared:
      for (int i = 0; i < kBlock; ++i) err += r[i] * r[i];
      break;
    case BlockErrorKind::kAbs:
      for (int i = 0; i < kBlock; ++i) err += std::fabs(r[i]);
      break;
    case BlockErrorKind::kMaxAbs:
      for (int i = 0; i < kBlock; ++i) err = std::fmax(err, std::fabs(r[i]));
      break;
    case BlockErrorKind::kWeightedSquared:
      for (int i = 0; i < kBlock; ++i) err += obj.importance[i] * (r[i] * r[i]);
      break;
    case BlockErrorKind::kHessian:
      for (int i = 0; i < kBlock; ++i) {
        float t = 0.0f;
        for (int j = 0; j < kBlock; ++j) t += obj.hessian[i * kBlock + j] * r[j];
        err += r[i] * t;
      }
      break;
  }
  return err;
}

// <a, b> under the objective's metric: sum a*b (unweighted kinds), sum imp a*b, or a^T H b.
NVFP4_HD float ObjectiveInner(const float* a, const float* b, const BlockObjective& obj) {
  float acc = 0.0f;
  if (obj.kind == BlockErrorKind::kWeightedSquared) {
    for (int i = 0; i < kBlock; ++i) acc += obj.importance[i] * (a[i] * b[i]);
  } else if (obj.kind == BlockErrorKind::kHessian) {
    for (int i = 0; i < kBlock; ++i) {
      float t = 0.0f;
      for (int j = 0; j < kBlock; ++j) t += obj.hessian[i * kBlock + j] * b[j];
      acc += a[i] * t;
    }
  } else {
    for (int i = 0; i < kBlock; ++i) acc += a[i] * b[i];
  }
  return acc;
}

// Fast search: codes of x under reciprocal `inv` (= 1/(quantization scale)); fills the decoded
// values and returns the 16 codes packed into 64 bits (used to skip repeated evaluations).
NVFP4_HD uint64_t SearchCodes(const float* x, float inv, float* qv) {
  uint64_t packed = 0;
  for (int i = 0; i < kBlock; ++i) {
    const uint32_t c = EncodeE2M1(x[i] * inv);
    qv[i] = DecodeE2M1(c);
    packed |= static_cast<uint64_t>(c) << (4 * i);
  }
  return packed;
}

// Fast search, values only (separable objectives): qv[i] = DecodeE2M1(EncodeE2M1(x[i] * inv)),
// computed with E2M1RoundValue (same bits, fewer instructions).
NVFP4_HD void SearchValues(const float* x, float inv, float* qv) {
  for (int i = 0; i < kBlock; ++i) qv[i] = E2M1RoundValue(x[i] * inv);
}

// Exact emit: codes of x under quantization scale `sq` with a true division (docs/NUMERICS.md 2).
NVFP4_HD void EmitCodes(const float* x, float sq, float* qv, uint8_t* packed8) {
  uint32_t c[kBlock];
  for (int i = 0; i < kBlock; ++i) {
    c[i] = EncodeE2M1(x[i] / sq);
    qv[i] = DecodeE2M1(c[i]);
  }
  for (int j = 0; j < kBlock / 2; ++j) packed8[j] = PackPair(c[2 * j], c[2 * j + 1]);
}

// DSS: quantization scale Delta_q = beta * Delta_d, beta = (50 + i) / 100 for i in [0, 100].
inline constexpr int kBetaCount = 101;
inline constexpr int kBetaOneIndex = 50;
NVFP4_HD float BetaValue(int i) { return static_cast<float>(50 + i) / 100.0f; }

// The E4M3 scales to try for one block, in order (ties keep the earliest: strict <).
struct ScaleCandidates {
  uint8_t code[kBlock];
  int count = 0;
  bool decoupled = false;  // DSS: also search Delta_q = beta * Delta_d (non-separable objectives)
};

struct BlockChoice {
  uint32_t scale_code = kE4M3One;
  int beta_index = kBetaOneIndex;
  float err = 0.0f;
};

// The shared search: evaluates every candidate (and, when decoupled, every beta) under `obj`.
NVFP4_HD BlockChoice SearchBlock(const float* x, float g, const ScaleCandidates& cand,
                                 const BlockObjective& obj) {
  BlockChoice best;
  best.err = PositiveInfinity();
  float qv[kBlock];
  for (int k = 0; k < cand.count; ++k) {
    const float s = DecodeE4M3(cand.code[k]);
    const float sg = s * g;
    if (!cand.decoupled) {
      SearchValues(x, 1.0f / sg, qv);
      const float err = BlockError(x, qv, sg, obj);
      if (err < best.err) best = {cand.code[k], kBetaOneIndex, err};
      continue;
    }
    uint64_t previous = 0;
    bool have_previous = false;
    float previous_err = 0.0f;
    for (int b = 0; b < kBetaCount; ++b) {
      const float sq = (BetaValue(b) * s) * g;
      const uint64_t codes = SearchCodes(x, 1.0f / sq, qv);
      // Same codes and same dequantization scale give the same error: skip the evaluation.
      const float err =
          (have_previous && codes == previous) ? previous_err : BlockError(x, qv, sg, obj);
      have_previous = true;
      previous = codes;
      previous_err = err;
      if (err < best.err) best = {cand.code[k], b, err};
    }
  }
  return best;
}

// ---- Candidate generators -----------------------------------------------------------------

// ModelOpt's block scale before rounding: A_b / (6 g), with a zero scale replaced by 1.0.
NVFP4_HD float AbsmaxBlockScale(float amax_b, float g) {
  const float s = amax_b / (6.0f * g);
  return s == 0.0f ? 1.0f : s;
}

// The E4M3 window [base+lo, base+hi] of bit patterns, clamped to [1, 126] (docs/NUMERICS.md 3.3).
NVFP4_HD void WindowCandidates(uint32_t base, int lo, int hi, ScaleCandidates* c) {
  c->count = 0;
  for (int k = lo; k <= hi; ++k) {
    int code = static_cast<int>(base) + k;
    code = code < kE4M3MinCode ? kE4M3MinCode : (code > kE4M3MaxCode ? kE4M3MaxCode : code);
    c->code[c->count++] = static_cast<uint8_t>(code);
  }
}

// ---- One block, one pass ------------------------------------------------------------------

enum class BlockMethod : uint8_t {
  kRtn,          // absmax scale
  kFourOverSix,  // {E4M3(h), E4M3(1.5h)}
  kWindow,       // scalesweep: window around the absmax scale
  kSoarRefine,   // SOAR CJSO block step + DSS: window around the continuous LS scale
};

struct BlockPassParams {
  BlockMethod method = BlockMethod::kRtn;
  BlockErrorKind search_kind = BlockErrorKind::kSquared;  // 4over6 rule or the objective
  int window_lo = -3;
  int window_hi = 7;
  bool decoupled = false;     // DSS beta search (soar under a non-separable objective)
  float g = 1.0f;             // global scale (alpha) of this pass
  float g_rtn = 1.0f;         // rtn global scale, for the baseline metric
  bool rtn_metric = true;     // also compute the rtn baseline error of the block
};

struct BlockResult {
  uint8_t packed[kBlock / 2];
  uint8_t scale = kE4M3One;
  float obj_err = 0.0f;      // error under the objective (what soar's acceptance compares)
  float sq_err = 0.0f;       // sum (x - x_hat)^2
  float rtn_sq_err = 0.0f;   // same for the rtn baseline
  float x_sq = 0.0f;         // sum x^2
  float max_abs_err = 0.0f;  // max |x - x_hat|
  float s1 = 0.0f;           // CJSO global-step numerator   <Q*Delta, W>_obj
  float s2 = 0.0f;           // CJSO global-step denominator <Q*Delta, Q*Delta>_obj
};

// Quantizes one block. `objective` is the request's objective for this block (its importance or
// Hessian block attached); `prev_packed`/`prev_scale` are the block's current codes and scale
// (used by kSoarRefine only).
NVFP4_HD void QuantizeBlock(const float* x, const BlockPassParams& p,
                            const BlockObjective& objective, const uint8_t* prev_packed,
                            uint32_t prev_scale, BlockResult* out) {
  float amax_b = 0.0f;
  for (int i = 0; i < kBlock; ++i) amax_b = std::fmax(amax_b, std::fabs(x[i]));

  BlockObjective search_obj = objective;
  search_obj.kind = p.search_kind;
  ScaleCandidates cand;
  if (amax_b == 0.0f) {
    cand.code[0] = kE4M3One;  // an all-zero block stores scale 1.0 and zero codes
    cand.count = 1;
  } else {
    switch (p.method) {
      case BlockMethod::kRtn:
        cand.code[0] = static_cast<uint8_t>(EncodeE4M3Scale(AbsmaxBlockScale(amax_b, p.g)));
        cand.count = 1;
        break;
      case BlockMethod::kFourOverSix: {
        const float h = amax_b / (6.0f * p.g);
        cand.code[0] = static_cast<uint8_t>(EncodeE4M3Scale(h == 0.0f ? 1.0f : h));
        cand.code[1] = static_cast<uint8_t>(EncodeE4M3Scale(1.5f * h));
        cand.count = 2;
        break;
      }
      case BlockMethod::kWindow:
        WindowCandidates(EncodeE4M3Scale(AbsmaxBlockScale(amax_b, p.g)), p.window_lo,
                         p.window_hi, &cand);
        break;
      case BlockMethod::kSoarRefine: {
        // CJSO block step: Delta* = <W, Q>_obj / (alpha <Q, Q>_obj) with the current codes Q.
        float q[kBlock];
        for (int j = 0; j < kBlock / 2; ++j) {
          q[2 * j] = DecodeE2M1(prev_packed[j] & 0xFu);
          q[2 * j + 1] = DecodeE2M1(prev_packed[j] >> 4);
        }
        const float num = ObjectiveInner(x, q, objective);
        const float den = ObjectiveInner(q, q, objective);
        uint32_t base = prev_scale;
        if (den > 0.0f) {
          const float delta = num / (p.g * den);
          if (delta > 0.0f && delta < PositiveInfinity()) base = EncodeE4M3Scale(delta);
        }
        WindowCandidates(base, p.window_lo, p.window_hi, &cand);
        cand.decoupled = p.decoupled;
        break;
      }
    }
  }

  const BlockChoice choice = cand.count == 1 ? BlockChoice{cand.code[0], kBetaOneIndex, 0.0f}
                                             : SearchBlock(x, p.g, cand, search_obj);
  const float s = DecodeE4M3(choice.scale_code);
  const float sg = s * p.g;
  const float sq = (BetaValue(choice.beta_index) * s) * p.g;  // == sg when beta == 1
  float qv[kBlock];
  EmitCodes(x, sq, qv, out->packed);
  out->scale = static_cast<uint8_t>(choice.scale_code);

  float max_abs = 0.0f, sq_err = 0.0f, x_sq = 0.0f;
  for (int i = 0; i < kBlock; ++i) {
    const float r = x[i] - qv[i] * sg;
    sq_err += r * r;
    x_sq += x[i] * x[i];
    max_abs = std::fmax(max_abs, std::fabs(r));
  }
  out->sq_err = sq_err;
  out->x_sq = x_sq;
  out->max_abs_err = max_abs;
  out->obj_err = objective.kind == BlockErrorKind::kSquared ? sq_err
                                                             : BlockError(x, qv, sg, objective);
  float v[kBlock];
  for (int i = 0; i < kBlock; ++i) v[i] = qv[i] * s;
  out->s1 = ObjectiveInner(v, x, objective);
  out->s2 = ObjectiveInner(v, v, objective);

  if (p.rtn_metric) {
    const uint32_t rtn_code =
        amax_b == 0.0f ? kE4M3One : EncodeE4M3Scale(AbsmaxBlockScale(amax_b, p.g_rtn));
    const float rtn_sg = DecodeE4M3(rtn_code) * p.g_rtn;
    float rtn_err = 0.0f;
    for (int i = 0; i < kBlock; ++i) {
      const float r = x[i] - E2M1RoundValue(x[i] / rtn_sg) * rtn_sg;
      rtn_err += r * r;
    }
    out->rtn_sq_err = rtn_err;
  } else {
    out->rtn_sq_err = sq_err;
  }
}

}  // namespace nvfp4

#endif  // NVFP4_KERNELS_BLOCK_CORE_H_
