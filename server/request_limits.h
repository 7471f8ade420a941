// Bounds on every request field, checked by the gRPC handlers before a request does anything
// (server/quantizer_service.cc calls one function per RPC). A bad request is refused at once and
// never becomes a job: INVALID_ARGUMENT naming the field and the limit, e.g.
//   "input_uri is 7340032 bytes, over the limit of 4096 (--max_uri_bytes)".
// QuantizeModel requests are also checked against the server's storage at submit: the scheme is
// configured, file:// paths are confined to the data roots (PERMISSION_DENIED, as a run would
// say), and the output is neither the input nor inside it (nor the input inside the output).
//
// ListJobs pages are bounded in bytes as well as in count (BoundListJobsPage): a page holds at
// least one job and otherwise stops before `max_list_page_bytes`.
//
// The limits and their flags are listed in docs/SECURITY.md ("Request limits").
#ifndef NVFP4_SERVER_REQUEST_LIMITS_H_
#define NVFP4_SERVER_REQUEST_LIMITS_H_

#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nvfp4/v1/quantizer.pb.h"
#include "storage/object_store.h"

namespace nvfp4::server {

struct RequestLimits {
  // input_uri, output_uri, calibration_uri (--max_uri_bytes).
  int64_t max_uri_bytes = 4096;
  // include_patterns / exclude_patterns: entries per list (--max_patterns) and bytes per entry
  // (--max_pattern_bytes).
  int64_t max_patterns = 256;
  int64_t max_pattern_bytes = 1024;
  // Serialized ListJobsResponse, approximately (--max_list_page_bytes).
  int64_t max_list_page_bytes = 2 << 20;
  // Fixed limits (no flag): ids and names the server or a client library generates.
  int64_t max_request_id_bytes = 128;  // a UUID is 36
  int64_t max_job_id_bytes = 64;       // "job-" + 16 hex digits
  int64_t max_page_token_bytes = 32;   // a decimal int64
  int64_t max_states = 8;              // ListJobsRequest.states (6 states exist)
  int64_t max_tensor_name_bytes = 1024;  // TensorHeader.name, ReadResultRequest.name
  int64_t max_shape_rank = 8;            // TensorHeader.shape
};

// QuantizeModelRequest: sizes of every string and repeated field, no control bytes in URIs and
// patterns, then (with `store`, the server's StorageRouter; may be null) the storage checks above.
absl::Status CheckQuantizeModelRequest(const v1::QuantizeModelRequest& request,
                                       const RequestLimits& limits, storage::ObjectStore* store);
// TensorHeader.name and .shape (the rest is ValidateTensorHeader's, server/tensor_request.h).
absl::Status CheckTensorHeader(const v1::TensorHeader& header, const RequestLimits& limits);
// GetJob / WatchJob / CancelJob: job_id.
absl::Status CheckJobId(absl::string_view job_id, const RequestLimits& limits);
// ListJobs: page_token and states.
absl::Status CheckListJobsRequest(const v1::ListJobsRequest& request, const RequestLimits& limits);
// ReadResult: job_id and name.
absl::Status CheckReadResultRequest(const v1::ReadResultRequest& request,
                                    const RequestLimits& limits);

// Runs `list` (JobManager::List) and, when the page is over `max_bytes`, asks again for as many
// jobs as fit (at least one), so that next_page_token stays the lister's own.
absl::StatusOr<v1::ListJobsResponse> BoundListJobsPage(
    const v1::ListJobsRequest& request, int64_t max_bytes,
    const std::function<absl::StatusOr<v1::ListJobsResponse>(const v1::ListJobsRequest&)>& list);

}  // namespace nvfp4::server

#endif  // NVFP4_SERVER_REQUEST_LIMITS_H_
