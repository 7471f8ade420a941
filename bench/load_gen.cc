// nvfp4_load_gen: closed-loop load against a running nvfp4d (bench/load_test.sh starts one).
//
//   nvfp4_load_gen --target 127.0.0.1:50051 --clients 64 --duration 600s
//       --mix 256x4096:6,1024x4096:3,4096x4096:1,model:2
//       --model_input file:///data/demo-tiny --model_output_prefix file:///data/load-out
//       --server_pid 1234 [--max_requests N] [--shared_channel] [--json]
//
// Each of --clients threads issues one request at a time until --duration has passed or
// --max_requests requests were issued (in-flight requests then finish). A request is drawn from
// --mix (weights): a QuantizeTensor of a random bf16 tensor of that shape (one buffer per shape,
// shared by the threads), or a model job (QuantizeModel of --model_input, then WatchJob until the
// terminal event; latency is submit to terminal, "model.submit" is the QuantizeModel call alone).
// By default every client has its own channel and its own TCP connection (a local subchannel
// pool); --shared_channel makes them share one.
//
// UNAVAILABLE (queue full, too many tensors in flight, draining) is retried with exponential
// backoff and full jitter (--retry_attempts, --retry_initial_ms, --retry_max_ms); the retries are
// counted apart from errors. An error is a request that finally failed (any other code, or
// UNAVAILABLE after the last attempt), or a model job that ended FAILED/CANCELLED (its job error
// code). Latencies include the retry backoff.
//
// With --server_pid the server's VmRSS (/proc/<pid>/status) is sampled every --rss_interval
// seconds; the report prints the series, first/last/max and the least-squares slope (over all
// samples and over the second half, after warm-up). Under load the RSS mostly follows the requests
// in flight; a leak shows better at idle points: with --idle_probe_interval the clients pause
// periodically (and once at the end), the server goes idle, and its RSS is sampled after
// --idle_probe_seconds ("idle RSS"; the paused time is not counted in the duration or throughput).
//
// Output: a human table on stdout, or with --json one JSON object on stdout (the table then goes to
// stderr); --json_out=FILE writes the JSON there as well. Exit 0 when no request failed with a code
// other than UNAVAILABLE and the server process (when given) was alive to the end, 1 otherwise.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/remote/quantizer_client.h"
#include "grpcpp/grpcpp.h"
#include "kernels/types.h"
#include "nlohmann/json.hpp"
#include "nvfp4/v1/convert.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "nvfp4d address HOST:PORT");
ABSL_FLAG(int, clients, 64, "concurrent clients (threads), one request in flight each");
ABSL_FLAG(std::string, duration, "60s",
          "how long new requests are issued: seconds (600) or a duration (600s, 10m)");
ABSL_FLAG(int64_t, max_requests, 0, "stop after issuing this many requests in all (0: no limit)");
ABSL_FLAG(std::string, mix, "256x4096:6,1024x4096:3,4096x4096:1,model:2",
          "request kinds and weights: ROWSxCOLS:W (bf16 QuantizeTensor) and model:W (model job)");
ABSL_FLAG(std::string, method, "rtn", "quantization method: rtn | 4over6 | scalesweep | soar");
ABSL_FLAG(std::string, model_input, "", "checkpoint URI of model jobs (file:///... on the server)");
ABSL_FLAG(std::string, model_output_prefix, "",
          "output URI prefix of model jobs; each job writes <prefix>/c<client>-<n>");
ABSL_FLAG(std::string, cleanup_dir, "",
          "local directory that <model_output_prefix> names on this host: a finished job's output "
          "directory is deleted there (keeps the disk flat over long runs)");
ABSL_FLAG(bool, shared_channel, false, "all clients share one channel (default: one each)");
ABSL_FLAG(int, chunk_bytes, 1 << 20, "streaming chunk size of QuantizeTensor");
ABSL_FLAG(int, retry_attempts, 10, "retries of a request refused with UNAVAILABLE");
ABSL_FLAG(int, retry_initial_ms, 50, "first retry backoff (doubles each retry, full jitter)");
ABSL_FLAG(int, retry_max_ms, 2000, "largest retry backoff");
ABSL_FLAG(int, server_pid, 0, "pid of nvfp4d whose VmRSS is sampled (0: none)");
ABSL_FLAG(double, rss_interval, 5, "seconds between RSS samples");
ABSL_FLAG(double, idle_probe_interval, 0,
          "every this many seconds of load, pause: stop issuing, let in-flight requests finish, wait "
          "--idle_probe_seconds, sample the server's RSS, resume; also once after the run (0: never)");
