// Registers the remote subcommands of nvfp4ctl (linked instead of remote_stub.cc when the service
// is built): health, quantize-model, jobs.
#include "client/cli/command.h"
#include "client/cli/remote_common.h"

namespace nvfp4::cli {

void AddRemoteCommands(CLI::App& root, SubcommandList& out) {
  AddHealthCommand(root, out);
  AddQuantizeModelCommand(root, out);
  AddJobsCommand(root, out);
}

}  // namespace nvfp4::cli
