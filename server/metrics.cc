#include "server/metrics.h"

#include <exception>

#include "absl/strings/str_cat.h"
#include "prometheus/exposer.h"

namespace nvfp4::server {
namespace {

std::string S(absl::string_view v) { return std::string(v); }

prometheus::Histogram::BucketBoundaries Exponential(double start, double factor, int n) {
  prometheus::Histogram::BucketBoundaries b;
  double v = start;
  for (int i = 0; i < n; ++i, v *= factor) b.push_back(v);
  return b;
}

}  // namespace

Metrics::Metrics(absl::string_view version, bool cuda_compiled_in)
    : registry_(std::make_shared<prometheus::Registry>()) {
  using prometheus::BuildCounter;
  using prometheus::BuildGauge;
  using prometheus::BuildHistogram;
  auto& r = *registry_;
  jobs_submitted_ = &BuildCounter()
                         .Name("nvfp4_jobs_submitted_total")
                         .Help("Jobs accepted, by kind (model, tensor).")
                         .Register(r);
  jobs_finished_ = &BuildCounter()
                        .Name("nvfp4_jobs_finished_total")
                        .Help("Jobs finished, by kind and outcome (succeeded, failed, cancelled).")
                        .Register(r);
  jobs_queued_ = &BuildGauge()
                      .Name("nvfp4_jobs_queued")
                      .Help("Model jobs waiting for a worker.")
                      .Register(r)
                      .Add({});
  jobs_running_ = &BuildGauge()
                       .Name("nvfp4_jobs_running")
                       .Help("Model jobs being processed.")
                       .Register(r)
                       .Add({});
  queue_wait_ = &BuildHistogram()
                     .Name("nvfp4_job_queue_wait_seconds")
                     .Help("Time model jobs spent queued.")
                     .Register(r)
                     .Add({}, Exponential(0.001, 4, 12));
  job_duration_ = &BuildHistogram()
                       .Name("nvfp4_job_duration_seconds")
                       .Help("Run time of jobs, by kind.")
                       .Register(r);
  tensor_seconds_ = &BuildHistogram()
                         .Name("nvfp4_tensor_quantize_seconds")
                         .Help("Quantizer time per tensor, by method and device.")
                         .Register(r);
  auth_failures_ = &BuildCounter()
                        .Name("nvfp4_auth_failures_total")
                        .Help("Quantizer calls refused for a missing or invalid bearer token.")
                        .Register(r)
                        .Add({});
  input_bytes_ = &BuildCounter()
                      .Name("nvfp4_input_bytes_total")
                      .Help("Source tensor bytes processed.")
                      .Register(r)
                      .Add({});
  output_bytes_ = &BuildCounter()
                       .Name("nvfp4_output_bytes_total")
                       .Help("Quantized bytes produced (packed codes, scales, copied tensors).")
                       .Register(r)
                       .Add({});
  nmse_ratio_ = &BuildHistogram()
                     .Name("nvfp4_quantization_nmse_ratio")
                     .Help("Per-tensor nmse divided by the rtn baseline nmse, by method.")
                     .Register(r);
  s3_duration_ = &BuildHistogram()
                      .Name("nvfp4_s3_request_duration_seconds")
                      .Help("S3 request latency, by operation.")
                      .Register(r);
  s3_errors_ = &BuildCounter()
                    .Name("nvfp4_s3_errors_total")
                    .Help("Failed S3 requests, by operation and error code.")
                    .Register(r);
  devices_ = &BuildGauge()
                  .Name("nvfp4_devices")
                  .Help("Quantizer devices in use, by kind (cpu, cuda).")
                  .Register(r);
  BuildGauge()
      .Name("nvfp4_build_info")
      .Help("Build information; constant 1.")
      .Register(r)
      .Add({{"version", S(version)}, {"cuda", cuda_compiled_in ? "true" : "false"}})
      .Set(1);
}

Metrics::~Metrics() = default;

absl::StatusOr<int> Metrics::Expose(const std::string& listen) {
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(listen, 2);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("metrics: cannot listen on ", listen, ": ", e.what()));
  }
  exposer_->RegisterCollectable(registry_);
  std::vector<int> ports = exposer_->GetListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

void Metrics::JobSubmitted(absl::string_view kind) {
  jobs_submitted_->Add({{"kind", S(kind)}}).Increment();
}

void Metrics::JobFinished(absl::string_view kind, absl::string_view outcome, double seconds) {
  jobs_finished_->Add({{"kind", S(kind)}, {"outcome", S(outcome)}}).Increment();
  job_duration_->Add({{"kind", S(kind)}}, Exponential(0.01, 4, 12)).Observe(seconds);
}

void Metrics::QueueWait(double seconds) { queue_wait_->Observe(seconds); }
void Metrics::SetQueued(int64_t n) { jobs_queued_->Set(static_cast<double>(n)); }
void Metrics::SetRunning(int64_t n) { jobs_running_->Set(static_cast<double>(n)); }

void Metrics::TensorQuantized(absl::string_view method, absl::string_view device, double seconds,
                              double nmse_ratio) {
  tensor_seconds_->Add({{"method", S(method)}, {"device", S(device)}}, Exponential(0.0005, 3, 14))
      .Observe(seconds);
  nmse_ratio_
      ->Add({{"method", S(method)}},
            prometheus::Histogram::BucketBoundaries{0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0,
                                                    1.05, 1.2})
      .Observe(nmse_ratio);
}

void Metrics::InputBytes(int64_t n) { input_bytes_->Increment(static_cast<double>(n)); }
void Metrics::OutputBytes(int64_t n) { output_bytes_->Increment(static_cast<double>(n)); }

void Metrics::S3Request(absl::string_view op, double seconds, absl::string_view error) {
  s3_duration_->Add({{"op", S(op)}}, Exponential(0.001, 3, 12)).Observe(seconds);
  if (!error.empty()) s3_errors_->Add({{"op", S(op)}, {"code", S(error)}}).Increment();
}

void Metrics::SetDevices(absl::string_view kind, int64_t n) {
  devices_->Add({{"kind", S(kind)}}).Set(static_cast<double>(n));
}

void Metrics::AuthFailure() { auth_failures_->Increment(); }

}  // namespace nvfp4::server
