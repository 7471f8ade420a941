// Fused 3-D expert tensors planned as per-expert weights: the layouts by model_type (gpt-oss:
// transposed and interleaved; transformers' default: [E, out, in], concatenated), the bytes of
// each derived tensor against the documented index formulas, shape errors, and a quantize-model
// run over a gpt-oss-shaped checkpoint.
#include "pipeline/source_tensors.h"

#include <cstring>
#include <filesystem>
#include <functional>
#include <tuple>

#include "formats/dtypes.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "pipeline/nvfp4_checkpoint.h"
#include "pipeline/quantize_model.h"
#include "storage/directory.h"
#include "tests/testing/files.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace nvfp4::pipeline {
namespace {

namespace fs = std::filesystem;
using ::nvfp4::testing::StatusIs;
using ::nvfp4::testing::TempDir;
using ::testing::HasSubstr;

constexpr int64_t kE = 3, kH = 48, kI = 16;  // H != 2I: the orientation is not ambiguous

// Element value of a source tensor: its indices, so a derived element names where it came from.
float Code(int64_t e, int64_t a, int64_t b) { return static_cast<float>(e * 10000 + a * 100 + b); }

struct Tensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

// F32 [E, A, B] (or [E, B] when a < 0) filled with Code().
Tensor Fused(const std::string& name, int64_t a, int64_t b) {
  Tensor t{name, "F32", a < 0 ? std::vector<int64_t>{kE, b} : std::vector<int64_t>{kE, a, b}, {}};
  std::vector<float> v;
  for (int64_t e = 0; e < kE; ++e) {
    for (int64_t i = 0; i < std::max<int64_t>(a, 1); ++i) {
      for (int64_t j = 0; j < b; ++j) v.push_back(Code(e, a < 0 ? 0 : i, j));
    }
  }
  t.bytes.resize(v.size() * 4);
  std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
  return t;
}

// bf16 noise in [-scale/2, scale/2) for a weight the pipeline quantizes.
Tensor Noise(const std::string& name, std::vector<int64_t> shape, uint32_t seed,
             float scale = 0.1f) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  Tensor t{name, "BF16", std::move(shape), std::vector<uint8_t>(static_cast<size_t>(n) * 2)};
  uint32_t x = seed * 2654435761u + 1;
  for (int64_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    const float v = (static_cast<float>(x >> 8) / 16777216.0f - 0.5f) * scale;
    const uint16_t b = formats::FloatToBf16(v);
    std::memcpy(t.bytes.data() + 2 * i, &b, 2);
  }
  return t;
}

std::string WriteCheckpoint(const std::string& dir, const std::vector<Tensor>& tensors,
                            const nlohmann::json& config) {
  fs::create_directories(dir);
  std::vector<formats::TensorToWrite> w;
  for (const Tensor& t : tensors) w.push_back({t.name, t.dtype, t.shape, t.bytes});
  EXPECT_TRUE(formats::WriteSafetensors(dir + "/model.safetensors", w).ok());
  ::nvfp4::testing::WriteFile(fs::path(dir) / "config.json", config.dump());
  return dir;
}

std::vector<float> ReadF32(const SourceTensors& st, const std::string& name) {
  std::vector<uint8_t> b(st.ByteSize(name));
  EXPECT_TRUE(st.Read(name, b).ok()) << name;
  std::vector<float> v(b.size() / 4);
  std::memcpy(v.data(), b.data(), b.size());
  return v;
}

// Where element (r, c) of expert e's derived weight comes from: Code() of the source indices.
using SourceOf = std::function<float(int64_t e, int64_t r, int64_t c)>;

