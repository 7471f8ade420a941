// Synthetic weight tensors for tests, benchmarks and demos: Gaussian, Laplace, Student-t, outlier
// columns; bf16/fp16 encoders (round to nearest even). Deterministic for a given seed.
#ifndef NVFP4_KERNELS_TESTING_SYNTHETIC_H_
#define NVFP4_KERNELS_TESTING_SYNTHETIC_H_

#include <cstdint>
#include <vector>

namespace nvfp4::testing {

enum class Distribution { kGaussian, kLaplace, kStudentT3 };

// n samples with unit scale (std-normal, Laplace(0,1), Student-t with 3 degrees of freedom).
std::vector<float> Sample(Distribution d, int64_t n, uint64_t seed);
// Multiplies columns c with c % period == 0 of a [rows, cols] matrix by `factor`.
void AddOutlierColumns(std::vector<float>& m, int64_t cols, int64_t period, float factor);

// The Gram X^T X [k, k] (fp32, accumulated in fp64) of `tokens` correlated activations: x_i =
// z_i + 0.8 z_(i+1 mod k) with z ~ N(0, 1), every 13th channel 4x louder. For GPTQ tests.
std::vector<float> CorrelatedGram(int64_t k, int64_t tokens, uint64_t seed);

// A block-scaled FP8 weight [rows, cols] as DeepSeek-V3 stores it: E4M3 codes of Student-t
// samples (finite codes only) and one dequantization scale per block_rows x block_cols tile
// ([ceil(rows/block_rows), ceil(cols/block_cols)], row-major; log-uniform in [1e-4, 1e-2]).
struct Fp8Sample {
  std::vector<uint8_t> codes;
  std::vector<float> scales;
  int64_t grid_cols = 0;
};
Fp8Sample SampleFp8(int64_t rows, int64_t cols, int64_t block_rows, int64_t block_cols,
                    uint64_t seed);

uint16_t FloatToBf16(float f);  // round to nearest even (NaN stays NaN)
uint16_t FloatToF16(float f);   // round to nearest even, overflow to Inf
std::vector<uint16_t> ToBf16(const std::vector<float>& v);
std::vector<uint16_t> ToF16(const std::vector<float>& v);

}  // namespace nvfp4::testing

#endif  // NVFP4_KERNELS_TESTING_SYNTHETIC_H_
