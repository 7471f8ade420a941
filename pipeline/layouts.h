// The two NVFP4 checkpoint layouts (docs/CHECKPOINTS.md): ModelOpt (TensorRT-LLM, vLLM, SGLang)
// and compressed-tensors `nvfp4-pack-quantized` (llm-compressor, vLLM). Both store the same packed
// E2M1 codes and E4M3 block-scale bytes; they differ in tensor names, in storing the global scale
// as g (ModelOpt) or 1/g (compressed-tensors), and in their configuration files.
#ifndef NVFP4_PIPELINE_LAYOUTS_H_
#define NVFP4_PIPELINE_LAYOUTS_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "formats/safetensors.h"
#include "kernels/types.h"
#include "nlohmann/json.hpp"

namespace nvfp4::pipeline {

enum class Layout { kModelOpt, kCompressedTensors };
// "modelopt" | "compressed-tensors"
std::string_view LayoutName(Layout layout);
// Accepts "modelopt" and "compressed-tensors" (also "compressed_tensors", "ct").
absl::StatusOr<Layout> ParseLayout(std::string_view name);

// The activation scale of a W4A4 checkpoint is derived from the calibrated input amax A_in:
// ModelOpt input_scale = A_in / 2688, compressed-tensors input_global_scale = 2688 / A_in.
inline constexpr float kNvfp4ScaleDenominator = 2688.0f;  // 6 * 448

// Tensor names of one quantized module `m` in a layout.
struct QuantizedTensorNames {
  std::string packed;        // <m>.weight | <m>.weight_packed          U8 [N, K/2]
  std::string block_scales;  // <m>.weight_scale                        F8_E4M3 [N, K/16]
  std::string
      global_scale;  // <m>.weight_scale_2 (F32 [] = g) | <m>.weight_global_scale (F32 [1] = 1/g)
  std::string
      input_scale;  // <m>.input_scale (F32 [] = A/2688) | <m>.input_global_scale (F32 [1] = 2688/A)
};
QuantizedTensorNames NamesFor(Layout layout, std::string_view module);

// Output tensor specs of module `m` ([N, K] weight) in `layout`, with or without an input scale.
std::vector<formats::TensorSpec> QuantizedSpecs(Layout layout, std::string_view module, int64_t n,
                                                int64_t k, bool input_scale);

// Output tensors (names, dtypes, shapes and bytes) of one quantized weight.
struct EncodedTensor {
  formats::TensorSpec spec;
  std::vector<uint8_t> data;
};
// Encodes `q` (of module `module`) in `layout`; `input_amax` adds the input scale (W4A4).
std::vector<EncodedTensor> EncodeQuantized(Layout layout, std::string_view module,
                                           const QuantizedTensor& q,
                                           std::optional<float> input_amax);

// Producer recorded in hf_quant_config.json / quantization_config. The name stays "modelopt": it
// marks the ModelOpt format, and loaders test it (vLLM's get_quant_config and SGLang's copy of it
// refuse an hf_quant_config.json whose producer.name is not "modelopt"; TensorRT-LLM takes it as
// one of the markers of a ModelOpt config). No loader reads the version, which names this
// project: "nvfp4-<version>" (docs/CHECKPOINTS.md "Producer").
inline constexpr std::string_view kProducerName = "modelopt";
inline constexpr std::string_view kProducerVersionPrefix = "nvfp4-";
std::string ProducerVersion();  // "nvfp4-" + nvfp4::kVersion (base/version.h)

// `quantization_config` to add to config.json. `w4a4`: activations are quantized too
// (input scales present); otherwise weight-only (ModelOpt quant_algo W4A16_NVFP4, no
// input_activations).
nlohmann::ordered_json QuantizationConfig(Layout layout, bool w4a4,
                                          const std::vector<std::string>& ignore);
// hf_quant_config.json of the ModelOpt layout.
nlohmann::ordered_json HfQuantConfig(bool w4a4, const std::vector<std::string>& ignore);

}  // namespace nvfp4::pipeline

#endif  // NVFP4_PIPELINE_LAYOUTS_H_
