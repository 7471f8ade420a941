// The tensors a quantize-model run plans over: the stored tensors of the checkpoint, with each
// fused 3-D expert tensor replaced by the per-expert 2-D weights (and 1-D biases) it holds.
//
// Newer transformers releases and gpt-oss store the routed experts of a MoE block as two 3-D
// tensors with a leading expert dimension E (docs/CHECKPOINTS.md "Fused 3-D experts"):
//   <p>.experts.gate_up_proj       [E, 2I, H]  or, transposed, [E, H, 2I]
//   <p>.experts.down_proj          [E, H, I]   or, transposed, [E, I, H]
//   <p>.experts.gate_up_proj_bias  [E, 2I]     (gpt-oss)
//   <p>.experts.down_proj_bias     [E, H]      (gpt-oss)
// gate and up are either the two halves of the 2I dimension (concatenated) or its even and odd
// entries (interleaved, gpt-oss). The layout follows transformers' `use_experts_implementation`
// flags by config.json model_type: gpt_oss is transposed and interleaved; llama4 and aria are
// transposed and concatenated; every other model (Mixtral, Qwen2/3-MoE, DeepSeek, ... as
// transformers >= 5 holds them in memory) is [E, out, in] and concatenated.
//
// Each is planned as the per-expert Linear weights llm-compressor linearizes them into and vLLM's
// FusedMoE weight loaders read (`experts.<e>.{gate,up,down}_proj`, [out, in]):
//   <p>.experts.<e>.gate_proj.weight [I, H], <p>.experts.<e>.up_proj.weight [I, H],
//   <p>.experts.<e>.down_proj.weight [H, I], and the biases <p>.experts.<e>.<proj>.bias.
// So gate/up of one expert form a fused group (one global scale) and every expert is quantized on
// its own, as with per-expert checkpoints. Fused tensors stored as F8_E4M3 are split the same way
// (their scales: pipeline/fp8_source.h). The derived tensors keep the source dtype; reading one
// reads the expert's slice of the stored tensor (one slice at a time: memory stays bounded by the
// largest expert).
#ifndef NVFP4_PIPELINE_SOURCE_TENSORS_H_
#define NVFP4_PIPELINE_SOURCE_TENSORS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "formats/safetensors.h"
#include "formats/sharded.h"
#include "nlohmann/json.hpp"

namespace nvfp4::pipeline {

// How a model stores its fused 3-D experts.
struct FusedExpertsLayout {
  bool transposed = false;   // [E, in, out] instead of [E, out, in]
  bool interleaved = false;  // gate/up in the even/odd entries of 2I instead of its halves
};
// The layout of config.json's model_type (top level or text_config); the default without one.
FusedExpertsLayout FusedExpertsLayoutFor(const std::optional<nlohmann::ordered_json>& config);

// One tensor derived from a stored fused-experts tensor `source` ([E, A, B] weights, [E, B]
// biases): element r (1-D) or (r, c) (2-D) is source[expert, o(r)] / source[expert, o(r), c] /
// source[expert, c, o(r)] (transposed), with o(r) = offset + r * step.
struct ExpertSlice {
  formats::TensorSpec spec;  // derived name, the source's dtype, [rows, cols] or [rows]
  std::string source;
  int64_t expert = 0;
  int64_t offset = 0;
  int64_t step = 1;
  bool transposed = false;
};

class SourceTensors {
 public:
  // The planned tensors of `reader`. INVALID_ARGUMENT naming the file and tensor when a fused
  // tensor's shape does not fit the layout (odd 2I, a gate_up/down pair that disagrees, H not
  // config.json's hidden_size), or when a derived name is also stored.
  static absl::StatusOr<SourceTensors> Open(const formats::CheckpointReader& reader,
                                            const std::optional<nlohmann::ordered_json>& config);

  // Every planned tensor once, in the checkpoint's order (a fused tensor's slices at its place:
  // expert by expert, gate before up).
  const std::vector<formats::TensorSpec>& specs() const { return specs_; }
  // The stored fused tensors that were split (sorted).
  const std::vector<std::string>& split_tensors() const { return split_; }

  bool Contains(const std::string& name) const { return index_.count(name) > 0; }
  // The expert slice `name` derives from, or nullptr for a stored tensor.
  const ExpertSlice* Slice(const std::string& name) const {
    auto it = slices_.find(name);
    return it == slices_.end() ? nullptr : &it->second;
  }
  const formats::CheckpointReader& reader() const { return *reader_; }
  // Precondition for the accessors below: `name` is one of specs().
  const formats::TensorSpec& Spec(const std::string& name) const;
  uint64_t ByteSize(const std::string& name) const;
  // The file holding `name` (or its source), for messages.
  const std::string& FileName(const std::string& name) const;
  // Reads the whole tensor (out.size() == ByteSize(name)).
  absl::Status Read(const std::string& name, std::span<uint8_t> out) const;
  // Reads bytes [offset, offset + out.size()) of the tensor.
  absl::Status ReadRange(const std::string& name, uint64_t offset, std::span<uint8_t> out) const;

 private:
  explicit SourceTensors(const formats::CheckpointReader& reader) : reader_(&reader) {}

  const formats::CheckpointReader* reader_;
  std::vector<formats::TensorSpec> specs_;
  std::map<std::string, size_t> index_;           // name -> specs_
  std::map<std::string, ExpertSlice> slices_;      // derived tensors
  std::vector<std::string> split_;
};

}  // namespace nvfp4::pipeline

#endif  // NVFP4_PIPELINE_SOURCE_TENSORS_H_
