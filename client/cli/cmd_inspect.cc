// nvfp4ctl inspect PATH: validate a safetensors file, an index, or a checkpoint directory.
// For an NVFP4 checkpoint directory (ModelOpt or compressed-tensors) it prints the layout, the
// quantization algorithm and method metadata, the quantized modules with their shapes and global
// scales, the total size and the bits per weight; for anything else it lists the tensors.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "base/status_macros.h"
#include "client/cli/command.h"
#include "client/cli/exit_codes.h"
#include "client/cli/metrics_output.h"
#include "client/cli/pipeline_commands.h"
#include "formats/sharded.h"
#include "nlohmann/json.hpp"
#include "pipeline/nvfp4_checkpoint.h"
#include "storage/directory.h"

namespace nvfp4::cli {
namespace {

struct InspectFlags {
  std::string input;
  std::string path;  // positional
  bool json = false;
  bool tensors = false;
};

absl::Status ListTensors(const std::string& input, bool json) {
  ASSIGN_OR_RETURN(std::unique_ptr<formats::CheckpointReader> checkpoint,
                   formats::CheckpointReader::OpenLocal(input));
  size_t width = 6;
  for (const formats::TensorLocation& t : checkpoint->tensors()) {
    width = std::max(width, t.info->name.size());
  }
  // Text output sorts by name (X, X_scale, X_scale_2 together); JSON keeps file order.
  std::vector<formats::TensorLocation> tensors = checkpoint->tensors();
  if (!json) {
    std::sort(tensors.begin(), tensors.end(),
              [](const formats::TensorLocation& a, const formats::TensorLocation& b) {
                return a.info->name < b.info->name;
              });
  }
  for (const formats::TensorLocation& t : tensors) {
    const formats::TensorInfo& info = *t.info;
    if (json) {
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
  if (!json) {
    std::cout << checkpoint->tensors().size() << " tensors, " << checkpoint->total_size()
              << " bytes (" << FormatBytes(static_cast<double>(checkpoint->total_size())) << ") in "
              << checkpoint->shards().size() << " file(s)\n";
  }
  return absl::OkStatus();
}

absl::Status InspectNvfp4(const std::string& dir, const pipeline::InspectReport& r,
                          const InspectFlags& f) {
  const std::string layout(pipeline::LayoutName(*r.layout));
  auto meta = [&](const std::string& k) {
    auto it = r.metadata.find(k);
    return it == r.metadata.end() ? std::string("unknown") : it->second;
  };
  if (f.json) {
    nlohmann::ordered_json j;
    j["path"] = dir;
    j["layout"] = layout;
    j["quant_algo"] = r.quant_algo;
    j["method"] = meta("nvfp4.method");
    j["objective"] = meta("nvfp4.objective");
    j["shards"] = r.shards;
    j["tensors"] = r.tensors;
    j["total_bytes"] = r.total_bytes;
    j["quantized_weights"] = r.quantized_weights;
    j["bits_per_weight"] = r.bits_per_weight;
    j["overall_bits_per_param"] = r.overall_bits_per_param;
    nlohmann::ordered_json mods = nlohmann::ordered_json::array();
    for (const pipeline::Nvfp4Module& m : r.modules) {
      nlohmann::ordered_json e;
      e["module"] = m.name;
      e["shape"] = {m.rows, m.cols};
      e["global_scale"] = m.global_scale;
      if (m.input_amax) e["input_amax"] = *m.input_amax;
      mods.push_back(e);
    }
    j["modules"] = mods;
    nlohmann::ordered_json other = nlohmann::ordered_json::array();
    for (const auto& t : r.other_tensors) {
      other.push_back({{"tensor", t.name}, {"dtype", t.dtype}, {"shape", t.shape}});
    }
    j["full_precision_tensors"] = other;
    std::cout << j.dump() << "\n";
    return absl::OkStatus();
  }
  std::cout << dir << ": NVFP4 checkpoint, " << layout << " layout, " << r.quant_algo
            << (r.quant_algo == "NVFP4" ? " (weights and activations)" : " (weight-only)") << "\n";
  std::cout << "  method " << meta("nvfp4.method") << ", objective " << meta("nvfp4.objective")
            << "\n";
  std::printf("  %zu quantized modules: %lld weights at %.3f bits/weight (%s)\n", r.modules.size(),
              static_cast<long long>(r.quantized_weights), r.bits_per_weight,
              FormatBytes(static_cast<double>(r.quantized_bytes)).c_str());
  std::printf("  %zu full-precision tensors: %lld elements (%s)\n", r.other_tensors.size(),
              static_cast<long long>(r.other_elements),
              FormatBytes(static_cast<double>(r.other_bytes)).c_str());
  std::printf("  total %s in %lld file(s), %lld tensors; %.3f bits per parameter overall\n\n",
              FormatBytes(static_cast<double>(r.total_bytes)).c_str(),
              static_cast<long long>(r.shards), static_cast<long long>(r.tensors),
              r.overall_bits_per_param);
  size_t width = 6;
  for (const auto& m : r.modules) width = std::max(width, m.name.size());
  for (const auto& t : r.other_tensors) width = std::max(width, t.name.size());
  std::printf("%-*s  %-14s  %-12s  %s\n", static_cast<int>(width), "module", "shape",
              "global_scale", "input_amax");
  for (const auto& m : r.modules) {
    std::printf("%-*s  %-14s  %-12.6g  %s\n", static_cast<int>(width), m.name.c_str(),
                FormatShape({m.rows, m.cols}).c_str(), m.global_scale,
                m.input_amax ? std::to_string(*m.input_amax).c_str() : "-");
  }
  std::printf("\n%-*s  %-8s  %s\n", static_cast<int>(width), "full-precision tensor", "dtype",
              "shape");
  for (const auto& t : r.other_tensors) {
    std::printf("%-*s  %-8s  %s\n", static_cast<int>(width), t.name.c_str(), t.dtype.c_str(),
                FormatShape(t.shape).c_str());
  }
  std::fflush(stdout);
  if (f.tensors) return ListTensors(dir, false);
  return absl::OkStatus();
}

absl::Status Inspect(const InspectFlags& flags) {
  const std::string input = !flags.path.empty() ? flags.path : flags.input;
  if (input.empty()) return absl::InvalidArgumentError("give a PATH (or --input PATH)");
  std::error_code ec;
  if (std::filesystem::is_directory(input, ec)) {
    ASSIGN_OR_RETURN(auto dir, storage::OpenLocalInputDirectory(input));
    ASSIGN_OR_RETURN(std::optional<pipeline::Layout> layout, pipeline::DetectLayout(*dir));
    if (layout) {
      ASSIGN_OR_RETURN(pipeline::InspectReport report, pipeline::InspectCheckpoint(*dir));
      return InspectNvfp4(input, report, flags);
    }
  }
  return ListTensors(input, flags.json);
}

}  // namespace

void AddInspectCommand(CLI::App& root, SubcommandList& out) {
  auto flags = std::make_shared<InspectFlags>();
  CLI::App* app = root.add_subcommand(
      "inspect",
      "Validate a safetensors file, a model.safetensors.index.json, or a checkpoint directory. "
      "For an NVFP4 checkpoint directory (ModelOpt or compressed-tensors): layout, algorithm, "
      "method, quantized modules and shapes, total size and bits per weight. Otherwise: the "
      "tensors (name, dtype, shape).");
  app->add_option("path", flags->path,
                  "A checkpoint directory, a .safetensors file, or an index .json.")
      ->type_name("PATH");
  app->add_option("--input", flags->input, "Same as PATH.")->type_name("PATH");
  app->add_flag("--json", flags->json,
                "JSON: for an NVFP4 checkpoint one summary object; otherwise one object per "
                "tensor per line (tensor, dtype, shape, bytes, file).");
  app->add_flag("--tensors", flags->tensors,
                "For an NVFP4 checkpoint, also list every tensor of its files.");
  out.push_back({app, [flags]() {
                   const absl::Status status = Inspect(*flags);
                   return status.ok() ? kExitOk : ReportError(status);
                 }});
}

}  // namespace nvfp4::cli
