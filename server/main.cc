// nvfp4d: the NVFP4 quantization server.
//
//   nvfp4d --listen 0.0.0.0:50051 --metrics_listen 0.0.0.0:9090 --data_root /data --devices auto
//
// SIGTERM/SIGINT drain the server: health turns NOT_SERVING, new work is refused with UNAVAILABLE,
// the gRPC listener closes and open connections get GOAWAY at once (clients reconnect elsewhere;
// calls in flight go on), running jobs get --drain_timeout seconds to finish (then they are
// interrupted and saved as QUEUED for the next start), and the process exits 0.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "grpc/grpc.h"
#include "google/protobuf/stubs/logging.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/generic/async_generic_service.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/impl/server_builder_option.h"
#include "grpcpp/impl/server_builder_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "base/status_macros.h"
#include "base/version.h"
#include "server/auth.h"
#include "kernels/backend.h"
#include "server/device_pool.h"
#include "server/heap_trim.h"
#include "server/job_journal.h"
#include "server/job_manager.h"
#include "server/job_store.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/model_pipeline.h"
#include "server/postgres_job_store.h"
#include "server/quantizer_service.h"
#include "storage/router.h"
#include "storage/s3_store.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:50051", "gRPC listen address (port 0 picks a free port)");
ABSL_FLAG(std::string, metrics_listen, "0.0.0.0:9090",
          "Prometheus /metrics listen address (empty disables; port 0 picks one)");
ABSL_FLAG(std::string, health_listen, "",
          "optional plaintext listen address serving only grpc.health.v1 (for kubelet probes)");
ABSL_FLAG(std::vector<std::string>, data_root, {"./nvfp4-data"},
          "local directories the server may read and write (repeatable or comma-separated); "
          "relative file:// paths resolve against the first");
ABSL_FLAG(std::string, state_dir, "",
          "directory for the durable job journal; interrupted model jobs resume from it after a "
          "restart (empty: jobs kept in memory)");
ABSL_FLAG(std::string, job_store, "",
          "job store shared by a fleet of replicas: a PostgreSQL connection URI "
          "(postgresql://user@host:5432/db?sslmode=verify-full; the password from the URI, "
          "$PGPASSWORD or $PGPASSFILE); any replica then answers for any job and a job whose "
          "replica died is resumed by another (empty: --state_dir's journal, one replica)");
ABSL_FLAG(int, job_lease_seconds, 30,
          "with --job_store: a running job whose replica stopped renewing its lease for this "
          "long is claimed by another replica");
ABSL_FLAG(std::string, replica_id, "",
          "with --job_store: this replica's name in leases and logs (default: host name plus a "
          "random suffix)");
ABSL_FLAG(int, queue_capacity, 64, "maximum queued model jobs; more are refused with UNAVAILABLE");
ABSL_FLAG(int64_t, max_finished_jobs, 10000,
          "finished jobs kept (GetJob/ListJobs/ReadResult); the oldest are forgotten beyond it");
ABSL_FLAG(absl::Duration, finished_job_ttl, absl::Hours(7 * 24),
          "finished jobs are forgotten this long after they ended (e.g. 168h, 30m)");
ABSL_FLAG(std::string, devices, "auto", "quantizer devices: auto | cpu | cuda:0,1");
ABSL_FLAG(int, max_message_bytes, 8 << 20, "maximum gRPC message size received (chunk + slack)");
ABSL_FLAG(int, chunk_bytes, 1 << 20, "default streaming chunk size (256 KiB .. 4 MiB)");
ABSL_FLAG(int64_t, max_tensor_bytes, 4ll << 30, "largest QuantizeTensor source accepted");
ABSL_FLAG(int64_t, max_uri_bytes, 4096,
          "longest input_uri / output_uri / calibration_uri accepted (INVALID_ARGUMENT)");
ABSL_FLAG(int64_t, max_patterns, 256,
          "most include_patterns (and most exclude_patterns) per QuantizeModel request");
