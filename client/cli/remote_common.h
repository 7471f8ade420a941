// Shared pieces of nvfp4ctl's remote subcommands (health, quantize-model, jobs, quantize-tensor
// --server): the --server/--json flags, connecting, exit codes, and job rendering (progress bar on
// a terminal, plain lines otherwise, JSON lines with --json).
#ifndef NVFP4_CLIENT_CLI_REMOTE_COMMON_H_
#define NVFP4_CLIENT_CLI_REMOTE_COMMON_H_

#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "client/cli/command.h"
#include "client/remote/quantizer_client.h"
#include "nvfp4/v1/quantizer.pb.h"

namespace nvfp4::cli {

struct RemoteFlags {
  std::string server = "localhost:50051";
  bool json = false;
  int timeout_seconds = 30;
  bool tls = false;
  std::string tls_ca, tls_cert, tls_key, tls_server_name;
  std::string token_file;  // else $NVFP4_TOKEN
};

// Adds --server, --json, --timeout and the security flags (--tls, --tls_ca, --tls_cert,
// --tls_key, --tls_server_name, --token_file) to `app`.
void AddRemoteFlags(CLI::App* app, RemoteFlags* flags);

// Connects to flags.server.
absl::StatusOr<std::unique_ptr<client::QuantizerClient>> ConnectRemote(const RemoteFlags& flags);

// Remote errors: a user error (2) for the caller's input, 1 for server/internal/unavailable.
int ReportRemoteError(const absl::Status& status);

// One-line human summary of a job.
std::string JobLine(const v1::Job& job);
// The job as one JSON object (proto3 JSON mapping).
std::string JobJson(const v1::Job& job);
// Exit code for a finished job: 0 SUCCEEDED, 3 FAILED/CANCELLED.
int JobExitCode(const v1::Job& job);

// Watches a job to its end, rendering events; returns the exit code.
int WatchAndRender(client::QuantizerClient& client, const std::string& job_id, bool json);

// Subcommand registration (remote_commands.cc calls these).
void AddHealthCommand(CLI::App& root, SubcommandList& out);         // cmd_health.cc
void AddQuantizeModelCommand(CLI::App& root, SubcommandList& out);  // cmd_quantize_model.cc
void AddJobsCommand(CLI::App& root, SubcommandList& out);           // cmd_jobs.cc

}  // namespace nvfp4::cli

#endif  // NVFP4_CLIENT_CLI_REMOTE_COMMON_H_
