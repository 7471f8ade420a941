// Runs the built nvfp4ctl binary (NVFP4CTL_PATH) on temporary files and checks exit codes,
// outputs (read back with the formats reader) and the decoded NVFP4 values.
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "formats/dtypes.h"
#include "formats/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/codec.h"
#include "nlohmann/json.hpp"
#include "tests/testing/temp_dir.h"

namespace nvfp4 {
namespace {

using formats::SafetensorsReader;
using formats::TensorInfo;
using ::testing::HasSubstr;

constexpr char kQ[] = "model.layers.0.self_attn.q_proj.weight";
constexpr char kDown[] = "model.layers.0.mlp.down_proj.weight";
constexpr char kNorm[] = "model.layers.0.input_layernorm.weight";

struct Result {
  int exit_code = -1;
  std::string out;
  std::string err;
};

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Single-quotes `arg` for /bin/sh.
std::string Quote(const std::string& arg) {
  std::string q = "'";
  for (char c : arg) {
    if (c == '\'') {
      q += "'\\''";
    } else {
      q += c;
    }
  }
  return q + "'";
}

class Nvfp4ctlTest : public ::testing::Test {
 protected:
  std::string Path(const std::string& name) const { return tmp_.Path(name); }

  Result Run(const std::vector<std::string>& args) {
    std::string command = Quote(NVFP4CTL_PATH);
    for (const std::string& a : args) command += " " + Quote(a);
    const std::string out = Path("stdout.txt"), err = Path("stderr.txt");
    command += " >" + Quote(out) + " 2>" + Quote(err);
    const int status = std::system(command.c_str());
    Result r;
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = Slurp(out);
    r.err = Slurp(err);
    return r;
  }