ABSL_FLAG(int64_t, max_pattern_bytes, 1024, "longest include/exclude pattern accepted");
ABSL_FLAG(int64_t, max_list_page_bytes, 2 << 20,
          "ListJobs pages stop before this many bytes (at least one job; at most half of "
          "--max_message_bytes)");
ABSL_FLAG(std::string, log_format, "text",
          "log line format: text (\"<time> nvfp4d <message>\") or json (one object per line: "
          "time, level, event, job_id, message, fields)");
ABSL_FLAG(int, max_connection_age, 0,
          "seconds before a connection is asked to reconnect (0: never)");
ABSL_FLAG(absl::Duration, max_connection_age_grace, absl::Seconds(30),
          "after --max_connection_age, how long calls in flight may go on before the connection "
          "is closed (a watch stream is then re-attached by the clients)");
ABSL_FLAG(absl::Duration, tensor_stream_idle_timeout, absl::Seconds(30),
          "a QuantizeTensor stream that sends no message for this long while uploading is closed "
          "with DEADLINE_EXCEEDED, freeing its in-flight slot (0: no limit)");
ABSL_FLAG(absl::Duration, tensor_stream_deadline, absl::Minutes(30),
          "a QuantizeTensor call open longer than this (upload, device wait and download) is "
          "closed with DEADLINE_EXCEEDED (0: no limit)");
ABSL_FLAG(int, max_watch_streams, 256,
          "concurrent WatchJob streams (each holds a thread); more get RESOURCE_EXHAUSTED");
ABSL_FLAG(int, keepalive_time_seconds, 60,
          "HTTP/2 keepalive ping interval on every connection, calls open or not; a peer that "
          "does not answer within --keepalive_timeout_seconds is dropped and its calls cancelled "
          "(0: no server pings)");
ABSL_FLAG(int, keepalive_timeout_seconds, 20, "how long a keepalive ping may go unanswered");
ABSL_FLAG(int, keepalive_min_client_ping_seconds, 10,
          "clients may send keepalive pings this often (more often: GOAWAY too_many_pings)");
ABSL_FLAG(int, drain_timeout, 30, "seconds running jobs get to finish after SIGTERM");
ABSL_FLAG(int, heartbeat_seconds, 5, "default WatchJob heartbeat interval");
ABSL_FLAG(std::string, s3_endpoint, "", "S3 endpoint URL (default $AWS_ENDPOINT_URL)");
ABSL_FLAG(std::string, s3_region, "", "S3 region (default $AWS_REGION, else us-east-1)");
ABSL_FLAG(int64_t, s3_part_bytes, 64ll << 20, "S3 multipart part size (>= 5 MiB)");
ABSL_FLAG(int, s3_upload_concurrency, 4,
          "parts of one S3 multipart upload sent at once (1-64); each holds a part in memory");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain of the main port (with --tls_key: the main port is TLS-only)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA bundle: when given, clients must present a certificate it verifies (mutual TLS)");
ABSL_FLAG(int, tls_refresh_seconds, 60,
          "how often the certificate files are checked for changes (reloaded without a restart)");
ABSL_FLAG(std::string, auth_tokens_file, "",
          "bearer tokens, one per line: Quantizer calls need 'authorization: Bearer <token>' "
          "(health stays open); the file is re-read when it changes");
ABSL_FLAG(std::string, scratch_dir, "",
          "local directory where s3:// model outputs are staged before upload (default: "
          "<state_dir>/work with --state_dir, else $TMPDIR)");
ABSL_FLAG(int64_t, max_shard_bytes, 5'000'000'000,
          "largest output safetensors file of a model job, in bytes (nvfp4ctl's --max-shard-size); "
          "for s3:// outputs of durable jobs it also bounds the local scratch (about two files)");
ABSL_FLAG(std::string, ready_file, "",
          "write {\"grpc_port\":..,\"metrics_port\":..,\"health_port\":..} here once serving");
ABSL_FLAG(int, malloc_trim_seconds, 10,
          "return free heap memory to the OS (malloc_trim) this often; 0 disables "
          "(server/heap_trim.h)");
