// Prometheus metrics of nvfp4d (prometheus-cpp), exposed on their own HTTP port at /metrics.
//
// Naming follows Prometheus conventions: base units, counters end in _total, histograms (never
// summaries), and no job ids or tensor names as labels.
#ifndef NVFP4_SERVER_METRICS_H_
#define NVFP4_SERVER_METRICS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace prometheus {
class Exposer;
}

namespace nvfp4::server {

class Metrics {
 public:
  // Registers every family in a fresh registry (not yet exposed).
  Metrics(absl::string_view version, bool cuda_compiled_in);
  ~Metrics();

  // Serves /metrics on `listen` ("host:port"; port 0 picks one). Returns the bound port.
  absl::StatusOr<int> Expose(const std::string& listen);

  void JobSubmitted(absl::string_view kind);
  void JobFinished(absl::string_view kind, absl::string_view outcome, double duration_seconds);
  void QueueWait(double seconds);
  void SetQueued(int64_t n);
  void SetRunning(int64_t n);
  void TensorQuantized(absl::string_view method, absl::string_view device, double seconds,
                       double nmse_ratio);
  void InputBytes(int64_t n);
  void OutputBytes(int64_t n);
  // `error` empty on success.
  void S3Request(absl::string_view op, double seconds, absl::string_view error);
  void SetDevices(absl::string_view kind, int64_t n);
  // A Quantizer call refused with UNAUTHENTICATED.
  void AuthFailure();

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  prometheus::Family<prometheus::Counter>* jobs_submitted_;
  prometheus::Family<prometheus::Counter>* jobs_finished_;
  prometheus::Gauge* jobs_queued_;
  prometheus::Gauge* jobs_running_;
  prometheus::Histogram* queue_wait_;
  prometheus::Family<prometheus::Histogram>* job_duration_;
  prometheus::Family<prometheus::Histogram>* tensor_seconds_;
  prometheus::Counter* input_bytes_;
  prometheus::Counter* output_bytes_;
  prometheus::Family<prometheus::Histogram>* nmse_ratio_;
  prometheus::Family<prometheus::Histogram>* s3_duration_;
  prometheus::Family<prometheus::Counter>* s3_errors_;
  prometheus::Family<prometheus::Gauge>* devices_;
  prometheus::Counter* auth_failures_;
};

}  // namespace nvfp4::server

#endif  // NVFP4_SERVER_METRICS_H_