ABSL_FLAG(double, idle_probe_seconds, 25,
          "idle time before an idle RSS sample (longer than nvfp4d's --malloc_trim_seconds)");
ABSL_FLAG(double, progress_interval, 30, "seconds between progress lines on stderr (0: none)");
ABSL_FLAG(bool, json, false, "print the report as one JSON object on stdout");
ABSL_FLAG(std::string, json_out, "", "also write the JSON report to this file");
ABSL_FLAG(std::string, token, "", "bearer token (authorization metadata)");
ABSL_FLAG(uint64_t, seed, 1, "seed of the tensor data and of the request draws");

namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

struct Kind {
  std::string name;  // "tensor 256x4096", "model"
  bool model = false;
  int64_t rows = 0, cols = 0;
  int weight = 1;
  std::vector<uint16_t> data;  // bf16 source, shared read-only by the clients
};

// Counters of one request kind (and "model.submit").
struct Stats {
  std::mutex mu;
  std::vector<double> latencies;  // seconds, successful requests
  int64_t ok = 0;
  int64_t input_bytes = 0;
  int64_t unavailable_retries = 0;
  std::map<std::string, int64_t> errors;  // canonical code name -> count
  std::map<std::string, std::string> first_error;  // code -> first message (for the report)
};

void RecordError(Stats* s, const absl::Status& status) {
  std::lock_guard<std::mutex> lock(s->mu);
  const std::string code = absl::StatusCodeToString(status.code());
  ++s->errors[code];
  s->first_error.emplace(code, std::string(status.message()));
}

absl::StatusOr<absl::Duration> ParseDurationFlag(const std::string& v) {
  double seconds = 0;
  if (absl::SimpleAtod(v, &seconds)) return absl::Seconds(seconds);
  absl::Duration d;
  if (absl::ParseDuration(v, &d)) return d;
  return absl::InvalidArgumentError(absl::StrCat("--duration '", v, "': not a duration"));
}

absl::StatusOr<std::vector<Kind>> ParseMix(const std::string& mix) {
  std::vector<Kind> kinds;
  for (absl::string_view item : absl::StrSplit(mix, ',', absl::SkipWhitespace())) {
    std::vector<std::string> parts = absl::StrSplit(item, ':');
    Kind k;
    if (parts.size() > 2 ||
        (parts.size() == 2 && (!absl::SimpleAtoi(parts[1], &k.weight) || k.weight < 0))) {
      return absl::InvalidArgumentError(absl::StrCat("--mix item '", std::string(item), "'"));
    }
    if (parts[0] == "model") {
      k.model = true;
      k.name = "model";
    } else {
      std::vector<std::string> dims = absl::StrSplit(parts[0], 'x');
      if (dims.size() != 2 || !absl::SimpleAtoi(dims[0], &k.rows) ||
          !absl::SimpleAtoi(dims[1], &k.cols) || k.rows <= 0 || k.cols <= 0 || k.cols % 16 != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("--mix item '", std::string(item), "': expected ROWSxCOLS (COLS % 16 == 0)"));
      }
      k.name = absl::StrCat("tensor ", k.rows, "x", k.cols);
    }
    if (k.weight > 0) kinds.push_back(std::move(k));
  }
  if (kinds.empty()) return absl::InvalidArgumentError("--mix names no request kind");
  return kinds;
}

std::vector<uint16_t> RandomBf16(int64_t n, uint64_t seed) {
  std::vector<uint16_t> out(static_cast<size_t>(n));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.f, 0.02f);
  for (uint16_t& v : out) {
    const float f = dist(rng);
    uint32_t b;
    std::memcpy(&b, &f, 4);
    v = static_cast<uint16_t>(b >> 16);
  }
  return out;
}

// Nearest-rank percentile of sorted values.
double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t i = static_cast<size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  return sorted[std::min(sorted.size() - 1, i == 0 ? 0 : i - 1)];
}

// VmRSS of `pid` in KiB, or -1 when the process is gone.
int64_t ReadRssKiB(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      int64_t kib = 0;
      std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (f.size() >= 2 && absl::SimpleAtoi(f[1], &kib)) return kib;
    }
  }
  return -1;
}