ABSL_FLAG(int64_t, malloc_mmap_threshold, 256 << 10,
          "heap allocations of at least this many bytes are mmapped and unmapped on free; 0 keeps "
          "glibc's dynamic threshold (server/heap_trim.h)");

namespace nvfp4::server {
namespace {

constexpr char kServiceName[] = "nvfp4.v1.Quantizer";

// Checks that a PEM file is readable and holds at least one PEM block (contents never logged).
absl::Status CheckPemFile(const std::string& flag, const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("--", flag, ": cannot read ", path));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", path, " is not PEM"));
  }
  return absl::OkStatus();
}

// Main-port credentials: insecure, TLS, or mutual TLS (with --tls_ca), from files that are
// watched for changes (grpc::experimental::FileWatcherCertificateProvider).
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MainPortCredentials() {
  const std::string cert = absl::GetFlag(FLAGS_tls_cert), key = absl::GetFlag(FLAGS_tls_key),
                    ca = absl::GetFlag(FLAGS_tls_ca);
  if (cert.empty() && key.empty()) {
    if (!ca.empty()) return absl::InvalidArgumentError("--tls_ca needs --tls_cert and --tls_key");
    return grpc::InsecureServerCredentials();
  }
  if (cert.empty() || key.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  }
  RETURN_IF_ERROR(CheckPemFile("tls_cert", cert));
  RETURN_IF_ERROR(CheckPemFile("tls_key", key));
  if (!ca.empty()) RETURN_IF_ERROR(CheckPemFile("tls_ca", ca));
  const int refresh = std::max(1, absl::GetFlag(FLAGS_tls_refresh_seconds));
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      key, cert, ca, static_cast<unsigned int>(refresh));
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (!ca.empty()) {
    options.watch_root_certs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  } else {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

// --data_root is repeatable: absl keeps only the last occurrence, so collect them all first.
std::vector<std::string> CollectDataRoots(int argc, char** argv) {
  std::vector<std::string> roots;
  for (int i = 1; i < argc; ++i) {
    absl::string_view a = argv[i];
    std::string value;
    if (absl::StartsWith(a, "--data_root=")) {
      value = std::string(a.substr(12));
    } else if (a == "--data_root" && i + 1 < argc) {
      value = argv[i + 1];
    } else {
      continue;
    }
    for (absl::string_view r : absl::StrSplit(value, ',', absl::SkipEmpty())) roots.emplace_back(r);
  }
  return roots;
}

// Parses the flags (with nvfp4d's --help and --version); returns the data roots.
std::vector<std::string> ParseFlags(int argc, char** argv) {
  absl::SetProgramUsageMessage("gRPC service that quantizes LLM weights to NVFP4");
  // `--help` lists the flags of this file (absl's default matches files named like the binary).
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "server/main.cc");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  usage.version_string = [] { return absl::StrCat("nvfp4d ", kVersion, "\n"); };
  absl::SetFlagsUsageConfig(usage);
  std::vector<std::string> roots = CollectDataRoots(argc, argv);
  absl::ParseCommandLine(argc, argv);
  if (roots.empty()) roots = absl::GetFlag(FLAGS_data_root);
  return roots;
}

// Blocks SIGTERM and SIGINT (returned, for sigwait) and ignores SIGPIPE. Call before any thread
// starts: the signals are then handled by the one thread that waits for them.
sigset_t BlockTerminationSignals() {
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);
  return sigs;
}

// Why nvfp4d could not start: printed as "nvfp4d: <message>"; the process exits with `exit_code`
// (2: bad flags or configuration, 1: a resource could not be had).
struct StartFailure {
  int exit_code = 1;
  std::string message;
};
using Started = std::optional<StartFailure>;  // nullopt: that part started
StartFailure BadConfig(std::string message) { return {2, std::move(message)}; }
StartFailure BadConfig(const absl::Status& s) { return {2, s.ToString()}; }
StartFailure CannotStart(std::string message) { return {1, std::move(message)}; }
StartFailure CannotStart(const absl::Status& s) { return {1, s.ToString()}; }

