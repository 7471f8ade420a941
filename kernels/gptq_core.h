// The per-row steps of GPTQ error feedback (docs/NUMERICS.md, "GPTQ"), compiled for host and
// device so the CPU reference and the CUDA backend compute the same bits from the same factor.
//
// GPTQ's column sweep is independent per row once the factor U (upper triangular, H^-1 = U^T U)
// is known: row r's columns are quantized left to right (in processing order), and each column's
// scaled rounding error e = (w - q) / U[i][i] is pushed onto the row's later columns through row i
// of U. Within a batch of `block_size` columns the update is immediate (GptqRowBatch); onto the
// columns after the batch it is deferred and applied once per batch (GptqLazyDelta). Every
// sum runs in a fixed order with separate multiply and add (no FMA contraction), so a backend
// that keeps the order gets identical bits.
//
// Block scales come from the shared block core (block_core.h): the candidates and objective of
// the chosen scale method, evaluated on the block's 16 error-updated values when its first column
// is reached (natural order), or on the original values before the sweep (static order).
#ifndef NVFP4_KERNELS_GPTQ_CORE_H_
#define NVFP4_KERNELS_GPTQ_CORE_H_

#include <cstdint>

#include "kernels/block_core.h"
#include "kernels/codec.h"
#include "kernels/hd.h"

namespace nvfp4 {

// How a 16-column block's E4M3 scale is chosen.
struct GptqScaleParams {
  BlockPassParams pass;         // the block-scale method's pass (g set, rtn_metric off)
  int soar_refine_steps = 0;    // soar: CJSO block steps after the window search (kept if better)
  BlockPassParams refine;       // soar: the kSoarRefine pass (not decoupled: GPTQ rounds to nearest)
  BlockErrorKind objective_kind = BlockErrorKind::kSquared;
  const float* importance = nullptr;  // [K] (kWeightedSquared)
  const float* hessian = nullptr;     // [K/16][256] Gram diagonal blocks (kHessian)

