// nvfp4ctl subcommands built on the pipeline library (pipeline/): whole-checkpoint quantization
// in-process (`quantize-model --local`), `verify`, and `make-demo-model`. (`inspect` is declared
// in command.h.) Registered by main.cc after the remote subcommands, because `quantize-model
// --local` extends the remote `quantize-model` when the service client is built.
#ifndef NVFP4_CLIENT_CLI_PIPELINE_COMMANDS_H_
#define NVFP4_CLIENT_CLI_PIPELINE_COMMANDS_H_

#include <cstdint>
#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "client/cli/command.h"
#include "pipeline/quantize_model.h"
#include "storage/router.h"

namespace nvfp4::cli {

// quantize-model --local (cmd_quantize_model_local.cc). When a `quantize-model` subcommand is
// already registered (the remote one), adds --local and the local-only flags to it and runs the
// local pipeline when --local is given, the remote action otherwise.
void AddQuantizeModelLocalCommand(CLI::App& root, SubcommandList& out);
void AddVerifyCommand(CLI::App& root, SubcommandList& out);         // cmd_verify.cc
void AddMakeDemoModelCommand(CLI::App& root, SubcommandList& out);  // cmd_make_demo_model.cc
// finalize (cmd_finalize.cc): the last step of a sharded quantize-model run.
void AddFinalizeCommand(CLI::App& root, SubcommandList& out);

// The quantization options (layout, method, objective, error rule, include/exclude, max shard
// size) from the flags of `app`, read by name: quantize-model --local and finalize declare the
// same flags, so that both derive the same output plan. No device, no calibration.
absl::StatusOr<pipeline::QuantizeModelOptions> ModelOptionsFromFlags(
    CLI::App* app, const std::string& max_shard_size, bool no_default_excludes);

// "file:///abs/path" -> "/abs/path"; anything else unchanged.
std::string StripFileScheme(std::string uri);

// The object stores of the local commands. s3:// locations: endpoint/region from the flags or
// AWS_ENDPOINT_URL / AWS_REGION (AWS itself when neither is set), credentials from
// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; local paths and file:// are not confined.
// `s3_upload_concurrency`: multipart parts in flight per upload (storage/s3_store.h).
absl::StatusOr<std::unique_ptr<storage::StorageRouter>> OpenLocalStore(
    const std::string& s3_endpoint, const std::string& s3_region, int s3_upload_concurrency = 4);

// The calibration statistics at `path` (a local path, file:// or s3://); null when `path` is
// empty.
absl::StatusOr<std::unique_ptr<pipeline::ModelCalibration>> OpenCalibration(
    const std::string& path, storage::StorageRouter& store);

// "5GB" -> 5'000'000'000, "500MB", "1.5GB", "2GiB", "64KiB", "1000" (bytes). Case-insensitive.
absl::StatusOr<uint64_t> ParseByteSize(const std::string& text);
// 1234567 -> "1.23 MB".
std::string FormatBytes(double bytes);

}  // namespace nvfp4::cli

#endif  // NVFP4_CLIENT_CLI_PIPELINE_COMMANDS_H_
