// The streaming quantize-model pipeline end to end on the tiny demo model: both layouts, sharded
// input and output, fused groups, copies, malformed inputs, determinism, cancellation, the memory
// bound, W4A4 calibration, and reading/verifying the result.
#include "pipeline/quantize_model.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "base/sha256.h"
#include "base/version.h"
#include "formats/safetensors.h"
#include "formats/sharded.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "pipeline/demo_model.h"
#include "pipeline/nvfp4_checkpoint.h"
#include "pipeline/selection.h"
#include "storage/directory.h"
#include "tests/testing/files.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/tiny_model.h"

namespace nvfp4::pipeline {
namespace {

using ::nvfp4::testing::StatusIs;

namespace fs = std::filesystem;
using ::testing::HasSubstr;

using ::nvfp4::testing::TempDir;

using ::nvfp4::testing::DirectorySnapshot;
using ::nvfp4::testing::ReadFile;
using ::nvfp4::testing::WriteFile;

// Names in `dir` (non-recursive), to check that nothing was left behind.
std::set<std::string> Entries(const fs::path& dir) {
  std::set<std::string> s;
  for (const auto& e : fs::directory_iterator(dir)) s.insert(e.path().filename().string());
  return s;
}

nlohmann::json Json(const fs::path& p) { return nlohmann::json::parse(ReadFile(p)); }

float ReadF32(const formats::CheckpointReader& r, const std::string& name) {
  auto bytes = r.ReadTensor(name);
  EXPECT_TRUE(bytes.ok()) << name << ": " << bytes.status();
  float v = 0;
  if (bytes.ok() && bytes->size() == 4) std::memcpy(&v, bytes->data(), 4);
  return v;
}

using ::nvfp4::testing::FastModelOptions;

class PipelineTest : public ::nvfp4::testing::TinyModelTest {
 protected:
  static std::string Tiny() { return TinyModel(/*seed=*/7, /*shards=*/3); }
  static std::string Tiny1() { return TinyModel(/*seed=*/7, /*shards=*/1); }
};

TEST_F(PipelineTest, DemoModelIsALlamaCheckpoint) {
  auto r = formats::CheckpointReader::OpenLocal(Tiny());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE((*r)->sharded());
  EXPECT_EQ((*r)->shards().size(), 3u);
  EXPECT_EQ((*r)->tensors().size(), 1u + 2 * 9 + 2);
  EXPECT_EQ((*r)->Find("model.layers.1.self_attn.k_proj.weight")->info->shape,
            (std::vector<int64_t>{128, 256}));
  for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json",
                        "generation_config.json", "special_tokens_map.json"}) {
    EXPECT_TRUE(fs::exists(fs::path(Tiny()) / f)) << f;
  }
  // Deterministic for a seed, and the 1-shard copy holds the same tensors.
  auto r1 = formats::CheckpointReader::OpenLocal(Tiny1());
  ASSERT_TRUE(r1.ok());
  EXPECT_EQ(*(*r)->ReadTensor("lm_head.weight"), *(*r1)->ReadTensor("lm_head.weight"));
}

