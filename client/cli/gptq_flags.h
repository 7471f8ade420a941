// The GPTQ flags shared by quantize-tensor and quantize-model (local and remote): --block-scales,
// --dampening, --gptq-block-size, --order, --gptq-global-scale (docs/NUMERICS.md, "GPTQ").
#ifndef NVFP4_CLIENT_CLI_GPTQ_FLAGS_H_
#define NVFP4_CLIENT_CLI_GPTQ_FLAGS_H_

#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "kernels/types.h"

namespace nvfp4::cli {

struct GptqFlags {
  std::string block_scales = "soar";
  double dampening = 0.01;
  int block_size = 128;
  std::string order = "natural";
  std::string global_scale = "amax";
};

// The --method values every quantizing command accepts.
inline const std::vector<std::string>& MethodChoices() {
  static const std::vector<std::string> kChoices = {"rtn", "4over6", "scalesweep", "soar", "gptq"};
  return kChoices;
}

// Adds the GPTQ options to `app`, skipping any it already has (quantize-model's local and remote
// forms share one subcommand).
void AddGptqFlags(CLI::App* app, GptqFlags* flags);

// Parses the flags (INVALID_ARGUMENT naming the flag).
absl::StatusOr<GptqOptions> GptqOptionsFromFlags(const GptqFlags& flags);

// Reads the GPTQ options back from `app`, whichever GptqFlags the options were bound to.
absl::StatusOr<GptqOptions> GptqOptionsFromApp(CLI::App* app);

}  // namespace nvfp4::cli

#endif  // NVFP4_CLIENT_CLI_GPTQ_FLAGS_H_