// The parts of a running nvfp4d, started in dependency order by Start() and torn down in reverse
// order (members are declared in the order they start).
class Daemon {
 public:
  explicit Daemon(std::vector<std::string> data_roots) : roots_(std::move(data_roots)) {}

  Started Start() {
    if (Started f = CheckFlags()) return f;
    if (Started f = OpenStorage()) return f;
    if (Started f = OpenDevices()) return f;
    if (Started f = StartJobs()) return f;
    if (Started f = BuildService()) return f;
    if (Started f = StartServers()) return f;
    if (Started f = ExposeMetrics()) return f;
    Announce();
    return std::nullopt;
  }

  // Serves until SIGTERM / SIGINT (in `sigs`, blocked), then drains (Drain()): health turns
  // NOT_SERVING, new work and new connections are refused, GOAWAY goes out, running jobs get
  // --drain_timeout to finish, the servers shut down.
  void ServeUntilDrained(const sigset_t& sigs) {
    const absl::Duration drain_timeout = absl::Seconds(absl::GetFlag(FLAGS_drain_timeout));
    std::thread signal_thread([&] {
      int sig = 0;
      sigwait(&sigs, &sig);
      Drain(sig, drain_timeout);
    });
    server_->Wait();
    signal_thread.join();
  }

 private:
  Started CheckFlags() {
    const int chunk_bytes = absl::GetFlag(FLAGS_chunk_bytes);
    if (chunk_bytes < kMinChunkBytes || chunk_bytes > kMaxChunkBytes) {
      return BadConfig("--chunk_bytes must be within [262144, 4194304]");
    }
    if (absl::GetFlag(FLAGS_max_finished_jobs) < 1 ||
        absl::GetFlag(FLAGS_finished_job_ttl) <= absl::ZeroDuration()) {
      return BadConfig("--max_finished_jobs must be >= 1 and --finished_job_ttl > 0");
    }
    if (absl::GetFlag(FLAGS_max_message_bytes) < chunk_bytes + (64 << 10)) {
      return BadConfig("--max_message_bytes must exceed --chunk_bytes by 64 KiB");
    }
    return std::nullopt;
  }

  // Metrics, and the object stores behind file:// (the data roots) and s3://.
  Started OpenStorage() {
    metrics_ = std::make_unique<Metrics>(kVersion, CudaCompiledIn());
    Metrics* m = metrics_.get();
    storage::StoreConfig config;
    config.data_roots = roots_;
    config.s3_endpoint = absl::GetFlag(FLAGS_s3_endpoint);
    config.s3_region = absl::GetFlag(FLAGS_s3_region);
    config.s3_part_bytes = absl::GetFlag(FLAGS_s3_part_bytes);
    config.s3_upload_concurrency = absl::GetFlag(FLAGS_s3_upload_concurrency);
    config.s3_observer = [m](absl::string_view op, double seconds, absl::string_view error) {
      m->S3Request(op, seconds, error);
    };
    config.s3_log = [](const std::string& line) { LogLine(line); };
    absl::StatusOr<std::unique_ptr<storage::StorageRouter>> router =
        storage::MakeStorageRouter(config);
    if (!router.ok()) return BadConfig(router.status());
    store_ = *std::move(router);
    if (store_->s3() != nullptr) LogLine("s3 ", store_->s3()->Describe());
    return std::nullopt;
  }

  Started OpenDevices() {
    absl::StatusOr<std::unique_ptr<DevicePool>> devices =
        DevicePool::Create(absl::GetFlag(FLAGS_devices));
    if (!devices.ok()) return BadConfig(devices.status());
    devices_ = *std::move(devices);
    metrics_->SetDevices(devices_->kind(), devices_->size());
    LogLine("devices: ", absl::StrJoin(devices_->names(), ","));
    return std::nullopt;
  }