TEST_F(PipelineTest, DemoModelLayersOption) {
  DemoModelOptions o;
  o.preset = "tiny";
  o.layers = 1;
  const std::string dir = tmp_.Path("one-layer");
  auto r = MakeDemoModel(dir, o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->preset.layers, 1);
  EXPECT_EQ(r->tensors, 1 + 9 + 2);
  EXPECT_EQ(Json(fs::path(dir) / "config.json")["num_hidden_layers"], 1);
  o.layers = 3;  // tiny has 2
  EXPECT_THAT(MakeDemoModel(tmp_.Path("three"), o).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--layers")));
}

// The Qwen3-30B-A3B-shaped preset: its parameter count is the published one (30.5B), and the
// plan of its real tensor names quantizes every expert with gate/up sharing a scale and keeps the
// routers (headers only: the checkpoint itself is 61 GB).
TEST(DemoPresets, Qwen3MoeShape) {
  auto p = DemoPresetByName("qwen3-30b-a3b-shape");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->parameters(), int64_t{30532122624});
  const auto specs = DemoTensorSpecs(*p);
  auto plan = PlanQuantization(specs, {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  // Per layer: q/k/v (one group), o, 128 x (gate/up group, down).
  EXPECT_EQ(plan->quantized_modules.size(), 48u * (4 + 128 * 3));
  EXPECT_EQ(plan->fused_groups, 48 * (1 + 128));
  const std::vector<std::string> ignore = plan->IgnoreList();
  EXPECT_EQ(ignore.size(), 1u + 48);  // lm_head and the routers
  EXPECT_NE(std::find(ignore.begin(), ignore.end(), "model.layers.47.mlp.gate"), ignore.end());
  for (const formats::TensorSpec& t : specs) {
    if (t.name == "model.layers.0.self_attn.o_proj.weight") {
      EXPECT_EQ(t.shape, (std::vector<int64_t>{2048, 4096}));
    }
    if (t.name == "model.layers.0.mlp.experts.127.down_proj.weight") {
      EXPECT_EQ(t.shape, (std::vector<int64_t>{2048, 768}));
    }
  }
}

TEST_F(PipelineTest, ModelOptEndToEnd) {
  const std::string out = tmp_.Path("mo");
  QuantizeModelOptions o = FastModelOptions(Layout::kModelOpt);
  o.max_shard_size = 1'000'000;  // several output shards
  std::vector<TensorProgress> events;
  PipelineHooks hooks;
  hooks.on_progress = [&](const TensorProgress& p) { events.push_back(p); };
  auto res = QuantizeModelLocal(Tiny(), out, o, hooks);
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_FALSE(res->w4a4);
  EXPECT_EQ(res->modules.size(), 14u);
  EXPECT_GT(res->shard_files.size(), 1u);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().units_done, events.back().units_total);
  EXPECT_EQ(events.back().bytes_in_done, events.back().bytes_in_total);

  // Files: index + shards, configs, every other input file unchanged.
  EXPECT_TRUE(fs::exists(fs::path(out) / "model.safetensors.index.json"));
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "generation_config.json",
                        "special_tokens_map.json"}) {
    EXPECT_EQ(ReadFile(fs::path(out) / f), ReadFile(fs::path(Tiny()) / f)) << f;
  }
  const auto hf = Json(fs::path(out) / "hf_quant_config.json");
  EXPECT_EQ(hf["producer"]["name"], "modelopt");  // the format marker loaders test
  EXPECT_EQ(hf["producer"]["version"], std::string("nvfp4-") + nvfp4::kVersion);
  EXPECT_EQ(hf["quantization"]["quant_algo"], "W4A16_NVFP4");
  EXPECT_TRUE(hf["quantization"]["kv_cache_quant_algo"].is_null());
  EXPECT_EQ(hf["quantization"]["group_size"], 16);
  EXPECT_EQ(hf["quantization"]["exclude_modules"], nlohmann::json::array({"lm_head"}));
  const auto cfg = Json(fs::path(out) / "config.json");
  const auto in_cfg = Json(fs::path(Tiny()) / "config.json");
  for (const auto& [k, v] : in_cfg.items()) EXPECT_EQ(cfg[k], v) << k;
  EXPECT_EQ(cfg["quantization_config"]["quant_method"], "modelopt");
  EXPECT_EQ(cfg["quantization_config"]["quant_algo"], "W4A16_NVFP4");
  EXPECT_EQ(cfg["quantization_config"]["group_size"], 16);

  // Tensors: ModelOpt names, dtypes and shapes.
  auto r = formats::CheckpointReader::OpenLocal(out);
  ASSERT_TRUE(r.ok()) << r.status();
  const std::string q = "model.layers.0.self_attn.q_proj";
  EXPECT_EQ((*r)->Find(q + ".weight")->info->dtype, "U8");
  EXPECT_EQ((*r)->Find(q + ".weight")->info->shape, (std::vector<int64_t>{256, 128}));
  EXPECT_EQ((*r)->Find(q + ".weight_scale")->info->dtype, "F8_E4M3");
  EXPECT_EQ((*r)->Find(q + ".weight_scale")->info->shape, (std::vector<int64_t>{256, 16}));
  EXPECT_EQ((*r)->Find(q + ".weight_scale_2")->info->shape, (std::vector<int64_t>{}));
  EXPECT_EQ((*r)->Find(q + ".input_scale"), nullptr);
  EXPECT_EQ((*r)->Find("lm_head.weight")->info->dtype, "BF16");

  // Inspect and verify.
  auto qdir = storage::OpenLocalInputDirectory(out);
  auto odir = storage::OpenLocalInputDirectory(Tiny());
  auto insp = InspectCheckpoint(**qdir);
  ASSERT_TRUE(insp.ok()) << insp.status();
  EXPECT_EQ(insp->layout, Layout::kModelOpt);
  EXPECT_EQ(insp->modules.size(), 14u);
  EXPECT_EQ(insp->metadata.at("nvfp4.method"), "rtn");
  EXPECT_NEAR(insp->bits_per_weight, 4.5, 0.01);
  auto ver = VerifyCheckpoint(**odir, **qdir);
  ASSERT_TRUE(ver.ok()) << ver.status();
  EXPECT_TRUE(ver->ok()) << ver->problems[0];
  EXPECT_EQ(ver->modules.size(), 14u);
  EXPECT_EQ(ver->copied_identical, 1 + 2 * 2 + 1 + 1);  // embed, 4 layer norms, norm, lm_head
  EXPECT_LT(ver->max_nmse, 0.02);
  EXPECT_GT(ver->mean_nmse, 0.001);
  // The verification matches the pipeline's own metrics.
  for (size_t i = 0; i < ver->modules.size(); ++i) {
    EXPECT_EQ(ver->modules[i].module, res->modules[i].module);
    EXPECT_NEAR(ver->modules[i].nmse, res->modules[i].metrics.nmse,
                1e-6 * res->modules[i].metrics.nmse + 1e-12);
  }
}

