// `nvfp4ctl quantize-tensor`: quantize the tensors of one safetensors file to NVFP4.
//
// --local runs the quantizer in-process (kernels' MakeBackend); --server ADDR sends the same
// request to nvfp4d (RunRemoteQuantizeTensor, provided by the service's client). Both print the
// same per-tensor reports (metrics_output.h).
#ifndef NVFP4_CLIENT_CLI_CMD_QUANTIZE_TENSOR_H_
#define NVFP4_CLIENT_CLI_CMD_QUANTIZE_TENSOR_H_

#include <string>
#include <vector>

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
  bool json = false;
};

// Runs quantize-tensor in-process; returns the exit code.
int RunLocalQuantizeTensor(const QuantizeTensorFlags& flags);

// Runs quantize-tensor against flags.server; returns the exit code. Defined by the service's
// client, or by remote_stub.cc (which explains that remote mode is not built in).
int RunRemoteQuantizeTensor(const QuantizeTensorFlags& flags);

}  // namespace nvfp4::cli

#endif  // NVFP4_CLIENT_CLI_CMD_QUANTIZE_TENSOR_H_