// Checks every element of every expert's gate, up and down weights of block `p`.
void ExpectExpertWeights(const SourceTensors& st, const std::string& p, const SourceOf& gate,
                         const SourceOf& up, const SourceOf& down) {
  for (int64_t e = 0; e < kE; ++e) {
    const std::string x = p + "." + std::to_string(e) + ".";
    for (const auto& [proj, src, rows, cols] :
         {std::tuple{"gate_proj", &gate, kI, kH}, std::tuple{"up_proj", &up, kI, kH},
          std::tuple{"down_proj", &down, kH, kI}}) {
      const std::vector<float> w = ReadF32(st, x + proj + ".weight");
      ASSERT_EQ(w.size(), static_cast<size_t>(rows * cols)) << x << proj;
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          ASSERT_EQ(w[r * cols + c], (*src)(e, r, c)) << x << proj << " " << r << " " << c;
        }
      }
    }
  }
}

class SourceTensorsTest : public ::testing::Test {
 protected:
  absl::StatusOr<SourceTensors> Open(const std::vector<Tensor>& tensors, const nlohmann::json& config) {
    const std::string dir = WriteCheckpoint(tmp_.Path("ckpt" + std::to_string(n_++)), tensors, config);
    auto r = formats::CheckpointReader::OpenLocal(dir + "/model.safetensors");
    EXPECT_TRUE(r.ok()) << r.status();
    readers_.push_back(std::move(*r));
    return SourceTensors::Open(*readers_.back(), nlohmann::ordered_json(config));
  }
  TempDir tmp_;
  int n_ = 0;
  std::vector<std::unique_ptr<formats::CheckpointReader>> readers_;
};

TEST(FusedExpertsLayout, ByModelType) {
  auto layout = [](const char* type) {
    return FusedExpertsLayoutFor(nlohmann::ordered_json{{"model_type", type}});
  };
  EXPECT_TRUE(layout("gpt_oss").transposed && layout("gpt_oss").interleaved);
  EXPECT_TRUE(layout("llama4_text").transposed && !layout("llama4_text").interleaved);
  EXPECT_FALSE(layout("qwen3_moe").transposed || layout("qwen3_moe").interleaved);
  EXPECT_FALSE(FusedExpertsLayoutFor(std::nullopt).transposed);
  // Multimodal configs name the text model's type in text_config.
  EXPECT_TRUE(FusedExpertsLayoutFor(nlohmann::ordered_json{
                                        {"model_type", "llama4"},
                                        {"text_config", {{"model_type", "llama4_text"}}}})
                  .transposed);
}

// gpt-oss: gate_up_proj [E, H, 2I] (x @ W), gate = even columns, up = odd columns; down_proj
// [E, I, H]; biases [E, 2I] interleaved and [E, H].
TEST_F(SourceTensorsTest, GptOssIsTransposedAndInterleaved) {
  const std::string p = "model.layers.0.mlp.experts";
  auto st = Open({Fused(p + ".gate_up_proj", kH, 2 * kI), Fused(p + ".gate_up_proj_bias", -1, 2 * kI),
                  Fused(p + ".down_proj", kI, kH), Fused(p + ".down_proj_bias", -1, kH),
                  Fused("model.norm.weight", -1, kH)},
                 {{"model_type", "gpt_oss"}, {"hidden_size", kH}});
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_THAT(st->split_tensors(),
              ::testing::ElementsAre(p + ".down_proj", p + ".down_proj_bias", p + ".gate_up_proj",
                                     p + ".gate_up_proj_bias"));
  // 3 experts x (gate, up) x (weight, bias) + 3 x down x (weight, bias) + the norm.
  EXPECT_EQ(st->specs().size(), 3u * 4 + 3u * 2 + 1);
  // In the checkpoint's order; within a fused tensor expert by expert, gate before up.
  std::vector<std::string> names;
  for (const formats::TensorSpec& s : st->specs()) names.push_back(s.name);
  const auto gate0 = std::find(names.begin(), names.end(), p + ".0.gate_proj.weight");
  ASSERT_NE(gate0, names.end());
  EXPECT_EQ(*(gate0 + 1), p + ".0.up_proj.weight");
  EXPECT_EQ(*(gate0 + 2), p + ".1.gate_proj.weight");
  EXPECT_EQ(st->Spec(p + ".2.up_proj.weight").shape, (std::vector<int64_t>{kI, kH}));
  EXPECT_EQ(st->Spec(p + ".2.down_proj.weight").shape, (std::vector<int64_t>{kH, kI}));
  EXPECT_EQ(st->Spec(p + ".1.up_proj.bias").shape, (std::vector<int64_t>{kI}));
  ExpectExpertWeights(
      *st, p, [](int64_t e, int64_t r, int64_t c) { return Code(e, c, 2 * r); },
      [](int64_t e, int64_t r, int64_t c) { return Code(e, c, 2 * r + 1); },
      [](int64_t e, int64_t r, int64_t c) { return Code(e, c, r); });
  for (int64_t e = 0; e < kE; ++e) {
    const std::string x = p + "." + std::to_string(e) + ".";
    const auto gate_bias = ReadF32(*st, x + "gate_proj.bias");
    const auto up_bias = ReadF32(*st, x + "up_proj.bias");
    for (int64_t r = 0; r < kI; ++r) {
      EXPECT_EQ(gate_bias[r], Code(e, 0, 2 * r));
      EXPECT_EQ(up_bias[r], Code(e, 0, 2 * r + 1));
    }
    EXPECT_EQ(ReadF32(*st, x + "down_proj.bias")[5], Code(e, 0, 5));
  }
  // A range of a derived tensor is that range of the whole.
  const std::string name = p + ".1.up_proj.weight";
  std::vector<uint8_t> whole(st->ByteSize(name)), part(40);
  ASSERT_TRUE(st->Read(name, whole).ok());
  ASSERT_TRUE(st->ReadRange(name, 100, part).ok());
  EXPECT_EQ(0, std::memcmp(part.data(), whole.data() + 100, part.size()));
  // Stored tensors read as they are.
  EXPECT_EQ(ReadF32(*st, "model.norm.weight")[3], Code(0, 0, 3));
}

