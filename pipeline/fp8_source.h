// FP8 checkpoints as inputs (docs/CHECKPOINTS.md "FP8 sources"): which F8_E4M3 weights carry a
// dequantization scale, in which layout, and reading them back as fp32.
//
// Supported layouts, recognised by the tensor names (config.json / hf_quant_config.json give the
// block size and are checked for consistency):
//  - block FP8 (DeepSeek-V3/R1, Qwen3-FP8; quantization_config.quant_method "fp8"):
//    `<m>.weight` F8_E4M3 [N, K] + `<m>.weight_scale_inv` F32 [ceil(N/bn), ceil(K/bk)]
//    (bn x bk = weight_block_size, default 128 x 128);
//  - compressed-tensors `float-quantized` FP8 and ModelOpt FP8: `<m>.weight` F8_E4M3 +
//    `<m>.weight_scale` per tensor ([] or [1]), per channel ([N, 1] or [N]), per group of columns
//    ([N, K/g]) or per block ([ceil(N/bn), ceil(K/bk)]), F32/BF16/F16; `<m>.input_scale` (static
//    activation scales) is dropped;
//  - fused 3-D FP8 experts (transformers' fine-grained FP8, e.g. GLM / Mistral MoE checkpoints):
//    `<p>.experts.gate_up_proj` F8_E4M3 [E, 2I, H] and `<p>.experts.down_proj` [E, H, I], each
//    with `<t>_scale_inv` or `<t>_scale` holding one of the scale shapes above per expert behind a
//    leading E ([E, ceil(N/bn), ceil(K/bk)], [E, 1, 1] or [E], [E, N, 1] or [E, N], [E, N, K/g]);
//    `<t>_activation_scale` / `<t>_input_scale` are dropped. They are dequantized as the
//    per-expert weights pipeline/source_tensors.h splits them into (the [E, out, in],
//    concatenated layout only; up_proj's first row must start a block row).
// The scale is the dequantization multiplier in every layout: w = fp8 * scale (kernels/
// tensor_prep.h DequantFp8, docs/NUMERICS.md section 7).
#ifndef NVFP4_PIPELINE_FP8_SOURCE_H_
#define NVFP4_PIPELINE_FP8_SOURCE_H_

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "formats/safetensors.h"
#include "formats/sharded.h"
#include "kernels/types.h"
#include "nlohmann/json.hpp"
#include "pipeline/source_tensors.h"

namespace nvfp4::pipeline {

// How one F8_E4M3 weight is dequantized.
struct Fp8Weight {
  std::string scale_tensor;  // `<m>.weight_scale_inv` or `<m>.weight_scale`
  int64_t block_rows = 0;    // one scale covers block_rows x block_cols elements (edges partial)
  int64_t block_cols = 0;
  std::string granularity;  // "block 128x128", "per-channel", "per-tensor", "group 1x128"
  int64_t rows = 0;         // the weight's shape (a fused expert's: its slice)
  int64_t cols = 0;
  // The weight's scales are the scale tensor's flat values [scale_offset, scale_offset +
  // ceil(rows / block_rows) * ceil(cols / block_cols)), row-major (0 unless fused experts).
  int64_t scale_offset = 0;
};

struct Fp8Sources {
  // "" when the checkpoint has no FP8 weight with a scale; else the layout's name
  // ("block FP8 (weight_scale_inv)", "FP8 with weight_scale").
  std::string layout;
  std::map<std::string, Fp8Weight> weights;  // by weight tensor name
  // Tensors consumed by the dequantization and not copied: the scales and `input_scale`s of the
  // FP8 weights.
  std::set<std::string> consumed;
  // F8_E4M3 `.weight` tensors of rank 2 without a scale (not quantizable): count and an example.
  int64_t unscaled = 0;
  std::string unscaled_example;

  const Fp8Weight* Find(const std::string& weight) const {
    auto it = weights.find(weight);
    return it == weights.end() ? nullptr : &it->second;
  }
};

// True when `quantization_config` (config.json) or `hf_quant_config` (hf_quant_config.json)
// describes an FP8 checkpoint this pipeline re-quantizes: quant_method "fp8"; "compressed-tensors"
// whose config groups all quantize weights to 8-bit floats; "modelopt" / hf_quant_config
// quant_algo "FP8". `block` receives the weight block size when the config names one.
bool IsFp8QuantizationConfig(const nlohmann::ordered_json& quantization_config,
                             std::optional<std::pair<int64_t, int64_t>>* block = nullptr);

// The weight block size named by config.json's FP8 quantization_config (`weight_block_size`, or a
// compressed-tensors `block_structure`), or nullopt.
std::optional<std::pair<int64_t, int64_t>> Fp8BlockSize(
    const std::optional<nlohmann::ordered_json>& config);

// Finds the FP8 weights among the planned tensors of `sources` (stored 2-D weights and the expert
// weights of fused FP8 experts) and validates their scales' headers (dtype F32/BF16/F16, a shape
// of one of the layouts above). `block` is the config's block size (nullopt: 128 x 128 is assumed
// for `weight_scale_inv`). INVALID_ARGUMENT naming the file, the tensors, the shapes and what was
// expected.
absl::StatusOr<Fp8Sources> FindFp8Sources(const SourceTensors& sources,
                                          std::optional<std::pair<int64_t, int64_t>> block);

// The checked dequantization scales of an FP8 weight, as fp32, with their grid.
struct Fp8ScaleGrid {
  std::vector<float> values;
  int64_t block_rows = 0;
  int64_t block_cols = 0;
  int64_t grid_cols = 0;
  // The kernels' view of the grid (points into `values`).
  Fp8Scales view() const { return Fp8Scales{values.data(), block_rows, block_cols, grid_cols}; }
};

// Reads the scales of FP8 weight `weight` and checks every value (finite, >= 0; INVALID_ARGUMENT
// naming the file, the scale tensor and the index otherwise).
absl::StatusOr<Fp8ScaleGrid> ReadFp8Scales(const formats::CheckpointReader& reader,
                                           const std::string& weight, const Fp8Weight& fp8);

// Reads FP8 weight `weight` (one of sources' planned tensors) and its scales, checks every scale
// (as ReadFp8Scales) and dequantizes the weight into `out` (rows x cols fp32 values) on the
// host's threads. Scratch: the weight's bytes of codes.
absl::Status ReadDequantizedFp8(const SourceTensors& sources, const std::string& weight,
                                const Fp8Weight& fp8, std::span<float> out);

// ReadDequantizedFp8, rounded to BF16 (nearest even; little-endian bytes): how an FP8 weight that
// stays unquantized is written.
absl::StatusOr<std::vector<uint8_t>> ReadFp8AsBf16(const SourceTensors& sources,
                                                   const std::string& weight, const Fp8Weight& fp8);

}  // namespace nvfp4::pipeline

#endif  // NVFP4_PIPELINE_FP8_SOURCE_H_
