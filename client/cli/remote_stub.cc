// Remote mode when nvfp4ctl is built without the service (NVFP4_BUILD_SERVICE=OFF): no remote
// subcommands, and quantize-tensor --server explains how to get them.
#include <iostream>

#include "client/cli/cmd_quantize_tensor.h"
#include "client/cli/command.h"
#include "client/cli/exit_codes.h"

namespace nvfp4::cli {

void AddRemoteCommands(CLI::App& /*root*/, SubcommandList& /*out*/) {}

int RunRemoteQuantizeTensor(const QuantizeTensorFlags& flags) {
  std::cerr << "nvfp4ctl: error: remote mode (--server " << flags.server
            << ") is provided by the nvfp4 service client, which this nvfp4ctl was built without "
               "(configure with -DNVFP4_BUILD_SERVICE=ON); use --local to quantize in-process\n";
  return kExitUsage;
}

}  // namespace nvfp4::cli