  // The job store, the model pipeline and the job manager (one worker per device).
  // With --state_dir: the durable job journal (server/job_journal.h); interrupted model jobs
  // resume after a restart; s3:// outputs of such jobs stage under <state_dir>/work unless
  // --scratch_dir is given.
  Started StartJobs() {
    std::string work_dir;
    if (const std::string uri = absl::GetFlag(FLAGS_job_store); !uri.empty()) {
      if (!absl::StartsWith(uri, "postgresql://") && !absl::StartsWith(uri, "postgres://")) {
        return BadConfig(absl::InvalidArgumentError(
            "--job_store must be a postgresql:// connection URI"));
      }
      if (absl::GetFlag(FLAGS_job_lease_seconds) < 2) {
        return BadConfig(absl::InvalidArgumentError("--job_lease_seconds must be at least 2"));
      }
      std::string replica = absl::GetFlag(FLAGS_replica_id);
      if (replica.empty()) {
        char host[256] = {};
        if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
        std::mt19937_64 rng{std::random_device{}()};
        replica = absl::StrFormat("%s-%08x", host[0] != '\0' ? host : "nvfp4d",
                                  static_cast<uint32_t>(rng()));
      }
      absl::StatusOr<std::unique_ptr<PostgresJobStore>> pg =
          PostgresJobStore::Connect(uri, replica);
      if (!pg.ok()) return CannotStart(pg.status());
      LogLine("job store: PostgreSQL (shared by the fleet), replica ", replica, ", lease ",
              absl::GetFlag(FLAGS_job_lease_seconds), "s");
      job_store_ = *std::move(pg);
      if (const std::string dir = absl::GetFlag(FLAGS_state_dir); !dir.empty()) {
        work_dir = absl::StrCat(dir, "/work");
      }
    } else if (const std::string dir = absl::GetFlag(FLAGS_state_dir); !dir.empty()) {
      absl::StatusOr<std::unique_ptr<JobJournal>> journal = JobJournal::Open(dir);
      if (!journal.ok()) return BadConfig(journal.status());
      const JobJournal::Stats st = (*journal)->stats();
      LogLine("journal ", (*journal)->path(), ": replayed ", st.records_replayed, " records",
              st.torn_bytes > 0 ? absl::StrCat(", ignored a torn tail of ", st.torn_bytes, " bytes")
                                : std::string(),
              ", compacted to ", st.file_bytes, " bytes");
      job_store_ = *std::move(journal);
      work_dir = absl::StrCat(dir, "/work");
    } else {
      job_store_ = std::make_unique<MemoryJobStore>();
    }
    if (absl::GetFlag(FLAGS_max_shard_bytes) <= 0) {
      return BadConfig(absl::InvalidArgumentError("--max_shard_bytes must be positive"));
    }
    pipeline_ = MakeCheckpointPipeline(absl::GetFlag(FLAGS_scratch_dir), work_dir,
                                       static_cast<uint64_t>(absl::GetFlag(FLAGS_max_shard_bytes)));
    JobManagerOptions options;
    options.queue_capacity = absl::GetFlag(FLAGS_queue_capacity);
    options.workers = devices_->size();
    options.default_heartbeat = absl::Seconds(absl::GetFlag(FLAGS_heartbeat_seconds));
    options.max_finished_jobs = absl::GetFlag(FLAGS_max_finished_jobs);
    options.finished_job_ttl = absl::GetFlag(FLAGS_finished_job_ttl);
    options.lease = absl::Seconds(absl::GetFlag(FLAGS_job_lease_seconds));
    jobs_ = std::make_unique<JobManager>(options, pipeline_.get(), store_.get(), devices_.get(),
                                         job_store_.get(), metrics_.get());
    if (absl::Status s = jobs_->Start(); !s.ok()) return CannotStart(s);
    return std::nullopt;
  }

