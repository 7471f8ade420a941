// FP8 checkpoints as inputs (pipeline/fp8_source.h, docs/CHECKPOINTS.md "FP8 sources"): each
// layout quantizes to exactly the bytes of the same model stored as its fp32 dequantization, the
// scales are not copied, unquantized FP8 weights become BF16, the output config is NVFP4 only,
// and broken scales fail with the file and tensor named.
#include "pipeline/fp8_source.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <set>

#include "formats/dtypes.h"
#include "formats/safetensors.h"
#include "formats/sharded.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/tensor_prep.h"
#include "nlohmann/json.hpp"
#include "pipeline/demo_model.h"
#include "pipeline/nvfp4_checkpoint.h"
#include "pipeline/quantize_model.h"
#include "storage/directory.h"
#include "tests/testing/files.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/tiny_model.h"

namespace nvfp4::pipeline {
namespace {

namespace fs = std::filesystem;
using ::nvfp4::testing::FastModelOptions;
using ::nvfp4::testing::ReadFile;
using ::nvfp4::testing::StatusIs;
using ::nvfp4::testing::TempDir;
using ::nvfp4::testing::WriteFile;
using ::testing::AllOf;
using ::testing::HasSubstr;

// How the test model stores its FP8 weights.
enum class Scheme {
  kBlock,           // weight_scale_inv F32 per 128x128 block, quant_method "fp8"
  kChannelBf16,     // compressed-tensors: weight_scale BF16 [N, 1]
  kTensorModelOpt,  // ModelOpt: weight_scale F32 [], input_scale F32 [], hf_quant_config.json
};

struct Tensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

int64_t Numel(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::vector<uint8_t> F32Bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

std::vector<uint8_t> Bf16Bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 2);
  for (size_t i = 0; i < v.size(); ++i) {
    const uint16_t h = formats::FloatToBf16(v[i]);
    b[2 * i] = static_cast<uint8_t>(h & 0xFF);
    b[2 * i + 1] = static_cast<uint8_t>(h >> 8);
  }
  return b;
}

// A small Llama-like layer whose Linear weights are FP8 (`fp8`) or their exact fp32
// dequantization (the reference), plus the tensors that stay as they are. Shapes give partial
// 128x128 edge blocks (N = 130, K = 272, K = 96).
class Fp8Model {
 public:
  Fp8Model(Scheme scheme, uint32_t seed) : scheme_(scheme), rng_(seed) {
    Plain("model.embed_tokens.weight", {64, 272});
    Plain("model.layers.0.input_layernorm.weight", {272});
    Linear("model.layers.0.self_attn.q_proj", 130, 272);
    Linear("model.layers.0.self_attn.k_proj", 64, 272);
    Linear("model.layers.0.self_attn.v_proj", 64, 272);
    Linear("model.layers.0.self_attn.o_proj", 272, 144);
    Plain("model.layers.0.mlp.gate.weight", {8, 272});  // a router: stays BF16
    Add({"model.layers.0.mlp.gate.e_score_correction_bias", "F32", {8}, F32Bytes(Values(8))});
    Linear("model.layers.0.mlp.gate_proj", 96, 272);
    Linear("model.layers.0.mlp.up_proj", 96, 272);
    Linear("model.layers.0.mlp.down_proj", 272, 96);
    Plain("model.norm.weight", {272});
    Plain("lm_head.weight", {64, 272});
  }

