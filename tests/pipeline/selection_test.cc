// Module selection: default exclusions, fused groups (all or none), include/exclude patterns.
#include "pipeline/selection.h"

#include <algorithm>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pipeline/layouts.h"

namespace nvfp4::pipeline {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<formats::TensorSpec> Llama(int64_t k = 64) {
  std::vector<formats::TensorSpec> t = {{"model.embed_tokens.weight", "BF16", {100, k}}};
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t.push_back({p + "input_layernorm.weight", "BF16", {k}});
    t.push_back({p + "self_attn.q_proj.weight", "BF16", {k, k}});
    t.push_back({p + "self_attn.k_proj.weight", "BF16", {k / 2, k}});
    t.push_back({p + "self_attn.v_proj.weight", "BF16", {k / 2, k}});
    t.push_back({p + "self_attn.o_proj.weight", "BF16", {k, k}});
    t.push_back({p + "mlp.gate_proj.weight", "BF16", {2 * k, k}});
    t.push_back({p + "mlp.up_proj.weight", "BF16", {2 * k, k}});
    t.push_back({p + "mlp.down_proj.weight", "BF16", {k, 2 * k}});
  }
  t.push_back({"model.norm.weight", "BF16", {k}});
  t.push_back({"lm_head.weight", "BF16", {100, k}});
  return t;
}

const WorkUnit* UnitWith(const QuantizationPlan& plan, const std::string& tensor) {
  for (const WorkUnit& u : plan.units) {
    if (std::find(u.tensors.begin(), u.tensors.end(), tensor) != u.tensors.end()) return &u;
  }
  return nullptr;
}

TEST(DefaultExclusion, NamesTheReason) {
  EXPECT_EQ(DefaultExclusionReason("lm_head"), "output head");
  EXPECT_EQ(DefaultExclusionReason("model.embed_tokens"), "embedding");
  EXPECT_EQ(DefaultExclusionReason("model.layers.0.input_layernorm"), "norm");
  EXPECT_EQ(DefaultExclusionReason("model.layers.0.mlp.gate"), "MoE router");
  EXPECT_EQ(DefaultExclusionReason("model.layers.0.mlp.shared_expert_gate"), "MoE router");
  EXPECT_EQ(DefaultExclusionReason("model.layers.0.feed_forward.router"), "MoE router");
  EXPECT_EQ(DefaultExclusionReason("model.vision_tower.blocks.0.attn.qkv"),
            "vision tower/projector");
  EXPECT_EQ(DefaultExclusionReason("multi_modal_projector.linear_1"), "vision tower/projector");
  EXPECT_EQ(DefaultExclusionReason("model.mtp.0.proj"), "MTP head");
  EXPECT_EQ(DefaultExclusionReason("model.layers.3.mixer.conv1d"), "conv");
  EXPECT_EQ(DefaultExclusionReason("model.layers.0.mlp.gate_proj"), std::nullopt);
  EXPECT_EQ(DefaultExclusionReason("model.layers.0.self_attn.o_proj"), std::nullopt);
  SelectionOptions deepseek;
  deepseek.num_hidden_layers = 61;
  deepseek.num_mtp_layers = 1;
  EXPECT_EQ(DefaultExclusionReason("model.layers.61.mlp.down_proj", deepseek), "MTP head");
  EXPECT_EQ(DefaultExclusionReason("model.layers.60.mlp.down_proj", deepseek), std::nullopt);
}

TEST(FusedGroups, QkvGateUpAndExperts) {
  EXPECT_EQ(FusedGroupName("m.layers.0.self_attn.k_proj"), "m.layers.0.self_attn.{q,k,v}_proj");
  EXPECT_EQ(FusedGroupName("m.layers.0.mlp.up_proj"), "m.layers.0.mlp.{gate,up}_proj");
  EXPECT_EQ(FusedGroupName("m.layers.0.block_sparse_moe.experts.3.w3"),
            "m.layers.0.block_sparse_moe.experts.3.{w1,w3}");
  EXPECT_EQ(FusedGroupName("m.layers.0.block_sparse_moe.experts.3.w2"), std::nullopt);
  EXPECT_EQ(FusedGroupName("m.layers.0.self_attn.o_proj"), std::nullopt);
}