  // The Quantizer service with its bearer tokens, and the main port's credentials.
  Started BuildService() {
    ServiceOptions options;
    options.chunk_bytes = absl::GetFlag(FLAGS_chunk_bytes);
    options.max_tensor_bytes = absl::GetFlag(FLAGS_max_tensor_bytes);
    options.max_inflight_tensors = absl::GetFlag(FLAGS_queue_capacity);
    options.default_heartbeat = absl::Seconds(absl::GetFlag(FLAGS_heartbeat_seconds));
    options.tensor_stream_idle_timeout = absl::GetFlag(FLAGS_tensor_stream_idle_timeout);
    options.tensor_stream_deadline = absl::GetFlag(FLAGS_tensor_stream_deadline);
    options.max_watch_streams = absl::GetFlag(FLAGS_max_watch_streams);
    if (options.tensor_stream_idle_timeout < absl::ZeroDuration() ||
        options.tensor_stream_deadline < absl::ZeroDuration() || options.max_watch_streams < 1) {
      return BadConfig(
          "--tensor_stream_idle_timeout and --tensor_stream_deadline must not be negative, "
          "--max_watch_streams at least 1");
    }
    options.limits.max_uri_bytes = absl::GetFlag(FLAGS_max_uri_bytes);
    options.limits.max_patterns = absl::GetFlag(FLAGS_max_patterns);
    options.limits.max_pattern_bytes = absl::GetFlag(FLAGS_max_pattern_bytes);
    options.limits.max_list_page_bytes =
        std::min<int64_t>(absl::GetFlag(FLAGS_max_list_page_bytes),
                          absl::GetFlag(FLAGS_max_message_bytes) / 2);
    if (options.limits.max_uri_bytes <= 0 || options.limits.max_patterns < 0 ||
        options.limits.max_pattern_bytes <= 0 || options.limits.max_list_page_bytes <= 0) {
      return BadConfig(
          "--max_uri_bytes, --max_pattern_bytes and --max_list_page_bytes must be positive, "
          "--max_patterns not negative");
    }
    if (const std::string tf = absl::GetFlag(FLAGS_auth_tokens_file); !tf.empty()) {
      absl::StatusOr<std::unique_ptr<TokenAuthenticator>> a = TokenAuthenticator::FromFile(tf);
      if (!a.ok()) return BadConfig(a.status());
      auth_ = *std::move(a);
      options.auth = auth_.get();
      LogLine("auth: ", auth_->token_count(), " bearer token(s) from ", tf);
    }
    absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> creds = MainPortCredentials();
    if (!creds.ok()) return BadConfig(creds.status());
    creds_ = *std::move(creds);
    service_ = std::make_unique<QuantizerService>(options, jobs_.get(), devices_.get(),
                                                  store_.get(), metrics_.get());
    return std::nullopt;
  }

