// nvfp4ctl quantize-model --local: quantizes a whole Hugging Face checkpoint in-process with the
// streaming pipeline (pipeline/quantize_model.h) and writes a ModelOpt or compressed-tensors NVFP4
// checkpoint. A live progress bar on a terminal (tensors, bytes, rate, ETA), plain lines
// otherwise; a per-module metrics table (or JSON lines with --json) at the end.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "base/status_macros.h"
#include "base/str_util.h"
#include "client/cli/exit_codes.h"
#include "client/cli/gptq_flags.h"
#include "client/cli/metrics_output.h"
#include "client/cli/pipeline_commands.h"
#include "client/cli/progress.h"
#include "kernels/backend.h"
#include "pipeline/quantize_model.h"
#include "pipeline/shard_plan.h"
#include "storage/directory.h"
#include "storage/router.h"

namespace nvfp4::cli {

absl::StatusOr<uint64_t> ParseByteSize(const std::string& text) {
  std::string s = absl::AsciiStrToLower(text);
  s.erase(std::remove(s.begin(), s.end(), ' '), s.end());
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  double value = 0;
  if (i == 0 || !absl::SimpleAtod(s.substr(0, i), &value)) {
    return absl::InvalidArgumentError(StrCat("bad size '", text, "' (e.g. 5GB, 500MB, 2GiB)"));
  }
  const std::string unit = s.substr(i);
  double mult;
  if (unit.empty() || unit == "b") {
    mult = 1;
  } else if (unit == "kb" || unit == "k") {
    mult = 1e3;
  } else if (unit == "mb" || unit == "m") {
    mult = 1e6;
  } else if (unit == "gb" || unit == "g") {
    mult = 1e9;
  } else if (unit == "tb") {
    mult = 1e12;
  } else if (unit == "kib") {
    mult = 1024.0;
  } else if (unit == "mib") {
    mult = 1024.0 * 1024;
  } else if (unit == "gib") {
    mult = 1024.0 * 1024 * 1024;
  } else {
    return absl::InvalidArgumentError(
        StrCat("bad size unit in '", text, "' (B, KB, MB, GB, TB, KiB, MiB, GiB)"));
  }
  const double bytes = std::round(value * mult);
  if (bytes < 1 || bytes > 1e18)
    return absl::InvalidArgumentError(StrCat("size '", text, "' out of range"));
  return static_cast<uint64_t>(bytes);
}

std::string FormatBytes(double b) {
  char buf[32];
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (b >= 1000 && u < 4) {
    b /= 1000;
    ++u;
  }
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.2f %s", b, units[u]);
  return buf;
}

namespace {

std::string FormatDuration(double s) {
  if (!std::isfinite(s) || s < 0) return "--:--";
  const int64_t t = static_cast<int64_t>(s + 0.5);
  char buf[32];
  if (t >= 3600) {
    std::snprintf(buf, sizeof(buf), "%lld:%02lld:%02lld", static_cast<long long>(t / 3600),
                  static_cast<long long>(t / 60 % 60), static_cast<long long>(t % 60));
  } else {
    std::snprintf(buf, sizeof(buf), "%lld:%02lld", static_cast<long long>(t / 60),
                  static_cast<long long>(t % 60));
  }
  return buf;
}

struct LocalFlags {
  bool local = false;
  bool overwrite = false;
  bool no_default_excludes = false;
  std::string max_shard_size = "5GB";
  std::string device = "auto";
  int threads = 0;
  std::string shard;  // "i/N": one process of a sharded run (--shard)
  std::string s3_endpoint, s3_region, staging_dir;
  int s3_upload_concurrency = 4;
  // Bound only when the remote command does not declare them (read back by name at run time).
  std::string input, output, layout = "modelopt", method = "soar", objective = "mse",
                             error_rule = "mse", calibration;
  GptqFlags gptq;
  std::vector<std::string> include, exclude;
  bool json = false;
  bool strict = false;
};

// The value of option `name` of `app` (whoever declared it), or `fallback` when not given.
std::string StringOption(CLI::App* app, const std::string& name, const std::string& fallback) {
  CLI::Option* o = app->get_option_no_throw(name);
  if (o == nullptr || o->count() == 0) return fallback;
  return o->as<std::string>();
}
std::vector<std::string> ListOption(CLI::App* app, const std::string& name) {
  CLI::Option* o = app->get_option_no_throw(name);
  if (o == nullptr || o->count() == 0) return {};
  return o->as<std::vector<std::string>>();
}
bool FlagOption(CLI::App* app, const std::string& name) {
  CLI::Option* o = app->get_option_no_throw(name);
  return o != nullptr && o->count() > 0 && o->as<bool>();
}

// Renders pipeline progress on stderr: a redrawn bar on a terminal, one line per unit otherwise.
class ModelProgress {
 public:
  ModelProgress(bool tty, bool quiet) : tty_(tty), quiet_(quiet) {}
  void Update(const pipeline::TensorProgress& p) {
    if (quiet_ && !tty_) return;
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double rate = elapsed > 0 ? static_cast<double>(p.bytes_in_done) / elapsed : 0;
    const double eta =
        rate > 0 ? static_cast<double>(p.bytes_in_total - p.bytes_in_done) / rate : NAN;
    if (tty_) {
      const bool last = p.units_done == p.units_total;
      if (!last && elapsed - last_draw_ < 0.1) return;
      last_draw_ = elapsed;
      const int width = 28;
      const double frac = p.bytes_in_total ? static_cast<double>(p.bytes_in_done) /
                                                 static_cast<double>(p.bytes_in_total)
                                           : 1.0;
      const int filled = static_cast<int>(frac * width);
      std::string bar(static_cast<size_t>(filled), '=');
      if (filled < width) bar += '>' + std::string(static_cast<size_t>(width - filled - 1), ' ');
      std::string name = p.name;
      if (name.size() > 40) name = "..." + name.substr(name.size() - 37);
      std::cerr << "\r\033[K[" << bar << "] " << p.units_done << "/" << p.units_total
                << " tensors  " << FormatBytes(static_cast<double>(p.bytes_in_done)) << "/"
                << FormatBytes(static_cast<double>(p.bytes_in_total)) << "  " << FormatBytes(rate)
                << "/s  ETA " << FormatDuration(eta) << "  " << name << std::flush;
      open_ = true;
      return;
    }
    std::cerr << "[" << p.units_done << "/" << p.units_total << "] " << p.name << "  "
              << (p.quantized ? "quantized" : "copied") << "  "
              << FormatBytes(static_cast<double>(p.bytes_in)) << " -> "
              << FormatBytes(static_cast<double>(p.bytes_out));
    for (const pipeline::ModuleResult& m : p.modules) {
      char buf[32];
      std::snprintf(buf, sizeof(buf), "%.3e", m.metrics.nmse);
      std::cerr << (p.modules.size() > 1 ? "  " + m.module.substr(m.module.rfind('.') + 1)
                                         : std::string("  "))
                << " nmse " << buf;
    }
    std::cerr << "\n";
  }
  void Clear() {
    if (open_) std::cerr << "\r\033[K" << std::flush;
    open_ = false;
  }

