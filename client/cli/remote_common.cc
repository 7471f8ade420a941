#include "client/cli/remote_common.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>

#include "absl/strings/ascii.h"
#include "absl/time/time.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "client/cli/exit_codes.h"
#include "google/protobuf/util/json_util.h"

namespace nvfp4::cli {
namespace {

std::string StateName(v1::JobState s) {
  std::string n = v1::JobState_Name(s);
  return n.rfind("JOB_STATE_", 0) == 0 ? n.substr(10) : n;
}

std::string Bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  return absl::StrFormat(u == 0 ? "%.0f %s" : "%.1f %s", b, units[u]);
}

std::string Eta(double s) {
  if (s < 0 || !std::isfinite(s)) return "--:--";
  const int64_t t = static_cast<int64_t>(s + 0.5);
  return t >= 3600 ? absl::StrFormat("%d:%02d:%02d", t / 3600, (t / 60) % 60, t % 60)
                   : absl::StrFormat("%d:%02d", t / 60, t % 60);
}

std::string MessageJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return out;
}

}  // namespace

void AddRemoteFlags(CLI::App* app, RemoteFlags* flags) {
  app->add_option("--server", flags->server, "Address of nvfp4d (host:port).")
      ->type_name("ADDR")
      ->capture_default_str();
  app->add_flag("--json", flags->json, "Machine-readable output: one JSON object per line.");
  app->add_option("--timeout", flags->timeout_seconds, "Seconds to wait for each unary call.")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  app->add_flag("--tls", flags->tls, "Connect with TLS, verifying the server with the system roots.");
  app->add_option("--tls_ca", flags->tls_ca, "PEM CA bundle that verifies the server (implies TLS).")
      ->type_name("FILE");
  app->add_option("--tls_cert", flags->tls_cert,
                  "PEM client certificate for mutual TLS (with --tls_key).")
      ->type_name("FILE");
  app->add_option("--tls_key", flags->tls_key, "PEM private key of --tls_cert.")->type_name("FILE");
  app->add_option("--tls_server_name", flags->tls_server_name,
                  "Name expected in the server certificate (default: the host of --server).")
      ->type_name("NAME");
  app->add_option("--token_file", flags->token_file,
                  "File holding the bearer token (default: $NVFP4_TOKEN); sent as "
                  "'authorization: Bearer <token>'.")
      ->type_name("FILE");
}

