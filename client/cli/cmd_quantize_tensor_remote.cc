// nvfp4ctl quantize-tensor --server ADDR: the remote half of quantize-tensor. Same selection,
// output file and report as --local (cmd_quantize_tensor.cc); only the quantizer runs on nvfp4d.
// The output file is byte-identical to the --local one (tests/integration checks it).
#include <chrono>
#include <cstring>
#include <iostream>
#include <set>

#include "base/status_macros.h"
#include "client/cli/cmd_quantize_tensor.h"
#include "client/cli/exit_codes.h"
#include "client/cli/metrics_output.h"
#include "client/cli/progress.h"
#include "client/cli/remote_common.h"
#include "formats/calibration.h"
#include "formats/dtypes.h"
#include "formats/safetensors.h"
#include "formats/str_util.h"

namespace nvfp4::cli {
namespace {

using formats::StrCat;

struct Selected {
  const formats::TensorInfo* info;
  int64_t k;
};

std::vector<int64_t> WithLastDim(std::vector<int64_t> shape, int64_t last) {
  shape.back() = last;
  return shape;
}

// Mirrors SelectTensors of the local mode.
absl::StatusOr<std::vector<Selected>> SelectTensors(const formats::SafetensorsReader& reader,
                                                    const std::vector<std::string>& names) {
  std::vector<Selected> selected;
  if (!names.empty()) {
    std::set<std::string> seen;
    for (const std::string& name : names) {
      if (!seen.insert(name).second) continue;
      const formats::TensorInfo* info = reader.Find(name);
      if (info == nullptr) {
        return absl::InvalidArgumentError(StrCat(reader.name(), ": no tensor named '", name, "'"));
      }
      if (!formats::IsQuantizableDType(info->dtype) || info->shape.empty()) {
        return absl::InvalidArgumentError(
            StrCat(reader.name(), ": tensor '", name, "' cannot be quantized (", info->dtype, ")"));
      }
      // K % 16 is checked by the server, which names the tensor.
      selected.push_back({info, info->shape.back()});
    }
    return selected;
  }
  for (const formats::TensorInfo& info : reader.tensors()) {
    std::string why;
    if (!formats::IsQuantizableDType(info.dtype)) {
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

absl::Status QuantizeRemotely(const QuantizeTensorFlags& flags) {
  if (flags.input.empty()) return absl::InvalidArgumentError("--input is required");
  if (flags.output.empty()) return absl::InvalidArgumentError("--output is required");
  QuantizeOptions options;
  ASSIGN_OR_RETURN(options.method, ParseMethod(flags.method));
  ASSIGN_OR_RETURN(options.objective, ParseObjective(flags.objective));
  ASSIGN_OR_RETURN(options.four_over_six_rule, ParseErrorRule(flags.error_rule));
  options.soar_max_iterations = flags.soar_max_iterations;
  ASSIGN_OR_RETURN(std::unique_ptr<formats::SafetensorsReader> reader,
                   formats::SafetensorsReader::Open(flags.input));
  std::unique_ptr<formats::SafetensorsReader> calibration;
  if (!flags.calibration.empty()) {
    ASSIGN_OR_RETURN(calibration, formats::SafetensorsReader::Open(flags.calibration));
  }
  ASSIGN_OR_RETURN(const std::vector<Selected> selected, SelectTensors(*reader, flags.tensors));

  RemoteFlags remote;
  remote.server = flags.server;
  ASSIGN_OR_RETURN(std::unique_ptr<client::QuantizerClient> client, ConnectRemote(remote));

  std::vector<formats::TensorSpec> specs;
  for (const Selected& s : selected) {
    const std::vector<int64_t>& shape = s.info->shape;
    specs.push_back({s.info->name, "U8", WithLastDim(shape, s.k / 2)});
    specs.push_back({s.info->name + "_scale", "F8_E4M3", WithLastDim(shape, s.k / 16)});
    specs.push_back({s.info->name + "_scale_2", "F32", {}});
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
    ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, reader->ReadTensor(info));
    TensorView view;
    view.name = info.name;
    view.dtype = *formats::ToKernelDType(info.dtype);
    view.shape = info.shape;
    view.data = bytes.data();
    std::vector<float> importance;
    if (calibration != nullptr && formats::HasCalibrationFor(*calibration, info.name)) {
      ASSIGN_OR_RETURN(auto loaded, formats::LoadCalibration(*calibration, info.name, s.k));
      if (!loaded->calibration.gram.empty() || loaded->calibration.activations != nullptr) {
        return absl::InvalidArgumentError(
            StrCat("tensor '", info.name,
                   "': remote quantize-tensor sends only per-channel "
                   "importance (X.input_sq); use --local for gram/activation calibration"));
      }
      importance = loaded->calibration.importance;
    }
    const auto start = std::chrono::steady_clock::now();
    client::QuantizeTensorInfo qinfo;
    ASSIGN_OR_RETURN(
        QuantizedTensor q,
        client->QuantizeTensor(view, options, importance.empty() ? nullptr : &importance, &qinfo));
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const uint64_t numel = static_cast<uint64_t>(info.numel());
    if (q.packed.size() != numel / 2 || q.scales.size() != numel / 16) {
      return absl::InternalError(StrCat("server returned ", q.packed.size(), " packed and ",
                                        q.scales.size(), " scale bytes for '", info.name, "'"));
    }
    RETURN_IF_ERROR(writer->WriteTensor(info.name, q.packed));
    RETURN_IF_ERROR(writer->WriteTensor(info.name + "_scale", q.scales));
    uint8_t global[4];
    std::memcpy(global, &q.global_scale, 4);
    RETURN_IF_ERROR(writer->WriteTensor(info.name + "_scale_2", global));

    TensorReport report;
    report.tensor = info.name;
    report.shape = info.shape;
    report.method = flags.method;
    report.objective = flags.objective;
    report.device = qinfo.device;
    report.nmse = q.metrics.nmse;
    report.sqnr_db = q.metrics.sqnr_db;
    report.max_abs_err = q.metrics.max_abs_err;
    report.rtn_nmse = q.metrics.rtn_nmse;
    report.nmse_vs_rtn = q.metrics.nmse_vs_rtn;
    report.output_nmse = q.metrics.output_nmse;
    report.iterations = q.metrics.iterations;
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

}  // namespace

int RunRemoteQuantizeTensor(const QuantizeTensorFlags& flags) {
  const absl::Status status = QuantizeRemotely(flags);
  return status.ok() ? kExitOk : ReportRemoteError(status);
}

}  // namespace nvfp4::cli