// transformers' default experts: gate_up_proj [E, 2I, H] with gate the first I rows, down_proj
// [E, H, I].
TEST_F(SourceTensorsTest, DefaultIsOutInAndConcatenated) {
  const std::string p = "model.layers.3.mlp.experts";
  auto st = Open({Fused(p + ".gate_up_proj", 2 * kI, kH), Fused(p + ".down_proj", kH, kI)},
                 {{"model_type", "qwen3_moe"}, {"hidden_size", kH}});
  ASSERT_TRUE(st.ok()) << st.status();
  ExpectExpertWeights(
      *st, p, [](int64_t e, int64_t r, int64_t c) { return Code(e, r, c); },
      [](int64_t e, int64_t r, int64_t c) { return Code(e, kI + r, c); },
      [](int64_t e, int64_t r, int64_t c) { return Code(e, r, c); });
}

TEST_F(SourceTensorsTest, ShapesThatDoNotFitTheLayoutAreRejected) {
  const std::string p = "model.layers.0.mlp.experts";
  // A gpt-oss tensor read with the default layout: its hidden size is not config.json's.
  EXPECT_THAT(Open({Fused(p + ".gate_up_proj", kH, 2 * kI)},
                   {{"model_type", "mixtral"}, {"hidden_size", kH}})
                  .status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("config.json's hidden_size is 48")));
  // gate_up and down that disagree on the intermediate size.
  EXPECT_THAT(Open({Fused(p + ".gate_up_proj", 2 * kI, kH), Fused(p + ".down_proj", kH, kI + 16)}, {})
                  .status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("intermediate size")));
  // A derived name that is also stored.
  EXPECT_THAT(Open({Fused(p + ".down_proj", kH, kI), Fused(p + ".0.down_proj.weight", -1, kI)}, {})
                  .status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("also stores")));
}

