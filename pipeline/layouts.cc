#include "pipeline/layouts.h"

#include <cstring>

#include "absl/strings/ascii.h"
#include "base/str_util.h"
#include "base/version.h"

namespace nvfp4::pipeline {
namespace {

std::vector<uint8_t> F32Bytes(float v) {
  std::vector<uint8_t> b(4);
  std::memcpy(b.data(), &v, 4);
  return b;
}
}  // namespace

std::string_view LayoutName(Layout layout) {
  return layout == Layout::kModelOpt ? "modelopt" : "compressed-tensors";
}

absl::StatusOr<Layout> ParseLayout(std::string_view name) {
  const std::string n = absl::AsciiStrToLower(std::string(name));
  if (n == "modelopt") return Layout::kModelOpt;
  if (n == "compressed-tensors" || n == "compressed_tensors" || n == "ct") {
    return Layout::kCompressedTensors;
  }
  return absl::InvalidArgumentError(
      StrCat("unknown layout '", name, "' (expected modelopt or compressed-tensors)"));
}

QuantizedTensorNames NamesFor(Layout layout, std::string_view m) {
  if (layout == Layout::kModelOpt) {
    return {StrCat(m, ".weight"), StrCat(m, ".weight_scale"), StrCat(m, ".weight_scale_2"),
            StrCat(m, ".input_scale")};
  }
  return {StrCat(m, ".weight_packed"), StrCat(m, ".weight_scale"),
          StrCat(m, ".weight_global_scale"), StrCat(m, ".input_global_scale")};
}

std::vector<formats::TensorSpec> QuantizedSpecs(Layout layout, std::string_view module, int64_t n,
                                                int64_t k, bool input_scale) {
  const QuantizedTensorNames names = NamesFor(layout, module);
  const std::vector<int64_t> scalar =
      layout == Layout::kModelOpt ? std::vector<int64_t>{} : std::vector<int64_t>{1};
  std::vector<formats::TensorSpec> specs = {
      {names.packed, "U8", {n, k / 2}},
      {names.block_scales, "F8_E4M3", {n, k / 16}},
      {names.global_scale, "F32", scalar},
  };
  if (input_scale) specs.push_back({names.input_scale, "F32", scalar});
  return specs;
}

std::vector<EncodedTensor> EncodeQuantized(Layout layout, std::string_view module,
                                           const QuantizedTensor& q,
                                           std::optional<float> input_amax) {
  std::vector<formats::TensorSpec> specs =
      QuantizedSpecs(layout, module, q.rows, q.cols, input_amax.has_value());
  std::vector<EncodedTensor> out;
  out.push_back({specs[0], q.packed});
  out.push_back({specs[1], q.scales});
  const float g = q.global_scale;
  out.push_back({specs[2], F32Bytes(layout == Layout::kModelOpt ? g : 1.0f / g)});
  if (input_amax) {
    const float a = *input_amax;
    out.push_back({specs[3], F32Bytes(layout == Layout::kModelOpt ? a / kNvfp4ScaleDenominator
                                                                  : kNvfp4ScaleDenominator / a)});
  }
  return out;
}

std::string ProducerVersion() { return StrCat(kProducerVersionPrefix, kVersion); }

nlohmann::ordered_json QuantizationConfig(Layout layout, bool w4a4,
                                          const std::vector<std::string>& ignore) {
  using oj = nlohmann::ordered_json;
  oj qc = oj::object();
  if (layout == Layout::kModelOpt) {
    const oj args = {{"dynamic", false}, {"num_bits", 4}, {"type", "float"}, {"group_size", 16}};
    oj group = oj::object();
    group["weights"] = args;
    if (w4a4) group["input_activations"] = args;
    group["targets"] = oj::array({"Linear"});
    qc["quant_method"] = "modelopt";
    qc["quant_algo"] = w4a4 ? "NVFP4" : "W4A16_NVFP4";
    qc["group_size"] = 16;
    qc["ignore"] = ignore;
    qc["producer"] = {{"name", kProducerName}, {"version", ProducerVersion()}};
    qc["config_groups"] = {{"group_0", group}};
    return qc;
  }
  oj weights = {{"num_bits", 4},
                {"type", "float"},
                {"symmetric", true},
                {"group_size", 16},
                {"strategy", "tensor_group"},
                {"dynamic", false}};
  oj group = oj::object();
  group["format"] = "nvfp4-pack-quantized";
  group["targets"] = oj::array({"Linear"});
  group["weights"] = weights;
  if (w4a4) {
    oj acts = weights;
    acts["dynamic"] = "local";
    group["input_activations"] = acts;
  }
  qc["quant_method"] = "compressed-tensors";
  qc["format"] = "nvfp4-pack-quantized";
  qc["quantization_status"] = "compressed";
  qc["ignore"] = ignore;
  qc["config_groups"] = {{"group_0", group}};
  return qc;
}

nlohmann::ordered_json HfQuantConfig(bool w4a4, const std::vector<std::string>& ignore) {
  using oj = nlohmann::ordered_json;
  oj q = oj::object();
  q["quant_algo"] = w4a4 ? "NVFP4" : "W4A16_NVFP4";
  q["kv_cache_quant_algo"] = nullptr;
  q["group_size"] = 16;
  q["exclude_modules"] = ignore;
  oj root = oj::object();
  root["producer"] = {{"name", kProducerName}, {"version", ProducerVersion()}};
  root["quantization"] = q;
  return root;
}

}  // namespace nvfp4::pipeline