  // The gRPC servers, then SERVING. The plaintext health-only port (kubelet's gRPC probe cannot do
  // TLS) serves grpc.health.v1 and nothing else: linking grpc++_reflection registers its plugin
  // with every ServerBuilder at static initialization, so that builder drops it (NoPlugins); its
  // one other service is the generic one that answers UNIMPLEMENTED to every other method (gRPC
  // refuses to build a server that has neither a service nor a polled queue).
  Started StartServers() {
    grpc::EnableDefaultHealthCheckService(true);
    if (const std::string hl = absl::GetFlag(FLAGS_health_listen); !hl.empty()) {
      grpc::ServerBuilder hb;
      hb.SetOption(std::make_unique<NoPlugins>());
      hb.RegisterCallbackGenericService(&health_unimplemented_);
      hb.AddListeningPort(hl, grpc::InsecureServerCredentials(), &health_port_);
      hb.SetMaxReceiveMessageSize(64 << 10);
      AddKeepalive(hb);
      health_server_ = hb.BuildAndStart();
      if (!health_server_ || health_port_ == 0) {
        return CannotStart(absl::StrCat("cannot listen on ", hl));
      }
    }
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    grpc::ServerBuilder builder;
    builder.AddListeningPort(absl::GetFlag(FLAGS_listen), creds_, &grpc_port_);
    builder.RegisterService(service_.get());
    const int max_message = absl::GetFlag(FLAGS_max_message_bytes);
    builder.SetMaxReceiveMessageSize(max_message);
    builder.SetMaxSendMessageSize(max_message);
    AddKeepalive(builder);
    if (int age = absl::GetFlag(FLAGS_max_connection_age); age > 0) {
      builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, age * 1000);
      builder.AddChannelArgument(
          GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
          static_cast<int>(absl::ToInt64Milliseconds(absl::GetFlag(FLAGS_max_connection_age_grace))));
    }
    server_ = builder.BuildAndStart();
    if (!server_ || grpc_port_ == 0) {
      return CannotStart(absl::StrCat("cannot listen on ", absl::GetFlag(FLAGS_listen)));
    }
    SetServing(true);
    return std::nullopt;
  }

  // HTTP/2 keepalive: the server pings every connection (calls open or not) and drops one whose
  // peer stops answering, which cancels its calls (a WatchJob stream or a QuantizeTensor upload
  // of a vanished client frees its thread and slot). Pings continue while no data flows
  // (max_pings_without_data 0), e.g. on an idle watch stream.
  static void AddKeepalive(grpc::ServerBuilder& b) {
    const int time_s = absl::GetFlag(FLAGS_keepalive_time_seconds);
    if (time_s > 0) {
      b.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, time_s * 1000);
      b.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                           std::max(1, absl::GetFlag(FLAGS_keepalive_timeout_seconds)) * 1000);
      b.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
      b.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    }
    b.AddChannelArgument(
        GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
        std::max(1, absl::GetFlag(FLAGS_keepalive_min_client_ping_seconds)) * 1000);
  }

  // A ServerBuilder option that removes every plugin (reflection) from its builder.
  class NoPlugins : public grpc::ServerBuilderOption {
   public:
    void UpdateArguments(grpc::ChannelArguments*) override {}
    void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
      plugins->clear();
    }
  };

  Started ExposeMetrics() {
    if (const std::string ml = absl::GetFlag(FLAGS_metrics_listen); !ml.empty()) {
      absl::StatusOr<int> p = metrics_->Expose(ml);
      if (!p.ok()) return CannotStart(p.status());
      metrics_port_ = *p;
    }
    return std::nullopt;
  }

  // Logs the serving line and writes --ready_file.
  void Announce() {
    const bool tls = !absl::GetFlag(FLAGS_tls_cert).empty();
    const bool mtls = tls && !absl::GetFlag(FLAGS_tls_ca).empty();
    LogLine("serving ", kServiceName, " on port ", grpc_port_,
            mtls ? " (mutual TLS)" : (tls ? " (TLS)" : " (plaintext)"),
            auth_ ? " bearer-token auth" : "", " metrics_port=", metrics_port_,
            " health_port=", health_port_, " data_roots=", absl::StrJoin(roots_, ","));
    if (const std::string rf = absl::GetFlag(FLAGS_ready_file); !rf.empty()) {
      std::string tmp = rf + ".tmp";
      {
        std::ofstream out(tmp);
        out << "{\"grpc_port\": " << grpc_port_ << ", \"metrics_port\": " << metrics_port_
            << ", \"health_port\": " << health_port_ << "}\n";
      }
      std::rename(tmp.c_str(), rf.c_str());
    }
  }

  void SetServing(bool serving) {
    for (grpc::Server* s : {server_.get(), health_server_.get()}) {
      if (s == nullptr) continue;
      grpc::HealthCheckServiceInterface* h = s->GetHealthCheckService();
      h->SetServingStatus(serving);  // "" (overall) and every registered service
      h->SetServingStatus(kServiceName, serving);
    }
  }

  // SIGTERM: first stop taking work and send clients elsewhere, then let running jobs finish.
  //  1. Health turns NOT_SERVING (readiness fails on the health port, which stays up to the end)
  //     and the job manager refuses new jobs with UNAVAILABLE.
  //  2. The main server starts shutting down at once: its listener closes (a new connection to
  //     this pod is refused, so the load balancer's retry or the client's reconnect goes to another
  //     pod) and every open connection gets GOAWAY, so clients pinned to this pod move within a
  //     round trip instead of getting UNAVAILABLE until the drain ends. Calls already in flight
  //     (WatchJob streams, uploads, a QuantizeTensor) go on: Shutdown() waits for them, on its own
  //     thread.
  //  3. Running jobs get `timeout` to finish, then are interrupted between units (saved QUEUED);
  //     Stop() ends the watch streams; calls still open 5 s later are cancelled.
  void Drain(int sig, absl::Duration timeout) {
    const absl::Time t0 = absl::Now();
    LogLine("received signal ", sig, ": draining (running=", jobs_->running(),
            " queued=", jobs_->queued(), ")");
    SetServing(false);
    jobs_->BeginDrain();
    absl::Notification shut_down;
    std::thread goaway([&] {
      // The deadline is a backstop only (the drain, the unit in progress, 5 s): the calls left
      // after the drain are cancelled below.
      server_->Shutdown(absl::ToChronoTime(t0 + timeout + absl::Seconds(35)));
      shut_down.Notify();
    });
    LogLine("GOAWAY sent and listener closed; in-flight calls continue");
    if (!jobs_->WaitIdle(timeout)) {
      LogLine("drain timeout: interrupting running jobs (they stay QUEUED for the next start)");
    }
    jobs_->Stop();  // interrupts what is left and ends watch streams
    if (!shut_down.WaitForNotificationWithTimeout(absl::Seconds(5))) {
      LogLine("cancelling the calls still open");
      grpc_server_cancel_all_calls(server_->c_server());
    }
    goaway.join();
    if (health_server_) health_server_->Shutdown(absl::ToChronoTime(absl::Now()));
    LogLine("drained in ", absl::FormatDuration(absl::Now() - t0));
  }

  const std::vector<std::string> roots_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<storage::StorageRouter> store_;
  std::unique_ptr<DevicePool> devices_;
  std::unique_ptr<JobStore> job_store_;
  std::unique_ptr<ModelPipeline> pipeline_;
  std::unique_ptr<JobManager> jobs_;
  std::unique_ptr<TokenAuthenticator> auth_;
  std::shared_ptr<grpc::ServerCredentials> creds_;
  std::unique_ptr<QuantizerService> service_;
  grpc::CallbackGenericService health_unimplemented_;  // the health port's other methods
  std::unique_ptr<grpc::Server> health_server_;
  std::unique_ptr<grpc::Server> server_;
  int grpc_port_ = 0, health_port_ = 0, metrics_port_ = 0;
};

