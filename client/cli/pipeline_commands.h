// nvfp4ctl subcommands built on the pipeline library (pipeline/): whole-checkpoint quantization
// in-process (`quantize-model --local`), `verify`, and `make-demo-model`. (`inspect` is declared
// in command.h.) Registered by main.cc after the remote subcommands, because `quantize-model
// --local` extends the remote `quantize-model` when the service client is built.
#ifndef NVFP4_CLIENT_CLI_PIPELINE_COMMANDS_H_
#define NVFP4_CLIENT_CLI_PIPELINE_COMMANDS_H_

#include <cstdint>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "client/cli/command.h"

namespace nvfp4::cli {

// quantize-model --local (cmd_quantize_model_local.cc). When a `quantize-model` subcommand is
// already registered (the remote one), adds --local and the local-only flags to it and runs the
// local pipeline when --local is given, the remote action otherwise.
void AddQuantizeModelLocalCommand(CLI::App& root, SubcommandList& out);
void AddVerifyCommand(CLI::App& root, SubcommandList& out);         // cmd_verify.cc
void AddMakeDemoModelCommand(CLI::App& root, SubcommandList& out);  // cmd_make_demo_model.cc

// "5GB" -> 5'000'000'000, "500MB", "1.5GB", "2GiB", "64KiB", "1000" (bytes). Case-insensitive.
absl::StatusOr<uint64_t> ParseByteSize(const std::string& text);
// 1234567 -> "1.23 MB".
std::string FormatBytes(double bytes);

}  // namespace nvfp4::cli

#endif  // NVFP4_CLIENT_CLI_PIPELINE_COMMANDS_H_