  // Writes the FP8 checkpoint (reference = false) or the fp32 one, with config.json.
  void Write(const std::string& dir, bool reference) const {
    fs::create_directories(dir);
    std::vector<formats::TensorToWrite> t;
    for (const Tensor& x : reference ? ref_ : fp8_)
      t.push_back({x.name, x.dtype, x.shape, x.bytes});
    ASSERT_TRUE(formats::WriteSafetensors(dir + "/model.safetensors", t).ok());
    nlohmann::ordered_json config = {
        {"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"num_hidden_layers", 1}};
    if (!reference) {
      switch (scheme_) {
        case Scheme::kBlock:
          config["quantization_config"] = {{"activation_scheme", "dynamic"},
                                           {"fmt", "e4m3"},
                                           {"quant_method", "fp8"},
                                           {"weight_block_size", {128, 128}}};
          break;
        case Scheme::kChannelBf16:
          config["quantization_config"] = {{"quant_method", "compressed-tensors"},
                                           {"format", "float-quantized"},
                                           {"config_groups",
                                            {{"group_0",
                                              {{"targets", {"Linear"}},
                                               {"weights",
                                                {{"num_bits", 8},
                                                 {"type", "float"},
                                                 {"strategy", "channel"},
                                                 {"symmetric", true},
                                                 {"dynamic", false}}}}}}}};
          break;
        case Scheme::kTensorModelOpt:
          WriteFile(dir + "/hf_quant_config.json",
                    R"({"producer": {"name": "modelopt", "version": "0.29.0"},
                        "quantization": {"quant_algo": "FP8", "kv_cache_quant_algo": null,
                                         "exclude_modules": ["lm_head"]}})");
          break;
      }
    }
    WriteFile(dir + "/config.json", config.dump(2));
  }

  // The fp32 dequantization of FP8 weight `name`.
  const std::vector<float>& Dequantized(const std::string& name) const { return deq_.at(name); }
  std::vector<Tensor>& fp8_tensors() { return fp8_; }

 private:
  std::vector<float> Values(int64_t n, float stddev = 0.02f) {
    std::normal_distribution<float> d(0.0f, stddev);
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = d(rng_);
    return v;
  }
  void Add(Tensor t) {
    fp8_.push_back(t);
    ref_.push_back(std::move(t));
  }
  void Plain(const std::string& name, std::vector<int64_t> shape) {
    Add({name, "BF16", shape, Bf16Bytes(Values(Numel(shape)))});
  }
  void Linear(const std::string& module, int64_t n, int64_t k) {
    // Tiling of this scheme's scales.
    const int64_t br = scheme_ == Scheme::kBlock ? 128 : (scheme_ == Scheme::kChannelBf16 ? 1 : n);
    const int64_t bc = scheme_ == Scheme::kBlock ? 128 : k;
    const int64_t gr = (n + br - 1) / br, gc = (k + bc - 1) / bc;
    std::vector<uint8_t> codes(static_cast<size_t>(n * k));
    for (uint8_t& c : codes) {
      do {
        c = static_cast<uint8_t>(rng_());
      } while ((c & 0x7F) == 0x7F);
    }
    std::vector<float> scales = Values(gr * gc, 1e-3f);
    for (float& s : scales) {
      s = std::fabs(s) + 1e-5f;
      // BF16 scales hold bf16 values exactly; the reference uses what is stored.
      if (scheme_ == Scheme::kChannelBf16) s = Bf16ToFloat(formats::FloatToBf16(s));
    }
    std::vector<float> deq(codes.size());
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t c = 0; c < k; ++c) {
        deq[r * k + c] = DequantFp8(codes[r * k + c], scales[(r / br) * gc + c / bc]);
      }
    }
    const std::string w = module + ".weight";
    fp8_.push_back({w, "F8_E4M3", {n, k}, codes});
    switch (scheme_) {
      case Scheme::kBlock:
        fp8_.push_back({module + ".weight_scale_inv", "F32", {gr, gc}, F32Bytes(scales)});
        break;
      case Scheme::kChannelBf16:
        fp8_.push_back({module + ".weight_scale", "BF16", {n, 1}, Bf16Bytes(scales)});
        break;
      case Scheme::kTensorModelOpt:
        fp8_.push_back({module + ".weight_scale", "F32", {}, F32Bytes(scales)});
        fp8_.push_back({module + ".input_scale", "F32", {}, F32Bytes({0.02f})});
        break;
    }
    ref_.push_back({w, "F32", {n, k}, F32Bytes(deq)});
    deq_[w] = std::move(deq);
  }

  Scheme scheme_;
  std::mt19937 rng_;
  std::vector<Tensor> fp8_, ref_;
  std::map<std::string, std::vector<float>> deq_;
};

nlohmann::json Json(const std::string& path) { return nlohmann::json::parse(ReadFile(path)); }

// `model` written as FP8 (tmp/fp8) and as its fp32 dequantization (tmp/ref), each quantized in
// `layout` (tmp/out-fp8, tmp/out-ref).
struct Quantized {
  absl::StatusOr<QuantizeModelResult> fp8, ref;
};
template <typename Model>
Quantized QuantizeFp8AndReference(const Model& model, Layout layout, const TempDir& tmp) {
  model.Write(tmp.Path("fp8"), false);
  model.Write(tmp.Path("ref"), true);
  return {QuantizeModelLocal(tmp.Path("fp8"), tmp.Path("out-fp8"), FastModelOptions(layout)),
          QuantizeModelLocal(tmp.Path("ref"), tmp.Path("out-ref"), FastModelOptions(layout))};
}

// `nvfp4ctl verify` of an output against its FP8 original.
VerifyReport Verify(const std::string& original, const std::string& quantized) {
  auto o = storage::OpenLocalInputDirectory(original);
  auto q = storage::OpenLocalInputDirectory(quantized);
  EXPECT_TRUE(o.ok() && q.ok());
  auto r = VerifyCheckpoint(**o, **q);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : VerifyReport{};
}

// Parameterized over the FP8 layout and the output layout, with a fresh directory.
template <typename Scales>
class Fp8ParamTest : public ::testing::TestWithParam<std::tuple<Scales, Layout>> {
 protected:
  TempDir tmp_;
};
using Fp8SourceTest = Fp8ParamTest<Scheme>;

