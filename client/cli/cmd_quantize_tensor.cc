// nvfp4ctl quantize-tensor: flags, and the local (in-process) implementation.
#include "client/cli/cmd_quantize_tensor.h"

#include <chrono>
#include <functional>
#include <cstring>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/status_macros.h"
#include "base/str_util.h"
#include "client/cli/command.h"
#include "client/cli/exit_codes.h"
#include "client/cli/metrics_output.h"
#include "client/cli/progress.h"
#include "formats/calibration.h"
#include "formats/dtypes.h"
#include "formats/random_access_source.h"
#include "formats/safetensors.h"
#include "formats/sharded.h"
#include "kernels/backend.h"
#include "kernels/types.h"
#include "pipeline/fp8_source.h"

namespace nvfp4::cli {
namespace {


// One tensor selected for quantization.
struct Selected {
  const formats::TensorInfo* info;
  int64_t k;  // last dimension
};

// Output tensor names for input tensor `name` (ModelOpt naming, nothing stripped).
std::string ScaleName(const std::string& name) { return name + "_scale"; }
std::string GlobalScaleName(const std::string& name) { return name + "_scale_2"; }

// The source shape with its last dimension replaced by `last`.
std::vector<int64_t> WithLastDim(std::vector<int64_t> shape, int64_t last) {
  shape.back() = last;
  return shape;
}

// Chooses the tensors to quantize. Named tensors must exist, be BF16/F16/F32 or an FP8 weight with
// its dequantization scale in the file (`fp8`), have rank >= 1 and K % 16 == 0. Without names:
// every such 2-D tensor; others (and the FP8 scales) are skipped with a note on stderr.
absl::StatusOr<std::vector<Selected>> SelectTensors(const formats::SafetensorsReader& reader,
                                                    const std::vector<std::string>& names,
                                                    const pipeline::Fp8Sources& fp8) {
  std::vector<Selected> selected;
  if (!names.empty()) {
    std::set<std::string> seen;
    for (const std::string& name : names) {
      if (!seen.insert(name).second) continue;
      const formats::TensorInfo* info = reader.Find(name);
      if (info == nullptr) {
        return absl::InvalidArgumentError(StrCat(reader.name(), ": no tensor named '", name,
                                                 "' (run 'nvfp4ctl inspect --input ", reader.name(),
                                                 "' to list them)"));
      }
      if (!formats::IsQuantizableDType(info->dtype) && fp8.Find(name) == nullptr) {
        return absl::InvalidArgumentError(StrCat(
            reader.name(), ": tensor '", name, "' is ", info->dtype,
            "; only BF16, F16 and F32 tensors, and FP8 weights with their dequantization scale "
            "('<name>_scale_inv' or a '.weight_scale' beside a '.weight') can be quantized"));
      }
      if (info->shape.empty()) {
        return absl::InvalidArgumentError(
            StrCat(reader.name(), ": tensor '", name, "' is a scalar; nothing to quantize"));
      }
      const int64_t k = info->shape.back();
      if (k % 16 != 0) {
        return absl::InvalidArgumentError(StrCat(
            reader.name(), ": tensor '", name, "' has shape ", FormatShape(info->shape), ": K = ",
            k, " is not a multiple of 16 (NVFP4 blocks are 16 elements along the last dimension)"));
      }
      selected.push_back({info, k});
    }
    return selected;
  }
  for (const formats::TensorInfo& info : reader.tensors()) {
    std::string why;
    if (fp8.consumed.count(info.name) > 0) {
      why = "the dequantization scale of an FP8 weight";
    } else if (info.dtype == "F8_E4M3" && info.shape.size() == 3) {
      why = "fused FP8 experts (quantize-model splits them per expert)";
    } else if (!formats::IsQuantizableDType(info.dtype) && fp8.Find(info.name) == nullptr) {
      why = StrCat(info.dtype, " is not a float type");
    } else if (info.shape.size() != 2) {
      why = StrCat(info.shape.size(), "-D; name it with --tensor to quantize it folded to 2-D");
    } else if (info.numel() == 0) {
      why = "empty";
    } else if (info.shape.back() % 16 != 0) {
      why = StrCat("K = ", info.shape.back(), " is not a multiple of 16");
    }
    if (!why.empty()) {
      std::cerr << "note: skipping '" << info.name << "' " << FormatShape(info.shape) << ": " << why
                << "\n";
      continue;
    }
    selected.push_back({&info, info.shape.back()});
  }
  if (selected.empty()) {
    return absl::InvalidArgumentError(
        StrCat(reader.name(), ": no 2-D BF16/F16/F32 tensor with K % 16 == 0 to quantize"));
  }
  return selected;
}

absl::StatusOr<TensorQuantizeFn> MakeLocalQuantizer(const QuantizeTensorFlags& flags) {
  auto backend_or = MakeBackend(flags.device);
  if (!backend_or.ok()) {
    // The device is the user's choice: an absent GPU is a usage error, not an internal one.
    const absl::Status& s = backend_or.status();
    if (absl::IsInternal(s)) return s;
    return absl::InvalidArgumentError(StrCat("--device ", flags.device, ": ", s.message()));
  }
  std::shared_ptr<QuantizerBackend> backend = std::move(*backend_or);
  return TensorQuantizeFn(
      [backend](const TensorView& view, const QuantizeOptions& options,
                const formats::LoadedCalibration* loaded,
                std::string* device) -> absl::StatusOr<QuantizedTensor> {
        *device = backend->name();
        const Calibration* cal =
            loaded != nullptr && !loaded->calibration.empty() ? &loaded->calibration : nullptr;
        return backend->Quantize(view, options, cal);
      });
}

}  // namespace

absl::StatusOr<QuantizeOptions> QuantizeOptionsFromFlags(const QuantizeTensorFlags& flags) {
  QuantizeOptions options;
  ASSIGN_OR_RETURN(options.method, ParseMethod(flags.method));
  ASSIGN_OR_RETURN(options.objective, ParseObjective(flags.objective));
  ASSIGN_OR_RETURN(options.four_over_six_rule, ParseErrorRule(flags.error_rule));
  options.soar_max_iterations = flags.soar_max_iterations;
  ASSIGN_OR_RETURN(options.gptq, GptqOptionsFromFlags(flags.gptq));
  return options;
}

absl::Status QuantizeTensorFile(
    const QuantizeTensorFlags& flags,
    const std::function<absl::StatusOr<TensorQuantizeFn>()>& make_quantizer) {
  if (flags.input.empty()) return absl::InvalidArgumentError("--input is required");
  if (flags.output.empty()) return absl::InvalidArgumentError("--output is required");
  ASSIGN_OR_RETURN(const QuantizeOptions options, QuantizeOptionsFromFlags(flags));
  // One file, read through a checkpoint reader so that FP8 weights find their scales in it
  // (docs/CHECKPOINTS.md "FP8 sources"; no config.json here: `weight_scale_inv` is taken per
  // 128x128 block). They are dequantized on the host and quantized as the fp32 values they stand
  // for, locally or on a server.
  ASSIGN_OR_RETURN(std::unique_ptr<formats::LocalFileSource> source,
                   formats::LocalFileSource::Open(flags.input));
  ASSIGN_OR_RETURN(std::unique_ptr<formats::CheckpointReader> checkpoint,
                   formats::CheckpointReader::OpenSingle(std::move(source)));
  const formats::SafetensorsReader* reader = checkpoint->shards()[0].get();
  std::unique_ptr<formats::SafetensorsReader> calibration;
  if (!flags.calibration.empty()) {
    ASSIGN_OR_RETURN(calibration, formats::SafetensorsReader::Open(flags.calibration));
  }
  ASSIGN_OR_RETURN(const pipeline::SourceTensors sources,
                   pipeline::SourceTensors::Open(*checkpoint, std::nullopt));
  ASSIGN_OR_RETURN(const pipeline::Fp8Sources fp8,
                   pipeline::FindFp8Sources(sources, std::nullopt));
  ASSIGN_OR_RETURN(const std::vector<Selected> selected,
                   SelectTensors(*reader, flags.tensors, fp8));
  // wmse and hessian (used by scalesweep and soar) need calibration for every tensor, gptq its
  // Gram: say so before any work is done.
  const bool gptq = options.method == Method::kGptq;
  const bool needs_calibration =
      gptq || ((options.method == Method::kScaleSweep || options.method == Method::kSoar) &&
               options.objective != Objective::kMse);
  const std::string needer =
      gptq ? std::string("--method gptq") : StrCat("--objective ", flags.objective);
  if (needs_calibration) {
    if (calibration == nullptr) {
      return absl::InvalidArgumentError(
          StrCat(needer, " needs --calibration (a safetensors file with ",
                 gptq ? "X.input_gram or X.input_activations"
                      : "X.input_sq, X.input_gram or X.input_activations",
                 " for each tensor X)"));
    }
    for (const Selected& s : selected) {
      const bool has = gptq ? formats::HasGramFor(*calibration, s.info->name)
                            : formats::HasCalibrationFor(*calibration, s.info->name);
      if (!has) {
        return absl::InvalidArgumentError(StrCat(
            calibration->name(), ": no calibration for tensor '", s.info->name, "' (expected '",
            s.info->name, gptq ? ".input_gram' or '.input_activations'" : ".input_sq', '.input_gram' or '.input_activations'",
            "), which ", needer, " needs"));
      }
    }
  }

  ASSIGN_OR_RETURN(const TensorQuantizeFn quantize, make_quantizer());

  // Declare the whole output up front and stream each tensor into it as it is quantized.
  std::vector<formats::TensorSpec> specs;
  for (const Selected& s : selected) {
    const std::vector<int64_t>& shape = s.info->shape;
    specs.push_back({s.info->name, "U8", WithLastDim(shape, s.k / 2)});
    specs.push_back({ScaleName(s.info->name), "F8_E4M3", WithLastDim(shape, s.k / 16)});
    specs.push_back({GlobalScaleName(s.info->name), "F32", {}});
  }
  formats::SafetensorsWriter::Options writer_options;
  writer_options.metadata = {
      {"producer", "nvfp4ctl"}, {"quant_algo", "NVFP4"}, {"nvfp4_method", flags.method}};
  ASSIGN_OR_RETURN(std::unique_ptr<formats::SafetensorsWriter> writer,
                   formats::SafetensorsWriter::Create(flags.output, std::move(specs),
                                                      std::move(writer_options)));

  size_t name_width = 0;
  for (const Selected& s : selected) name_width = std::max(name_width, s.info->name.size());
  MetricsTable table(std::cout, name_width);
  if (!flags.json) table.PrintHeader();
  Progress progress(std::cerr, static_cast<int>(selected.size()), StderrIsTerminal());

  for (const Selected& s : selected) {
    const formats::TensorInfo& info = *s.info;
    progress.Step(info.name);
    TensorView view;
    view.name = info.name;
    view.shape = info.shape;
    std::vector<uint8_t> bytes;
    std::vector<float> dequantized;
    if (const pipeline::Fp8Weight* w = fp8.Find(info.name)) {
      dequantized.resize(static_cast<size_t>(info.numel()));
      RETURN_IF_ERROR(pipeline::ReadDequantizedFp8(sources, info.name, *w, dequantized));
      view.dtype = DType::kF32;
      view.data = dequantized.data();
    } else {
      ASSIGN_OR_RETURN(bytes, reader->ReadTensor(info));
      view.dtype = *formats::ToKernelDType(info.dtype);
      view.data = bytes.data();
    }

    std::unique_ptr<formats::LoadedCalibration> loaded;
    if (calibration != nullptr && formats::HasCalibrationFor(*calibration, info.name)) {
      ASSIGN_OR_RETURN(loaded, formats::LoadCalibration(*calibration, info.name, s.k));
    }

    const auto start = std::chrono::steady_clock::now();
    std::string device;
    ASSIGN_OR_RETURN(QuantizedTensor q, quantize(view, options, loaded.get(), &device));
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    const uint64_t numel = static_cast<uint64_t>(info.numel());
    if (q.packed.size() != numel / 2 || q.scales.size() != numel / 16) {
      return absl::InternalError(StrCat("quantizer returned ", q.packed.size(), " packed and ",
                                        q.scales.size(), " scale bytes for '", info.name, "' with ",
                                        numel, " elements"));
    }
    RETURN_IF_ERROR(writer->WriteTensor(info.name, q.packed));
    RETURN_IF_ERROR(writer->WriteTensor(ScaleName(info.name), q.scales));
    uint8_t global[4];
    std::memcpy(global, &q.global_scale, 4);
    RETURN_IF_ERROR(writer->WriteTensor(GlobalScaleName(info.name), global));

    TensorReport report;
    report.tensor = info.name;
    report.shape = info.shape;
    report.method = flags.method;
    report.objective = flags.objective;
    report.device = device;
    report.nmse = q.metrics.nmse;
    report.sqnr_db = q.metrics.sqnr_db;
    report.max_abs_err = q.metrics.max_abs_err;
    report.rtn_nmse = q.metrics.rtn_nmse;
    report.nmse_vs_rtn = q.metrics.nmse_vs_rtn;
    report.output_nmse = q.metrics.output_nmse;
    report.iterations = q.metrics.iterations;
    if (options.method == Method::kGptq) report.gptq_dampening = q.metrics.gptq_dampening;
    report.seconds = seconds;
    progress.Clear();
    if (flags.json) {
      std::cout << ReportToJson(report).dump() << "\n" << std::flush;
    } else {
      table.PrintRow(report);
    }
  }
  progress.Clear();
  RETURN_IF_ERROR(writer->Finish());
  if (!flags.json) {
    std::cerr << "wrote " << flags.output << " (" << selected.size() << " tensor"
              << (selected.size() == 1 ? "" : "s") << ", " << writer->file_size() << " bytes)\n";
  }
  return absl::OkStatus();
}

int RunLocalQuantizeTensor(const QuantizeTensorFlags& flags) {
  const absl::Status status =
      QuantizeTensorFile(flags, [&flags] { return MakeLocalQuantizer(flags); });
  return status.ok() ? kExitOk : ReportError(status);
}

void AddQuantizeTensorCommand(CLI::App& root, SubcommandList& out) {
  auto flags = std::make_shared<QuantizeTensorFlags>();
  CLI::App* app = root.add_subcommand(
      "quantize-tensor",
      "Quantize the tensors of one safetensors file to NVFP4 and report the error of each.");
  app->footer(
      "Output: for each quantized input tensor X, X (U8 packed E2M1 codes [.., K/2], low nibble = "
      "even k), X_scale (F8_E4M3 block scales [.., K/16]) and X_scale_2 (F32 scalar global scale "
      "g): the ModelOpt NVFP4 layout, decoded as code * scale * g.\n"
      "Calibration file entries for tensor X: X.input_sq (F32 [K]), X.input_gram (F32 [K, K]) or "
      "X.input_activations ([tokens, K]).\n"
      "Exit codes: 0 success, 2 user error, 1 internal error.");
  app->add_flag("--local", flags->local,
                "Quantize in this process (required unless --server is given).");
  app->add_option("--server", flags->server,
                  "Address (host:port) of an nvfp4d server to run the quantization on (remote "
                  "mode; needs an nvfp4ctl built with the service).")
      ->type_name("ADDR");
  app->add_option("--input", flags->input, "Input safetensors file holding the weights.")
      ->type_name("FILE");
  app->add_option("--output", flags->output,
                  "Output safetensors file for the NVFP4 tensors (written atomically).")
      ->type_name("FILE");
  app->add_option("--method", flags->method,
                  "Scale-selection method: rtn (absmax baseline), 4over6 (Four Over Six), "
                  "scalesweep (E4M3 window search), soar (CJSO + DSS) or gptq (error feedback "
                  "through the input Gram, with --block-scales; needs input_gram).")
      ->check(CLI::IsMember(MethodChoices()))
      ->capture_default_str();
  app->add_option("--objective", flags->objective,
                  "Error minimized by scalesweep and soar: mse, wmse (per-input-channel weights; "
                  "needs calibration) or hessian (16x16 blocks of X^T X; needs input_gram or "
                  "input_activations).")
      ->check(CLI::IsMember({"mse", "wmse", "hessian"}))
      ->capture_default_str();
  AddGptqFlags(app, &flags->gptq);
  app->add_option("--error-rule", flags->error_rule,
                  "Block error rule of 4over6 when choosing between the 6 and 4 scales: mse, mae "
                  "or absmax.")
      ->check(CLI::IsMember({"mse", "mae", "absmax"}))
      ->capture_default_str();
  app->add_option("--calibration", flags->calibration,
                  "Safetensors file of calibration statistics (see below); enables wmse/hessian "
                  "and the output-space error output_nmse.")
      ->type_name("FILE");
  app->add_option("--tensor", flags->tensors,
                  "Quantize only this tensor (repeatable). Named 1-D tensors are treated as "
                  "[1, K] and 3-D tensors have leading dims folded into N. Without --tensor, every "
                  "2-D BF16/F16/F32 tensor with K % 16 == 0 is quantized and others are skipped.")
      ->type_name("NAME")
      ->allow_extra_args(false);
  app->add_option("--device", flags->device,
                  "Where to quantize: cpu, cuda (= cuda:0), cuda:N, or auto (first GPU, else cpu).")
      ->capture_default_str();
  app->add_option("--soar-iterations", flags->soar_max_iterations,
                  "Maximum CJSO + DSS iterations of soar after its scalesweep start.")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  app->add_flag("--tls", flags->tls, "(--server) Connect with TLS (system roots).");
  app->add_option("--tls_ca", flags->tls_ca, "(--server) PEM CA bundle that verifies the server.")
      ->type_name("FILE");
  app->add_option("--tls_cert", flags->tls_cert, "(--server) PEM client certificate (mutual TLS).")
      ->type_name("FILE");
  app->add_option("--tls_key", flags->tls_key, "(--server) PEM private key of --tls_cert.")
      ->type_name("FILE");
  app->add_option("--tls_server_name", flags->tls_server_name,
                  "(--server) Name expected in the server certificate.")
      ->type_name("NAME");
  app->add_option("--token_file", flags->token_file,
                  "(--server) File holding the bearer token (default: $NVFP4_TOKEN).")
      ->type_name("FILE");
  app->add_flag("--json", flags->json,
                "Print one JSON object per tensor per line instead of a table: tensor, shape, "
                "method, objective, device, nmse, sqnr_db, max_abs_err, rtn_nmse, nmse_vs_rtn, "
                "output_nmse (with calibration), iterations, seconds.");

  out.push_back({app, [flags]() {
                   if (flags->local && !flags->server.empty()) {
                     std::cerr << "nvfp4ctl: error: --local and --server are mutually exclusive\n";
                     return kExitUsage;
                   }
                   if (flags->local) return RunLocalQuantizeTensor(*flags);
                   if (!flags->server.empty()) return RunRemoteQuantizeTensor(*flags);
                   std::cerr << "nvfp4ctl: error: quantize-tensor needs --local (quantize in this "
                                "process); remote mode needs --server ADDR and is provided by the "
                                "nvfp4 service\n";
                   return kExitUsage;
                 }});
}

}  // namespace nvfp4::cli