  // A small demo file: q_proj [64, 128], k_proj [16, 128], up_proj [128, 128],
  // down_proj [64, 256], input_layernorm [128].
  std::string MakeDemo() {
    const std::string path = Path("demo.safetensors");
    Result r = Run({"make-demo-tensors", "--output", path, "--rows", "64", "--cols", "128"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return path;
  }

  ::nvfp4::testing::TempDir tmp_;
};

std::vector<float> ReadFloats(const SafetensorsReader& reader, const std::string& name) {
  const TensorInfo* info = reader.Find(name);
  EXPECT_NE(info, nullptr) << name;
  if (info == nullptr) return {};
  auto bytes = reader.ReadTensor(*info);
  EXPECT_TRUE(bytes.ok());
  auto values = formats::DecodeToFloat32(info->dtype, *bytes);
  EXPECT_TRUE(values.ok());
  return *values;
}

// Decodes X, X_scale, X_scale_2 of `out` and returns ||W - W_hat||^2 / ||W||^2 against `w`.
double DecodedNmse(const SafetensorsReader& out, const std::string& name,
                   const std::vector<float>& w) {
  const TensorInfo* packed = out.Find(name);
  const TensorInfo* scales = out.Find(name + "_scale");
  const TensorInfo* global = out.Find(name + "_scale_2");
  if (packed == nullptr || scales == nullptr || global == nullptr) {
    ADD_FAILURE() << "missing output tensors for " << name;
    return 1;
  }
  const std::vector<uint8_t> q = *out.ReadTensor(*packed);
  const std::vector<uint8_t> s = *out.ReadTensor(*scales);
  const std::vector<uint8_t> g_bytes = *out.ReadTensor(*global);
  float g;
  std::memcpy(&g, g_bytes.data(), 4);
  EXPECT_EQ(q.size() * 2, w.size());
  EXPECT_EQ(s.size() * 16, w.size());
  double err = 0, norm = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    const uint32_t code = (i % 2 == 0) ? (q[i / 2] & 0xF) : (q[i / 2] >> 4);
    const float scale = DecodeE4M3(s[i / 16]);
    EXPECT_FALSE(std::isnan(scale));
    const double w_hat = static_cast<double>(DecodeE2M1(code)) * scale * g;
    err += (w[i] - w_hat) * (w[i] - w_hat);
    norm += static_cast<double>(w[i]) * w[i];
  }
  return err / norm;
}

std::vector<nlohmann::json> JsonLines(const std::string& text) {
  std::vector<nlohmann::json> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) lines.push_back(nlohmann::json::parse(line));
  }
  return lines;
}

TEST_F(Nvfp4ctlTest, HelpOnEverySubcommandDocumentsEveryFlag) {
  Result root = Run({"--help"});
  EXPECT_EQ(root.exit_code, 0);
  EXPECT_THAT(root.out, HasSubstr("quantize-tensor"));
  EXPECT_THAT(root.out, HasSubstr("make-demo-tensors"));
  struct Case {
    std::string command;
    std::vector<std::string> flags;
  };
  const std::vector<Case> cases = {
      {"quantize-tensor",
       {"--local", "--server", "--input", "--output", "--method", "--objective", "--error-rule",
        "--calibration", "--tensor", "--device", "--soar-iterations", "--json"}},
      {"make-demo-tensors", {"--output", "--rows", "--cols", "--seed"}},
      {"inspect", {"--input", "--json"}},
  };
  for (const Case& c : cases) {
    Result r = Run({c.command, "--help"});
    EXPECT_EQ(r.exit_code, 0) << c.command;
    for (const std::string& flag : c.flags) EXPECT_THAT(r.out, HasSubstr(flag)) << c.command;
  }
}

TEST_F(Nvfp4ctlTest, MakeDemoTensorsWritesBf16LlamaLikeTensors) {
  const std::string demo = MakeDemo();
  auto reader = SafetensorsReader::Open(demo);
  ASSERT_TRUE(reader.ok()) << reader.status();
  ASSERT_NE((*reader)->Find(kQ), nullptr);
  EXPECT_EQ((*reader)->Find(kQ)->dtype, "BF16");
  EXPECT_EQ((*reader)->Find(kQ)->shape, (std::vector<int64_t>{64, 128}));
  ASSERT_NE((*reader)->Find(kDown), nullptr);
  EXPECT_EQ((*reader)->Find(kDown)->shape, (std::vector<int64_t>{64, 256}));
  ASSERT_NE((*reader)->Find(kNorm), nullptr);
  EXPECT_EQ((*reader)->Find(kNorm)->shape, (std::vector<int64_t>{128}));
  // Deterministic per seed.
  const std::string again = Path("again.safetensors");
  ASSERT_EQ(
      Run({"make-demo-tensors", "--output", again, "--rows", "64", "--cols", "128"}).exit_code, 0);
  EXPECT_EQ(Slurp(demo), Slurp(again));
  EXPECT_EQ(Run({"make-demo-tensors", "--output", again, "--cols", "100"}).exit_code, 2);
}

TEST_F(Nvfp4ctlTest, QuantizeWritesModelOptTensorsThatDecodeCloseToTheInput) {
  const std::string demo = MakeDemo();
  const std::string out_path = Path("out.safetensors");
  Result r = Run({"quantize-tensor", "--local", "--input", demo, "--output", out_path, "--method",
                  "rtn", "--device", "cpu"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("nmse"));  // table header
  EXPECT_THAT(r.out, HasSubstr(kQ));
  EXPECT_THAT(r.err, HasSubstr(std::string("skipping '") + kNorm));  // 1-D, not named

  auto in = SafetensorsReader::Open(demo);
  auto out = SafetensorsReader::Open(out_path);
  ASSERT_TRUE(in.ok() && out.ok());
  EXPECT_EQ((*out)->tensors().size(), 4u * 3u);  // q, k, up, down: 3 entries each
  EXPECT_EQ((*out)->Find(kNorm), nullptr);
  for (const TensorInfo& t : (*in)->tensors()) {
    if (t.shape.size() != 2) continue;
    const int64_t n = t.shape[0], k = t.shape[1];
    const TensorInfo* packed = (*out)->Find(t.name);
    const TensorInfo* scale = (*out)->Find(t.name + "_scale");
    const TensorInfo* global = (*out)->Find(t.name + "_scale_2");
    ASSERT_NE(packed, nullptr) << t.name;
    ASSERT_NE(scale, nullptr) << t.name;
    ASSERT_NE(global, nullptr) << t.name;
    EXPECT_EQ(packed->dtype, "U8");
    EXPECT_EQ(packed->shape, (std::vector<int64_t>{n, k / 2}));
    EXPECT_EQ(scale->dtype, "F8_E4M3");
    EXPECT_EQ(scale->shape, (std::vector<int64_t>{n, k / 16}));
    EXPECT_EQ(global->dtype, "F32");
    EXPECT_TRUE(global->shape.empty());
    const double nmse = DecodedNmse(**out, t.name, ReadFloats(**in, t.name));
    EXPECT_GT(nmse, 1e-4) << t.name;
    EXPECT_LT(nmse, 0.015) << t.name;  // rtn on Gaussian/heavy-tailed data: about 0.008-0.009
  }
}

TEST_F(Nvfp4ctlTest, JsonLinesParseAndMatchTheDecodedError) {
  const std::string demo = MakeDemo();
  const std::string out_path = Path("out.safetensors");
  Result r = Run({"quantize-tensor", "--local", "--input=" + demo, "--output=" + out_path,
                  "--method=scalesweep", "--device=cpu", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto lines = JsonLines(r.out);
  ASSERT_EQ(lines.size(), 4u);
  auto in = SafetensorsReader::Open(demo);
  auto out = SafetensorsReader::Open(out_path);
  ASSERT_TRUE(in.ok() && out.ok());
  for (const nlohmann::json& j : lines) {
    for (const char* key : {"tensor", "shape", "method", "objective", "device", "nmse", "sqnr_db",
                            "max_abs_err", "rtn_nmse", "nmse_vs_rtn", "iterations", "seconds"}) {
      EXPECT_TRUE(j.contains(key)) << key << " in " << j.dump();
    }
    EXPECT_EQ(j["method"], "scalesweep");
    EXPECT_EQ(j["objective"], "mse");
    EXPECT_EQ(j["device"], "cpu");
    const std::string name = j["tensor"];
    const double reported = j["nmse"];
    const double decoded = DecodedNmse(**out, name, ReadFloats(**in, name));
    EXPECT_NEAR(decoded, reported, 1e-3 * reported) << name;
    EXPECT_LT(j["nmse_vs_rtn"].get<double>(), 1.0) << name;  // scalesweep beats rtn
    EXPECT_NEAR(j["sqnr_db"].get<double>(), -10 * std::log10(reported), 1e-6);
  }
}

TEST_F(Nvfp4ctlTest, EqualsFormAndNamedTensorsSelectOnlyThose) {
  const std::string demo = MakeDemo();
  const std::string out_path = Path("out.safetensors");
  Result r = Run({"quantize-tensor", "--local", "--input=" + demo, "--output=" + out_path,
                  "--method=4over6", "--error-rule=mae", "--tensor=" + std::string(kDown),
                  "--tensor", kNorm, "--device=cpu"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto out = SafetensorsReader::Open(out_path);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ((*out)->tensors().size(), 6u);
  EXPECT_EQ((*out)->Find(kQ), nullptr);
  // The named 1-D tensor is quantized as [1, K]; its outputs keep the source rank.
  ASSERT_NE((*out)->Find(kNorm), nullptr);
  EXPECT_EQ((*out)->Find(kNorm)->shape, (std::vector<int64_t>{64}));
  EXPECT_EQ((*out)->Find(std::string(kNorm) + "_scale")->shape, (std::vector<int64_t>{8}));
  EXPECT_TRUE((*out)->Find(std::string(kNorm) + "_scale_2")->shape.empty());
}

TEST_F(Nvfp4ctlTest, DefaultMethodIsSoarAndNeverWorseThanRtn) {
  const std::string demo = MakeDemo();
  Result r = Run({"quantize-tensor", "--local", "--input", demo, "--output",
                  Path("out.safetensors"), "--tensor", kQ, "--json", "--device", "cpu"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto lines = JsonLines(r.out);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["method"], "soar");
  EXPECT_LE(lines[0]["nmse_vs_rtn"].get<double>(), 1.0);
}

// Writes an F32 file with tensors `good` [4, 32] and `odd` [4, 20] (K % 16 != 0) and an I32.
std::string WriteOddFile(const std::string& path) {
  static const std::vector<uint8_t> good(4 * 32 * 4, 0x3E);
  static const std::vector<uint8_t> odd(4 * 20 * 4, 0x3E);
  static const std::vector<uint8_t> ints(8 * 4, 1);
  std::vector<formats::TensorToWrite> tensors = {
      {"good", "F32", {4, 32}, good}, {"odd", "F32", {4, 20}, odd}, {"ids", "I32", {8}, ints}};
  EXPECT_TRUE(formats::WriteSafetensors(path, tensors).ok());
  return path;
}

// An FP8 weight with its block scale (DeepSeek-V3's `weight_scale_inv`, 128x128 tiles, partial at
// the edges) quantizes to the bytes of its fp32 dequantization; the scale itself is skipped and an
// FP8 tensor without a scale is refused by name.
TEST_F(Nvfp4ctlTest, Fp8WeightsQuantizeAsTheirDequantizedValues) {
  const int64_t n = 130, k = 272;  // scale grid [2, 3]
  std::vector<uint8_t> codes(static_cast<size_t>(n * k));
  for (size_t i = 0; i < codes.size(); ++i) {
    codes[i] = static_cast<uint8_t>((i * 37 + 11) % 256);
    if ((codes[i] & 0x7F) == 0x7F) codes[i] = 0x3F;  // no NaN codes
  }
  const std::vector<float> scales = {0.5f, 0.25f, 0.125f, 1.5f, 0.75f, 0.0625f};
  std::vector<float> values(codes.size());
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < k; ++c) {
      values[r * k + c] = DecodeE4M3(codes[r * k + c]) * scales[(r / 128) * 3 + c / 128];
    }
  }
  auto bytes_of = [](const auto& v) {
    const auto* p = reinterpret_cast<const uint8_t*>(v.data());
    return std::vector<uint8_t>(p, p + v.size() * sizeof(v[0]));
  };
  const std::vector<uint8_t> scale_bytes = bytes_of(scales), value_bytes = bytes_of(values);
  const std::vector<uint8_t> bare_codes(128, 0x38);
  const std::string fp8 = Path("fp8.safetensors"), f32 = Path("f32.safetensors");
  const std::vector<formats::TensorToWrite> fp8_tensors = {
      {"l.weight", "F8_E4M3", {n, k}, codes},
      {"l.weight_scale_inv", "F32", {2, 3}, scale_bytes},
      {"bare", "F8_E4M3", {4, 32}, bare_codes},
      {"m.experts.down_proj", "F8_E4M3", {2, 2, 32}, bare_codes}};
  const std::vector<formats::TensorToWrite> f32_tensors = {
      {"l.weight", "F32", {n, k}, value_bytes}};
  ASSERT_TRUE(formats::WriteSafetensors(fp8, fp8_tensors).ok());
  ASSERT_TRUE(formats::WriteSafetensors(f32, f32_tensors).ok());
  Result a = Run({"quantize-tensor", "--local", "--device", "cpu", "--method", "rtn", "--input",
                  fp8, "--output", Path("o8.safetensors")});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_THAT(a.err, HasSubstr("skipping 'l.weight_scale_inv'"));
  EXPECT_THAT(a.err, HasSubstr("skipping 'bare'"));
  EXPECT_THAT(a.err, HasSubstr("skipping 'm.experts.down_proj' [2, 2, 32]: fused FP8 experts "
                               "(quantize-model splits them per expert)"));
  Result b = Run({"quantize-tensor", "--local", "--device", "cpu", "--method", "rtn", "--input",
                  f32, "--output", Path("o32.safetensors")});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  auto o8 = SafetensorsReader::Open(Path("o8.safetensors"));
  auto o32 = SafetensorsReader::Open(Path("o32.safetensors"));
  ASSERT_TRUE(o8.ok() && o32.ok());
  for (const std::string name : {"l.weight", "l.weight_scale", "l.weight_scale_2"}) {
    const TensorInfo* ix = (*o8)->Find(name);
    const TensorInfo* iy = (*o32)->Find(name);
    ASSERT_TRUE(ix != nullptr && iy != nullptr) << name;
    auto x = (*o8)->ReadTensor(*ix);
    auto y = (*o32)->ReadTensor(*iy);
    ASSERT_TRUE(x.ok() && y.ok()) << name;
    EXPECT_EQ(*x, *y) << name;
  }
  Result bare = Run({"quantize-tensor", "--local", "--device", "cpu", "--input", fp8, "--output",
                     Path("ob.safetensors"), "--tensor", "bare"});
  EXPECT_EQ(bare.exit_code, 2);
  EXPECT_THAT(bare.err, HasSubstr("'bare' is F8_E4M3"));
  EXPECT_THAT(bare.err, HasSubstr("dequantization scale"));
}

TEST_F(Nvfp4ctlTest, ExitCodes) {
  const std::string demo = MakeDemo();
  const std::string out_path = Path("out.safetensors");
  const std::string odd = WriteOddFile(Path("odd.safetensors"));

  // Missing input file.
  Result r = Run(
      {"quantize-tensor", "--local", "--input", Path("missing.safetensors"), "--output", out_path});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("missing.safetensors"));
  // Bad method.
  r = Run(
      {"quantize-tensor", "--local", "--input", demo, "--output", out_path, "--method", "gptq"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("gptq"));
  // A named tensor with K % 16 != 0.
  r = Run({"quantize-tensor", "--local", "--input", odd, "--output", out_path, "--tensor", "odd"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("'odd'"));
  EXPECT_THAT(r.err, HasSubstr("[4, 20]"));
  EXPECT_THAT(r.err, HasSubstr("multiple of 16"));
  EXPECT_FALSE(std::filesystem::exists(out_path));
  EXPECT_FALSE(std::filesystem::exists(out_path + ".tmp"));
  // Unnamed, it is skipped with a note; the rest succeeds.
  r = Run({"quantize-tensor", "--local", "--input", odd, "--output", out_path, "--method", "rtn"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("skipping 'odd'"));
  EXPECT_THAT(r.err, HasSubstr("skipping 'ids'"));
  // A named non-float tensor, and a tensor that does not exist.
  r = Run({"quantize-tensor", "--local", "--input", odd, "--output", out_path, "--tensor", "ids"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("I32"));
  r = Run(
      {"quantize-tensor", "--local", "--input", demo, "--output", out_path, "--tensor", "nope"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("no tensor named 'nope'"));
  // Without --local: remote mode is not available here.
  r = Run({"quantize-tensor", "--input", demo, "--output", out_path});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--server"));
  // Unknown flag, missing subcommand.
  EXPECT_EQ(Run({"quantize-tensor", "--local", "--frobnicate"}).exit_code, 2);
  EXPECT_EQ(Run({}).exit_code, 2);
  // A file that is not safetensors.
  {
    std::ofstream bad(Path("bad.safetensors"), std::ios::binary);
    bad << "this is not a safetensors file at all";
  }
  r = Run({"quantize-tensor", "--local", "--input", Path("bad.safetensors"), "--output", out_path});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("bad.safetensors"));
  // Output directory that does not exist.
  r = Run({"quantize-tensor", "--local", "--input", demo, "--output",
           Path("no/such/dir/out.safetensors")});
  EXPECT_EQ(r.exit_code, 2);
}

std::vector<uint8_t> F32Bytes(const std::vector<float>& v) {
  std::vector<uint8_t> out(v.size() * 4);
  std::memcpy(out.data(), v.data(), out.size());
  return out;
}

TEST_F(Nvfp4ctlTest, CalibrationIsValidatedAndUsed) {
  const std::string demo = MakeDemo();  // q_proj is [64, 128]: K = 128
  const std::string out_path = Path("out.safetensors");
  const std::string q = kQ;

  // Wrong input_sq length.
  const std::string bad_cal = Path("bad_cal.safetensors");
  const auto sq_bad = F32Bytes(std::vector<float>(100, 1.0f));
  std::vector<formats::TensorToWrite> bad = {{q + ".input_sq", "F32", {100}, sq_bad}};
  ASSERT_TRUE(formats::WriteSafetensors(bad_cal, bad).ok());
  Result r = Run({"quantize-tensor", "--local", "--input", demo, "--output", out_path, "--tensor",
                  q, "--objective", "wmse", "--calibration", bad_cal});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr(q + ".input_sq"));
  EXPECT_THAT(r.err, HasSubstr("expected shape [128]"));

  // wmse without calibration.
  r = Run({"quantize-tensor", "--local", "--input", demo, "--output", out_path, "--tensor", q,
           "--objective", "wmse"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--calibration"));

  // Good calibration: input_sq for wmse, activations for the output-space error.
  std::vector<float> sq(128), acts(32 * 128);
  for (int i = 0; i < 128; ++i) sq[i] = 1.0f + static_cast<float>(i % 7);
  for (size_t i = 0; i < acts.size(); ++i) acts[i] = std::sin(0.37f * static_cast<float>(i));
  const auto sq_bytes = F32Bytes(sq), act_bytes = F32Bytes(acts);
  const std::string cal = Path("cal.safetensors");
  std::vector<formats::TensorToWrite> good = {
      {q + ".input_sq", "F32", {128}, sq_bytes},
      {q + ".input_activations", "F32", {32, 128}, act_bytes}};
  ASSERT_TRUE(formats::WriteSafetensors(cal, good).ok());
  r = Run({"quantize-tensor", "--local", "--input", demo, "--output", out_path, "--tensor", q,
           "--method", "scalesweep", "--objective", "wmse", "--calibration", cal, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto lines = JsonLines(r.out);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["objective"], "wmse");
  ASSERT_TRUE(lines[0].contains("output_nmse")) << lines[0].dump();
  EXPECT_GT(lines[0]["output_nmse"].get<double>(), 0.0);
  EXPECT_LT(lines[0]["output_nmse"].get<double>(), 0.1);
}

TEST_F(Nvfp4ctlTest, InspectListsTensors) {
  const std::string demo = MakeDemo();
  Result r = Run({"inspect", "--input", demo, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto lines = JsonLines(r.out);
  EXPECT_EQ(lines.size(), 5u);
  EXPECT_EQ(Run({"inspect", "--input", Path("missing")}).exit_code, 2);
}

}  // namespace
}  // namespace nvfp4
