// How nvfp4ctl's subcommands plug into main.cc.
//
// Each subcommand lives in its own file and exposes one `Add...Command(CLI::App& root,
// SubcommandList& out)` function that declares its flags on a new CLI11 subcommand of `root` and
// appends the action to run when that subcommand is selected. The action returns the process exit
// code (see exit_codes.h). main.cc calls every Add function, parses, and runs the selected action.
#ifndef NVFP4_CLIENT_CLI_COMMAND_H_
#define NVFP4_CLIENT_CLI_COMMAND_H_

#include <functional>
#include <vector>

#include "CLI/CLI.hpp"

namespace nvfp4::cli {

struct Subcommand {
  CLI::App* app;             // owned by the root app
  std::function<int()> run;  // called after a successful parse when `app` was selected
};
using SubcommandList = std::vector<Subcommand>;

// Local subcommands (this folder).
void AddQuantizeTensorCommand(CLI::App& root, SubcommandList& out);   // cmd_quantize_tensor.cc
void AddMakeDemoTensorsCommand(CLI::App& root, SubcommandList& out);  // cmd_make_demo_tensors.cc
void AddInspectCommand(CLI::App& root, SubcommandList& out);          // cmd_inspect.cc

// Remote subcommands (health, jobs, quantize-model, ...), provided by the service's client when
// it is built (NVFP4_BUILD_SERVICE); remote_stub.cc adds none.
void AddRemoteCommands(CLI::App& root, SubcommandList& out);

// quantize-model --strict (remote and --local).
inline constexpr char kStrictHelp[] =
    "Fail when a tensor copied unquantized (a norm, an embedding, an excluded layer) holds "
    "NaN/Inf values, instead of copying it with a warning.";

}  // namespace nvfp4::cli

#endif  // NVFP4_CLIENT_CLI_COMMAND_H_
