// nvfp4ctl health: grpc.health.v1 Check of the server (overall, or one service).
#include <iostream>
#include <memory>

#include "client/cli/exit_codes.h"
#include "client/cli/remote_common.h"

namespace nvfp4::cli {

void AddHealthCommand(CLI::App& root, SubcommandList& out) {
  struct Flags {
    RemoteFlags remote;
    std::string service;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* app = root.add_subcommand("health", "Check that an nvfp4d server is serving.");
  AddRemoteFlags(app, &flags->remote);
  app->add_option("--service", flags->service,
                  "Service to check ('' = the whole server, or nvfp4.v1.Quantizer).");
  app->footer("Exit codes: 0 SERVING, 1 not serving or unreachable.");
  out.push_back({app, [flags]() {
                   auto client = ConnectRemote(flags->remote);
                   if (!client.ok()) return ReportRemoteError(client.status());
                   auto status = (*client)->Health(flags->service);
                   if (!status.ok()) return ReportRemoteError(status.status());
                   if (flags->remote.json) {
                     std::cout << "{\"server\": \"" << flags->remote.server << "\", \"status\": \""
                               << *status << "\"}\n";
                   } else {
                     std::cout << flags->remote.server << ": " << *status << "\n";
                   }
                   return *status == "SERVING" ? kExitOk : kExitInternal;
                 }});
}

}  // namespace nvfp4::cli
