// `nvfp4ctl quantize-tensor`: quantize the tensors of one safetensors file to NVFP4.
//
// --local runs the quantizer in-process (kernels' MakeBackend); --server ADDR sends the same
// request to nvfp4d (RunRemoteQuantizeTensor, provided by the service's client). Both print the
// same per-tensor reports (metrics_output.h).
#ifndef NVFP4_CLIENT_CLI_CMD_QUANTIZE_TENSOR_H_
#define NVFP4_CLIENT_CLI_CMD_QUANTIZE_TENSOR_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/cli/gptq_flags.h"
#include "formats/calibration.h"
#include "kernels/types.h"

namespace nvfp4::cli {

// The parsed flags of quantize-tensor (validated by CLI11 for the enumerations).
struct QuantizeTensorFlags {
  bool local = false;
  std::string server;  // host:port of nvfp4d (remote mode)
  std::string input;   // IN.safetensors
  std::string output;  // OUT.safetensors
  std::string method = "soar";
  std::string objective = "mse";
  std::string error_rule = "mse";    // Four Over Six block error rule
  std::string calibration;           // CAL.safetensors (optional)
  std::vector<std::string> tensors;  // explicit tensor names (optional)
  std::string device = "auto";
  int soar_max_iterations = 15;
  GptqFlags gptq;
  bool json = false;
  // Remote mode: TLS and bearer token (see remote_common.h RemoteFlags).
  bool tls = false;
  std::string tls_ca, tls_cert, tls_key, tls_server_name, token_file;
};

// How one tensor is quantized: in this process (a kernels backend) or by nvfp4d. `calibration` is
// the tensor's statistics, or null. Sets `*device` to the device that ran it.
using TensorQuantizeFn = std::function<absl::StatusOr<QuantizedTensor>(
    const TensorView& tensor, const QuantizeOptions& options,
    const formats::LoadedCalibration* calibration, std::string* device)>;

// The body shared by both modes: validates the flags, selects the tensors of flags.input, calls
// `make_quantizer` once (after the input was checked, before the output is created), quantizes
// every selected tensor with it, writes flags.output (ModelOpt tensor naming) and prints the
// per-tensor reports. Same input and options, same output bytes whichever quantizer runs.
absl::Status QuantizeTensorFile(const QuantizeTensorFlags& flags,
                                const std::function<absl::StatusOr<TensorQuantizeFn>()>&
                                    make_quantizer);

// Parses --method/--objective/--error-rule/--soar-iterations and the GPTQ flags.
absl::StatusOr<QuantizeOptions> QuantizeOptionsFromFlags(const QuantizeTensorFlags& flags);

// Runs quantize-tensor in-process; returns the exit code.
int RunLocalQuantizeTensor(const QuantizeTensorFlags& flags);

// Runs quantize-tensor against flags.server; returns the exit code. Defined by the service's
// client, or by remote_stub.cc (which explains that remote mode is not built in).
int RunRemoteQuantizeTensor(const QuantizeTensorFlags& flags);

}  // namespace nvfp4::cli

#endif  // NVFP4_CLIENT_CLI_CMD_QUANTIZE_TENSOR_H_