TEST_P(Fp8SourceTest, QuantizesToTheBytesOfItsFp32Dequantization) {
  const auto [scheme, layout] = GetParam();
  auto [fp8, ref] = QuantizeFp8AndReference(Fp8Model(scheme, 11), layout, tmp_);
  ASSERT_THAT(fp8.status(), ::nvfp4::testing::IsOk());
  ASSERT_THAT(ref.status(), ::nvfp4::testing::IsOk());
  // Same quantization: the tensors are byte for byte those of the fp32 model (the FP8 scales
  // and input scales are consumed, the router, its bias, norms and embeddings copied).
  EXPECT_EQ(ReadFile(tmp_.Path("out-fp8") + "/model.safetensors"),
            ReadFile(tmp_.Path("out-ref") + "/model.safetensors"));
  EXPECT_EQ(fp8->plan.quantized_modules, ref->plan.quantized_modules);
  EXPECT_EQ(fp8->plan.quantized_modules.size(), 7u);
  // The memory meter counts a quantized FP8 weight's codes and its fp32 widening.
  auto in = formats::SafetensorsReader::Open(tmp_.Path("fp8") + "/model.safetensors");
  ASSERT_TRUE(in.ok());
  uint64_t largest_fp8 = 0;
  for (const auto& info : (*in)->tensors()) {
    if (info.dtype == "F8_E4M3") largest_fp8 = std::max<uint64_t>(largest_fp8, info.numel());
  }
  ASSERT_GT(largest_fp8, 0u);
  EXPECT_GE(fp8->peak_buffered_bytes, 5 * largest_fp8);
  auto reader = formats::SafetensorsReader::Open(tmp_.Path("out-fp8") + "/model.safetensors");
  ASSERT_TRUE(reader.ok());
  for (const auto& info : (*reader)->tensors()) {
    EXPECT_THAT(info.name, ::testing::Not(HasSubstr("scale_inv")));
    EXPECT_THAT(info.name, ::testing::Not(HasSubstr("input_scale")));
  }
  EXPECT_NE((*reader)->Find("model.layers.0.mlp.gate.e_score_correction_bias"), nullptr);
  // The output config: the NVFP4 quantization_config replaces the FP8 one.
  const nlohmann::json c = Json(tmp_.Path("out-fp8") + "/config.json");
  EXPECT_EQ(c["quantization_config"],
            Json(tmp_.Path("out-ref") + "/config.json")["quantization_config"]);
  EXPECT_FALSE(c["quantization_config"].contains("weight_block_size"));
  EXPECT_EQ(c["quantization_config"]["quant_method"],
            layout == Layout::kModelOpt ? "modelopt" : "compressed-tensors");
  // verify compares with the dequantized FP8 weights and accounts for every input tensor.
  const VerifyReport v = Verify(tmp_.Path("fp8"), tmp_.Path("out-fp8"));
  EXPECT_TRUE(v.ok()) << ::testing::PrintToString(v.problems);
  EXPECT_EQ(v.modules.size(), 7u);
  EXPECT_GT(v.max_nmse, 0);
  EXPECT_LT(v.max_nmse, 0.02);
  EXPECT_EQ(v.copied_identical, 6);  // embed_tokens, 2 norms, router, its bias, lm_head
  if (layout == Layout::kModelOpt) {
    EXPECT_EQ(Json(tmp_.Path("out-fp8") + "/hf_quant_config.json")["quantization"]["quant_algo"],
              "W4A16_NVFP4");
  } else {
    EXPECT_FALSE(fs::exists(tmp_.Path("out-fp8") + "/hf_quant_config.json"));
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, Fp8SourceTest,
                         ::testing::Combine(::testing::Values(Scheme::kBlock, Scheme::kChannelBf16,
                                                              Scheme::kTensorModelOpt),
                                            ::testing::Values(Layout::kModelOpt,
                                                              Layout::kCompressedTensors)));

TEST(Fp8Source, AnExcludedFp8WeightIsWrittenAsBf16) {
  TempDir tmp;
  Fp8Model model(Scheme::kBlock, 5);
  model.Write(tmp.Path("fp8"), false);
  QuantizeModelOptions o = FastModelOptions(Layout::kModelOpt);
  o.selection.exclude = {"*down_proj"};
  auto r = QuantizeModelLocal(tmp.Path("fp8"), tmp.Path("out"), o);
  ASSERT_THAT(r.status(), ::nvfp4::testing::IsOk());
  auto reader = formats::SafetensorsReader::Open(tmp.Path("out") + "/model.safetensors");
  ASSERT_TRUE(reader.ok());
  const std::string w = "model.layers.0.mlp.down_proj.weight";
  const formats::TensorInfo* info = (*reader)->Find(w);
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->dtype, "BF16");
  EXPECT_EQ(info->shape, (std::vector<int64_t>{272, 96}));
  auto bytes = (*reader)->ReadTensor(*info);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(*bytes, Bf16Bytes(model.Dequantized(w)));  // fp32 dequantization, rounded to bf16
  EXPECT_EQ((*reader)->Find("model.layers.0.mlp.down_proj.weight_scale_inv"), nullptr);
  EXPECT_THAT(r->warnings, ::testing::Contains(HasSubstr("written dequantized, as BF16")));
  const nlohmann::json c = Json(tmp.Path("out") + "/config.json");
  EXPECT_THAT(c["quantization_config"]["ignore"].get<std::vector<std::string>>(),
              ::testing::Contains("model.layers.0.mlp.down_proj"));
  const VerifyReport v = Verify(tmp.Path("fp8"), tmp.Path("out"));
  EXPECT_TRUE(v.ok()) << ::testing::PrintToString(v.problems);
  EXPECT_EQ(v.modules.size(), 6u);
  // The BF16 down_proj is checked against the BF16 dequantization: a changed byte is reported.
  const uint64_t offset = info->offset + 10;
  std::string file = ReadFile(tmp.Path("out") + "/model.safetensors");
  file[offset] = static_cast<char>(file[offset] ^ 0x01);
  WriteFile(tmp.Path("out") + "/model.safetensors", file);
  EXPECT_THAT(Verify(tmp.Path("fp8"), tmp.Path("out")).problems,
              ::testing::ElementsAre(HasSubstr("BF16 dequantization of the FP8 original")));
}

