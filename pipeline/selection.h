// Module selection: which Linear weights of a checkpoint are quantized, which are fused into
// groups that share one global scale, and which are kept in their original dtype (and why).
//
// Candidates are `<module>.weight` tensors of rank 2 with a float dtype (BF16/F16/F32, or F8_E4M3
// with a dequantization scale: SelectionOptions::fp8_weights). By
// default (docs/CHECKPOINTS.md, "What is not quantized by default") these are excluded: lm_head
// and other output heads, embeddings, norms, MoE routers (`mlp.gate`, `router`,
// `shared_expert_gate`), vision towers and projectors, MTP heads, conv1d, and any Linear with
// K % 16 != 0. Users add patterns: fnmatch(3) globs matched against the module name (`*` also
// matches dots), or regular expressions with a `re:` prefix (ECMAScript, matched at the start of
// the name as Python's re.match). An exclude pattern always wins over an include pattern.
// Fused groups (q/k/v_proj, gate/up_proj, MoE expert w1/w3, MLA q_a/kv_a) are all quantized or all
// excluded, and so are the routed experts of one MoE block.
#ifndef NVFP4_PIPELINE_SELECTION_H_
#define NVFP4_PIPELINE_SELECTION_H_

#include <cstdint>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "formats/safetensors.h"

namespace nvfp4::pipeline {

struct SelectionOptions {
  // Only modules matching one of these are quantized (empty: every candidate).
  std::vector<std::string> include;
  // Modules matching one of these are never quantized.
  std::vector<std::string> exclude;
  // Apply the default exclusions listed above (K % 16, rank and dtype rules always apply).
  bool default_exclusions = true;
  // From config.json: layers with index >= num_hidden_layers are MTP heads when the model has
  // num_nextn_predict_layers > 0 (DeepSeek-V3 style). -1: unknown.
  int64_t num_hidden_layers = -1;
  int64_t num_mtp_layers = 0;
  // F8_E4M3 weights (tensor names) that come with a dequantization scale (pipeline/fp8_source.h):
  // candidates like BF16 weights. Filled by the pipeline from the checkpoint, not by users.
  std::set<std::string> fp8_weights;
};

// Validates a pattern (a glob, or `re:` + a regular expression). INVALID_ARGUMENT for a bad regex.
absl::Status ValidatePattern(std::string_view pattern);
// True when `pattern` matches `module` (or `module.weight`).
bool PatternMatches(std::string_view pattern, std::string_view module);

// The default-exclusion reason of a module ("lm_head", "embedding", "norm", "router",
// "vision tower/projector", "MTP head", "conv"), or nullopt.
std::optional<std::string> DefaultExclusionReason(std::string_view module,
                                                  const SelectionOptions& options = {});

// The fused group a module belongs to ("<prefix>.{q,k,v}_proj", "<prefix>.{gate,up}_proj",
// "<prefix>.experts.<i>.{w1,w3}", DeepSeek's "<prefix>.{q_a_proj,kv_a_proj_with_mqa}"), or
// nullopt. Members of a group share one global scale (docs/CHECKPOINTS.md).
std::optional<std::string> FusedGroupName(std::string_view module);

// The MoE block of a routed expert's module ("<prefix>.experts" for
// "<prefix>.experts.<i>.<name>": Mixtral w1/w2/w3, Qwen/DeepSeek gate/up/down_proj), or nullopt
// (shared experts, routers and dense layers are in no block). The experts of one block are
// quantized all or none: vLLM loads them as one FusedMoE layer with one scheme.
std::optional<std::string> ExpertBlockName(std::string_view module);

// One unit of work of the streaming pipeline, in processing order.
struct WorkUnit {
  enum class Kind { kCopy, kQuantize };
  Kind kind = Kind::kCopy;
  std::string group;                 // kQuantize: the fused group name, or "" for a single weight
  std::vector<std::string> modules;  // kQuantize: member modules (q, k, v order)
  std::vector<std::string> tensors;  // source tensors (kCopy: exactly one; kQuantize: `<m>.weight`)
};

struct ExcludedModule {
  std::string module;
  std::string reason;
  bool linear = true;  // false for embeddings (not Linear layers: left out of loader ignore lists)
};

struct QuantizationPlan {
  std::vector<WorkUnit> units;                 // every tensor of the checkpoint exactly once
  std::vector<std::string> quantized_modules;  // sorted
  std::vector<ExcludedModule> excluded;        // candidates kept in full precision, sorted
  int fused_groups = 0;                        // units with more than one module
  // Quantized modules whose K/16 is odd: vLLM needs K % 16 == 0 after the tensor-parallel split,
  // so a row-parallel layer (o_proj, down_proj) of these cannot be split in two.
  std::vector<std::string> odd_k_blocks;

  // The module names a loader must leave unquantized (`ignore` / `exclude_modules`): the excluded
  // Linear modules, sorted; never empty ("lm_head" when nothing else).
  std::vector<std::string> IgnoreList() const;
};

// Plans the quantization of the tensors `tensors` (in processing order; names unique).
// INVALID_ARGUMENT for a bad pattern, or when an include pattern matches nothing quantizable.
absl::StatusOr<QuantizationPlan> PlanQuantization(std::span<const formats::TensorSpec> tensors,
                                                  const SelectionOptions& options);

}  // namespace nvfp4::pipeline

#endif  // NVFP4_PIPELINE_SELECTION_H_