TEST(Patterns, GlobAndRegex) {
  EXPECT_TRUE(PatternMatches("*.down_proj", "model.layers.0.mlp.down_proj"));
  EXPECT_TRUE(PatternMatches("model.layers.*.mlp.*", "model.layers.10.mlp.up_proj"));
  EXPECT_FALSE(PatternMatches("*.q_proj", "model.layers.0.self_attn.k_proj"));
  EXPECT_TRUE(PatternMatches("re:model\\.layers\\.1\\.", "model.layers.1.mlp.up_proj"));
  EXPECT_FALSE(PatternMatches("re:layers\\.1\\.", "model.layers.1.mlp.up_proj"));  // anchored
  EXPECT_TRUE(PatternMatches("re:.*layers\\.1\\.", "model.layers.1.mlp.up_proj"));
  EXPECT_FALSE(ValidatePattern("re:([").ok());
}

TEST(Plan, DefaultsQuantizeTheLinearLayersInFusedGroups) {
  const auto specs = Llama();
  auto plan = PlanQuantization(specs, {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->quantized_modules.size(), 14u);
  EXPECT_EQ(plan->fused_groups, 4);
  const WorkUnit* qkv = UnitWith(*plan, "model.layers.0.self_attn.k_proj.weight");
  ASSERT_NE(qkv, nullptr);
  EXPECT_EQ(qkv->kind, WorkUnit::Kind::kQuantize);
  EXPECT_THAT(qkv->modules,
              ElementsAre("model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj",
                          "model.layers.0.self_attn.v_proj"));
  // Every tensor is in exactly one unit.
  size_t n = 0;
  for (const WorkUnit& u : plan->units) n += u.tensors.size();
  EXPECT_EQ(n, specs.size());
  EXPECT_EQ(UnitWith(*plan, "lm_head.weight")->kind, WorkUnit::Kind::kCopy);
  EXPECT_EQ(UnitWith(*plan, "model.embed_tokens.weight")->kind, WorkUnit::Kind::kCopy);
  // Ignore list: Linear modules only (lm_head), not embeddings or norms.
  EXPECT_THAT(plan->IgnoreList(), ElementsAre("lm_head"));
  // K = 64: K/16 = 4 is even; down_proj K = 128 too.
  EXPECT_TRUE(plan->odd_k_blocks.empty());
}

TEST(Plan, ExcludingOneMemberExcludesTheWholeGroup) {
  const auto specs = Llama();
  SelectionOptions o;
  o.exclude = {"model.layers.0.self_attn.k_proj"};
  auto plan = PlanQuantization(specs, o);
  ASSERT_TRUE(plan.ok());
  for (const char* m : {"q_proj", "k_proj", "v_proj"}) {
    const std::string t = std::string("model.layers.0.self_attn.") + m + ".weight";
    EXPECT_EQ(UnitWith(*plan, t)->kind, WorkUnit::Kind::kCopy) << t;
  }
  auto it = std::find_if(plan->excluded.begin(), plan->excluded.end(), [](const ExcludedModule& e) {
    return e.module == "model.layers.0.self_attn.q_proj";
  });
  ASSERT_NE(it, plan->excluded.end());
  EXPECT_THAT(it->reason, HasSubstr("fused with 'model.layers.0.self_attn.k_proj'"));
  EXPECT_EQ(UnitWith(*plan, "model.layers.1.self_attn.q_proj.weight")->kind,
            WorkUnit::Kind::kQuantize);
}

TEST(Plan, KNotMultipleOf16AndOddBlocks) {
  auto specs = Llama(48);  // K/16 = 3: odd
  specs.push_back({"model.extra.proj.weight", "BF16", {32, 40}});
  auto plan = PlanQuantization(specs, {});
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(UnitWith(*plan, "model.extra.proj.weight")->kind, WorkUnit::Kind::kCopy);
  EXPECT_FALSE(plan->odd_k_blocks.empty());
  auto ignore = plan->IgnoreList();
  EXPECT_NE(std::find(ignore.begin(), ignore.end(), "model.extra.proj"), ignore.end());
}

TEST(Plan, IncludeRestrictsAndExcludeWins) {
  const auto specs = Llama();
  SelectionOptions o;
  o.include = {"*.mlp.*"};
  o.exclude = {"re:model\\.layers\\.1\\."};
  auto plan = PlanQuantization(specs, o);
  ASSERT_TRUE(plan.ok());
  EXPECT_THAT(plan->quantized_modules,
              ElementsAre("model.layers.0.mlp.down_proj", "model.layers.0.mlp.gate_proj",
                          "model.layers.0.mlp.up_proj"));
  SelectionOptions none;
  none.include = {"*.nothing"};
  EXPECT_FALSE(PlanQuantization(specs, none).ok());
  SelectionOptions bad;
  bad.exclude = {"re:(["};
  EXPECT_EQ(PlanQuantization(specs, bad).status().code(), absl::StatusCode::kInvalidArgument);
}

// The tensor names of a tiny MoE checkpoint as Mixtral, Qwen2/3-MoE and DeepSeek-V2/V3 store
// them (per-expert 2-D weights; routers unquantized).
enum class MoeNames { kMixtral, kQwenMoe, kDeepSeekV3 };
std::vector<formats::TensorSpec> Moe(MoeNames names, int layers = 2, int experts = 4) {
  const int64_t h = 64, i = 32;
  std::vector<formats::TensorSpec> t = {{"model.embed_tokens.weight", "BF16", {100, h}}};
  for (int l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t.push_back({p + "input_layernorm.weight", "BF16", {h}});
    if (names == MoeNames::kDeepSeekV3) {
      t.push_back({p + "self_attn.q_a_proj.weight", "BF16", {48, h}});
      t.push_back({p + "self_attn.q_a_layernorm.weight", "BF16", {48}});
      t.push_back({p + "self_attn.q_b_proj.weight", "BF16", {96, 48}});
      t.push_back({p + "self_attn.kv_a_proj_with_mqa.weight", "BF16", {40, h}});
      t.push_back({p + "self_attn.kv_a_layernorm.weight", "BF16", {32}});
      t.push_back({p + "self_attn.kv_b_proj.weight", "BF16", {128, 32}});
    } else {
      for (const char* m : {"q_proj", "k_proj", "v_proj"}) {
        t.push_back({p + "self_attn." + m + ".weight", "BF16", {h, h}});
      }
    }
    t.push_back({p + "self_attn.o_proj.weight", "BF16", {h, h}});
    if (names == MoeNames::kDeepSeekV3 && l == 0) {  // first_k_dense_replace = 1
      t.push_back({p + "mlp.gate_proj.weight", "BF16", {2 * h, h}});
      t.push_back({p + "mlp.up_proj.weight", "BF16", {2 * h, h}});
      t.push_back({p + "mlp.down_proj.weight", "BF16", {h, 2 * h}});
      continue;
    }
    const std::string moe = p + (names == MoeNames::kMixtral ? "block_sparse_moe." : "mlp.");
    t.push_back({moe + "gate.weight", "BF16", {experts, h}});
    if (names == MoeNames::kDeepSeekV3) {
      t.push_back({moe + "gate.e_score_correction_bias", "F32", {experts}});
    }
    for (int e = 0; e < experts; ++e) {
      const std::string x = moe + "experts." + std::to_string(e) + ".";
      const bool mixtral = names == MoeNames::kMixtral;
      t.push_back({x + (mixtral ? "w1" : "gate_proj") + ".weight", "BF16", {i, h}});
      t.push_back({x + (mixtral ? "w2" : "down_proj") + ".weight", "BF16", {h, i}});
      t.push_back({x + (mixtral ? "w3" : "up_proj") + ".weight", "BF16", {i, h}});
    }
    if (names != MoeNames::kMixtral) {
      const std::string s = moe + (names == MoeNames::kQwenMoe ? "shared_expert." : "shared_experts.");
      t.push_back({s + "gate_proj.weight", "BF16", {i, h}});
      t.push_back({s + "up_proj.weight", "BF16", {i, h}});
      t.push_back({s + "down_proj.weight", "BF16", {h, i}});
      if (names == MoeNames::kQwenMoe) t.push_back({moe + "shared_expert_gate.weight", "BF16", {1, h}});
    }
  }
  t.push_back({"model.norm.weight", "BF16", {h}});
  t.push_back({"lm_head.weight", "BF16", {100, h}});
  return t;
}

std::string ReasonOf(const QuantizationPlan& plan, const std::string& module) {
  for (const ExcludedModule& e : plan.excluded) {
    if (e.module == module) return e.reason;
  }
  return "";
}

TEST(FusedGroups, MlaAndExpertBlocks) {
  EXPECT_EQ(FusedGroupName("m.layers.3.self_attn.kv_a_proj_with_mqa"),
            "m.layers.3.self_attn.{q_a_proj,kv_a_proj_with_mqa}");
  EXPECT_EQ(FusedGroupName("m.layers.3.self_attn.q_b_proj"), std::nullopt);
  EXPECT_EQ(FusedGroupName("m.layers.3.mlp.experts.7.up_proj"), "m.layers.3.mlp.experts.7.{gate,up}_proj");
  EXPECT_EQ(ExpertBlockName("m.layers.3.mlp.experts.7.up_proj"), "m.layers.3.mlp.experts");
  EXPECT_EQ(ExpertBlockName("m.layers.3.block_sparse_moe.experts.0.w2"),
            "m.layers.3.block_sparse_moe.experts");
  EXPECT_EQ(ExpertBlockName("m.layers.3.mlp.shared_experts.up_proj"), std::nullopt);
  EXPECT_EQ(ExpertBlockName("m.layers.3.mlp.gate"), std::nullopt);
  EXPECT_EQ(ExpertBlockName("m.layers.3.mlp.experts"), std::nullopt);
}

TEST(Plan, MixtralExpertsShareW1W3AndTheRouterIsIgnored) {
  auto plan = PlanQuantization(Moe(MoeNames::kMixtral), {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  const WorkUnit* w13 = UnitWith(*plan, "model.layers.1.block_sparse_moe.experts.2.w3.weight");
  ASSERT_NE(w13, nullptr);
  EXPECT_THAT(w13->modules, ElementsAre("model.layers.1.block_sparse_moe.experts.2.w1",
                                        "model.layers.1.block_sparse_moe.experts.2.w3"));
  EXPECT_THAT(UnitWith(*plan, "model.layers.1.block_sparse_moe.experts.2.w2.weight")->modules,
              ElementsAre("model.layers.1.block_sparse_moe.experts.2.w2"));
  EXPECT_EQ(ReasonOf(*plan, "model.layers.0.block_sparse_moe.gate"), "MoE router");
  EXPECT_THAT(plan->IgnoreList(),
              ElementsAre("lm_head", "model.layers.0.block_sparse_moe.gate",
                          "model.layers.1.block_sparse_moe.gate"));
  // 2 layers x (qkv + o + 4 experts x 3).
  EXPECT_EQ(plan->quantized_modules.size(), 2u * (4 + 12));
  EXPECT_EQ(plan->fused_groups, 2 * (1 + 4));
}

TEST(Plan, QwenMoeSharedExpertQuantizedAndItsGateIgnored) {
  auto plan = PlanQuantization(Moe(MoeNames::kQwenMoe), {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(UnitWith(*plan, "model.layers.0.mlp.experts.3.up_proj.weight")->modules,
              ElementsAre("model.layers.0.mlp.experts.3.gate_proj",
                          "model.layers.0.mlp.experts.3.up_proj"));
  EXPECT_THAT(UnitWith(*plan, "model.layers.0.mlp.shared_expert.gate_proj.weight")->modules,
              ElementsAre("model.layers.0.mlp.shared_expert.gate_proj",
                          "model.layers.0.mlp.shared_expert.up_proj"));
  EXPECT_THAT(plan->IgnoreList(),
              ElementsAre("lm_head", "model.layers.0.mlp.gate", "model.layers.0.mlp.shared_expert_gate",
                          "model.layers.1.mlp.gate", "model.layers.1.mlp.shared_expert_gate"));
}

TEST(Plan, DeepSeekV3MlaGroupDenseLayerRouterBiasAndMtpLayer) {
  SelectionOptions o;
  o.num_hidden_layers = 2;  // layer 2 is the MTP layer (num_nextn_predict_layers = 1)
  o.num_mtp_layers = 1;
  auto specs = Moe(MoeNames::kDeepSeekV3, /*layers=*/3);
  specs.push_back({"model.layers.2.eh_proj.weight", "BF16", {64, 128}});
  specs.push_back({"model.layers.2.enorm.weight", "BF16", {64}});
  specs.push_back({"model.layers.2.shared_head.head.weight", "BF16", {100, 64}});
  auto plan = PlanQuantization(specs, o);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(UnitWith(*plan, "model.layers.1.self_attn.kv_a_proj_with_mqa.weight")->modules,
              ElementsAre("model.layers.1.self_attn.q_a_proj",
                          "model.layers.1.self_attn.kv_a_proj_with_mqa"));
  // The dense first layer, the routed and the shared experts are quantized.
  EXPECT_EQ(UnitWith(*plan, "model.layers.0.mlp.up_proj.weight")->kind, WorkUnit::Kind::kQuantize);
  EXPECT_EQ(UnitWith(*plan, "model.layers.1.mlp.experts.0.down_proj.weight")->kind,
            WorkUnit::Kind::kQuantize);
  EXPECT_EQ(UnitWith(*plan, "model.layers.1.mlp.shared_experts.down_proj.weight")->kind,
            WorkUnit::Kind::kQuantize);
  // The router and its bias are copied; the router is in the ignore list.
  EXPECT_EQ(UnitWith(*plan, "model.layers.1.mlp.gate.e_score_correction_bias")->kind,
            WorkUnit::Kind::kCopy);
  EXPECT_EQ(ReasonOf(*plan, "model.layers.1.mlp.gate"), "MoE router");
  // The MTP layer (index >= num_hidden_layers) is kept whole, experts included.
  for (const char* m : {"model.layers.2.eh_proj", "model.layers.2.mlp.experts.1.gate_proj",
                        "model.layers.2.self_attn.o_proj", "model.layers.2.shared_head.head"}) {
    EXPECT_EQ(UnitWith(*plan, std::string(m) + ".weight")->kind, WorkUnit::Kind::kCopy) << m;
  }
  EXPECT_EQ(ReasonOf(*plan, "model.layers.2.mlp.experts.1.gate_proj"), "MTP head");
  for (const std::string& m : plan->quantized_modules) {
    EXPECT_EQ(m.rfind("model.layers.2.", 0), std::string::npos) << m;
  }
}

TEST(Plan, TheExpertsOfOneBlockAreQuantizedAllOrNone) {
  SelectionOptions o;
  o.exclude = {"model.layers.1.mlp.experts.2.down_proj"};
  auto plan = PlanQuantization(Moe(MoeNames::kQwenMoe), o);
  ASSERT_TRUE(plan.ok()) << plan.status();
  for (int e = 0; e < 4; ++e) {
    const std::string m = "model.layers.1.mlp.experts." + std::to_string(e) + ".gate_proj";
    EXPECT_EQ(UnitWith(*plan, m + ".weight")->kind, WorkUnit::Kind::kCopy) << m;
    if (e != 2) {
      EXPECT_THAT(ReasonOf(*plan, m), HasSubstr("experts of one MoE block")) << m;
    }
  }
  // The other layer's experts and this layer's shared expert stay quantized.
  EXPECT_EQ(UnitWith(*plan, "model.layers.0.mlp.experts.2.down_proj.weight")->kind,
            WorkUnit::Kind::kQuantize);
  EXPECT_EQ(UnitWith(*plan, "model.layers.1.mlp.shared_expert.down_proj.weight")->kind,
            WorkUnit::Kind::kQuantize);
}

TEST(Layouts, ConfigsAsTheSpecShows) {
  auto mo = QuantizationConfig(Layout::kModelOpt, false, {"lm_head"});
  EXPECT_EQ(mo["quant_method"], "modelopt");
  EXPECT_EQ(mo["quant_algo"], "W4A16_NVFP4");
  EXPECT_FALSE(mo["config_groups"]["group_0"].contains("input_activations"));
  auto mo4 = QuantizationConfig(Layout::kModelOpt, true, {"lm_head"});
  EXPECT_EQ(mo4["quant_algo"], "NVFP4");
  EXPECT_EQ(mo4["config_groups"]["group_0"]["input_activations"],
            mo4["config_groups"]["group_0"]["weights"]);
  auto hf = HfQuantConfig(true, {"lm_head"});
  for (const char* k : {"quant_algo", "kv_cache_quant_algo", "group_size", "exclude_modules"}) {
    EXPECT_TRUE(hf["quantization"].contains(k)) << k;
  }
  auto ct = QuantizationConfig(Layout::kCompressedTensors, true, {"lm_head"});
  EXPECT_EQ(ct["format"], "nvfp4-pack-quantized");
  EXPECT_EQ(ct["config_groups"]["group_0"]["weights"]["strategy"], "tensor_group");
  EXPECT_EQ(ct["config_groups"]["group_0"]["input_activations"]["dynamic"], "local");
}

}  // namespace
}  // namespace nvfp4::pipeline