TEST(Fp8Source, NanCodesOfAnExcludedFp8WeightAreReported) {
  TempDir tmp;
  Fp8Model model(Scheme::kBlock, 5);
  for (Tensor& t : model.fp8_tensors()) {
    if (t.name == "model.layers.0.mlp.down_proj.weight") t.bytes[3] = t.bytes[7] = 0x7F;
  }
  model.Write(tmp.Path("fp8"), false);
  QuantizeModelOptions o = FastModelOptions(Layout::kModelOpt);
  o.selection.exclude = {"*down_proj"};
  auto r = QuantizeModelLocal(tmp.Path("fp8"), tmp.Path("out"), o);
  ASSERT_THAT(r.status(), ::nvfp4::testing::IsOk());
  EXPECT_THAT(r->warnings, ::testing::Contains(
                               AllOf(HasSubstr("model.layers.0.mlp.down_proj.weight"),
                                     HasSubstr("written as BF16"), HasSubstr("2 NaN/Inf values"))));
  o.strict_finite = true;
  auto strict = QuantizeModelLocal(tmp.Path("fp8"), tmp.Path("out2"), o);
  EXPECT_THAT(strict, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(strict.status().message(), HasSubstr("model.layers.0.mlp.down_proj.weight"));
  // A NaN code in a weight that is quantized is the quantizer's non-finite error.
  o = FastModelOptions(Layout::kModelOpt);
  auto quantized = QuantizeModelLocal(tmp.Path("fp8"), tmp.Path("out3"), o);
  EXPECT_THAT(quantized, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(quantized.status().message(), HasSubstr("NaN at flat index 3"));
}

// Rewrites tensor `name` of the FP8 model (dtype, shape, bytes) and expects quantization to fail
// with every piece of `expect` in the message.
class Fp8ErrorTest : public ::testing::Test {
 protected:
  void Expect(Fp8Model& model, absl::StatusCode code, const std::vector<std::string>& expect) {
    model.Write(tmp_.Path("in"), false);
    auto r =
        QuantizeModelLocal(tmp_.Path("in"), tmp_.Path("out"), FastModelOptions(Layout::kModelOpt));
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(r, StatusIs(code));
    for (const std::string& e : expect) EXPECT_THAT(r.status().message(), HasSubstr(e));
    EXPECT_FALSE(fs::exists(tmp_.Path("out")));
  }
  Tensor& Find(Fp8Model& m, const std::string& name) {
    for (Tensor& t : m.fp8_tensors()) {
      if (t.name == name) return t;
    }
    ADD_FAILURE() << name;
    return m.fp8_tensors()[0];
  }
  TempDir tmp_;
};

TEST_F(Fp8ErrorTest, NanScaleNamesFileAndTensor) {
  Fp8Model m(Scheme::kBlock, 1);
  Tensor& s = Find(m, "model.layers.0.mlp.up_proj.weight_scale_inv");
  const float nan = std::nanf("");
  std::memcpy(s.bytes.data() + 4, &nan, 4);
  Expect(m, absl::StatusCode::kInvalidArgument,
         {"model.safetensors", "model.layers.0.mlp.up_proj.weight_scale_inv", "NaN", "index 1"});
}

TEST_F(Fp8ErrorTest, ScaleShapeMismatch) {
  Fp8Model m(Scheme::kBlock, 1);
  Tensor& s = Find(m, "model.layers.0.self_attn.q_proj.weight_scale_inv");
  s.shape = {1, 3};  // [130, 272] needs [2, 3]
  s.bytes.resize(12);
  Expect(m, absl::StatusCode::kInvalidArgument,
         {"model.safetensors", "model.layers.0.self_attn.q_proj.weight_scale_inv", "[1, 3]",
          "expected [2, 3]"});
}

TEST_F(Fp8ErrorTest, ScaleDtypeMismatch) {
  Fp8Model m(Scheme::kBlock, 1);
  Tensor& s = Find(m, "model.layers.0.self_attn.o_proj.weight_scale_inv");
  s.dtype = "I32";
  Expect(m, absl::StatusCode::kInvalidArgument,
         {"model.layers.0.self_attn.o_proj.weight_scale_inv", "I32", "expected F32, BF16 or F16"});
}

TEST_F(Fp8ErrorTest, BlockSizeOfTheConfigIsChecked) {
  Fp8Model m(Scheme::kBlock, 1);
  m.Write(tmp_.Path("in"), false);
  nlohmann::json c = Json(tmp_.Path("in") + "/config.json");
  c["quantization_config"]["weight_block_size"] = {64, 64};
  WriteFile(tmp_.Path("in") + "/config.json", c.dump());
  auto r =
      QuantizeModelLocal(tmp_.Path("in"), tmp_.Path("out"), FastModelOptions(Layout::kModelOpt));
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(r.status().message(), HasSubstr("one scale per 64x64 block"));
}

TEST_F(Fp8ErrorTest, EveryWeightFp8WithoutScalesSaysWhy) {
  Fp8Model m(Scheme::kBlock, 1);
  std::erase_if(m.fp8_tensors(), [](const Tensor& t) {
    return t.name.ends_with("_scale_inv") || t.dtype == "BF16";
  });
  Expect(m, absl::StatusCode::kInvalidArgument,
         {"no module to quantize", "F8_E4M3 without a dequantization scale",
          "already quantized to FP8", "weight_scale_inv"});
}

// FP8 tensors this service cannot dequantize are refused by name, never copied into the NVFP4
// output as FP8: a weight without its scale beside quantizable ones, and fused 3-D experts.
TEST_F(Fp8ErrorTest, Fp8TensorsThatWouldBeCopiedAreRefused) {
  Fp8Model m(Scheme::kBlock, 1);
  std::erase_if(m.fp8_tensors(), [](const Tensor& t) {
    return t.name == "model.layers.0.mlp.down_proj.weight_scale_inv";
  });
  Expect(m, absl::StatusCode::kInvalidArgument,
         {"model.safetensors", "'model.layers.0.mlp.down_proj.weight' (F8_E4M3",
          "no dequantization scale", "FP8 sources"});
  // Fused 3-D FP8 experts without a scale.
  Fp8Model fused(Scheme::kBlock, 1);
  Tensor experts;
  experts.name = "model.layers.0.mlp.experts.gate_up_proj";
  experts.dtype = "F8_E4M3";
  experts.shape = {2, 32, 64};
  experts.bytes.assign(2 * 32 * 64, 0x38);
  fused.fp8_tensors().push_back(experts);
  Expect(fused, absl::StatusCode::kInvalidArgument,
         {"'model.layers.0.mlp.experts.0.gate_proj.weight' (F8_E4M3 [16, 64])",
          "fused FP8 experts 'model.layers.0.mlp.experts.gate_up_proj' without a scale"});
}

// A MoE layer (Qwen3-MoE names) whose routed experts are fused 3-D FP8 tensors, as transformers'
// fine-grained FP8 stores them: `experts.gate_up_proj` [E, 2I, H] and `experts.down_proj`
// [E, H, I] with `<t>_scale_inv` or `<t>_scale` per expert; or, for the reference, the
// per-expert fp32 weights they dequantize to.
enum class FusedScales {
  kBlock,      // <t>_scale_inv F32 [E, ceil(N/128), ceil(K/128)], I = 128
  kPerExpert,  // <t>_scale_inv F32 [E, 1, 1] + <t>_activation_scale [E], I = 96 (Mistral 4)
  kChannel,    // <t>_scale BF16 [E, N, 1], I = 96
};

class FusedFp8Moe {
 public:
  static constexpr int64_t kExperts = 3, kHidden = 272;
  FusedFp8Moe(FusedScales scales, uint32_t seed, std::string model_type = "qwen3_moe")
      : scales_(scales), model_type_(std::move(model_type)), rng_(seed) {
    inter_ = scales == FusedScales::kBlock ? 128 : 96;
    Plain("model.embed_tokens.weight", {64, kHidden});
    Plain("model.layers.0.mlp.gate.weight", {kExperts, kHidden});  // the router
    Fused("gate_up_proj", 2 * inter_, kHidden);
    Fused("down_proj", kHidden, inter_);
    Plain("model.norm.weight", {kHidden});
    Plain("lm_head.weight", {64, kHidden});
  }
  void Write(const std::string& dir, bool reference) const {
    fs::create_directories(dir);
    std::vector<formats::TensorToWrite> t;
    for (const Tensor& x : reference ? ref_ : fp8_)
      t.push_back({x.name, x.dtype, x.shape, x.bytes});
    ASSERT_TRUE(formats::WriteSafetensors(dir + "/model.safetensors", t).ok());
    nlohmann::ordered_json config = {{"architectures", {"Qwen3MoeForCausalLM"}},
                                     {"model_type", model_type_},
                                     {"hidden_size", kHidden},
                                     {"num_hidden_layers", 1}};
    if (!reference) {
      config["quantization_config"] = {{"quant_method", "fp8"}, {"activation_scheme", "dynamic"}};
      if (scales_ == FusedScales::kBlock) {
        config["quantization_config"]["weight_block_size"] = {128, 128};
      }
    }
    WriteFile(dir + "/config.json", config.dump(2));
  }
  int64_t inter() const { return inter_; }
  std::vector<Tensor>& fp8_tensors() { return fp8_; }

 private:
  void Plain(const std::string& name, std::vector<int64_t> shape) {
    std::normal_distribution<float> d(0.0f, 0.02f);
    std::vector<float> v(static_cast<size_t>(Numel(shape)));
    for (float& x : v) x = d(rng_);
    Tensor t{name, "BF16", shape, Bf16Bytes(v)};
    fp8_.push_back(t);
    ref_.push_back(std::move(t));
  }
  void Fused(const std::string& proj, int64_t n, int64_t k) {
    const std::string name = "model.layers.0.mlp.experts." + proj;
    const int64_t br = scales_ == FusedScales::kBlock ? 128 : (scales_ == FusedScales::kChannel ? 1 : n);
    const int64_t bc = scales_ == FusedScales::kBlock ? 128 : k;
    const int64_t gr = (n + br - 1) / br, gc = (k + bc - 1) / bc;
    std::vector<uint8_t> codes(static_cast<size_t>(kExperts * n * k));
    for (uint8_t& c : codes) {
      do {
        c = static_cast<uint8_t>(rng_());
      } while ((c & 0x7F) == 0x7F);
    }
    std::uniform_real_distribution<float> u(1e-4f, 2e-3f);
    std::vector<float> scales(static_cast<size_t>(kExperts * gr * gc));
    for (float& x : scales) {
      x = u(rng_);
      if (scales_ == FusedScales::kChannel) x = Bf16ToFloat(formats::FloatToBf16(x));
    }
    fp8_.push_back({name, "F8_E4M3", {kExperts, n, k}, codes});
    switch (scales_) {
      case FusedScales::kBlock:
        fp8_.push_back({name + "_scale_inv", "F32", {kExperts, gr, gc}, F32Bytes(scales)});
        break;
      case FusedScales::kPerExpert:
        fp8_.push_back({name + "_scale_inv", "F32", {kExperts, 1, 1}, F32Bytes(scales)});
        fp8_.push_back({name + "_activation_scale", "F32", {kExperts},
                        F32Bytes(std::vector<float>(kExperts, 0.5f))});
        break;
      case FusedScales::kChannel:
        fp8_.push_back({name + "_scale", "BF16", {kExperts, n, 1}, Bf16Bytes(scales)});
        break;
    }
    // The per-expert reference weights: gate = rows [0, I), up = rows [I, 2I) of gate_up.
    const bool gate_up = proj == "gate_up_proj";
    for (int64_t e = 0; e < kExperts; ++e) {
      std::vector<float> deq(static_cast<size_t>(n * k));
      for (int64_t r = 0; r < n; ++r) {
        for (int64_t c = 0; c < k; ++c) {
          deq[r * k + c] = DequantFp8(codes[(e * n + r) * k + c],
                                      scales[e * gr * gc + (r / br) * gc + c / bc]);
        }
      }
      const std::string prefix = "model.layers.0.mlp.experts." + std::to_string(e) + ".";
      if (!gate_up) {
        ref_.push_back({prefix + "down_proj.weight", "F32", {n, k}, F32Bytes(deq)});
        continue;
      }
      const int64_t half = n / 2;
      ref_.push_back({prefix + "gate_proj.weight", "F32", {half, k},
                      F32Bytes(std::vector<float>(deq.begin(), deq.begin() + half * k))});
      ref_.push_back({prefix + "up_proj.weight", "F32", {half, k},
                      F32Bytes(std::vector<float>(deq.begin() + half * k, deq.end()))});
    }
  }

  FusedScales scales_;
  std::string model_type_;
  std::mt19937 rng_;
  int64_t inter_ = 0;
  std::vector<Tensor> fp8_, ref_;
};

std::string FusedFp8TestName(const ::testing::TestParamInfo<std::tuple<FusedScales, Layout>>& i) {
  static const char* const kScales[] = {"Block", "PerExpert", "Channel"};
  return std::string(kScales[static_cast<int>(std::get<0>(i.param))]) +
         (std::get<1>(i.param) == Layout::kModelOpt ? "ModelOpt" : "CompressedTensors");
}

using FusedFp8Test = Fp8ParamTest<FusedScales>;

// Every tensor of the output is byte for byte the one of the per-expert fp32 model.
TEST_P(FusedFp8Test, QuantizesAsThePerExpertDequantization) {
  const auto [scales, layout] = GetParam();
  auto [fp8, ref] = QuantizeFp8AndReference(FusedFp8Moe(scales, 21), layout, tmp_);
  ASSERT_THAT(fp8.status(), ::nvfp4::testing::IsOk());
  ASSERT_THAT(ref.status(), ::nvfp4::testing::IsOk());
  EXPECT_EQ(fp8->plan.quantized_modules, ref->plan.quantized_modules);
  EXPECT_EQ(fp8->plan.quantized_modules.size(), 3u * FusedFp8Moe::kExperts);
  auto got = formats::SafetensorsReader::Open(tmp_.Path("out-fp8") + "/model.safetensors");
  auto want = formats::SafetensorsReader::Open(tmp_.Path("out-ref") + "/model.safetensors");
  ASSERT_TRUE(got.ok() && want.ok());
  ASSERT_EQ((*got)->tensors().size(), (*want)->tensors().size());
  for (const auto& info : (*want)->tensors()) {
    const formats::TensorInfo* g = (*got)->Find(info.name);
    ASSERT_NE(g, nullptr) << info.name;
    EXPECT_EQ(g->dtype, info.dtype) << info.name;
    EXPECT_EQ(*(*got)->ReadTensor(*g), *(*want)->ReadTensor(info)) << info.name;
  }
  // Neither the fused FP8 tensors nor their scales reach the output.
  for (const auto& info : (*got)->tensors()) {
    EXPECT_THAT(info.name, ::testing::Not(HasSubstr("gate_up_proj")));
    EXPECT_THAT(info.name, ::testing::Not(HasSubstr("_scale_inv")));
    EXPECT_THAT(info.name, ::testing::Not(HasSubstr("activation_scale")));
  }
  // gate and up of one expert share their global scale.
  std::map<std::string, float> global;
  for (const ModuleResult& m : fp8->modules) global[m.module] = m.global_scale;
  EXPECT_EQ(global.at("model.layers.0.mlp.experts.1.gate_proj"),
            global.at("model.layers.0.mlp.experts.1.up_proj"));
  // verify compares every expert with its FP8 dequantization and accounts for every input.
  const VerifyReport v = Verify(tmp_.Path("fp8"), tmp_.Path("out-fp8"));
  EXPECT_TRUE(v.ok()) << ::testing::PrintToString(v.problems);
  EXPECT_EQ(v.modules.size(), 3u * FusedFp8Moe::kExperts);
  EXPECT_GT(v.max_nmse, 0);
  EXPECT_LT(v.max_nmse, 0.02);
  EXPECT_EQ(v.copied_identical, 4);  // embed_tokens, router, norm, lm_head
}

INSTANTIATE_TEST_SUITE_P(
    ScalesAndLayouts, FusedFp8Test,
    ::testing::Combine(::testing::Values(FusedScales::kBlock, FusedScales::kPerExpert,
                                         FusedScales::kChannel),
                       ::testing::Values(Layout::kModelOpt, Layout::kCompressedTensors)),
    FusedFp8TestName);

TEST(FusedFp8Errors, ScalesThatDoNotFitAreRefusedByName) {
  TempDir tmp;
  auto expect = [&](FusedFp8Moe& m, const std::string& dir, std::vector<std::string> want) {
    m.Write(tmp.Path(dir), false);
    auto r = QuantizeModelLocal(tmp.Path(dir), tmp.Path(dir + "-out"),
                                FastModelOptions(Layout::kModelOpt));
    ASSERT_THAT(r, StatusIs(absl::StatusCode::kInvalidArgument));
    for (const std::string& w : want) EXPECT_THAT(r.status().message(), HasSubstr(w));
    EXPECT_FALSE(fs::exists(tmp.Path(dir + "-out")));
  };
  // up_proj (rows 96.. of each expert) would share a 128-row block with gate_proj.
  FusedFp8Moe misaligned(FusedScales::kChannel, 1);
  for (Tensor& t : misaligned.fp8_tensors()) {
    if (t.name != "model.layers.0.mlp.experts.gate_up_proj_scale") continue;
    t = {"model.layers.0.mlp.experts.gate_up_proj_scale_inv", "F32", {3, 2, 3},
         F32Bytes(std::vector<float>(18, 1e-3f))};
  }
  expect(misaligned, "misaligned",
         {"model.safetensors: fused FP8 experts 'model.layers.0.mlp.experts.gate_up_proj' "
          "[3, 192, 272]",
          "'model.layers.0.mlp.experts.0.up_proj.weight' starts at row 96 of each expert, inside "
          "a block of 128 rows"});
  // Scales without the leading expert dimension.
  FusedFp8Moe flat(FusedScales::kBlock, 1);
  for (Tensor& t : flat.fp8_tensors()) {
    if (t.name == "model.layers.0.mlp.experts.down_proj_scale_inv") t.shape = {9, 1};
  }
  expect(flat, "flat",
         {"their scale 'model.layers.0.mlp.experts.down_proj_scale_inv' has shape [9, 1]",
          "leading dimension of 3"});
  // A per-expert grid of the wrong size.
  FusedFp8Moe wrong(FusedScales::kBlock, 1);
  for (Tensor& t : wrong.fp8_tensors()) {
    if (t.name == "model.layers.0.mlp.experts.down_proj_scale_inv") t.shape = {3, 1, 3};
  }
  expect(wrong, "wrong", {"has shape [3, 1, 3]: per expert expected", "behind [3]"});
  // Llama 4 stores fused experts transposed: not read as FP8.
  FusedFp8Moe transposed(FusedScales::kPerExpert, 1, "llama4_text");
  for (Tensor& t : transposed.fp8_tensors()) {
    if (t.name == "model.layers.0.mlp.experts.gate_up_proj") t.shape = {3, 272, 192};
    if (t.name == "model.layers.0.mlp.experts.down_proj") t.shape = {3, 96, 272};
  }
  expect(transposed, "transposed", {"are stored transposed ([E, in, out])"});
  // A NaN scale names the tensor and its flat index.
  FusedFp8Moe nan(FusedScales::kBlock, 1);
  for (Tensor& t : nan.fp8_tensors()) {
    if (t.name != "model.layers.0.mlp.experts.down_proj_scale_inv") continue;
    const float q = std::nanf("");
    std::memcpy(t.bytes.data() + 4 * 4, &q, 4);  // expert 1, row 1 of its [3, 1] grid
  }
  expect(nan, "nan",
         {"the dequantization scale 'model.layers.0.mlp.experts.down_proj_scale_inv' of FP8 "
          "weight 'model.layers.0.mlp.experts.1.down_proj.weight' has NaN at flat index 4"});
}

TEST_F(Fp8ErrorTest, OtherQuantizedInputsAreRejected) {
  Fp8Model m(Scheme::kBlock, 1);
  m.Write(tmp_.Path("in"), false);
  nlohmann::json c = Json(tmp_.Path("in") + "/config.json");
  c["quantization_config"] = {{"quant_method", "awq"}, {"bits", 4}};
  WriteFile(tmp_.Path("in") + "/config.json", c.dump());
  auto r =
      QuantizeModelLocal(tmp_.Path("in"), tmp_.Path("out"), FastModelOptions(Layout::kModelOpt));
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(r.status().message(), HasSubstr("already quantized"));
}

TEST(Fp8Config, RecognisesTheFp8Configs) {
  std::optional<std::pair<int64_t, int64_t>> block;
  EXPECT_TRUE(IsFp8QuantizationConfig(
      {{"quant_method", "fp8"}, {"fmt", "e4m3"}, {"weight_block_size", {128, 64}}}, &block));
  EXPECT_EQ(block, std::make_pair(int64_t{128}, int64_t{64}));
  EXPECT_FALSE(IsFp8QuantizationConfig({{"quant_method", "fp8"}, {"fmt", "e5m2"}}));
  EXPECT_TRUE(IsFp8QuantizationConfig({{"quant_method", "modelopt"}, {"quant_algo", "FP8"}}));
  EXPECT_FALSE(IsFp8QuantizationConfig({{"quant_method", "modelopt"}, {"quant_algo", "NVFP4"}}));
  EXPECT_TRUE(IsFp8QuantizationConfig({{"quantization", {{"quant_algo", "FP8"}}}}));
  const nlohmann::ordered_json fp4_weights = {
      {"quant_method", "compressed-tensors"},
      {"config_groups", {{"group_0", {{"weights", {{"num_bits", 4}, {"type", "float"}}}}}}}};
  EXPECT_FALSE(IsFp8QuantizationConfig(fp4_weights));
}

// The DeepSeek-V3 demo preset: block FP8 with the DeepSeek names, quantized end to end.
TEST(Fp8Source, DeepseekDemoPresetQuantizes) {
  TempDir tmp;
  DemoModelOptions d;
  d.preset = "deepseek-v3-fp8-tiny";
  ASSERT_TRUE(MakeDemoModel(tmp.Path("ds"), d).ok());
  // The generator's FP8: every 128x128 block's largest code is +-448 (scale = amax / 448).
  auto in = formats::CheckpointReader::OpenLocal(tmp.Path("ds"));
  ASSERT_TRUE(in.ok());
  const std::string w = "model.layers.1.self_attn.kv_a_proj_with_mqa.weight";  // [160, 256]
  auto codes = (*in)->ReadTensor(w);
  ASSERT_TRUE(codes.ok());
  ASSERT_EQ((*in)->Find(w)->info->dtype, "F8_E4M3");
  ASSERT_EQ((*in)->Find(w + std::string("_scale_inv"))->info->shape, (std::vector<int64_t>{2, 2}));
  for (int64_t br = 0; br < 2; ++br) {
    for (int64_t bc = 0; bc < 2; ++bc) {
      int top = 0;
      for (int64_t r = br * 128; r < std::min<int64_t>(160, br * 128 + 128); ++r) {
        for (int64_t c = bc * 128; c < bc * 128 + 128; ++c)
          top = std::max(top, (*codes)[r * 256 + c] & 0x7F);
      }
      EXPECT_EQ(top, 0x7E) << "block " << br << "," << bc;
    }
  }
  auto r = QuantizeModelLocal(tmp.Path("ds"), tmp.Path("out"),
                              FastModelOptions(Layout::kCompressedTensors));
  ASSERT_THAT(r.status(), ::nvfp4::testing::IsOk());
  // gate/up groups of 1 dense MLP, 8 experts and 1 shared expert, and the MLA q_a/kv_a group of
  // each of the 2 layers; routers excluded; no scale copied.
  EXPECT_EQ(r->plan.fused_groups, 12);
  std::map<std::string, std::string> excluded;
  for (const ExcludedModule& e : r->plan.excluded) excluded[e.module] = e.reason;
  EXPECT_EQ(excluded["model.layers.1.mlp.gate"], "MoE router");
  auto out = formats::CheckpointReader::OpenLocal(tmp.Path("out"));
  ASSERT_TRUE(out.ok());
  for (const auto& loc : (*out)->tensors()) EXPECT_FALSE(loc.info->name.ends_with("_scale_inv"));
  EXPECT_EQ((*out)->Find("model.layers.1.mlp.gate.e_score_correction_bias")->info->dtype, "F32");
  EXPECT_EQ((*out)->Find("model.layers.1.mlp.gate.weight")->info->dtype, "BF16");
  for (const ModuleResult& m : r->modules) EXPECT_LT(m.metrics.nmse, 0.02) << m.module;
}

}  // namespace
}  // namespace nvfp4::pipeline
