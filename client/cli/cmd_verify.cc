// nvfp4ctl verify: dequantizes every module of an NVFP4 checkpoint (ModelOpt or
// compressed-tensors) and compares it with the original weights (per-module nmse); checks that the
// tensors kept in full precision are byte-identical to the original.
// Exit codes: 0 verified, 2 user error or a layout error (malformed NVFP4 checkpoint), 1 a corrupt
// file (e.g. NaN block scales) or a verification that found problems.
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "base/status_macros.h"
#include "client/cli/exit_codes.h"
#include "client/cli/metrics_output.h"
#include "client/cli/pipeline_commands.h"
#include "pipeline/nvfp4_checkpoint.h"
#include "storage/directory.h"

namespace nvfp4::cli {
namespace {

struct VerifyFlags {
  std::string original, quantized;
  bool json = false;
};

int RunVerify(const VerifyFlags& f) {
  auto orig = storage::OpenLocalInputDirectory(f.original);
  if (!orig.ok()) return ReportError(orig.status());
  auto quant = storage::OpenLocalInputDirectory(f.quantized);
  if (!quant.ok()) return ReportError(quant.status());
  auto rep = pipeline::VerifyCheckpoint(**orig, **quant);
  if (!rep.ok()) return ReportError(rep.status());
  if (f.json) {
    for (const pipeline::ModuleVerification& m : rep->modules) {
      nlohmann::ordered_json j;
      j["module"] = m.module;
      j["shape"] = {m.rows, m.cols};
      j["nmse"] = m.nmse;
      j["max_abs_err"] = m.max_abs_err;
      j["global_scale"] = m.global_scale;
      std::cout << j.dump() << "\n";
    }
    nlohmann::ordered_json s;
    s["layout"] = std::string(pipeline::LayoutName(rep->layout));
    s["quant_algo"] = rep->quant_algo;
    s["modules"] = rep->modules.size();
    s["copied_identical"] = rep->copied_identical;
    s["max_nmse"] = rep->max_nmse;
    s["mean_nmse"] = rep->mean_nmse;
    s["problems"] = rep->problems;
    s["ok"] = rep->ok();
    std::cout << nlohmann::ordered_json{{"summary", s}}.dump() << "\n";
  } else {
    size_t width = 6;
    for (const auto& m : rep->modules) width = std::max(width, m.module.size());
    std::printf("%-*s  %-14s  %-11s  %-11s\n", static_cast<int>(width), "module", "shape", "nmse",
                "max_abs_err");
    for (const auto& m : rep->modules) {
      std::printf("%-*s  %-14s  %-11.4e  %-11.4e\n", static_cast<int>(width), m.module.c_str(),
                  FormatShape({m.rows, m.cols}).c_str(), m.nmse, m.max_abs_err);
    }
    std::printf(
        "\n%s %s: %zu quantized modules (mean nmse %.4e, max %.4e), %lld full-precision "
        "tensors byte-identical to the original\n",
        std::string(pipeline::LayoutName(rep->layout)).c_str(), rep->quant_algo.c_str(),
        rep->modules.size(), rep->mean_nmse, rep->max_nmse,
        static_cast<long long>(rep->copied_identical));
    std::fflush(stdout);
  }
  for (const std::string& p : rep->problems) std::cerr << "nvfp4ctl: problem: " << p << "\n";
  if (!rep->ok()) {
    std::cerr << "nvfp4ctl: error: verification failed (" << rep->problems.size()
              << " problem(s))\n";
    return kExitInternal;
  }
  return kExitOk;
}

}  // namespace

void AddVerifyCommand(CLI::App& root, SubcommandList& out) {
  auto f = std::make_shared<VerifyFlags>();
  CLI::App* app = root.add_subcommand(
      "verify",
      "Check an NVFP4 checkpoint against the original: layout (both ModelOpt and "
      "compressed-tensors), per-module nmse of the dequantized weights, byte-identical "
      "full-precision tensors.");
  app->add_option("--original", f->original, "The original (unquantized) checkpoint directory.")
      ->required()
      ->type_name("DIR");
  app->add_option("--quantized", f->quantized, "The NVFP4 checkpoint directory.")
      ->required()
      ->type_name("DIR");
  app->add_flag("--json", f->json,
                "One JSON object per module (module, shape, nmse, max_abs_err, global_scale), "
                "then a {\"summary\": ...} line.");
  app->footer(
      "Exit codes: 0 verified, 2 bad flags or a malformed (layout error) checkpoint, 1 a corrupt "
      "file or a failed verification.");
  out.push_back({app, [f]() { return RunVerify(*f); }});
}

}  // namespace nvfp4::cli