TEST_F(PipelineTest, CompressedTensorsEndToEndSameBytesAsModelOpt) {
  QuantizeModelOptions o = FastModelOptions(Layout::kCompressedTensors);
  auto ct = QuantizeModelLocal(Tiny1(), tmp_.Path("ct"), o);
  ASSERT_TRUE(ct.ok()) << ct.status();
  o.layout = Layout::kModelOpt;
  auto mo = QuantizeModelLocal(Tiny1(), tmp_.Path("mo"), o);
  ASSERT_TRUE(mo.ok()) << mo.status();
  EXPECT_FALSE(fs::exists(tmp_.Path("ct") + "/hf_quant_config.json"));
  EXPECT_TRUE(fs::exists(tmp_.Path("ct") + "/model.safetensors"));  // one shard: no index
  const auto cfg = Json(tmp_.Path("ct") + "/config.json")["quantization_config"];
  EXPECT_EQ(cfg["quant_method"], "compressed-tensors");
  EXPECT_EQ(cfg["format"], "nvfp4-pack-quantized");
  EXPECT_EQ(cfg["quantization_status"], "compressed");
  EXPECT_EQ(cfg["ignore"], nlohmann::json::array({"lm_head"}));
  EXPECT_FALSE(cfg["config_groups"]["group_0"].contains("input_activations"));

  auto rc = formats::CheckpointReader::OpenLocal(tmp_.Path("ct"));
  auto rm = formats::CheckpointReader::OpenLocal(tmp_.Path("mo"));
  ASSERT_TRUE(rc.ok() && rm.ok());
  const std::string m = "model.layers.1.mlp.down_proj";
  EXPECT_EQ(*(*rc)->ReadTensor(m + ".weight_packed"), *(*rm)->ReadTensor(m + ".weight"));
  EXPECT_EQ(*(*rc)->ReadTensor(m + ".weight_scale"), *(*rm)->ReadTensor(m + ".weight_scale"));
  EXPECT_EQ((*rc)->Find(m + ".weight_global_scale")->info->shape, (std::vector<int64_t>{1}));
  EXPECT_FLOAT_EQ(ReadF32(**rc, m + ".weight_global_scale"),
                  1.0f / ReadF32(**rm, m + ".weight_scale_2"));

  auto qdir = storage::OpenLocalInputDirectory(tmp_.Path("ct"));
  auto odir = storage::OpenLocalInputDirectory(Tiny1());
  auto ver = VerifyCheckpoint(**odir, **qdir);
  ASSERT_TRUE(ver.ok()) << ver.status();
  EXPECT_TRUE(ver->ok());
  EXPECT_EQ(ver->layout, Layout::kCompressedTensors);
  EXPECT_EQ(ver->modules.size(), 14u);
  EXPECT_LT(ver->max_nmse, 0.02);
}

TEST_F(PipelineTest, FusedGroupsShareTheGlobalScale) {
  for (Layout layout : {Layout::kModelOpt, Layout::kCompressedTensors}) {
    QuantizeModelOptions o = FastModelOptions(layout);
    o.quantize.method = Method::kSoar;  // alpha optimized over the group
    const std::string out = tmp_.Path(std::string(LayoutName(layout)));
    auto res = QuantizeModelLocal(Tiny(), out, o);
    ASSERT_TRUE(res.ok()) << res.status();
    auto r = formats::CheckpointReader::OpenLocal(out);
    ASSERT_TRUE(r.ok());
    const std::string g = layout == Layout::kModelOpt ? ".weight_scale_2" : ".weight_global_scale";
    for (int l = 0; l < 2; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      const float q = ReadF32(**r, p + "self_attn.q_proj" + g);
      EXPECT_EQ(q, ReadF32(**r, p + "self_attn.k_proj" + g));
      EXPECT_EQ(q, ReadF32(**r, p + "self_attn.v_proj" + g));
      EXPECT_EQ(ReadF32(**r, p + "mlp.gate_proj" + g), ReadF32(**r, p + "mlp.up_proj" + g));
      // Different groups have their own scale.
      EXPECT_NE(q, ReadF32(**r, p + "mlp.gate_proj" + g));
    }
  }
}

