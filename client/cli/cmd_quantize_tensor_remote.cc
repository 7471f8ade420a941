// nvfp4ctl quantize-tensor --server ADDR: the remote half of quantize-tensor. Selection, output
// file and reports are the local command's (QuantizeTensorFile in cmd_quantize_tensor.cc); only
// the quantizer differs: each tensor is streamed to nvfp4d. The output file is byte-identical to
// the --local one (tests/integration checks it).
#include <memory>
#include <string>

#include "base/status_macros.h"
#include "base/str_util.h"
#include "client/cli/cmd_quantize_tensor.h"
#include "client/cli/exit_codes.h"
#include "client/cli/remote_common.h"

namespace nvfp4::cli {
namespace {

absl::StatusOr<TensorQuantizeFn> MakeRemoteQuantizer(const QuantizeTensorFlags& flags) {
  RemoteFlags remote;
  remote.server = flags.server;
  remote.tls = flags.tls;
  remote.tls_ca = flags.tls_ca;
  remote.tls_cert = flags.tls_cert;
  remote.tls_key = flags.tls_key;
  remote.tls_server_name = flags.tls_server_name;
  remote.token_file = flags.token_file;
  ASSIGN_OR_RETURN(std::shared_ptr<client::QuantizerClient> client, ConnectRemote(remote));
  return TensorQuantizeFn(
      [client](const TensorView& view, const QuantizeOptions& options,
               const formats::LoadedCalibration* loaded,
               std::string* device) -> absl::StatusOr<QuantizedTensor> {
        const std::vector<float>* importance = nullptr;
        const std::vector<float>* gram = nullptr;
        if (loaded != nullptr) {
          if (loaded->calibration.activations != nullptr && loaded->calibration.gram.empty()) {
            return absl::InvalidArgumentError(StrCat(
                "tensor '", view.name,
                "': remote quantize-tensor sends X.input_sq and X.input_gram, not raw "
                "activations (X.input_activations); store their Gram, or use --local"));
          }
          if (!loaded->calibration.importance.empty()) importance = &loaded->calibration.importance;
          if (!loaded->calibration.gram.empty()) gram = &loaded->calibration.gram;
        }
        client::QuantizeTensorInfo info;
        ASSIGN_OR_RETURN(QuantizedTensor q,
                         client->QuantizeTensor(view, options, importance, &info, gram));
        *device = info.device;
        return q;
      });
}

}  // namespace

int RunRemoteQuantizeTensor(const QuantizeTensorFlags& flags) {
  const absl::Status status =
      QuantizeTensorFile(flags, [&flags] { return MakeRemoteQuantizer(flags); });
  return status.ok() ? kExitOk : ReportRemoteError(status);
}

}  // namespace nvfp4::cli