  NVFP4_HD BlockObjective ForBlockColumn(int64_t j) const {
    BlockObjective o;
    o.kind = objective_kind;
    if (importance != nullptr) o.importance = importance + j * kBlock;
    if (hessian != nullptr) o.hessian = hessian + j * kBlock * kBlock;
    return o;
  }
};

// The E4M3 scale code for block column `j` whose 16 current values are x.
NVFP4_HD uint8_t ChooseGptqBlockScale(const float* x, int64_t j, const GptqScaleParams& p) {
  const BlockObjective obj = p.ForBlockColumn(j);
  BlockResult best;
  QuantizeBlock(x, p.pass, obj, nullptr, kE4M3One, &best);
  for (int step = 0; step < p.soar_refine_steps; ++step) {
    BlockResult next;
    QuantizeBlock(x, p.refine, obj, best.packed, best.scale, &next);
    if (!(next.obj_err < best.obj_err)) break;
    best = next;
  }
  return best.scale;
}

// The E2M1 code of x under dequantization scale sg (true division, as EmitCodes).
NVFP4_HD uint32_t GptqCode(float x, float sg) { return EncodeE2M1(x / sg); }

// One row's elements at p[i * stride]: stride 1 for a row-major row (the CPU), the (padded) row
// count where a CUDA thread sweeps one row of column-major copies, so that a warp's threads touch
// consecutive addresses.
template <typename T>
struct Strided {
  T* p = nullptr;
  int64_t stride = 1;
  NVFP4_HD T& operator[](int64_t i) const { return p[i * stride]; }
};

// One row, one batch: processing positions [c0, c0 + nb) of the row. `w` holds the row's nb
// current values of the batch (updated in place); `u` points at U[c0][c0] with row stride `ld`.
// `perm` maps a processing position to its original column (nullptr: natural order). When
// `choose_scales` is set (natural order), a block's scale is chosen when its first column is
// reached (c0 and nb are multiples of 16); otherwise `scales` already holds them. Writes the
// row's codes (indexed by original column), the scales (by block column), and
// err[i] = (w - q) / U[i][i].
NVFP4_HD void GptqRowBatch(Strided<float> w, const float* u, int64_t ld, int nb, int64_t c0,
                           const int32_t* perm, bool choose_scales, float g,
                           const GptqScaleParams& sp, Strided<uint8_t> codes,
                           Strided<uint8_t> scales, Strided<float> err) {
  for (int i = 0; i < nb; ++i) {
    const int64_t pos = c0 + i;
    const int64_t col = perm == nullptr ? pos : perm[pos];
    if (choose_scales && col % kBlock == 0) {
      float x[kBlock];  // the block core reads the block's 16 current values contiguously
      for (int t = 0; t < kBlock; ++t) x[t] = w[i + t];
      scales[col / kBlock] = ChooseGptqBlockScale(x, col / kBlock, sp);
    }
    const float sg = DecodeE4M3(scales[col / kBlock]) * g;
    const float wi = w[i];
    const uint32_t c = GptqCode(wi, sg);
    codes[col] = static_cast<uint8_t>(c);
    const float e = (wi - DecodeE2M1(c) * sg) / u[i * ld + i];
    err[i] = e;
    const float* ui = u + i * ld;
    for (int j = i + 1; j < nb; ++j) w[j] = w[j] - e * ui[j];
  }
}

// The deferred update of one row element at position `pos` (> the batch): the sum over the
// batch's errors t = 0..nb-1 of err[t] * U[c0 + t][pos], in that order, then subtracted.
// `u_col` points at U[c0][pos] (stride `ld` between batch rows).
NVFP4_HD float GptqLazyDelta(const float* err, const float* u_col, int64_t ld, int nb) {
  float acc = 0.0f;
  for (int t = 0; t < nb; ++t) acc = acc + err[t] * u_col[t * ld];
  return acc;
}

// One 16-element block's contribution to a GPTQ result's metrics (the flow's metrics, computed by
// the host and the CUDA device alike): x the source values, `packed` the block's 8 code bytes,
// `scale` its E4M3 code, g the global scale, g_rtn rtn's global scale (for the rtn baseline).
// fp32 sums over the block in element order, as the block core's metrics (QuantizeBlock).
struct GptqBlockSums {
  float sq_err = 0.0f;   // sum (x - x_hat)^2
  float x_sq = 0.0f;     // sum x^2
  float rtn_sq = 0.0f;   // sum (x - rtn(x))^2 with rtn's absmax block scale
  float max_err = 0.0f;  // max |x - x_hat|
};
NVFP4_HD GptqBlockSums GptqMetricBlock(const float* x, const uint8_t* packed, uint8_t scale,
                                       float g, float g_rtn) {
  const float sb = DecodeE4M3(scale);
  float amax_b = 0.0f;
  for (int i = 0; i < kBlock; ++i) amax_b = std::fmax(amax_b, std::fabs(x[i]));
  const uint32_t rtn_code =
      amax_b == 0.0f ? kE4M3One : EncodeE4M3Scale(AbsmaxBlockScale(amax_b, g_rtn));
  const float rtn_sg = DecodeE4M3(rtn_code) * g_rtn;
  GptqBlockSums s;
  for (int i = 0; i < kBlock; ++i) {
    const uint8_t byte = packed[i / 2];
    const uint32_t code = (i % 2 == 0) ? (byte & 0xFu) : (byte >> 4);
    const float y = DecodeE2M1(code) * sb * g;  // Dequantize's expression
    const float e = x[i] - y;
    s.sq_err = s.sq_err + e * e;
    s.x_sq = s.x_sq + x[i] * x[i];
    s.max_err = std::fmax(s.max_err, std::fabs(e));
    const float re = x[i] - E2M1RoundValue(x[i] / rtn_sg) * rtn_sg;
    s.rtn_sq = s.rtn_sq + re * re;
  }
  return s;
}

}  // namespace nvfp4

#endif  // NVFP4_KERNELS_GPTQ_CORE_H_
