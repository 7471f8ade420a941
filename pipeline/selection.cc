#include "pipeline/selection.h"

#include <fnmatch.h>

#include <algorithm>
#include <charconv>
#include <map>
#include <regex>
#include <set>

#include "absl/strings/str_split.h"
#include "base/str_util.h"
#include "formats/dtypes.h"

namespace nvfp4::pipeline {
namespace {


constexpr std::string_view kRegexPrefix = "re:";

bool StartsWith(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }
bool EndsWith(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

std::vector<std::string> Components(std::string_view module) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    const size_t dot = module.find('.', start);
    parts.emplace_back(module.substr(start, dot == std::string_view::npos ? dot : dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return parts;
}

bool IsNumber(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// True when the decimal `digits` (IsNumber) is >= `n`; never throws (std::stoll does on overflow:
// a tensor name is untrusted input). A number too large for int64 is >= any n.
bool LayerIndexAtLeast(const std::string& digits, int64_t n) {
  int64_t v = 0;
  const auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  return ec == std::errc::result_out_of_range || (ec == std::errc() && v >= n);
}

// Canonical position of a fused-group member (q=0, k=1, v=2; gate=0, up=1; w1=0, w3=1;
// q_a_proj=0, kv_a_proj_with_mqa=1).
int MemberRank(std::string_view module) {
  const std::string last = Components(module).back();
  static const std::map<std::string, int> kRank = {
      {"q_proj", 0},    {"k_proj", 1},  {"v_proj", 2},  {"gate_proj", 0},
      {"up_proj", 1},   {"w1", 0},      {"w3", 1},      {"q_a_proj", 0},
      {"kv_a_proj_with_mqa", 1}};
  auto it = kRank.find(last);
  return it == kRank.end() ? 99 : it->second;
}

}  // namespace

absl::Status ValidatePattern(std::string_view pattern) {
  if (pattern.empty()) return absl::InvalidArgumentError("empty module pattern");
  if (StartsWith(pattern, kRegexPrefix)) {
    try {
      std::regex re(std::string(pattern.substr(kRegexPrefix.size())));
    } catch (const std::regex_error& e) {
      return absl::InvalidArgumentError(
          StrCat("bad regular expression in pattern '", pattern, "': ", e.what()));
    }
  }
  return absl::OkStatus();
}

bool PatternMatches(std::string_view pattern, std::string_view module) {
  const std::string names[2] = {std::string(module), StrCat(module, ".weight")};
  if (StartsWith(pattern, kRegexPrefix)) {
    try {
      const std::regex re(std::string(pattern.substr(kRegexPrefix.size())));
      for (const std::string& n : names) {
        if (std::regex_search(n, re, std::regex_constants::match_continuous)) return true;
      }
    } catch (const std::regex_error&) {
      return false;
    }
    return false;
  }
  const std::string p(pattern);
  for (const std::string& n : names) {
    if (fnmatch(p.c_str(), n.c_str(), 0) == 0) return true;
  }
  return false;
}

std::optional<std::string> DefaultExclusionReason(std::string_view module,
                                                  const SelectionOptions& options) {
  const std::vector<std::string> parts = Components(module);
  const std::string& last = parts.back();
  if (last == "lm_head" || last == "embed_out" || module == "output" ||
      std::find(parts.begin(), parts.end(), "lm_head") != parts.end()) {
    return "output head";
  }
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    if (p == "vision_tower" || p == "visual" || p == "vision_model" ||
        p == "multi_modal_projector" || p == "mm_projector" || p == "vision_encoder") {
      return "vision tower/projector";
    }
    if (p == "mtp" || StartsWith(p, "mtp_") || p == "nextn" || StartsWith(p, "nextn_")) {
      return "MTP head";
    }
    if (options.num_mtp_layers > 0 && options.num_hidden_layers >= 0 && p == "layers" &&
        i + 1 < parts.size() && IsNumber(parts[i + 1]) &&
        LayerIndexAtLeast(parts[i + 1], options.num_hidden_layers)) {
      return "MTP head";
    }
    if (p.find("embed") != std::string::npos || p == "wte" || p == "wpe") return "embedding";
    if (p.find("norm") != std::string::npos || p == "ln" || StartsWith(p, "ln_")) return "norm";
    if (p.find("conv") != std::string::npos) return "conv";
    if (p == "router" || EndsWith(p, "_router")) return "MoE router";
  }
  if (last == "gate" || last == "shared_expert_gate") return "MoE router";
  return std::nullopt;
}

std::optional<std::string> FusedGroupName(std::string_view module) {
  const std::vector<std::string> parts = Components(module);
  const std::string& last = parts.back();
  const std::string prefix(module.substr(0, module.size() - last.size()));  // ends with '.'
  if (last == "q_proj" || last == "k_proj" || last == "v_proj") return prefix + "{q,k,v}_proj";
  if (last == "gate_proj" || last == "up_proj") return prefix + "{gate,up}_proj";
  // DeepSeek-V2/V3 multi-head latent attention: vLLM loads both into one fused_qkv_a_proj.
  if (last == "q_a_proj" || last == "kv_a_proj_with_mqa") {
    return prefix + "{q_a_proj,kv_a_proj_with_mqa}";
  }
  if ((last == "w1" || last == "w3") && parts.size() >= 3 && IsNumber(parts[parts.size() - 2]) &&
      parts[parts.size() - 3] == "experts") {
    return prefix + "{w1,w3}";
  }
  return std::nullopt;
}

std::optional<std::string> ExpertBlockName(std::string_view module) {
  const std::vector<std::string> parts = Components(module);
  for (size_t i = parts.size(); i-- > 1;) {
    if (parts[i - 1] == "experts" && IsNumber(parts[i]) && i + 1 < parts.size()) {
      std::string block = parts[0];
      for (size_t j = 1; j < i; ++j) block += "." + parts[j];
      return block;
    }
  }
  return std::nullopt;
}

std::vector<std::string> QuantizationPlan::IgnoreList() const {
  std::vector<std::string> out;
  for (const ExcludedModule& e : excluded) {
    if (e.linear) out.push_back(e.module);
  }
  if (out.empty()) out.push_back("lm_head");
  std::sort(out.begin(), out.end());
  return out;
}

absl::StatusOr<QuantizationPlan> PlanQuantization(std::span<const formats::TensorSpec> tensors,
                                                  const SelectionOptions& options) {
  for (const auto* list : {&options.include, &options.exclude}) {
    for (const std::string& p : *list) {
      if (absl::Status s = ValidatePattern(p); !s.ok()) return s;
    }
  }
  QuantizationPlan plan;
  // 1. Candidates and their individual verdicts.
  struct Candidate {
    std::string module;
    int64_t k = 0;
    std::optional<std::string> reason;  // why excluded (nullopt: quantize)
    bool linear = true;
  };
  std::map<std::string, Candidate> candidates;  // by tensor name
  bool include_matched = options.include.empty();
  for (const formats::TensorSpec& t : tensors) {
    if (!EndsWith(t.name, ".weight") || t.shape.size() != 2) continue;
    Candidate c;
    c.module = t.name.substr(0, t.name.size() - 7);
    c.k = t.shape[1];
    std::optional<std::string> def = DefaultExclusionReason(c.module, options);
    if (def && *def == "embedding") c.linear = false;
    if (def && *def == "norm") continue;  // never a Linear
    if (!formats::IsQuantizableDType(t.dtype) && !options.fp8_weights.count(t.name)) {
      c.reason = t.dtype == "F8_E4M3"
                     ? StrCat("dtype F8_E4M3 without a dequantization scale ('", c.module,
                              ".weight_scale_inv' or '", c.module, ".weight_scale')")
                     : StrCat("dtype ", t.dtype, " is not BF16/F16/F32");
    } else if (c.k % 16 != 0) {
      c.reason = StrCat("K=", c.k, " is not a multiple of 16");
    } else if (t.shape[0] == 0 || c.k == 0) {
      c.reason = "empty tensor";
    } else if (options.default_exclusions && def) {
      c.reason = *def;
    }
    const bool included =
        options.include.empty() ||
        std::any_of(options.include.begin(), options.include.end(),
                    [&](const std::string& p) { return PatternMatches(p, c.module); });
    if (!c.reason && !options.include.empty()) {
      if (included) {
        include_matched = true;
      } else {
        c.reason = "not matched by an include pattern";
      }
    }
    if (!c.reason) {
      for (const std::string& p : options.exclude) {
        if (PatternMatches(p, c.module)) {
          c.reason = StrCat("excluded by pattern '", p, "'");
          break;
        }
      }
    }
    candidates.emplace(t.name, std::move(c));
  }
  if (!include_matched) {
    return absl::InvalidArgumentError("no quantizable module matches the include patterns");
  }
  // 2. Fused groups: all or none.
  std::map<std::string, std::vector<std::string>> groups;  // group -> member tensors
  for (const auto& [tensor, c] : candidates) {
    if (auto g = FusedGroupName(c.module)) groups[*g].push_back(tensor);
  }
  std::map<std::string, std::string> group_of;  // tensor -> group (only groups of >= 2)
  for (auto& [g, members] : groups) {
    std::sort(members.begin(), members.end(), [&](const std::string& a, const std::string& b) {
      return MemberRank(candidates[a].module) < MemberRank(candidates[b].module);
    });
    std::string blocker;
    for (const std::string& m : members) {
      if (candidates[m].reason) {
        blocker = candidates[m].module;
        break;
      }
    }
    for (const std::string& m : members) {
      if (!blocker.empty() && !candidates[m].reason) {
        candidates[m].reason = StrCat("fused with '", blocker, "', which is not quantized");
      }
      if (members.size() > 1) group_of[m] = g;
    }
  }
  // 2b. The routed experts of one MoE block: all or none. vLLM loads them into one FusedMoE
  // layer with one quantization scheme (its compressed-tensors and ModelOpt configs decide per
  // `<prefix>.experts`), so a block with some experts kept in full precision cannot be loaded.
  std::map<std::string, std::vector<std::string>> blocks;  // block -> member tensors
  for (const auto& [tensor, c] : candidates) {
    if (auto b = ExpertBlockName(c.module)) blocks[*b].push_back(tensor);
  }
  for (const auto& [block, members] : blocks) {
    std::string blocker;
    for (const std::string& m : members) {
      if (candidates[m].reason) {
        blocker = candidates[m].module;
        break;
      }
    }
    if (blocker.empty()) continue;
    for (const std::string& m : members) {
      if (!candidates[m].reason) {
        candidates[m].reason = StrCat("an expert of '", block, "' like '", blocker,
                                      "', which is not quantized (the experts of one MoE block "
                                      "are quantized all or none)");
      }
    }
  }
  // 3. Work units in input order; a group at its first member's position.
  std::set<std::string> emitted_groups;
  for (const formats::TensorSpec& t : tensors) {
    auto it = candidates.find(t.name);
    if (it == candidates.end() || it->second.reason) {
      plan.units.push_back({WorkUnit::Kind::kCopy, "", {}, {t.name}});
      continue;
    }
    auto g = group_of.find(t.name);
    if (g == group_of.end()) {
      plan.units.push_back({WorkUnit::Kind::kQuantize, "", {it->second.module}, {t.name}});
      continue;
    }
    if (!emitted_groups.insert(g->second).second) continue;
    WorkUnit u{WorkUnit::Kind::kQuantize, g->second, {}, {}};
    for (const std::string& m : groups[g->second]) {
      u.modules.push_back(candidates[m].module);
      u.tensors.push_back(m);
    }
    plan.units.push_back(std::move(u));
    ++plan.fused_groups;
  }
  for (const auto& [tensor, c] : candidates) {
    if (c.reason) {
      plan.excluded.push_back({c.module, *c.reason, c.linear});
    } else {
      plan.quantized_modules.push_back(c.module);
      if ((c.k / 16) % 2 == 1) plan.odd_k_blocks.push_back(c.module);
    }
  }
  std::sort(plan.quantized_modules.begin(), plan.quantized_modules.end());
  std::sort(plan.excluded.begin(), plan.excluded.end(),
            [](const ExcludedModule& a, const ExcludedModule& b) { return a.module < b.module; });
  std::sort(plan.odd_k_blocks.begin(), plan.odd_k_blocks.end());
  return plan;
}

}  // namespace nvfp4::pipeline