TEST_F(PipelineTest, ExcludedModulesAreByteIdentical) {
  QuantizeModelOptions o = FastModelOptions(Layout::kModelOpt);
  o.selection.exclude = {"*.down_proj", "re:model\\.layers\\.0\\.self_attn\\.k_proj"};
  const std::string out = tmp_.Path("ex");
  auto res = QuantizeModelLocal(Tiny(), out, o);
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->modules.size(), 14u - 2 - 3);
  auto in = formats::CheckpointReader::OpenLocal(Tiny());
  auto r = formats::CheckpointReader::OpenLocal(out);
  ASSERT_TRUE(in.ok() && r.ok());
  for (const char* t :
       {"lm_head.weight", "model.embed_tokens.weight", "model.norm.weight",
        "model.layers.1.input_layernorm.weight", "model.layers.0.mlp.down_proj.weight",
        "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.v_proj.weight"}) {
    ASSERT_NE((*r)->Find(t), nullptr) << t;
    EXPECT_EQ((*r)->Find(t)->info->dtype, (*in)->Find(t)->info->dtype) << t;
    EXPECT_EQ((*r)->Find(t)->info->shape, (*in)->Find(t)->info->shape) << t;
    EXPECT_EQ(*(*r)->ReadTensor(t), *(*in)->ReadTensor(t)) << t;
  }
  EXPECT_EQ((*r)->Find("model.layers.0.self_attn.q_proj.weight_scale"), nullptr);
  const auto ex = Json(fs::path(out) / "hf_quant_config.json")["quantization"]["exclude_modules"];
  EXPECT_EQ(ex.size(), 1u + 2 + 3);
  EXPECT_THAT(ex.dump(), HasSubstr("model.layers.0.self_attn.q_proj"));
  auto qdir = storage::OpenLocalInputDirectory(out);
  auto odir = storage::OpenLocalInputDirectory(Tiny());
  auto ver = VerifyCheckpoint(**odir, **qdir);
  ASSERT_TRUE(ver.ok()) << ver.status();
  EXPECT_TRUE(ver->ok());
}

TEST_F(PipelineTest, NonFiniteValuesInACopiedTensorAreReported) {
  const std::string in = ::nvfp4::testing::WithNonFiniteTensor(Tiny1(), tmp_.Path("nan-in"));
  QuantizeModelOptions o = FastModelOptions(Layout::kModelOpt);
  o.copy_chunk_bytes = 9;  // several chunks (rounded to 8 bytes) for one tensor
  auto res = QuantizeModelLocal(in, tmp_.Path("nan-out"), o);
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_THAT(res->warnings,
              ::testing::Contains(HasSubstr("tensor 'model.norm.weight' (BF16, copied "
                                            "unquantized) holds 2 NaN/Inf values")));
  // Copied as it is.
  auto src = formats::CheckpointReader::OpenLocal(in);
  auto out = formats::CheckpointReader::OpenLocal(tmp_.Path("nan-out"));
  ASSERT_TRUE(src.ok() && out.ok());
  EXPECT_EQ(*(*out)->ReadTensor("model.norm.weight"), *(*src)->ReadTensor("model.norm.weight"));
  // The clean model has no such warning.
  auto clean = QuantizeModelLocal(Tiny1(), tmp_.Path("clean-out"), o);
  ASSERT_TRUE(clean.ok()) << clean.status();
  for (const std::string& w : clean->warnings) EXPECT_THAT(w, ::testing::Not(HasSubstr("NaN")));

  o.strict_finite = true;
  EXPECT_THAT(QuantizeModelLocal(in, tmp_.Path("nan-strict"), o).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tensor 'model.norm.weight' (BF16, copied unquantized) holds")));
  EXPECT_FALSE(fs::exists(tmp_.Path("nan-strict")));
}

TEST_F(PipelineTest, DeterministicOutput) {
  QuantizeModelOptions o = FastModelOptions(Layout::kCompressedTensors);
  o.quantize.method = Method::kSoar;
  o.max_shard_size = 2'000'000;
  ASSERT_TRUE(QuantizeModelLocal(Tiny(), tmp_.Path("a"), o).ok());
  o.cpu_threads = 1;
  o.queue_depth = 3;
  o.sha256_outputs = true;  // the digests do not change the bytes
  auto rb = QuantizeModelLocal(Tiny(), tmp_.Path("b"), o);
  ASSERT_TRUE(rb.ok()) << rb.status();
  const auto a = DirectorySnapshot(tmp_.Path("a"));
  const auto b = DirectorySnapshot(tmp_.Path("b"));
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, bytes] : a) {
    ASSERT_TRUE(b.count(name)) << name;
    EXPECT_TRUE(bytes == b.at(name)) << name;
  }
  // Hashed while writing: each shard's digest is that of the published file.
  ASSERT_FALSE(rb->shard_files.empty());
  ASSERT_EQ(rb->shard_sha256.size(), rb->shard_files.size());
  for (const std::string& f : rb->shard_files) {
    EXPECT_EQ(rb->shard_sha256.at(f), Sha256::Hex(b.at(f))) << f;
  }
}

TEST_F(PipelineTest, CancellationLeavesNothing) {
  QuantizeModelOptions o = FastModelOptions(Layout::kModelOpt);
  std::atomic<int> seen{0};
  PipelineHooks hooks;
  hooks.on_progress = [&](const TensorProgress&) { ++seen; };
  hooks.cancelled = [&] { return seen.load() >= 3; };
  auto res = QuantizeModelLocal(Tiny(), tmp_.Path("out"), o, hooks);
  EXPECT_THAT(res, StatusIs(absl::StatusCode::kCancelled));
  EXPECT_TRUE(Entries(tmp_.path()).empty());  // neither the output nor a staging directory
}

