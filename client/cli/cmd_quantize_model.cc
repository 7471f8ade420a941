// nvfp4ctl quantize-model: submits a QuantizeModel job and (unless --detach) watches it.
#include <iostream>
#include <memory>

#include "base/status_macros.h"
#include "client/cli/exit_codes.h"
#include "client/cli/gptq_flags.h"
#include "client/cli/remote_common.h"
#include "nvfp4/v1/convert.h"

namespace nvfp4::cli {

void AddQuantizeModelCommand(CLI::App& root, SubcommandList& out) {
  struct Flags {
    RemoteFlags remote;
    std::string input, output, layout = "modelopt", method = "soar", objective = "mse",
                               error_rule = "mse", calibration, request_id;
    std::vector<std::string> include, exclude;
    GptqFlags gptq;
    bool detach = false;
    bool strict = false;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* app = root.add_subcommand("quantize-model",
                                      "Quantize a whole checkpoint on an nvfp4d server (a job).");
  AddRemoteFlags(app, &f->remote);
  app->add_option("--input", f->input,
                  "Input checkpoint: file:///path (on the server) or s3://bucket/prefix; with "
                  "--local a local directory or s3://bucket/prefix.")
      ->required()
      ->type_name("URI");
  app->add_option("--output", f->output,
                  "Output: file:///path (on the server) or s3://bucket/prefix (--local: a local "
                  "directory or s3://); nothing appears there until it is complete.")
      ->required()
      ->type_name("URI");
  app->add_option("--layout", f->layout, "Output layout.")
      ->check(CLI::IsMember({"modelopt", "compressed-tensors"}))
      ->capture_default_str();
  app->add_option("--method", f->method,
                  "Scale-selection method (gptq: error feedback, needs each module's input_gram "
                  "in --calibration).")
      ->check(CLI::IsMember(MethodChoices()))
      ->capture_default_str();
  AddGptqFlags(app, &f->gptq);
  app->add_option("--objective", f->objective, "Objective of scalesweep/soar.")
      ->check(CLI::IsMember({"mse", "wmse", "hessian"}))
      ->capture_default_str();
  app->add_option("--error-rule", f->error_rule, "Four Over Six block error rule.")
      ->check(CLI::IsMember({"mse", "mae", "absmax"}))
      ->capture_default_str();
  app->add_option("--include", f->include,
                  "Only quantize modules matching this pattern (repeatable): a glob on the module "
                  "name (`*` also matches dots), or re:REGEX (matched at the start of the name).")
      ->type_name("PAT");
  app->add_option("--exclude", f->exclude,
                  "Never quantize modules matching this pattern (repeatable; wins over "
                  "--include): a glob, or re:REGEX.")
      ->type_name("PAT");
  app->add_option("--calibration", f->calibration,
                  "Calibration statistics (file:// on the server, or s3://; with --local a path "
                  "or s3://).")
      ->type_name("URI");
  app->add_option("--request-id", f->request_id,
                  "Idempotency key: resubmitting with the same key returns the same job.");
  app->add_flag("--detach", f->detach, "Print the job and return without watching it.");
  app->add_flag("--strict", f->strict, kStrictHelp);
  app->footer("Exit codes: 0 succeeded, 1 server error, 2 user error, 3 job failed or cancelled.");
  out.push_back({app, [f]() {
                   v1::QuantizeModelRequest r;
                   r.set_input_uri(f->input);
                   r.set_output_uri(f->output);
                   r.set_layout(f->layout == "compressed-tensors" ? v1::LAYOUT_COMPRESSED_TENSORS
                                                                  : v1::LAYOUT_MODELOPT);
                   auto parse = [&]() -> absl::StatusOr<QuantizeOptions> {
                     QuantizeOptions o;
                     ASSIGN_OR_RETURN(o.method, ParseMethod(f->method));
                     ASSIGN_OR_RETURN(o.objective, ParseObjective(f->objective));
                     ASSIGN_OR_RETURN(o.four_over_six_rule, ParseErrorRule(f->error_rule));
                     ASSIGN_OR_RETURN(o.gptq, GptqOptionsFromFlags(f->gptq));
                     return o;
                   };
                   const absl::StatusOr<QuantizeOptions> options = parse();
                   if (!options.ok()) {
                     std::cerr << "nvfp4ctl: " << options.status().message() << "\n";
                     return kExitUsage;
                   }
                   *r.mutable_options() = v1::ToProto(*options);
                   for (const auto& p : f->include) r.add_include_patterns(p);
                   for (const auto& p : f->exclude) r.add_exclude_patterns(p);
                   r.set_calibration_uri(f->calibration);
                   r.set_request_id(f->request_id);
                   r.set_strict(f->strict);
                   auto client = ConnectRemote(f->remote);
                   if (!client.ok()) return ReportRemoteError(client.status());
                   auto job = (*client)->QuantizeModel(r);
                   if (!job.ok()) return ReportRemoteError(job.status());
                   if (f->detach) {
                     std::cout << (f->remote.json ? JobJson(*job) : JobLine(*job)) << "\n";
                     return kExitOk;
                   }
                   if (!f->remote.json) std::cerr << "submitted " << job->job_id() << "\n";
                   return WatchAndRender(**client, job->job_id(), f->remote.json);
                 }});
}

}  // namespace nvfp4::cli
