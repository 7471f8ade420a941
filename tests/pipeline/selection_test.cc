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