absl::StatusOr<std::unique_ptr<client::QuantizerClient>> ConnectRemote(const RemoteFlags& flags) {
  client::ClientOptions o;
  o.target = flags.server;
  o.rpc_timeout = absl::Seconds(flags.timeout_seconds);
  o.tls = flags.tls;
  o.tls_ca_file = flags.tls_ca;
  o.tls_cert_file = flags.tls_cert;
  o.tls_key_file = flags.tls_key;
  o.tls_server_name = flags.tls_server_name;
  if (!flags.token_file.empty()) {
    std::ifstream in(flags.token_file);
    if (!in) return absl::InvalidArgumentError("--token_file: cannot read " + flags.token_file);
    std::string token((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    o.token = std::string(absl::StripAsciiWhitespace(token));
    if (o.token.empty()) return absl::InvalidArgumentError("--token_file: the file is empty");
  } else if (const char* env = std::getenv("NVFP4_TOKEN"); env != nullptr) {
    o.token = std::string(absl::StripAsciiWhitespace(env));
  }
  return client::QuantizerClient::Connect(o);
}

int ReportRemoteError(const absl::Status& status) {
  std::cerr << "nvfp4ctl: error: " << absl::StatusCodeToString(status.code()) << ": "
            << std::string(status.message()) << "\n";
  return ExitCodeFor(status);
}

std::string JobLine(const v1::Job& job) {
  const v1::JobProgress& p = job.progress();
  std::string line =
      absl::StrCat(job.job_id(), "  ", StateName(job.state()), "  tensors ", p.tensors_done(), "/",
                   p.tensors_total(), "  in ", Bytes(static_cast<double>(p.bytes_in())), "  out ",
                   Bytes(static_cast<double>(p.bytes_out())));
  if (job.state() == v1::JOB_STATE_RUNNING) {
    absl::StrAppend(&line, "  ", Bytes(p.bytes_per_second()), "/s  ETA ", Eta(p.eta_seconds()));
    if (!p.current_tensor().empty()) absl::StrAppend(&line, "  ", p.current_tensor());
  }
  absl::StrAppend(&line, "  ", job.request().input_uri(), " -> ", job.request().output_uri());
  if (job.has_error() && !job.error().message().empty()) {
    absl::StrAppend(&line, "  error: ", job.error().message());
  }
  for (const std::string& w : job.warnings()) absl::StrAppend(&line, "\n  warning: ", w);
  return line;
}

std::string JobJson(const v1::Job& job) { return MessageJson(job); }

int JobExitCode(const v1::Job& job) {
  return job.state() == v1::JOB_STATE_SUCCEEDED ? kExitOk : kExitJobFailed;
}

int WatchAndRender(client::QuantizerClient& client, const std::string& job_id, bool json) {
  const bool tty = !json && ::isatty(STDERR_FILENO) == 1;
  bool bar_open = false;
  auto on_event = [&](const v1::JobEvent& e) {
    if (json) {
      std::cout << MessageJson(e) << "\n" << std::flush;
      return;
    }
    const v1::Job& job = e.job();
    const v1::JobProgress& p = job.progress();
    if (tty) {
      const double frac =
          p.bytes_in_total() > 0
              ? static_cast<double>(p.bytes_in()) / static_cast<double>(p.bytes_in_total())
              : (p.tensors_total() > 0 ? static_cast<double>(p.tensors_done()) /
                                             static_cast<double>(p.tensors_total())
                                       : 0.0);
      const int width = 30;
      const int filled = static_cast<int>(frac * width);
      std::string bar = std::string(filled, '#') + std::string(width - filled, '-');
      std::cerr << "\r\033[K[" << bar << "] " << absl::StrFormat("%3.0f%%", frac * 100) << "  "
                << p.tensors_done() << "/" << p.tensors_total() << " tensors  "
                << Bytes(static_cast<double>(p.bytes_in())) << "/"
                << Bytes(static_cast<double>(p.bytes_in_total())) << "  "
                << Bytes(p.bytes_per_second()) << "/s  ETA " << Eta(p.eta_seconds()) << "  "
                << StateName(job.state()) << std::flush;
      bar_open = true;
      return;
    }
    if (e.type() == v1::EVENT_TYPE_HEARTBEAT) return;
    for (const v1::TensorResult& t : e.tensors()) {
      if (t.quantized()) {
        std::cerr << "  " << t.name() << "  nmse " << absl::StrFormat("%.4g", t.metrics().nmse())
                  << "  vs rtn " << absl::StrFormat("%.3f", t.metrics().nmse_vs_rtn()) << "  "
                  << t.device() << "\n";
      }
    }
    std::cerr << JobLine(job) << "\n";
  };
  // Interruptions (a draining or restarting server, a connection closed after
  // --max_connection_age) are re-attached by the client; say so on stderr, like any other event.
  auto on_reattach = [&](const absl::Status& why, absl::Duration wait) {
    if (bar_open) std::cerr << "\n";
    bar_open = false;
    std::cerr << "watch of " << job_id << " interrupted (" << absl::StatusCodeToString(why.code())
              << ": " << why.message() << "); re-attaching in " << absl::FormatDuration(wait)
              << "\n";
  };
  absl::StatusOr<v1::Job> final_job =
      client.WatchJob(job_id, on_event, /*heartbeat_seconds=*/0, /*reattach_attempts=*/12,
                      on_reattach);
  if (bar_open) std::cerr << "\n";
  if (!final_job.ok()) return ReportRemoteError(final_job.status());
  if (!json) std::cout << JobLine(*final_job) << "\n";
  if (!json && final_job->state() == v1::JOB_STATE_SUCCEEDED) {
    for (const v1::OutputFile& f : final_job->outputs()) {
      std::cout << "  " << f.uri() << "  " << f.size_bytes() << " bytes  sha256 " << f.sha256()
                << "\n";
    }
  }
  return JobExitCode(*final_job);
}

}  // namespace nvfp4::cli