// quantize-model over a gpt-oss-shaped checkpoint: every expert quantized under its own names,
// gate/up of an expert sharing one global scale, biases split per expert and copied, the router
// kept and listed in the ignore list.
TEST_F(SourceTensorsTest, QuantizeModelSplitsFusedExperts) {
  const int64_t h = 64, i = 32, e = 4;
  const std::string p = "model.layers.0.mlp.";
  std::vector<Tensor> t = {
      Noise("model.embed_tokens.weight", {100, h}, 1),
      Noise(p + "experts.gate_up_proj", {e, h, 2 * i}, 2),
      Noise(p + "experts.gate_up_proj_bias", {e, 2 * i}, 3),
      Noise(p + "experts.down_proj", {e, i, h}, 4, /*scale=*/0.4f),
      Noise(p + "experts.down_proj_bias", {e, h}, 5),
      Noise(p + "router.weight", {e, h}, 6),
      Noise(p + "router.bias", {e}, 7),
      Noise("model.layers.0.self_attn.q_proj.weight", {h, h}, 8),
      Noise("lm_head.weight", {100, h}, 9),
  };
  const std::string in = WriteCheckpoint(tmp_.Path("gptoss"), t,
                                         {{"model_type", "gpt_oss"}, {"hidden_size", h}});
  for (Layout layout : {Layout::kModelOpt, Layout::kCompressedTensors}) {
    QuantizeModelOptions o;
    o.layout = layout;
    o.quantize.method = Method::kRtn;
    o.sync = false;
    o.cpu_threads = 2;
    const std::string out = tmp_.Path(std::string("out-") + std::string(LayoutName(layout)));
    auto res = QuantizeModelLocal(in, out, o);
    ASSERT_TRUE(res.ok()) << res.status();
    EXPECT_EQ(res->plan.quantized_modules.size(), 1u + 3 * e);
    auto r = formats::CheckpointReader::OpenLocal(out);
    ASSERT_TRUE(r.ok()) << r.status();
    const QuantizedTensorNames gate = NamesFor(layout, p + "experts.2.gate_proj");
    const QuantizedTensorNames up = NamesFor(layout, p + "experts.2.up_proj");
    const QuantizedTensorNames down = NamesFor(layout, p + "experts.2.down_proj");
    EXPECT_EQ(*(*r)->ReadTensor(gate.global_scale), *(*r)->ReadTensor(up.global_scale));
    EXPECT_NE(*(*r)->ReadTensor(gate.global_scale), *(*r)->ReadTensor(down.global_scale));
    EXPECT_EQ((*r)->Find(gate.packed)->info->shape, (std::vector<int64_t>{i, h / 2}));
    EXPECT_EQ((*r)->Find(down.packed)->info->shape, (std::vector<int64_t>{h, i / 2}));
    EXPECT_EQ((*r)->Find(p + "experts.gate_up_proj"), nullptr);
    EXPECT_EQ((*r)->Find(p + "experts.gate_up_proj_bias"), nullptr);
    // The up bias of expert 2 is the odd entries of row 2 of the fused bias, bf16 as stored.
    auto up_bias = (*r)->ReadTensor(p + "experts.2.up_proj.bias");
    ASSERT_TRUE(up_bias.ok()) << up_bias.status();
    ASSERT_EQ(up_bias->size(), static_cast<size_t>(2 * i));
    for (int64_t k = 0; k < i; ++k) {
      ASSERT_EQ(0, std::memcmp(up_bias->data() + 2 * k, t[2].bytes.data() + 2 * (2 * 2 * i + 2 * k + 1), 2));
    }
    EXPECT_EQ(*(*r)->ReadTensor(p + "router.weight"), t[5].bytes);
    const auto config = nlohmann::json::parse(::nvfp4::testing::ReadFile(fs::path(out) / "config.json"));
    const auto& ignore = config["quantization_config"]["ignore"];
    EXPECT_NE(std::find(ignore.begin(), ignore.end(), p + "router"), ignore.end());
    // `nvfp4ctl verify` compares each expert with its slice of the fused original.
    auto orig_dir = storage::OpenLocalInputDirectory(in);
    auto out_dir = storage::OpenLocalInputDirectory(out);
    ASSERT_TRUE(orig_dir.ok() && out_dir.ok());
    auto report = VerifyCheckpoint(**orig_dir, **out_dir);
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_THAT(report->problems, ::testing::IsEmpty());
    EXPECT_EQ(report->modules.size(), 1u + 3 * e);
    EXPECT_LT(report->max_nmse, 0.03);
  }
}

}  // namespace
}  // namespace nvfp4::pipeline
