// nvfp4ctl finalize: the last step of a sharded `quantize-model --local --shard i/N` run. Checks
// that every safetensors file of the output is present with exactly the header and size the plan
// expects (FAILED_PRECONDITION, exit 2, naming the missing files, and nothing written otherwise),
// then writes model.safetensors.index.json, config.json (with quantization_config),
// hf_quant_config.json (ModelOpt) and copies the other input files: the same bytes as a single
// `quantize-model --local` run with the same flags. Reads only headers, never tensor data.
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "base/status_macros.h"
#include "base/str_util.h"
#include "client/cli/exit_codes.h"
#include "client/cli/pipeline_commands.h"
#include "nlohmann/json.hpp"
#include "pipeline/model_calibration.h"
#include "pipeline/shard_plan.h"
#include "storage/directory.h"
#include "storage/router.h"

namespace nvfp4::cli {
namespace {

struct FinalizeFlags {
  std::string input, output, layout = "modelopt", method = "soar", objective = "mse",
                             error_rule = "mse", calibration, max_shard_size = "5GB";
  std::vector<std::string> include, exclude;
  bool no_default_excludes = false, json = false;
  std::string s3_endpoint, s3_region, staging_dir;
};

// An output location with nothing in it yet reads as an empty listing.
class EmptyInputDirectory : public storage::InputDirectory {
 public:
  explicit EmptyInputDirectory(std::string name) : name_(std::move(name)) {}
  absl::StatusOr<std::vector<std::string>> ListFiles() override {
    return std::vector<std::string>{};
  }
  absl::StatusOr<std::unique_ptr<formats::RandomAccessSource>> OpenFile(
      const std::string& name) override {
    return absl::NotFoundError(StrCat(name_, "/", name, ": no such file"));
  }
  bool Exists(const std::string&) override { return false; }
  std::string Describe() const override { return name_; }

 private:
  std::string name_;
};

absl::Status RunFinalize(CLI::App* app, const FinalizeFlags& f) {
  const std::string input = StripFileScheme(f.input);
  const std::string output = StripFileScheme(f.output);
  ASSIGN_OR_RETURN(pipeline::QuantizeModelOptions o,
                   ModelOptionsFromFlags(app, f.max_shard_size, f.no_default_excludes));
  ASSIGN_OR_RETURN(std::unique_ptr<storage::StorageRouter> store,
                   OpenLocalStore(f.s3_endpoint, f.s3_region));
  ASSIGN_OR_RETURN(std::unique_ptr<pipeline::ModelCalibration> calibration,
                   OpenCalibration(f.calibration, *store));
  o.calibration = calibration.get();
  ASSIGN_OR_RETURN(std::unique_ptr<storage::InputDirectory> in,
                   storage::OpenInputDirectory(input, *store));
  // The output as written so far, read back (headers only).
  std::unique_ptr<storage::InputDirectory> written;
  if (auto w = storage::OpenInputDirectory(output, *store); w.ok()) {
    written = std::move(w).value();
  } else if (absl::IsNotFound(w.status())) {
    written = std::make_unique<EmptyInputDirectory>(output);
  } else {
    return w.status();
  }
  ASSIGN_OR_RETURN(std::unique_ptr<storage::OutputDirectory> out,
                   storage::OpenSharedOutputDirectory(output, *store, f.staging_dir));
  ASSIGN_OR_RETURN(pipeline::FinalizeResult r, pipeline::FinalizeModel(*in, *written, *out, o));

  if (f.json) {
    nlohmann::ordered_json s;
    s["output"] = output;
    s["layout"] = std::string(pipeline::LayoutName(o.layout));
    s["quant_algo"] = r.w4a4 ? "NVFP4" : "W4A16_NVFP4";
    s["shards"] = r.shard_files;
    s["written"] = r.written;
    s["copied_files"] = r.copied_files;
    s["bytes_out"] = r.tensor_bytes_out;
    s["warnings"] = r.warnings;
    std::cout << nlohmann::ordered_json{{"summary", s}}.dump() << "\n";
  } else {
    std::cout << "finalized " << output << ": " << pipeline::LayoutName(o.layout) << " "
              << (r.w4a4 ? "NVFP4 (W4A4)" : "W4A16_NVFP4 (weight-only)") << ", "
              << r.shard_files.size() << " safetensors file(s) verified ("
              << FormatBytes(static_cast<double>(r.tensor_bytes_out)) << "); wrote";
    for (const std::string& w : r.written) std::cout << " " << w;
    std::cout << "; " << r.copied_files.size() << " other file(s) copied\n";
  }
  for (const std::string& w : r.warnings) std::cerr << "nvfp4ctl: note: " << w << "\n";
  return absl::OkStatus();
}

}  // namespace

void AddFinalizeCommand(CLI::App& root, SubcommandList& out) {
  auto f = std::make_shared<FinalizeFlags>();
  CLI::App* app = root.add_subcommand(
      "finalize",
      "Last step of a sharded run (quantize-model --local --shard i/N in N processes): check that "
      "every shard file is in --output, then write the index, config.json (quantization_config), "
      "hf_quant_config.json and copy the other input files. Give the same --input and "
      "quantization flags as the shards. Exit 2, naming the missing files, when a shard is "
      "missing (nothing is written then).");
  app->add_option("--input", f->input,
                  "The input checkpoint the shards read (directory or s3://bucket/prefix).")
      ->required()
      ->type_name("DIR");
  app->add_option("--output", f->output, "The output the shards wrote into.")
      ->required()
      ->type_name("DIR");
  app->add_option("--layout", f->layout, "As quantize-model: modelopt or compressed-tensors.")
      ->check(CLI::IsMember({"modelopt", "compressed-tensors"}))
      ->capture_default_str();
  app->add_option("--method", f->method, "As quantize-model (recorded in the shard headers).")
      ->check(CLI::IsMember({"rtn", "4over6", "scalesweep", "soar"}))
      ->capture_default_str();
  app->add_option("--objective", f->objective, "As quantize-model.")
      ->check(CLI::IsMember({"mse", "wmse", "hessian"}))
      ->capture_default_str();
  app->add_option("--error-rule", f->error_rule, "As quantize-model (accepted, unused).")
      ->check(CLI::IsMember({"mse", "mae", "absmax"}))
      ->capture_default_str();
  app->add_option("--calibration", f->calibration,
                  "As quantize-model: its input_amax entries make the output W4A4.")
      ->type_name("FILE");
  app->add_option("--include", f->include, "As quantize-model (repeatable).")->type_name("PAT");
  app->add_option("--exclude", f->exclude, "As quantize-model (repeatable).")->type_name("PAT");
  app->add_option("--max-shard-size", f->max_shard_size, "As quantize-model.")
      ->capture_default_str();
  app->add_flag("--no-default-excludes", f->no_default_excludes, "As quantize-model.");
  app->add_flag("--json", f->json, "Print a {\"summary\": ...} JSON line.");
  app->add_option("--s3-endpoint", f->s3_endpoint,
                  "S3 endpoint URL for s3:// locations (default $AWS_ENDPOINT_URL).")
      ->type_name("URL");
  app->add_option("--s3-region", f->s3_region, "S3 region (default $AWS_REGION, else us-east-1).");
  app->add_option("--staging-dir", f->staging_dir,
                  "Local directory where files for an s3:// output are staged before upload.")
      ->type_name("DIR");
  out.push_back({app, [app, f]() {
                   const absl::Status s = RunFinalize(app, *f);
                   return s.ok() ? kExitOk : ReportError(s);
                 }});
}

}  // namespace nvfp4::cli
