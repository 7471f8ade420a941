// nvfp4ctl: the command-line client of the NVFP4 quantization service.
//
// Subcommands are declared in command.h and each lives in its own cmd_*.cc file. Exit codes:
// 0 success, 2 user error (bad flags, bad input), 1 internal error.
#include <exception>
#include <iostream>

#include "CLI/CLI.hpp"
#include "client/cli/command.h"
#include "client/cli/exit_codes.h"
#include "client/cli/pipeline_commands.h"

int main(int argc, char** argv) {
  using namespace nvfp4::cli;
  CLI::App app{
      "nvfp4ctl: quantize LLM weights to NVFP4 (E2M1 codes, E4M3 block scales, fp32 global "
      "scale), locally or through the nvfp4d service.",
      "nvfp4ctl"};
  app.require_subcommand(1);
  app.fallthrough(false);
  app.footer(
      "Run 'nvfp4ctl <subcommand> --help' for the flags of a subcommand.\n"
      "Exit codes: 0 success, 2 user error (bad flags or input), 1 internal error.");

  SubcommandList commands;
  AddQuantizeTensorCommand(app, commands);
  AddMakeDemoTensorsCommand(app, commands);
  AddInspectCommand(app, commands);
  AddRemoteCommands(app, commands);
  AddQuantizeModelLocalCommand(app, commands);  // after the remote one: extends it with --local
  AddVerifyCommand(app, commands);
  AddMakeDemoModelCommand(app, commands);
  AddFinalizeCommand(app, commands);  // last step of a sharded quantize-model run

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help exits 0; every other parse error is a user error.
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }
  try {
    for (const Subcommand& command : commands) {
      if (command.app->parsed()) return command.run();
    }
  } catch (const std::exception& e) {
    std::cerr << "nvfp4ctl: internal error: " << e.what() << "\n";
    return kExitInternal;
  }
  std::cerr << "nvfp4ctl: error: no subcommand given\n";
  return kExitUsage;
}