 private:
  bool tty_, quiet_;
  bool open_ = false;
  double last_draw_ = -1;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

// What `quantize-model --local` was asked to do, from its flags.
struct LocalRequest {
  std::string input, output;  // local directories or s3:// locations
  bool json = false;
  std::optional<pipeline::ShardSpec> shard;  // --shard i/N
  std::string shard_text;                    // "i/N" as given
  bool overwrite = false;
  std::string staging_dir;
  pipeline::QuantizeModelOptions options;
};

// The device is the user's choice: an absent GPU is a usage error. Returns the backend's name.
absl::StatusOr<std::string> CheckDevice(const std::string& device, int threads) {
  auto backend = device == "cpu"
                     ? absl::StatusOr<std::unique_ptr<QuantizerBackend>>(MakeCpuBackend(threads))
                     : MakeBackend(device);
  if (!backend.ok()) {
    return absl::InvalidArgumentError(
        StrCat("--device ", device, ": ", backend.status().message()));
  }
  return (*backend)->name();
}

absl::StatusOr<LocalRequest> ParseLocalRequest(CLI::App* app, const LocalFlags& f) {
  LocalRequest r;
  r.input = StripFileScheme(StringOption(app, "--input", ""));
  r.output = StripFileScheme(StringOption(app, "--output", ""));
  if (r.input.empty() || r.output.empty()) {
    return absl::InvalidArgumentError("--input and --output are required");
  }
  if (CLI::Option* s = app->get_option_no_throw("--server"); s != nullptr && s->count() > 0) {
    return absl::InvalidArgumentError("--local and --server cannot be combined");
  }
  r.json = FlagOption(app, "--json");
  if (CLI::Option* so = app->get_option_no_throw("--shard"); so != nullptr && so->count() > 0) {
    ASSIGN_OR_RETURN(r.shard, pipeline::ParseShardSpec(f.shard));
    if (f.overwrite) {
      return absl::InvalidArgumentError(
          "--overwrite and --shard cannot be combined: a shard replaces only its own files");
    }
  }
  r.shard_text = f.shard;
  r.overwrite = f.overwrite;
  r.staging_dir = f.staging_dir;
  ASSIGN_OR_RETURN(r.options, ModelOptionsFromFlags(app, f.max_shard_size, f.no_default_excludes));
  r.options.cpu_threads = f.threads;
  ASSIGN_OR_RETURN(r.options.device, CheckDevice(f.device, f.threads));
  return r;
}

// A shard's files go straight into the shared output location; a whole run's output appears
// when complete.
absl::StatusOr<std::unique_ptr<storage::OutputDirectory>> OpenLocalOutput(
    const LocalRequest& r, storage::StorageRouter& store) {
  if (r.shard) return storage::OpenSharedOutputDirectory(r.output, store, r.staging_dir);
  return storage::OpenOutputDirectory(r.output, store, r.overwrite, r.staging_dir);
}

// Runs the pipeline with a progress display. nullopt: a shard with nothing to do (reported).
absl::StatusOr<std::optional<pipeline::QuantizeModelResult>> QuantizeLocal(
    const LocalRequest& r, storage::InputDirectory& in, storage::OutputDirectory& out) {
  ModelProgress progress(StderrIsTerminal(), r.json);
  pipeline::PipelineHooks hooks;
  hooks.on_progress = [&](const pipeline::TensorProgress& p) { progress.Update(p); };
  if (!r.shard) {
    absl::StatusOr<pipeline::QuantizeModelResult> result =
        pipeline::QuantizeModel(in, out, r.options, hooks);
    progress.Clear();
    if (!result.ok()) return result.status();
    return std::move(result).value();
  }
  absl::StatusOr<pipeline::ShardRunResult> sr =
      pipeline::QuantizeModelShard(in, out, r.options, *r.shard, hooks);
  progress.Clear();
  if (!sr.ok()) return sr.status();
  if (sr->files.empty()) {
    std::cerr << "nvfp4ctl: shard " << r.shard_text << ": nothing to do: the output has only "
              << sr->total_files << " safetensors file(s), all assigned to other shards\n";
    if (r.json) {
      nlohmann::ordered_json s;
      s["output"] = r.output;
      s["shard"] = r.shard_text;
      s["shards"] = nlohmann::ordered_json::array();
      s["total_shard_files"] = sr->total_files;
      std::cout << nlohmann::ordered_json{{"summary", s}}.dump() << "\n";
    }
    return std::nullopt;
  }
  std::cerr << "nvfp4ctl: shard " << r.shard_text << ": writing " << sr->files.size() << " of "
            << sr->total_files << " safetensors file(s)\n";
  return std::move(sr->run);
}

std::vector<TensorReport> ModuleReports(const LocalRequest& req,
                                        const pipeline::QuantizeModelResult& r) {
  const QuantizeOptions& q = req.options.quantize;
  std::vector<TensorReport> reports;
  for (const pipeline::ModuleResult& m : r.modules) {
    TensorReport t;
    t.tensor = m.module;
    t.shape = {m.rows, m.cols};
    t.method = std::string(MethodName(q.method));
    t.objective = std::string(ObjectiveName(q.objective));
    t.device = r.backend;
    t.nmse = m.metrics.nmse;
    t.sqnr_db = m.metrics.sqnr_db;
    t.max_abs_err = m.metrics.max_abs_err;
    t.rtn_nmse = m.metrics.rtn_nmse;
    t.nmse_vs_rtn = m.metrics.nmse_vs_rtn;
    t.output_nmse = m.metrics.output_nmse;
    t.iterations = m.metrics.iterations;
    if (q.method == Method::kGptq) t.gptq_dampening = m.metrics.gptq_dampening;
    reports.push_back(std::move(t));
  }
  return reports;
}

double MeanNmse(const pipeline::QuantizeModelResult& r) {
  double mean = 0;
  for (const auto& m : r.modules) mean += m.metrics.nmse;
  if (!r.modules.empty()) mean /= static_cast<double>(r.modules.size());
  return mean;
}

// --json: one object per module, then {"summary": ...}.
void PrintJsonReport(const LocalRequest& req, const pipeline::QuantizeModelResult& r) {
  for (const TensorReport& t : ModuleReports(req, r)) std::cout << ReportToJson(t).dump() << "\n";
  nlohmann::ordered_json s;
  s["output"] = req.output;
  if (req.shard) s["shard"] = req.shard_text;
  s["layout"] = std::string(pipeline::LayoutName(req.options.layout));
  s["quant_algo"] = r.w4a4 ? "NVFP4" : "W4A16_NVFP4";
  s["device"] = r.backend;
  s["quantized_modules"] = r.modules.size();
  s["fused_groups"] = r.plan.fused_groups;
  s["excluded_modules"] = r.plan.IgnoreList();
  s["shards"] = r.shard_files;
  s["copied_files"] = r.copied_files;
  s["bytes_in"] = r.tensor_bytes_in;
  s["bytes_out"] = r.tensor_bytes_out;
  s["seconds"] = r.seconds;
  s["mean_nmse"] = MeanNmse(r);
  s["warnings"] = r.warnings;
  std::cout << nlohmann::ordered_json{{"summary", s}}.dump() << "\n";
}

// The metrics table, a summary line, the modules kept in full precision and what was written.
void PrintTextReport(const LocalRequest& req, const pipeline::QuantizeModelResult& r) {
  const std::vector<TensorReport> reports = ModuleReports(req, r);
  size_t width = 6;
  for (const TensorReport& t : reports) width = std::max(width, t.tensor.size());
  MetricsTable table(std::cout, width);
  table.PrintHeader();
  for (const TensorReport& t : reports) table.PrintRow(t);
  const pipeline::QuantizeModelOptions& o = req.options;
  std::cout << "\nquantized " << r.modules.size() << " modules (" << r.plan.fused_groups
            << " fused groups) with " << MethodName(o.quantize.method) << "/"
            << ObjectiveName(o.quantize.objective) << " on " << r.backend << " in "
            << FormatDuration(r.seconds) << " (" << r.seconds
            << " s): " << FormatBytes(static_cast<double>(r.tensor_bytes_in)) << " -> "
            << FormatBytes(static_cast<double>(r.tensor_bytes_out)) << ", "
            << FormatBytes(static_cast<double>(r.tensor_bytes_in) / std::max(r.seconds, 1e-9))
            << "/s; mean nmse " << MeanNmse(r) << "\n";
  std::cout << "kept in full precision (" << r.plan.excluded.size() << "):";
  size_t shown = 0;
  for (const pipeline::ExcludedModule& e : r.plan.excluded) {
    if (shown++ == 8) {
      std::cout << " ...";
      break;
    }
    std::cout << " " << e.module << " (" << e.reason << ")";
  }
  if (req.shard) {
    std::cout << "\nwrote shard " << req.shard_text << " into " << req.output << ": "
              << r.shard_files.size() << " safetensors file(s):";
    for (const std::string& file : r.shard_files) std::cout << " " << file;
    std::cout << "\nrun `nvfp4ctl finalize` with the same --input and flags once every shard "
                 "is done\n";
  } else {
    std::cout << "\nwrote " << req.output << ": " << pipeline::LayoutName(o.layout) << " "
              << (r.w4a4 ? "NVFP4 (W4A4)" : "W4A16_NVFP4 (weight-only)") << ", "
              << r.shard_files.size() << " safetensors file(s), " << r.copied_files.size()
              << " other file(s) copied\n";
  }
}

absl::Status RunLocal(CLI::App* app, const LocalFlags& f) {
  ASSIGN_OR_RETURN(std::unique_ptr<storage::StorageRouter> store,
                   OpenLocalStore(f.s3_endpoint, f.s3_region, f.s3_upload_concurrency));
  ASSIGN_OR_RETURN(LocalRequest request, ParseLocalRequest(app, f));
  ASSIGN_OR_RETURN(std::unique_ptr<pipeline::ModelCalibration> calibration,
                   OpenCalibration(StringOption(app, "--calibration", ""), *store));
  request.options.calibration = calibration.get();
  ASSIGN_OR_RETURN(std::unique_ptr<storage::InputDirectory> in,
                   storage::OpenInputDirectory(request.input, *store));
  ASSIGN_OR_RETURN(std::unique_ptr<storage::OutputDirectory> out,
                   OpenLocalOutput(request, *store));
  ASSIGN_OR_RETURN(std::optional<pipeline::QuantizeModelResult> result,
                   QuantizeLocal(request, *in, *out));
  if (!result) return absl::OkStatus();  // a shard with nothing to do
  if (request.json) {
    PrintJsonReport(request, *result);
  } else {
    PrintTextReport(request, *result);
  }
  for (const std::string& w : result->warnings) std::cerr << "nvfp4ctl: note: " << w << "\n";
  return absl::OkStatus();
}

CLI::App* FindSubcommand(CLI::App& root, const std::string& name) {
  for (CLI::App* s : root.get_subcommands([](CLI::App*) { return true; })) {
    if (s->get_name() == name) return s;
  }
  return nullptr;
}

}  // namespace

absl::StatusOr<pipeline::QuantizeModelOptions> ModelOptionsFromFlags(
    CLI::App* app, const std::string& max_shard_size, bool no_default_excludes) {
  pipeline::QuantizeModelOptions o;
  ASSIGN_OR_RETURN(o.layout, pipeline::ParseLayout(StringOption(app, "--layout", "modelopt")));
  ASSIGN_OR_RETURN(o.quantize.method, ParseMethod(StringOption(app, "--method", "soar")));
  ASSIGN_OR_RETURN(o.quantize.objective, ParseObjective(StringOption(app, "--objective", "mse")));
  ASSIGN_OR_RETURN(o.quantize.four_over_six_rule,
                   ParseErrorRule(StringOption(app, "--error-rule", "mse")));
  ASSIGN_OR_RETURN(o.quantize.gptq, GptqOptionsFromApp(app));
  o.selection.include = ListOption(app, "--include");
  o.selection.exclude = ListOption(app, "--exclude");
  o.selection.default_exclusions = !no_default_excludes;
  o.strict_finite = FlagOption(app, "--strict");
  ASSIGN_OR_RETURN(o.max_shard_size, ParseByteSize(max_shard_size));
  return o;
}

std::string StripFileScheme(std::string p) {
  if (p.rfind("file://", 0) == 0) p = p.substr(7);
  return p;
}

absl::StatusOr<std::unique_ptr<storage::StorageRouter>> OpenLocalStore(
    const std::string& s3_endpoint, const std::string& s3_region, int s3_upload_concurrency) {
  storage::StoreConfig store_config;
  store_config.s3_upload_concurrency = s3_upload_concurrency;
  store_config.s3_endpoint = s3_endpoint;
  store_config.s3_region = s3_region;
  store_config.s3_default_aws_endpoint = true;
  return storage::MakeStorageRouter(store_config);
}

absl::StatusOr<std::unique_ptr<pipeline::ModelCalibration>> OpenCalibration(
    const std::string& path, storage::StorageRouter& store) {
  if (path.empty()) return nullptr;
  ASSIGN_OR_RETURN(std::unique_ptr<formats::RandomAccessSource> source,
                   storage::OpenObjectFile(StripFileScheme(path), store));
  return pipeline::ModelCalibration::Open(std::move(source));
}

void AddQuantizeModelLocalCommand(CLI::App& root, SubcommandList& out) {
  auto f = std::make_shared<LocalFlags>();
  CLI::App* app = FindSubcommand(root, "quantize-model");
  const bool extend = app != nullptr;
  if (!extend) {
    app = root.add_subcommand(
        "quantize-model",
        "Quantize a whole Hugging Face checkpoint (safetensors, single or sharded) to an NVFP4 "
        "checkpoint that vLLM / SGLang / TensorRT-LLM load directly. This build has no service "
        "client: use --local to run in-process.");
  } else {
    app->description(app->get_description() +
                     " With --local: run in-process on local directories instead.");
  }
  app->add_flag("--local", f->local,
                "Run in-process on local directories (--input DIR --output DIR) instead of "
                "submitting a job to a server.");
  auto has = [&](const std::string& name) { return app->get_option_no_throw(name) != nullptr; };
  if (!has("--input")) {
    app->add_option("--input", f->input,
                    "Input checkpoint directory (Hugging Face layout), or s3://bucket/prefix.")
        ->required()
        ->type_name("DIR");
  }
  if (!has("--output")) {
    app->add_option("--output", f->output,
                    "Output directory; written to a temporary sibling and renamed into place "
                    "when complete (nothing appears there on failure).")
        ->required()
        ->type_name("DIR");
  }
  if (!has("--layout")) {
    app->add_option("--layout", f->layout,
                    "modelopt (TensorRT-LLM, vLLM, SGLang; hf_quant_config.json) or "
                    "compressed-tensors (nvfp4-pack-quantized; llm-compressor, vLLM).")
        ->check(CLI::IsMember({"modelopt", "compressed-tensors"}))
        ->capture_default_str();
  }
  if (!has("--method")) {
    app->add_option("--method", f->method,
                    "Scale-selection method (gptq: error feedback, needs each module's "
                    "input_gram in --calibration).")
        ->check(CLI::IsMember(MethodChoices()))
        ->capture_default_str();
  }
  AddGptqFlags(app, &f->gptq);
  if (!has("--objective")) {
    app->add_option("--objective", f->objective,
                    "Objective of scalesweep/soar (wmse/hessian need --calibration).")
        ->check(CLI::IsMember({"mse", "wmse", "hessian"}))
        ->capture_default_str();
  }
  if (!has("--error-rule")) {
    app->add_option("--error-rule", f->error_rule, "Four Over Six block error rule.")
        ->check(CLI::IsMember({"mse", "mae", "absmax"}))
        ->capture_default_str();
  }
  if (!has("--calibration")) {
    app->add_option("--calibration", f->calibration,
                    "Calibration statistics (safetensors keyed by module: <m>.input_sq, "
                    "<m>.input_gram, <m>.input_amax; docs/CALIBRATION.md). input_amax makes the "
                    "output W4A4.")
        ->type_name("FILE");
  }
  if (!has("--include")) {
    app->add_option("--include", f->include,
                    "Only quantize modules matching this pattern (repeatable): a glob on the "
                    "module name, or re:REGEX.")
        ->type_name("PAT");
  }
  if (!has("--exclude")) {
    app->add_option("--exclude", f->exclude,
                    "Never quantize modules matching this pattern (repeatable; wins over "
                    "--include): a glob, or re:REGEX.")
        ->type_name("PAT");
  }
  if (!has("--strict")) {
    app->add_flag("--strict", f->strict, kStrictHelp);
  }
  if (!has("--json")) {
    app->add_flag("--json", f->json,
                  "Print one JSON object per quantized module, then a {\"summary\": ...} line.");
  }
  app->add_option("--max-shard-size", f->max_shard_size,
                  "(--local) Maximum size of an output safetensors file, e.g. 5GB, 500MB, 2GiB.")
      ->capture_default_str();
  app->add_option("--device", f->device, "(--local) cpu, cuda, cuda:N or auto.")
      ->capture_default_str();
  app->add_option("--threads", f->threads, "(--local) CPU threads for the cpu device (0: all).")
      ->capture_default_str();
  app->add_flag("--no-default-excludes", f->no_default_excludes,
                "(--local) Do not apply the default exclusions (lm_head, embeddings, routers, "
                "vision towers, MTP heads, conv); K % 16 and dtype rules still apply.");
  app->add_option("--s3-endpoint", f->s3_endpoint,
                  "(--local) S3 endpoint URL for s3:// locations (default $AWS_ENDPOINT_URL, else "
                  "AWS in the region). Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
                  "(/ AWS_SESSION_TOKEN).")
      ->type_name("URL");
  app->add_option("--s3-region", f->s3_region,
                  "(--local) S3 region (default $AWS_REGION, else us-east-1).");
  app->add_option("--s3-upload-concurrency", f->s3_upload_concurrency,
                  "(--local) Parts of one S3 multipart upload sent at once (1-64; each holds a "
                  "part of 64 MiB in memory).")
      ->capture_default_str();
  app->add_option("--staging-dir", f->staging_dir,
                  "(--local) Local directory where an s3:// output is staged before upload "
                  "(default: the system temp directory; needs room for the whole output).")
      ->type_name("DIR");
  app->add_option("--shard", f->shard,
                  "(--local) Run as process i of N of a sharded run (0 <= i < N, e.g. 0/4): write "
                  "only the output safetensors files assigned to i (balanced by bytes; the same "
                  "files as a single run) into --output, next to the other processes' files. "
                  "Then `nvfp4ctl finalize` writes the index and configs.")
      ->type_name("i/N");
  app->add_flag("--overwrite", f->overwrite,
                "(--local) Replace an existing non-empty output directory once the new one is "
                "complete.");

  auto local_run = [app, f]() {
    const absl::Status s = RunLocal(app, *f);
    return s.ok() ? kExitOk : ReportError(s);
  };
  if (extend) {
    for (Subcommand& c : out) {
      if (c.app != app) continue;
      std::function<int()> remote = c.run;
      c.run = [f, remote, local_run]() { return f->local ? local_run() : remote(); };
      return;
    }
  }
  out.push_back({app, [f, local_run]() {
                   if (!f->local) {
                     std::cerr << "nvfp4ctl: error: this nvfp4ctl was built without the service "
                                  "client; quantize-model needs --local\n";
                     return kExitUsage;
                   }
                   return local_run();
                 }});
}

}  // namespace nvfp4::cli