// protobuf's own messages (e.g. about a malformed record) go to the log, escaped, in its format.
void LogProtobufMessage(google::protobuf::LogLevel, const char* file, int line,
                        const std::string& message) {
  LogLine("protobuf: ", message, " (", file, ":", line, ")");
}

int Run(int argc, char** argv) {
  const std::vector<std::string> roots = ParseFlags(argc, argv);
  google::protobuf::SetLogHandler(&LogProtobufMessage);
  if (absl::StatusOr<LogFormat> f = ParseLogFormat(absl::GetFlag(FLAGS_log_format)); f.ok()) {
    SetLogFormat(*f);
  } else {
    std::fprintf(stderr, "nvfp4d: %s\n", std::string(f.status().message()).c_str());
    return 2;
  }
  const sigset_t sigs = BlockTerminationSignals();
  // RSS tracks the memory in use under load (server/heap_trim.h, docs/BENCHMARKS.md "Load test").
  ConfigureHeap(absl::GetFlag(FLAGS_malloc_mmap_threshold));
  HeapTrimmer heap_trimmer(absl::Seconds(absl::GetFlag(FLAGS_malloc_trim_seconds)));
  Daemon daemon(roots);
  if (Started failure = daemon.Start()) {
    std::fprintf(stderr, "nvfp4d: %s\n", EscapeLogText(failure->message).c_str());
    return failure->exit_code;
  }
  daemon.ServeUntilDrained(sigs);
  LogLine("exit 0");
  return 0;
}

}  // namespace
}  // namespace nvfp4::server

int main(int argc, char** argv) { return nvfp4::server::Run(argc, argv); }