// Least-squares slope of y over x (per unit of x); 0 with fewer than 2 points.
double Slope(const std::vector<std::pair<double, double>>& pts) {
  if (pts.size() < 2) return 0;
  double sx = 0, sy = 0;
  for (const auto& [x, y] : pts) sx += x, sy += y;
  const double mx = sx / static_cast<double>(pts.size()), my = sy / static_cast<double>(pts.size());
  double num = 0, den = 0;
  for (const auto& [x, y] : pts) num += (x - mx) * (y - my), den += (x - mx) * (x - mx);
  return den > 0 ? num / den : 0;
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target, bool own_connection) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(8 << 20);
  args.SetMaxSendMessageSize(8 << 20);
  // Channels with equal arguments share subchannels (one TCP connection) through the global pool;
  // a local pool gives each client its own connection, as separate processes would have.
  if (own_connection) args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

class LoadGen {
 public:
  LoadGen(std::vector<Kind> kinds, nvfp4::QuantizeOptions options)
      : kinds_(std::move(kinds)), options_(options) {
    for (size_t i = 0; i < kinds_.size(); ++i) stats_.emplace_back(std::make_unique<Stats>());
    submit_stats_ = std::make_unique<Stats>();
  }

  int Run() {
    const std::string target = absl::GetFlag(FLAGS_target);
    const int clients = std::max(1, absl::GetFlag(FLAGS_clients));
    const bool shared = absl::GetFlag(FLAGS_shared_channel);
    nvfp4::client::ClientOptions co;
    co.target = target;
    co.chunk_bytes = absl::GetFlag(FLAGS_chunk_bytes);
    co.token = absl::GetFlag(FLAGS_token);
    std::shared_ptr<grpc::Channel> shared_ch;
    std::vector<std::unique_ptr<nvfp4::client::QuantizerClient>> stubs;
    for (int i = 0; i < clients; ++i) {
      std::shared_ptr<grpc::Channel> ch;
      if (shared) {
        if (!shared_ch) shared_ch = MakeChannel(target, false);
        ch = shared_ch;
      } else {
        ch = MakeChannel(target, true);
      }
      if (!ch->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
        std::fprintf(stderr, "nvfp4_load_gen: cannot connect to %s\n", target.c_str());
        return 1;
      }
      stubs.push_back(std::make_unique<nvfp4::client::QuantizerClient>(ch, co));
    }

    start_ = Clock::now();
    deadline_ = start_ + std::chrono::duration_cast<Clock::duration>(
                             std::chrono::duration<double>(absl::ToDoubleSeconds(duration_)));
    std::thread sampler([this] { SampleRss(); });
    std::thread progress([this] { Progress(); });
    std::thread prober([this] { IdleProbes(); });
    std::vector<std::thread> threads;
    for (int i = 0; i < clients; ++i) {
      threads.emplace_back([this, i, &stubs] { ClientLoop(i, stubs[static_cast<size_t>(i)].get()); });
    }
    for (std::thread& t : threads) t.join();
    end_ = Clock::now();
    {
      std::lock_guard<std::mutex> lock(done_mu_);
      clients_done_ = true;
    }
    done_cv_.notify_all();
    prober.join();
    if (absl::GetFlag(FLAGS_idle_probe_interval) > 0) IdleSample();  // after the run
    {
      std::lock_guard<std::mutex> lock(done_mu_);
      done_ = true;
    }
    done_cv_.notify_all();
    sampler.join();
    progress.join();
    return Report(target, clients, shared);
  }

  void set_duration(absl::Duration d) { duration_ = d; }

 private:
  // Called with pause_mu_ held (deadline_ moves when a pause ends).
  bool StopIssuing() {
    if (Clock::now() >= deadline_) return true;
    const int64_t max = absl::GetFlag(FLAGS_max_requests);
    return max > 0 && issued_.fetch_add(1) >= max;
  }