TEST_F(PipelineTest, MemoryIsBoundedByAFewUnits) {
  QuantizeModelOptions o = FastModelOptions(Layout::kModelOpt);
  o.copy_chunk_bytes = 64 << 10;
  auto res = QuantizeModelLocal(Tiny(), tmp_.Path("out"), o);
  ASSERT_TRUE(res.ok()) << res.status();
  // reader (1) + queue (1) + quantizer (1) + queue (1) + writer (1)
  EXPECT_LE(res->peak_units_in_flight, 5);
  EXPECT_GE(res->peak_units_in_flight, 2);
  // The largest unit is a gate/up group (2 x 768 x 256 bf16 = 786 KB); embeddings and lm_head
  // (512 KB each) are streamed in 64 KB chunks.
  EXPECT_LE(res->peak_buffered_bytes, 5u * 2 * 768 * 256 * 2);
  EXPECT_LT(res->peak_buffered_bytes, res->tensor_bytes_in / 2);
}

TEST_F(PipelineTest, W4A4WithCalibrationInputAmax) {
  // A calibration file with input_amax for every quantized module and wmse statistics.
  auto plan_in = storage::OpenLocalInputDirectory(Tiny());
  QuantizeModelOptions o = FastModelOptions(Layout::kModelOpt);
  auto plan = PlanModel(**plan_in, o);
  ASSERT_TRUE(plan.ok());
  std::vector<std::vector<uint8_t>> store;
  std::vector<formats::TensorToWrite> cal;
  auto f32 = [&](std::vector<float> v) {
    std::vector<uint8_t> b(v.size() * 4);
    std::memcpy(b.data(), v.data(), b.size());
    store.push_back(std::move(b));
    return std::span<const uint8_t>(store.back());
  };
  store.reserve(100);
  std::map<std::string, float> amax;
  int i = 0;
  for (const std::string& m : plan->quantized_modules) {
    amax[m] = 3.0f + static_cast<float>(i++);
    const int64_t k = m.find("down_proj") != std::string::npos ? 768 : 256;
    cal.push_back({m + ".input_amax", "F32", {}, f32({amax[m]})});
    cal.push_back({m + ".input_sq", "F32", {k}, f32(std::vector<float>(k, 1.5f))});
  }
  const std::string cal_path = tmp_.Path("cal.safetensors");
  ASSERT_TRUE(formats::WriteSafetensors(cal_path, cal).ok());
  auto calib = ModelCalibration::Open(cal_path);
  ASSERT_TRUE(calib.ok()) << calib.status();
  o.calibration = calib->get();
  o.quantize.method = Method::kScaleSweep;
  o.quantize.objective = Objective::kWmse;
  for (Layout layout : {Layout::kModelOpt, Layout::kCompressedTensors}) {
    o.layout = layout;
    const std::string out = tmp_.Path(std::string(LayoutName(layout)));
    auto res = QuantizeModelLocal(Tiny(), out, o);
    ASSERT_TRUE(res.ok()) << res.status();
    EXPECT_TRUE(res->w4a4);
    auto r = formats::CheckpointReader::OpenLocal(out);
    ASSERT_TRUE(r.ok());
    const std::string p = "model.layers.1.self_attn.";
    const float group_amax = std::max({amax[p + "q_proj"], amax[p + "k_proj"], amax[p + "v_proj"]});
    const std::string o_proj = "model.layers.1.self_attn.o_proj";
    if (layout == Layout::kModelOpt) {
      EXPECT_FLOAT_EQ(ReadF32(**r, p + "k_proj.input_scale"), group_amax / 2688.0f);
      EXPECT_EQ(ReadF32(**r, p + "q_proj.input_scale"), ReadF32(**r, p + "v_proj.input_scale"));
      EXPECT_FLOAT_EQ(ReadF32(**r, o_proj + ".input_scale"), amax[o_proj] / 2688.0f);
      EXPECT_EQ(Json(fs::path(out) / "hf_quant_config.json")["quantization"]["quant_algo"],
                "NVFP4");
      const auto qc = Json(fs::path(out) / "config.json")["quantization_config"];
      EXPECT_EQ(qc["quant_algo"], "NVFP4");
      EXPECT_TRUE(qc["config_groups"]["group_0"].contains("input_activations"));
    } else {
      EXPECT_FLOAT_EQ(ReadF32(**r, p + "k_proj.input_global_scale"), 2688.0f / group_amax);
      EXPECT_EQ((*r)->Find(p + "k_proj.input_global_scale")->info->shape,
                (std::vector<int64_t>{1}));
    }
    auto qdir = storage::OpenLocalInputDirectory(out);
    auto ck = Nvfp4Checkpoint::Open(**qdir);
    ASSERT_TRUE(ck.ok()) << ck.status();
    EXPECT_EQ((*ck)->quant_algo(), "NVFP4");
    for (const Nvfp4Module& m : (*ck)->modules()) {
      ASSERT_TRUE(m.input_amax.has_value());
      if (m.name == o_proj) {
        EXPECT_NEAR(*m.input_amax, amax[o_proj], 1e-4);
      }
    }
  }
  // wmse without calibration is a user error.
  QuantizeModelOptions bad = FastModelOptions(Layout::kModelOpt);
  bad.quantize.objective = Objective::kWmse;
  EXPECT_EQ(QuantizeModelLocal(Tiny(), tmp_.Path("bad"), bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  // input_amax for only some modules is an error naming one that lacks it.
  std::vector<formats::TensorToWrite> partial = {cal[0], cal[1]};
  ASSERT_TRUE(formats::WriteSafetensors(tmp_.Path("partial.safetensors"), partial).ok());
  auto pcal = ModelCalibration::Open(tmp_.Path("partial.safetensors"));
  ASSERT_TRUE(pcal.ok());
  QuantizeModelOptions po = FastModelOptions(Layout::kModelOpt);
  po.calibration = pcal->get();
  auto pres = QuantizeModelLocal(Tiny(), tmp_.Path("partial"), po);
  EXPECT_THAT(pres, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(pres.status().message(), HasSubstr("input_amax"));
  EXPECT_FALSE(fs::exists(tmp_.Path("partial")));
}

// gptq through the pipeline: every module's input Gram from a calibration file (fused groups
// share one), error below soar's under the Hessian objective, provenance in the output metadata,
// and a module without a Gram named before any work is done.
TEST_F(PipelineTest, GptqWithCalibrationGrams) {
  auto plan_in = storage::OpenLocalInputDirectory(Tiny());
  QuantizeModelOptions o = FastModelOptions(Layout::kModelOpt);
  auto plan = PlanModel(**plan_in, o);
  ASSERT_TRUE(plan.ok());
  std::vector<std::vector<uint8_t>> store;
  store.reserve(100);
  std::vector<formats::TensorToWrite> cal;
  for (const std::string& m : plan->quantized_modules) {
    // Modules that read one input (q/k/v, gate/up of a layer) get the same Gram.
    const std::string input = m.substr(0, m.rfind('.')) +
                              (m.find("down_proj") != std::string::npos ? "d"
                               : m.find("o_proj") != std::string::npos  ? "o"
                                                                        : "");
    const uint64_t seed = std::hash<std::string>()(input);
    const int64_t k = m.find("down_proj") != std::string::npos ? 768 : 256;
    // X: 96 tokens of correlated channels (x_i = z_i + 0.7 z_{i+1}); Gram X^T X in fp64.
    std::vector<double> x(96 * k);
    uint64_t state = seed * 0x9E3779B97F4A7C15ull;
    auto uniform = [&] {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      return static_cast<double>(state >> 11) / 9007199254740992.0 - 0.5;
    };
    std::vector<double> z(96 * k);
    for (double& v : z) v = uniform();
    for (int64_t t = 0; t < 96; ++t)
      for (int64_t i = 0; i < k; ++i) x[t * k + i] = z[t * k + i] + 0.7 * z[t * k + (i + 1) % k];
    std::vector<float> gram(k * k);
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < k; ++j) {
        double acc = 0;
        for (int64_t t = 0; t < 96; ++t) acc += x[t * k + i] * x[t * k + j];
        gram[i * k + j] = static_cast<float>(acc);
      }
    std::vector<uint8_t> b(gram.size() * 4);
    std::memcpy(b.data(), gram.data(), b.size());
    store.push_back(std::move(b));
    cal.push_back({m + ".input_gram", "F32", {k, k}, std::span<const uint8_t>(store.back())});
  }
  const std::string cal_path = tmp_.Path("cal.safetensors");
  ASSERT_TRUE(formats::WriteSafetensors(cal_path, cal).ok());
  auto calib = ModelCalibration::Open(cal_path);
  ASSERT_TRUE(calib.ok()) << calib.status();
  o.calibration = calib->get();

  auto mean_output_nmse = [](const QuantizeModelResult& r) {
    double s = 0;
    for (const ModuleResult& m : r.modules) s += m.metrics.output_nmse.value_or(1e9);
    return s / static_cast<double>(r.modules.size());
  };
  // The same block scales without error feedback (soar under hessian is slow on the CPU).
  o.quantize.method = Method::kScaleSweep;
  o.quantize.objective = Objective::kHessian;
  auto sweep = QuantizeModelLocal(Tiny(), tmp_.Path("sweep"), o);
  ASSERT_TRUE(sweep.ok()) << sweep.status();
  o.quantize.method = Method::kGptq;
  o.quantize.gptq.block_scales = Method::kScaleSweep;
  o.quantize.gptq.global_scale = GptqGlobalScale::kAmax;
  auto gptq = QuantizeModelLocal(Tiny(), tmp_.Path("gptq"), o);
  ASSERT_TRUE(gptq.ok()) << gptq.status();
  ASSERT_EQ(gptq->modules.size(), sweep->modules.size());
  EXPECT_LT(mean_output_nmse(*gptq), 0.8 * mean_output_nmse(*sweep));
  for (const ModuleResult& m : gptq->modules) {
    EXPECT_EQ(m.metrics.gptq_dampening, 0.01) << m.module;
    if (m.group.empty()) continue;
    for (const ModuleResult& n : gptq->modules) {
      if (n.group == m.group) {
        EXPECT_EQ(n.global_scale, m.global_scale) << m.module;
      }
    }
  }
  auto r = formats::CheckpointReader::OpenLocal(tmp_.Path("gptq"));
  ASSERT_TRUE(r.ok());
  const auto& meta = (*r)->shards()[0]->metadata();
  ASSERT_TRUE(meta.count("nvfp4.gptq"));
  EXPECT_EQ(meta.at("nvfp4.gptq"),
            "block_scales=scalesweep,dampening=0.01,block_size=128,order=natural,global_scale=amax");
  EXPECT_EQ(meta.at("nvfp4.method"), "gptq");
  // Deterministic: the same bytes again.
  auto again = QuantizeModelLocal(Tiny(), tmp_.Path("gptq2"), o);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(DirectorySnapshot(tmp_.Path("gptq")), DirectorySnapshot(tmp_.Path("gptq2")));

  // A module without a Gram: named, before any work (no progress event, no output).
  std::vector<formats::TensorToWrite> partial(cal.begin(), cal.end() - 1);
  ASSERT_TRUE(formats::WriteSafetensors(tmp_.Path("partial.safetensors"), partial).ok());
  auto pcal = ModelCalibration::Open(tmp_.Path("partial.safetensors"));
  ASSERT_TRUE(pcal.ok());
  o.calibration = pcal->get();
  int events = 0;
  PipelineHooks hooks;
  hooks.on_progress = [&](const TensorProgress&) { ++events; };
  auto missing = QuantizeModelLocal(Tiny(), tmp_.Path("missing"), o, hooks);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(missing.status().message(), HasSubstr(plan->quantized_modules.back()));
  EXPECT_THAT(missing.status().message(), HasSubstr("input_gram"));
  EXPECT_EQ(events, 0);
  EXPECT_FALSE(fs::exists(tmp_.Path("missing")));
  // So do soar's hessian and wmse objectives (the module has no entry at all).
  for (Objective objective : {Objective::kHessian, Objective::kWmse}) {
    QuantizeModelOptions so = o;
    so.quantize.method = Method::kSoar;
    so.quantize.objective = objective;
    auto res = QuantizeModelLocal(Tiny(), tmp_.Path("missing-soar"), so, hooks);
    EXPECT_THAT(res, StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(res.status().message(), HasSubstr(plan->quantized_modules.back()));
    EXPECT_THAT(res.status().message(),
                HasSubstr(objective == Objective::kHessian ? "objective hessian needs"
                                                           : "objective wmse needs"));
    EXPECT_EQ(events, 0);
    EXPECT_FALSE(fs::exists(tmp_.Path("missing-soar")));
  }
  // No calibration at all.
  o.calibration = nullptr;
  EXPECT_EQ(QuantizeModelLocal(Tiny(), tmp_.Path("none"), o).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// A copy of the tiny model that a test can break.
class MalformedTest : public PipelineTest {
 protected:
  std::string Copy() {
    const std::string dst = tmp_.Path("in");
    fs::copy(Tiny(), dst, fs::copy_options::recursive);
    return dst;
  }
  // Runs the pipeline into tmp/out and expects a failure mentioning every piece of `expect`.
  void ExpectFailure(const std::string& in, const std::vector<std::string>& expect) {
    auto res = QuantizeModelLocal(in, tmp_.Path("out"), FastModelOptions(Layout::kModelOpt));
    ASSERT_FALSE(res.ok());
    EXPECT_THAT(res, StatusIs(absl::StatusCode::kInvalidArgument));
    for (const std::string& e : expect) EXPECT_THAT(res.status().message(), HasSubstr(e));
    EXPECT_EQ(Entries(tmp_.path()), std::set<std::string>{"in"});  // nothing written
  }
};

TEST_F(MalformedTest, TruncatedShard) {
  const std::string in = Copy();
  const fs::path shard = fs::path(in) / "model-00002-of-00003.safetensors";
  fs::resize_file(shard, fs::file_size(shard) - 100);
  ExpectFailure(in, {"model-00002-of-00003.safetensors"});
}

TEST_F(MalformedTest, IndexNamesAMissingFile) {
  const std::string in = Copy();
  fs::remove(fs::path(in) / "model-00003-of-00003.safetensors");
  auto res = QuantizeModelLocal(in, tmp_.Path("out"), FastModelOptions(Layout::kModelOpt));
  ASSERT_FALSE(res.ok());
  EXPECT_THAT(res.status().message(), HasSubstr("model-00003-of-00003.safetensors"));
  EXPECT_THAT(res.status().message(), HasSubstr("lm_head.weight"));
  EXPECT_EQ(Entries(tmp_.path()), std::set<std::string>{"in"});
}

TEST_F(MalformedTest, TensorInTwoShards) {
  const std::string in = Copy();
  // Shard 3 also gets a copy of a tensor of shard 1 (rewrite shard 3 with one more tensor).
  auto s1 = formats::SafetensorsReader::Open(in + "/model-00001-of-00003.safetensors");
  auto s3 = formats::SafetensorsReader::Open(in + "/model-00003-of-00003.safetensors");
  ASSERT_TRUE(s1.ok() && s3.ok());
  std::vector<std::vector<uint8_t>> keep;
  std::vector<formats::TensorToWrite> t;
  keep.reserve(16);
  for (const auto* r : {s3->get(), s1->get()}) {
    for (const auto& info : r->tensors()) {
      if (r == s1->get() && info.name != "model.embed_tokens.weight") continue;
      keep.push_back(*r->ReadTensor(info));
      t.push_back({info.name, info.dtype, info.shape, keep.back()});
    }
  }
  ASSERT_TRUE(formats::WriteSafetensors(in + "/model-00003-of-00003.safetensors", t).ok());
  ExpectFailure(in, {"model.embed_tokens.weight", "two shards"});
}

TEST_F(MalformedTest, BadHeader) {
  const std::string in = Copy();
  const fs::path shard = fs::path(in) / "model-00001-of-00003.safetensors";
  std::string bytes = ReadFile(shard);
  const size_t pos = bytes.find("\"dtype\":\"BF16\"");
  ASSERT_NE(pos, std::string::npos);
  bytes.replace(pos, 14, "\"dtype\":\"BX16\"");
  WriteFile(shard, bytes);
  ExpectFailure(in, {"model-00001-of-00003.safetensors", "BX16"});
}

TEST_F(MalformedTest, AlreadyQuantizedInputAndExistingOutput) {
  QuantizeModelOptions o = FastModelOptions(Layout::kModelOpt);
  ASSERT_TRUE(QuantizeModelLocal(Tiny(), tmp_.Path("q"), o).ok());
  auto again = QuantizeModelLocal(tmp_.Path("q"), tmp_.Path("q2"), o);
  EXPECT_THAT(again, StatusIs(absl::StatusCode::kFailedPrecondition));
  auto exists = QuantizeModelLocal(Tiny(), tmp_.Path("q"), o);
  EXPECT_THAT(exists, StatusIs(absl::StatusCode::kAlreadyExists));
}

TEST_F(MalformedTest, CorruptNvfp4CheckpointsAreDetected) {
  QuantizeModelOptions o = FastModelOptions(Layout::kModelOpt);
  ASSERT_TRUE(QuantizeModelLocal(Tiny1(), tmp_.Path("q"), o).ok());
  const fs::path file = fs::path(tmp_.Path("q")) / "model.safetensors";
  auto reader = formats::SafetensorsReader::Open(file.string());
  ASSERT_TRUE(reader.ok());
  const auto* scale = (*reader)->Find("model.layers.0.mlp.up_proj.weight_scale");
  ASSERT_NE(scale, nullptr);
  const uint64_t offset = scale->offset + 5;
  reader->reset();
  std::string bytes = ReadFile(file);
  bytes[offset] = static_cast<char>(0x7F);  // E4M3 NaN
  WriteFile(file, bytes);
  auto qdir = storage::OpenLocalInputDirectory(tmp_.Path("q"));
  auto odir = storage::OpenLocalInputDirectory(Tiny1());
  auto ver = VerifyCheckpoint(**odir, **qdir);
  EXPECT_THAT(ver, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(ver.status().message(), HasSubstr("model.layers.0.mlp.up_proj.weight_scale"));
  EXPECT_THAT(ver.status().message(), HasSubstr("model.safetensors"));
  // A module with a missing piece is a layout error.
  auto r2 = formats::SafetensorsReader::Open(file.string());
  std::vector<std::vector<uint8_t>> keep;
  std::vector<formats::TensorToWrite> t;
  keep.reserve(200);
  for (const auto& info : (*r2)->tensors()) {
    if (info.name == "model.layers.1.self_attn.o_proj.weight_scale") continue;
    keep.push_back(*(*r2)->ReadTensor(info));
    t.push_back({info.name, info.dtype, info.shape, keep.back()});
  }
  r2->reset();
  ASSERT_TRUE(formats::WriteSafetensors(file.string(), t).ok());
  auto ck = Nvfp4Checkpoint::Open(**qdir);
  EXPECT_THAT(ck, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ck.status().message(), HasSubstr("model.layers.1.self_attn.o_proj.weight_scale"));
}

}  // namespace
}  // namespace nvfp4::pipeline
