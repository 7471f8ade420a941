// nvfp4ctl make-demo-tensors: a small BF16 safetensors file of Llama-like weights for demos and
// tests (Gaussian, Laplace and heavy-tailed Student-t values, some outlier input columns, and a
// 1-D norm weight that quantize-tensor skips).
#include <cstdint>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "base/status_macros.h"
#include "base/str_util.h"
#include "client/cli/command.h"
#include "client/cli/exit_codes.h"
#include "client/cli/metrics_output.h"
#include "formats/safetensors.h"
#include "kernels/testing/synthetic.h"

namespace nvfp4::cli {
namespace {

using nvfp4::testing::Distribution;

struct DemoFlags {
  std::string output;
  int64_t rows = 512;
  int64_t cols = 512;
  uint64_t seed = 0;
};

struct DemoTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;  // BF16, little-endian
};

DemoTensor MakeTensor(std::string name, int64_t rows, int64_t cols, Distribution d, float scale,
                      int64_t outlier_period, float outlier_factor, uint64_t seed) {
  std::vector<float> values = nvfp4::testing::Sample(d, rows * cols, seed);
  for (float& v : values) v *= scale;
  if (outlier_period > 0)
    nvfp4::testing::AddOutlierColumns(values, cols, outlier_period, outlier_factor);
  DemoTensor t{std::move(name), {rows, cols}, std::vector<uint8_t>(values.size() * 2)};
  for (size_t i = 0; i < values.size(); ++i) {
    const uint16_t h = nvfp4::testing::FloatToBf16(values[i]);
    t.bytes[2 * i] = static_cast<uint8_t>(h & 0xFF);
    t.bytes[2 * i + 1] = static_cast<uint8_t>(h >> 8);
  }
  return t;
}

absl::Status MakeDemo(const DemoFlags& flags) {
  if (flags.output.empty()) return absl::InvalidArgumentError("--output is required");
  if (flags.rows < 4 || flags.cols < 16 || flags.cols % 16 != 0) {
    return absl::InvalidArgumentError(
        StrCat("--rows must be >= 4 and --cols a positive multiple of 16 (got ", flags.rows, " x ",
               flags.cols, ")"));
  }
  if (flags.rows * flags.cols > (int64_t{1} << 26)) {
    return absl::InvalidArgumentError("--rows x --cols is limited to 2^26 elements for a demo");
  }
  const int64_t n = flags.rows, k = flags.cols;
  const uint64_t s = flags.seed * 1000;
  const std::string layer = "model.layers.0.";
  std::vector<DemoTensor> tensors;
  tensors.push_back(MakeTensor(layer + "self_attn.q_proj.weight", n, k, Distribution::kGaussian,
                               0.02f, 0, 0, s + 1));
  tensors.push_back(MakeTensor(layer + "self_attn.k_proj.weight", n / 4, k, Distribution::kLaplace,
                               0.02f, 0, 0, s + 2));
  tensors.push_back(MakeTensor(layer + "mlp.up_proj.weight", 2 * n, k, Distribution::kGaussian,
                               0.02f, 64, 8.0f, s + 3));
  tensors.push_back(MakeTensor(layer + "mlp.down_proj.weight", n, 2 * k, Distribution::kStudentT3,
                               0.01f, 128, 6.0f, s + 4));
  DemoTensor norm = MakeTensor(layer + "input_layernorm.weight", 1, k, Distribution::kGaussian,
                               0.05f, 0, 0, s + 5);
  for (size_t i = 0; i < norm.bytes.size(); i += 2) {  // 1 + noise
    // Re-encode: bf16(1 + x). Decode x from the bf16 pair first.
    const uint16_t h = static_cast<uint16_t>(norm.bytes[i] | (norm.bytes[i + 1] << 8));
    uint32_t bits = static_cast<uint32_t>(h) << 16;
    float x;
    std::memcpy(&x, &bits, 4);
    const uint16_t one_plus = nvfp4::testing::FloatToBf16(1.0f + x);
    norm.bytes[i] = static_cast<uint8_t>(one_plus & 0xFF);
    norm.bytes[i + 1] = static_cast<uint8_t>(one_plus >> 8);
  }
  norm.shape = {k};
  tensors.push_back(std::move(norm));

  std::vector<formats::TensorToWrite> to_write;
  for (const DemoTensor& t : tensors) to_write.push_back({t.name, "BF16", t.shape, t.bytes});
  RETURN_IF_ERROR(formats::WriteSafetensors(flags.output, to_write, {{"producer", "nvfp4ctl"}}));
  std::cout << "wrote " << flags.output << ":\n";
  for (const DemoTensor& t : tensors) {
    std::cout << "  " << t.name << "  BF16 " << FormatShape(t.shape) << "\n";
  }
  return absl::OkStatus();
}

}  // namespace

void AddMakeDemoTensorsCommand(CLI::App& root, SubcommandList& out) {
  auto flags = std::make_shared<DemoFlags>();
  CLI::App* app = root.add_subcommand(
      "make-demo-tensors",
      "Write a small BF16 safetensors file of Llama-like weights (q_proj [N, K], k_proj [N/4, K], "
      "up_proj [2N, K] with outlier columns, down_proj [N, 2K] Student-t with outlier columns, and "
      "a 1-D input_layernorm [K]) for demos and tests.");
  app->add_option("--output", flags->output, "File to write.")->type_name("FILE");
  app->add_option("--rows", flags->rows, "N, the base number of rows (output features).")
      ->capture_default_str();
  app->add_option("--cols", flags->cols,
                  "K, the base number of columns (input features); a multiple of 16.")
      ->capture_default_str();
  app->add_option("--seed", flags->seed, "Random seed (the file is deterministic per seed).")
      ->capture_default_str();
  out.push_back({app, [flags]() {
                   const absl::Status status = MakeDemo(*flags);
                   return status.ok() ? kExitOk : ReportError(status);
                 }});
}

}  // namespace nvfp4::cli
