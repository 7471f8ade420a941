// nvfp4ctl inspect: validate a safetensors file (or sharded checkpoint) and list its tensors.
#include <algorithm>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "base/status_macros.h"
#include "client/cli/command.h"
#include "client/cli/exit_codes.h"
#include "client/cli/metrics_output.h"
#include "formats/sharded.h"
#include "nlohmann/json.hpp"

namespace nvfp4::cli {
namespace {

struct InspectFlags {
  std::string input;
  bool json = false;
};

absl::Status Inspect(const InspectFlags& flags) {
  if (flags.input.empty()) return absl::InvalidArgumentError("--input is required");
  ASSIGN_OR_RETURN(std::unique_ptr<formats::CheckpointReader> checkpoint,
                   formats::CheckpointReader::OpenLocal(flags.input));
  size_t width = 6;
  for (const formats::TensorLocation& t : checkpoint->tensors()) {
    width = std::max(width, t.info->name.size());
  }
  // Text output sorts by name (X, X_scale, X_scale_2 together); JSON keeps file order.
  std::vector<formats::TensorLocation> tensors = checkpoint->tensors();
  if (!flags.json) {
    std::sort(tensors.begin(), tensors.end(),
              [](const formats::TensorLocation& a, const formats::TensorLocation& b) {
                return a.info->name < b.info->name;
              });
  }
  for (const formats::TensorLocation& t : tensors) {
    const formats::TensorInfo& info = *t.info;
    if (flags.json) {
      nlohmann::ordered_json j;
      j["tensor"] = info.name;
      j["dtype"] = info.dtype;
      j["shape"] = info.shape;
      j["bytes"] = info.size;
      j["file"] = checkpoint->shards()[t.shard]->name();
      std::cout << j.dump() << "\n";
    } else {
      std::cout << info.name << std::string(width - info.name.size() + 2, ' ') << info.dtype
                << std::string(info.dtype.size() < 8 ? 8 - info.dtype.size() : 1, ' ')
                << FormatShape(info.shape) << "\n";
    }
  }
  if (!flags.json) {
    std::cout << checkpoint->tensors().size() << " tensors, " << checkpoint->total_size()
              << " bytes in " << checkpoint->shards().size() << " file(s)\n";
  }
  return absl::OkStatus();
}

}  // namespace

void AddInspectCommand(CLI::App& root, SubcommandList& out) {
  auto flags = std::make_shared<InspectFlags>();
  CLI::App* app = root.add_subcommand(
      "inspect",
      "Validate a safetensors file, a model.safetensors.index.json, or a checkpoint directory, and "
      "list its tensors (name, dtype, shape).");
  app->add_option("--input", flags->input,
                  "A .safetensors file, an index .json, or a directory holding either.")
      ->type_name("PATH");
  app->add_flag("--json", flags->json,
                "Print one JSON object per tensor per line: tensor, dtype, shape, bytes, file.");
  out.push_back({app, [flags]() {
                   const absl::Status status = Inspect(*flags);
                   return status.ok() ? kExitOk : ReportError(status);
                 }});
}

}  // namespace nvfp4::cli
