// Reading NVFP4 checkpoints back (both layouts), inspecting them, and verifying them against the
// original checkpoint (docs/CHECKPOINTS.md, "Reading NVFP4 back").
//
// The layout is detected from config.json's quantization_config.quant_method ("modelopt" or
// "compressed-tensors" with format nvfp4-pack-quantized), else from hf_quant_config.json.
// Modules are classified by tensor suffix (`.weight_scale_2` / `.weight_packed`), the global
// scale is normalized to the decode form g (`weight_scale_2`, or `1/weight_global_scale`), and
// shapes are checked (`2 * packed.shape[-1] == 16 * scales.shape[-1]`, same rows). Any violation
// is a layout error (INVALID_ARGUMENT naming the file and tensor); an E4M3 NaN block scale is a
// corrupt file (DATA_LOSS).
#ifndef NVFP4_PIPELINE_NVFP4_CHECKPOINT_H_
#define NVFP4_PIPELINE_NVFP4_CHECKPOINT_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "formats/sharded.h"
#include "kernels/types.h"
#include "nlohmann/json.hpp"
#include "pipeline/layouts.h"
#include "storage/directory.h"

namespace nvfp4::pipeline {

// One quantized Linear module of an NVFP4 checkpoint.
struct Nvfp4Module {
  std::string name;                 // e.g. model.layers.0.self_attn.q_proj
  int64_t rows = 0, cols = 0;       // N, K of the original weight
  std::string packed_tensor;        // U8 [N, K/2]
  std::string scales_tensor;        // F8_E4M3 [N, K/16]
  std::string global_tensor;        // weight_scale_2 | weight_global_scale
  std::string input_tensor;         // input_scale | input_global_scale, or "" (weight-only)
  float global_scale = 0;           // g (decode form)
  float stored_global_scale = 0;    // as stored: g (ModelOpt) or 1/g (compressed-tensors)
  std::optional<float> input_amax;  // A_in recovered from the input scale
};

class Nvfp4Checkpoint {
 public:
  // Opens and validates the checkpoint in `dir` (which must outlive the object). Reads only the
  // headers, configs and the scalar global scales.
  static absl::StatusOr<std::unique_ptr<Nvfp4Checkpoint>> Open(storage::InputDirectory& dir);

  Layout layout() const { return layout_; }
  // "NVFP4" (W4A4) or "W4A16_NVFP4" (weight-only).
  const std::string& quant_algo() const { return quant_algo_; }
  // Sorted by name.
  const std::vector<Nvfp4Module>& modules() const { return modules_; }
  // Tensors that are not part of a quantized module (kept in full precision), sorted.
  const std::vector<std::string>& other_tensors() const { return other_tensors_; }
  // The loader ignore list (`ignore` / `exclude_modules`).
  const std::vector<std::string>& ignore() const { return ignore_; }
  const formats::CheckpointReader& reader() const { return *reader_; }
  // The "__metadata__" of the first shard (method, objective, layout when written by us).
  const std::map<std::string, std::string>& metadata() const;
  const std::vector<std::string>& files() const { return files_; }

  // Reads one module's codes and scales. DATA_LOSS for a NaN block scale.
  absl::StatusOr<QuantizedTensor> Load(const Nvfp4Module& module) const;
  // W_hat as fp32 [N*K], computed as the layout's loaders compute it: ModelOpt
  // e2m1 * e4m3 * g (kernels' Dequantize); compressed-tensors e2m1 * (e4m3 / weight_global_scale)
  // (compressed-tensors' dequantize), so that both agree bit for bit with their library.
  absl::StatusOr<std::vector<float>> Dequantize(const Nvfp4Module& module) const;

 private:
  Nvfp4Checkpoint() = default;
  Layout layout_ = Layout::kModelOpt;
  std::string quant_algo_;
  std::vector<Nvfp4Module> modules_;
  std::vector<std::string> other_tensors_;
  std::vector<std::string> ignore_;
  std::vector<std::string> files_;
  std::unique_ptr<formats::CheckpointReader> reader_;
};

// The layout of the NVFP4 checkpoint in `dir`: nullopt when it is not an NVFP4 checkpoint (no
// NVFP4 quantization config). INVALID_ARGUMENT for an unsupported quantization config.
absl::StatusOr<std::optional<Layout>> DetectLayout(storage::InputDirectory& dir);

// What `nvfp4ctl inspect` prints.
struct InspectReport {
  bool quantized = false;  // an NVFP4 checkpoint
  std::optional<Layout> layout;
  std::string quant_algo;
  std::map<std::string, std::string> metadata;
  std::vector<Nvfp4Module> modules;
  int64_t tensors = 0;  // all tensors of the checkpoint
  int64_t shards = 0;
  uint64_t total_bytes = 0;       // all tensor bytes
  int64_t quantized_weights = 0;  // elements of the quantized weights (sum N*K)
  uint64_t quantized_bytes = 0;   // their packed + block-scale + scalar bytes
  double bits_per_weight = 0;     // 8 * quantized_bytes / quantized_weights (4.5 + scalars)
  int64_t other_elements = 0;     // elements of the other tensors
  uint64_t other_bytes = 0;
  double overall_bits_per_param = 0;  // 8 * total_bytes / (quantized_weights + other_elements)
  std::vector<formats::TensorSpec> other_tensors;  // name, dtype, shape
};
absl::StatusOr<InspectReport> InspectCheckpoint(storage::InputDirectory& dir);

struct ModuleVerification {
  std::string module;
  int64_t rows = 0, cols = 0;
  double nmse = 0;  // ||W - W_hat||^2 / ||W||^2 against the original weight
  double max_abs_err = 0;
  float global_scale = 0;
};

struct VerifyReport {
  Layout layout = Layout::kModelOpt;
  std::string quant_algo;
  std::vector<ModuleVerification> modules;  // sorted by name
  int64_t copied_identical = 0;             // other tensors byte-identical to the original
  // Problems that make the verification fail: a copied tensor that differs, a quantized module
  // whose original is missing or has another shape, tensors of the original that are missing.
  std::vector<std::string> problems;
  double max_nmse = 0, mean_nmse = 0;
  bool ok() const { return problems.empty(); }
};

// Dequantizes every module of `quantized` and compares it with the original weight in `original`
// (an FP8 original through its dequantization, pipeline/fp8_source.h); checks that all other
// tensors are byte-identical (an unquantized FP8 weight: to its BF16 dequantization). Layout errors and corrupt files are returned
// as errors; mismatches are listed in `problems`.
absl::StatusOr<VerifyReport> VerifyCheckpoint(storage::InputDirectory& original, storage::InputDirectory& quantized);

}  // namespace nvfp4::pipeline

#endif  // NVFP4_PIPELINE_NVFP4_CHECKPOINT_H_