  // Runs `call` until it returns something other than UNAVAILABLE or the retries are spent.
  template <typename Call>
  auto WithRetry(Stats* stats, std::mt19937_64& rng, Call call) -> decltype(call()) {
    const int attempts = std::max(0, absl::GetFlag(FLAGS_retry_attempts));
    const double initial = absl::GetFlag(FLAGS_retry_initial_ms);
    const double cap = absl::GetFlag(FLAGS_retry_max_ms);
    for (int attempt = 0;; ++attempt) {
      auto result = call();
      if (result.ok() || !absl::IsUnavailable(result.status()) || attempt >= attempts) {
        return result;
      }
      {
        std::lock_guard<std::mutex> lock(stats->mu);
        ++stats->unavailable_retries;
      }
      retries_.fetch_add(1);
      const double ceiling = std::min(cap, initial * std::pow(2.0, attempt));
      std::uniform_real_distribution<double> jitter(0, ceiling);
      std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(jitter(rng)));
    }
  }

  void ClientLoop(int client, nvfp4::client::QuantizerClient* c) {
    std::mt19937_64 rng(absl::GetFlag(FLAGS_seed) * 7919 + static_cast<uint64_t>(client));
    int total_weight = 0;
    for (const Kind& k : kinds_) total_weight += k.weight;
    std::uniform_int_distribution<int> draw(0, total_weight - 1);
    int64_t n = 0;
    while (true) {
      {
        std::unique_lock<std::mutex> lock(pause_mu_);
        pause_cv_.wait(lock, [this] { return !pause_requested_; });
        if (StopIssuing()) break;
        ++in_flight_;
      }
      int r = draw(rng);
      size_t ki = 0;
      while (r >= kinds_[ki].weight) r -= kinds_[ki++].weight;
      const Kind& kind = kinds_[ki];
      Stats* stats = stats_[ki].get();
      const Clock::time_point t0 = Clock::now();
      absl::Status status;
      int64_t bytes = 0;
      if (kind.model) {
        status = RunModelJob(client, n, c, rng, &bytes);
      } else {
        nvfp4::TensorView view{absl::StrCat("load.c", client, ".weight"), nvfp4::DType::kBF16,
                               {kind.rows, kind.cols}, kind.data.data()};
        absl::StatusOr<nvfp4::QuantizedTensor> q =
            WithRetry(stats, rng, [&] { return c->QuantizeTensor(view, options_); });
        status = q.status();
        bytes = kind.rows * kind.cols * 2;
      }
      const double latency = Seconds(Clock::now() - t0);
      ++n;
      completed_.fetch_add(1);
      {
        std::lock_guard<std::mutex> lock(pause_mu_);
        --in_flight_;
      }
      pause_cv_.notify_all();
      if (status.ok()) {
        std::lock_guard<std::mutex> lock(stats->mu);
        ++stats->ok;
        stats->input_bytes += bytes;
        stats->latencies.push_back(latency);
      } else {
        RecordError(stats, status);
        if (!absl::IsUnavailable(status)) hard_errors_.fetch_add(1);
      }
    }
  }

  absl::Status RunModelJob(int client, int64_t n, nvfp4::client::QuantizerClient* c,
                           std::mt19937_64& rng, int64_t* bytes_in) {
    const std::string name = absl::StrFormat("c%03d-%06d", client, n);
    nvfp4::v1::QuantizeModelRequest req;
    req.set_input_uri(absl::GetFlag(FLAGS_model_input));
    req.set_output_uri(absl::StrCat(absl::GetFlag(FLAGS_model_output_prefix), "/", name));
    *req.mutable_options() = nvfp4::v1::ToProto(options_);
    req.set_request_id(absl::StrFormat("load-%016x-%s", absl::GetFlag(FLAGS_seed), name));
    const Clock::time_point t0 = Clock::now();
    absl::StatusOr<nvfp4::v1::Job> job =
        WithRetry(submit_stats_.get(), rng, [&] { return c->QuantizeModel(req); });
    if (!job.ok()) {
      RecordError(submit_stats_.get(), job.status());
      return job.status();
    }
    {
      std::lock_guard<std::mutex> lock(submit_stats_->mu);
      ++submit_stats_->ok;
      submit_stats_->latencies.push_back(Seconds(Clock::now() - t0));
    }
    absl::StatusOr<nvfp4::v1::Job> done = c->WatchJob(job->job_id(), nullptr);
    if (!done.ok()) return done.status();
    if (const std::string dir = absl::GetFlag(FLAGS_cleanup_dir); !dir.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(std::filesystem::path(dir) / name, ec);
    }
    *bytes_in = done->progress().bytes_in();
    if (done->state() == nvfp4::v1::JOB_STATE_SUCCEEDED) return absl::OkStatus();
    const absl::StatusCode code = done->error().code() != 0
                                      ? static_cast<absl::StatusCode>(done->error().code())
                                      : absl::StatusCode::kUnknown;
    return absl::Status(code, absl::StrCat("job ", done->job_id(), " ",
                                           nvfp4::v1::JobState_Name(done->state()), ": ",
                                           done->error().message()));
  }

  bool WaitDone(double seconds) {
    std::unique_lock<std::mutex> lock(done_mu_);
    return done_cv_.wait_for(lock, std::chrono::duration<double>(seconds), [this] { return done_; });
  }

  void SampleRss() {
    const int pid = absl::GetFlag(FLAGS_server_pid);
    if (pid <= 0) return;
    const double interval = std::max(0.1, absl::GetFlag(FLAGS_rss_interval));
    do {
      const int64_t kib = ReadRssKiB(pid);
      std::lock_guard<std::mutex> lock(rss_mu_);
      if (kib < 0) {
        server_gone_ = true;
        return;
      }
      rss_.emplace_back(Seconds(Clock::now() - start_), kib);
    } while (!WaitDone(interval));
    const int64_t kib = ReadRssKiB(pid);  // one after the last request
    std::lock_guard<std::mutex> lock(rss_mu_);
    if (kib < 0) {
      server_gone_ = true;
    } else {
      rss_.emplace_back(Seconds(Clock::now() - start_), kib);
    }
  }

  // Pauses the clients every --idle_probe_interval seconds of load and samples the idle RSS.
  void IdleProbes() {
    const double interval = absl::GetFlag(FLAGS_idle_probe_interval);
    if (interval <= 0 || absl::GetFlag(FLAGS_server_pid) <= 0) return;
    while (true) {
      {
        std::unique_lock<std::mutex> lock(done_mu_);
        if (done_cv_.wait_for(lock, std::chrono::duration<double>(interval),
                              [this] { return clients_done_; })) {
          return;
        }
      }
      std::unique_lock<std::mutex> lock(pause_mu_);
      if (Clock::now() >= deadline_) return;  // the run is ending anyway
      const Clock::time_point t0 = Clock::now();
      pause_requested_ = true;
      pause_cv_.wait(lock, [this] { return in_flight_ == 0; });
      lock.unlock();
      IdleSample();
      lock.lock();
      const Clock::duration paused = Clock::now() - t0;
      deadline_ += paused;
      paused_seconds_ += Seconds(paused);
      pause_requested_ = false;
      lock.unlock();
      pause_cv_.notify_all();
    }
  }

  // Waits --idle_probe_seconds (no request in flight) and records the server's RSS.
  void IdleSample() {
    const int pid = absl::GetFlag(FLAGS_server_pid);
    if (pid <= 0) return;
    std::this_thread::sleep_for(
        std::chrono::duration<double>(std::max(0.0, absl::GetFlag(FLAGS_idle_probe_seconds))));
    const int64_t kib = ReadRssKiB(pid);
    std::lock_guard<std::mutex> lock(rss_mu_);
    if (kib < 0) {
      server_gone_ = true;
      return;
    }
    idle_rss_.push_back({Seconds(Clock::now() - start_), kib, completed_.load()});
    std::fprintf(stderr, "[%6.0f s] idle probe: server RSS %.1f MiB after %lld requests\n",
                 Seconds(Clock::now() - start_), kib / 1024.0,
                 static_cast<long long>(completed_.load()));
  }

  void Progress() {
    const double interval = absl::GetFlag(FLAGS_progress_interval);
    if (interval <= 0) return;
    while (!WaitDone(interval)) {
      int64_t rss = -1;
      {
        std::lock_guard<std::mutex> lock(rss_mu_);
        if (!rss_.empty()) rss = rss_.back().second;
      }
      std::fprintf(stderr, "[%6.0f s] completed %lld, errors %lld (non-UNAVAILABLE), "
                   "UNAVAILABLE retries %lld, server RSS %s\n",
                   Seconds(Clock::now() - start_), static_cast<long long>(completed_.load()),
                   static_cast<long long>(hard_errors_.load()),
                   static_cast<long long>(retries_.load()),
                   rss < 0 ? "-" : absl::StrFormat("%.1f MiB", rss / 1024.0).c_str());
    }
  }

  json KindJson(const std::string& name, Stats* s, double elapsed) {
    std::lock_guard<std::mutex> lock(s->mu);
    std::sort(s->latencies.begin(), s->latencies.end());
    json j;
    j["kind"] = name;
    j["ok"] = s->ok;
    int64_t errors = 0;
    for (const auto& [code, count] : s->errors) errors += count;
    j["errors"] = errors;
    j["errors_by_code"] = s->errors;
    j["first_error_message_by_code"] = s->first_error;
    j["unavailable_retries"] = s->unavailable_retries;
    j["requests_per_second"] = elapsed > 0 ? static_cast<double>(s->ok) / elapsed : 0;
    j["input_mb_per_second"] = elapsed > 0 ? static_cast<double>(s->input_bytes) / 1e6 / elapsed : 0;
    j["input_bytes"] = s->input_bytes;
    j["latency_ms"] = {{"p50", Percentile(s->latencies, 0.50) * 1e3},
                       {"p90", Percentile(s->latencies, 0.90) * 1e3},
                       {"p99", Percentile(s->latencies, 0.99) * 1e3},
                       {"max", s->latencies.empty() ? 0.0 : s->latencies.back() * 1e3}};
    return j;
  }

  int Report(const std::string& target, int clients, bool shared) {
    double paused = 0;
    {
      std::lock_guard<std::mutex> lock(pause_mu_);
      paused = paused_seconds_;
    }
    const double wall = Seconds(end_ - start_);
    const double elapsed = wall - paused;  // time under load: throughput is per active second
    json report;
    report["target"] = target;
    report["clients"] = clients;
    report["channels"] = shared ? "shared" : "per-client";
    report["duration_seconds"] = absl::ToDoubleSeconds(duration_);
    report["elapsed_seconds"] = wall;
    report["active_seconds"] = elapsed;
    report["paused_seconds"] = paused;
    report["max_requests"] = absl::GetFlag(FLAGS_max_requests);
    report["mix"] = absl::GetFlag(FLAGS_mix);
    report["method"] = absl::GetFlag(FLAGS_method);
    json kinds = json::array();
    int64_t ok = 0, errors = 0, retries = 0, bytes = 0, non_unavailable = 0;
    std::map<std::string, int64_t> by_code;
    for (size_t i = 0; i < kinds_.size(); ++i) {
      json k = KindJson(kinds_[i].name, stats_[i].get(), elapsed);
      ok += k["ok"].get<int64_t>();
      errors += k["errors"].get<int64_t>();
      retries += k["unavailable_retries"].get<int64_t>();
      bytes += k["input_bytes"].get<int64_t>();
      for (const auto& [code, count] : k["errors_by_code"].items()) {
        by_code[code] += count.get<int64_t>();
        if (code != "UNAVAILABLE") non_unavailable += count.get<int64_t>();
      }
      kinds.push_back(std::move(k));
    }
    bool any_model = false;
    for (const Kind& k : kinds_) any_model |= k.model;
    if (any_model) {
      json k = KindJson("model.submit", submit_stats_.get(), elapsed);
      retries += k["unavailable_retries"].get<int64_t>();  // submit errors are counted in "model"
      kinds.push_back(std::move(k));
    }
    report["kinds"] = kinds;
    report["total"] = {{"ok", ok},
                       {"errors", errors},
                       {"errors_other_than_unavailable", non_unavailable},
                       {"unavailable_retries", retries},
                       {"requests_per_second", elapsed > 0 ? static_cast<double>(ok) / elapsed : 0},
                       {"input_mb_per_second",
                        elapsed > 0 ? static_cast<double>(bytes) / 1e6 / elapsed : 0},
                       {"errors_by_code", by_code}};
    json rss;
    {
      std::lock_guard<std::mutex> lock(rss_mu_);
      rss["pid"] = absl::GetFlag(FLAGS_server_pid);
      rss["interval_seconds"] = absl::GetFlag(FLAGS_rss_interval);
      rss["server_exited_during_run"] = server_gone_;
      json series = json::array();
      std::vector<std::pair<double, double>> pts, late;
      int64_t max_kib = 0;
      for (const auto& [t, kib] : rss_) {
        series.push_back({{"t", std::round(t * 10) / 10}, {"mib", std::round(kib / 102.4) / 10}});
        pts.emplace_back(t / 60, kib / 1024.0);
        max_kib = std::max(max_kib, kib);
      }
      for (size_t i = pts.size() / 2; i < pts.size(); ++i) late.push_back(pts[i]);
      rss["samples"] = rss_.size();
      if (!rss_.empty()) {
        rss["first_mib"] = rss_.front().second / 1024.0;
        rss["last_mib"] = rss_.back().second / 1024.0;
        rss["max_mib"] = max_kib / 1024.0;
        rss["slope_mib_per_minute"] = Slope(pts);
        rss["slope_second_half_mib_per_minute"] = Slope(late);
        // Means of the first and last quarter of the samples: single samples are noisy (tensor
        // buffers of requests in flight come and go).
        const size_t q = std::max<size_t>(1, pts.size() / 4);
        double first_q = 0, last_q = 0;
        for (size_t i = 0; i < q; ++i) {
          first_q += pts[i].second;
          last_q += pts[pts.size() - 1 - i].second;
        }
        rss["mean_first_quarter_mib"] = first_q / static_cast<double>(q);
        rss["mean_last_quarter_mib"] = last_q / static_cast<double>(q);
      }
      rss["series"] = series;
      json idle = json::array();
      std::vector<std::pair<double, double>> idle_pts;
      for (const IdlePoint& p : idle_rss_) {
        idle.push_back({{"t", std::round(p.t * 10) / 10},
                        {"mib", std::round(p.kib / 102.4) / 10},
                        {"requests_completed", p.completed}});
        idle_pts.emplace_back(p.t / 60, p.kib / 1024.0);
      }
      rss["idle_samples"] = idle;
      if (!idle_pts.empty()) {
        rss["idle_first_mib"] = idle_pts.front().second;
        rss["idle_last_mib"] = idle_pts.back().second;
        rss["idle_slope_mib_per_minute"] = Slope(idle_pts);
      }
    }
    report["server_rss"] = rss;

    const bool as_json = absl::GetFlag(FLAGS_json);
    FILE* table = as_json ? stderr : stdout;
    PrintTable(table, report);
    if (as_json) std::printf("%s\n", report.dump(2).c_str());
    if (const std::string path = absl::GetFlag(FLAGS_json_out); !path.empty()) {
      std::ofstream out(path);
      out << report.dump(2) << "\n";
    }
    return non_unavailable == 0 && !server_gone_ ? 0 : 1;
  }

  static void PrintTable(FILE* f, const json& r) {
    const json& t = r["total"];
    std::fprintf(f, "nvfp4 load: %d clients (%s channels), %.0f s of requests (%.1f s under load, "
                 "%.1f s paused for idle probes), method %s, mix %s, target %s\n",
                 r["clients"].get<int>(), r["channels"].get<std::string>().c_str(),
                 r["duration_seconds"].get<double>(), r["active_seconds"].get<double>(),
                 r["paused_seconds"].get<double>(),
                 r["method"].get<std::string>().c_str(), r["mix"].get<std::string>().c_str(),
                 r["target"].get<std::string>().c_str());
    std::fprintf(f, "total: %lld ok, %lld errors (%lld other than UNAVAILABLE), %lld UNAVAILABLE "
                 "retries; %.2f req/s, %.1f MB/s input\n",
                 static_cast<long long>(t["ok"].get<int64_t>()),
                 static_cast<long long>(t["errors"].get<int64_t>()),
                 static_cast<long long>(t["errors_other_than_unavailable"].get<int64_t>()),
                 static_cast<long long>(t["unavailable_retries"].get<int64_t>()),
                 t["requests_per_second"].get<double>(), t["input_mb_per_second"].get<double>());
    std::fprintf(f, "%-18s %8s %6s %8s %8s %8s %9s %9s %9s %9s\n", "kind", "ok", "errors",
                 "retries", "req/s", "MB/s", "p50 ms", "p90 ms", "p99 ms", "max ms");
    for (const json& k : r["kinds"]) {
      const json& l = k["latency_ms"];
      std::fprintf(f, "%-18s %8lld %6lld %8lld %8.2f %8.1f %9.1f %9.1f %9.1f %9.1f\n",
                   k["kind"].get<std::string>().c_str(),
                   static_cast<long long>(k["ok"].get<int64_t>()),
                   static_cast<long long>(k["errors"].get<int64_t>()),
                   static_cast<long long>(k["unavailable_retries"].get<int64_t>()),
                   k["requests_per_second"].get<double>(), k["input_mb_per_second"].get<double>(),
                   l["p50"].get<double>(), l["p90"].get<double>(), l["p99"].get<double>(),
                   l["max"].get<double>());
    }
    std::string codes;
    for (const auto& [code, count] : t["errors_by_code"].items()) {
      absl::StrAppend(&codes, codes.empty() ? "" : ", ", code, " ", count.get<int64_t>());
    }
    std::fprintf(f, "errors by code: %s\n", codes.empty() ? "none" : codes.c_str());
    for (const json& k : r["kinds"]) {
      for (const auto& [code, msg] : k["first_error_message_by_code"].items()) {
        std::fprintf(f, "  first %s of %s: %s\n", code.c_str(),
                     k["kind"].get<std::string>().c_str(), msg.get<std::string>().c_str());
      }
    }
    const json& rss = r["server_rss"];
    if (rss["pid"].get<int>() > 0 && rss["samples"].get<size_t>() > 0) {
      std::fprintf(f, "server RSS (pid %d, every %.0f s, %zu samples): first %.1f MiB, last %.1f "
                   "MiB, max %.1f MiB; mean of first/last quarter %.1f / %.1f MiB; slope %+.2f "
                   "MiB/min (all), %+.2f MiB/min (second half)%s\n",
                   rss["pid"].get<int>(), rss["interval_seconds"].get<double>(),
                   rss["samples"].get<size_t>(), rss["first_mib"].get<double>(),
                   rss["last_mib"].get<double>(), rss["max_mib"].get<double>(),
                   rss["mean_first_quarter_mib"].get<double>(),
                   rss["mean_last_quarter_mib"].get<double>(),
                   rss["slope_mib_per_minute"].get<double>(),
                   rss["slope_second_half_mib_per_minute"].get<double>(),
                   rss["server_exited_during_run"].get<bool>() ? " -- SERVER EXITED" : "");
      std::string line;
      int col = 0;
      for (const json& s : rss["series"]) {
        absl::StrAppendFormat(&line, " %6.0fs %7.1f", s["t"].get<double>(), s["mib"].get<double>());
        if (++col % 6 == 0) {
          std::fprintf(f, "  rss:%s\n", line.c_str());
          line.clear();
        }
      }
      if (!line.empty()) std::fprintf(f, "  rss:%s\n", line.c_str());
      if (!rss["idle_samples"].empty()) {
        std::fprintf(f, "server RSS at idle points: first %.1f MiB, last %.1f MiB, slope %+.2f "
                     "MiB/min\n",
                     rss["idle_first_mib"].get<double>(), rss["idle_last_mib"].get<double>(),
                     rss["idle_slope_mib_per_minute"].get<double>());
        for (const json& s : rss["idle_samples"]) {
          std::fprintf(f, "  idle: %6.0fs %7.1f MiB after %lld requests\n", s["t"].get<double>(),
                       s["mib"].get<double>(),
                       static_cast<long long>(s["requests_completed"].get<int64_t>()));
        }
      }
    } else if (rss["server_exited_during_run"].get<bool>()) {
      std::fprintf(f, "server RSS: pid %d not found -- SERVER EXITED\n", rss["pid"].get<int>());
    }
  }

  std::vector<Kind> kinds_;
  const nvfp4::QuantizeOptions options_;
  std::vector<std::unique_ptr<Stats>> stats_;
  std::unique_ptr<Stats> submit_stats_;
  absl::Duration duration_;
  Clock::time_point start_, deadline_, end_;
  std::atomic<int64_t> issued_{0}, completed_{0}, retries_{0}, hard_errors_{0};
  std::mutex done_mu_;
  std::condition_variable done_cv_;
  bool done_ = false;
  std::mutex rss_mu_;
  std::vector<std::pair<double, int64_t>> rss_;  // (seconds since start, KiB)
  bool server_gone_ = false;
  struct IdlePoint {
    double t;
    int64_t kib;
    int64_t completed;
  };
  std::vector<IdlePoint> idle_rss_;  // guarded by rss_mu_
  std::mutex pause_mu_;
  std::condition_variable pause_cv_;
  bool pause_requested_ = false;  // guarded by pause_mu_
  int in_flight_ = 0;             // guarded by pause_mu_
  double paused_seconds_ = 0;     // guarded by pause_mu_
  bool clients_done_ = false;     // guarded by done_mu_
};

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "closed-loop load against nvfp4d: QuantizeTensor sizes and model jobs, latency percentiles, "
      "errors by code, server RSS over time");
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "bench/load_gen.cc");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  absl::ParseCommandLine(argc, argv);
  absl::StatusOr<absl::Duration> duration = ParseDurationFlag(absl::GetFlag(FLAGS_duration));
  absl::StatusOr<std::vector<Kind>> kinds = ParseMix(absl::GetFlag(FLAGS_mix));
  absl::StatusOr<nvfp4::Method> method = nvfp4::ParseMethod(absl::GetFlag(FLAGS_method));
  for (const absl::Status& s : {duration.status(), kinds.status(), method.status()}) {
    if (!s.ok()) {
      std::fprintf(stderr, "nvfp4_load_gen: %s\n", s.ToString().c_str());
      return 2;
    }
  }
  uint64_t seed = absl::GetFlag(FLAGS_seed);
  for (Kind& k : *kinds) {
    if (k.model) {
      if (absl::GetFlag(FLAGS_model_input).empty() ||
          absl::GetFlag(FLAGS_model_output_prefix).empty()) {
        std::fprintf(stderr,
                     "nvfp4_load_gen: --mix has model jobs: --model_input and "
                     "--model_output_prefix are required\n");
        return 2;
      }
    } else {
      k.data = RandomBf16(k.rows * k.cols, seed++);
    }
  }
  nvfp4::QuantizeOptions options;
  options.method = *method;
  LoadGen gen(*std::move(kinds), options);
  gen.set_duration(*duration);
  return gen.Run();
}
