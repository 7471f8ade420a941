#include "server/request_limits.h"

#include <filesystem>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "storage/object_store.h"

namespace nvfp4::server {
namespace {
namespace fs = std::filesystem;

// "<field> is N bytes, over the limit of L (<flag>)".
absl::Status CheckSize(absl::string_view field, absl::string_view value, int64_t limit,
                       absl::string_view flag) {
  if (static_cast<int64_t>(value.size()) <= limit) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(field, " is ", value.size(),
                                                 " bytes, over the limit of ", limit,
                                                 flag.empty() ? "" : absl::StrCat(" (", flag, ")")));
}

// Control bytes (C0, DEL) have no place in a URI or a pattern; they would also forge log lines.
absl::Status CheckNoControlBytes(absl::string_view field, absl::string_view value) {
  for (size_t i = 0; i < value.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(value[i]);
    if (c < 0x20 || c == 0x7f) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s contains the control byte 0x%02x at offset %d", field, c, i));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckUri(absl::string_view field, const std::string& uri, const RequestLimits& limits,
                      bool required) {
  if (uri.empty()) {
    if (required) return absl::InvalidArgumentError(absl::StrCat(field, " is required"));
    return absl::OkStatus();
  }
  RETURN_IF_ERROR(CheckSize(field, uri, limits.max_uri_bytes, "--max_uri_bytes"));
  return CheckNoControlBytes(field, uri);
}

absl::Status CheckPatterns(absl::string_view field,
                           const google::protobuf::RepeatedPtrField<std::string>& patterns,
                           const RequestLimits& limits) {
  if (patterns.size() > limits.max_patterns) {
    return absl::InvalidArgumentError(absl::StrCat(field, " has ", patterns.size(),
                                                   " entries, over the limit of ",
                                                   limits.max_patterns, " (--max_patterns)"));
  }
  for (int i = 0; i < patterns.size(); ++i) {
    const std::string name = absl::StrCat(field, "[", i, "]");
    RETURN_IF_ERROR(CheckSize(name, patterns[i], limits.max_pattern_bytes, "--max_pattern_bytes"));
    RETURN_IF_ERROR(CheckNoControlBytes(name, patterns[i]));
  }
  return absl::OkStatus();
}

// A location in comparable form: the scheme and bucket, and the path split into components.
struct Location {
  std::string root;  // "file" or "s3://bucket"
  fs::path path;
};

bool Contains(const Location& outer, const Location& inner) {
  if (outer.root != inner.root) return false;
  auto ii = inner.path.begin();
  for (auto oi = outer.path.begin(); oi != outer.path.end(); ++oi, ++ii) {
    if (oi->empty()) continue;  // trailing '/'
    if (ii == inner.path.end() || *ii != *oi) return false;
  }
  return true;
}

// Parses `uri` (field `field`), checks its scheme is served, confines a file:// path to the data
// roots and returns its comparable location. The store answers both through LocalPath (the
// server's router: FAILED_PRECONDITION for a scheme it does not serve, the local store's checked
// path for file://); without a store, or one without local files, paths compare as written.
absl::StatusOr<Location> Locate(absl::string_view field, const std::string& uri,
                                storage::ObjectStore* store) {
  absl::StatusOr<storage::StorageUri> parsed = storage::ParseStorageUri(uri);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", parsed.status().message()));
  }
  const bool s3 = parsed->scheme == storage::StorageUri::Scheme::kS3;
  std::optional<std::string> local;
  if (store != nullptr) {
    absl::StatusOr<std::optional<std::string>> path = store->LocalPath(uri);
    if (absl::IsFailedPrecondition(path.status())) {
      return absl::FailedPreconditionError(absl::StrCat(
          field, s3 ? ": s3:// is not configured on this server (set --s3_endpoint and AWS "
                      "credentials)"
                    : ": file:// is not configured on this server (--data_root)"));
    }
    if (!path.ok()) {
      return absl::Status(path.status().code(), absl::StrCat(field, ": ", path.status().message()));
    }
    local = *std::move(path);
  }
  Location loc;
  if (s3) {
    loc.root = absl::StrCat("s3://", parsed->bucket);
    loc.path = fs::path("/" + parsed->path).lexically_normal();
    return loc;
  }
  loc.root = "file";
  loc.path = local.has_value() ? fs::path(*local) : fs::path(parsed->path).lexically_normal();
  return loc;
}

}  // namespace

absl::Status CheckQuantizeModelRequest(const v1::QuantizeModelRequest& r,
                                       const RequestLimits& limits, storage::ObjectStore* store) {
  RETURN_IF_ERROR(CheckUri("input_uri", r.input_uri(), limits, /*required=*/true));
  RETURN_IF_ERROR(CheckUri("output_uri", r.output_uri(), limits, /*required=*/true));
  RETURN_IF_ERROR(CheckUri("calibration_uri", r.calibration_uri(), limits, /*required=*/false));
  RETURN_IF_ERROR(CheckSize("request_id", r.request_id(), limits.max_request_id_bytes, ""));
  RETURN_IF_ERROR(CheckNoControlBytes("request_id", r.request_id()));
  RETURN_IF_ERROR(CheckPatterns("include_patterns", r.include_patterns(), limits));
  RETURN_IF_ERROR(CheckPatterns("exclude_patterns", r.exclude_patterns(), limits));

  ASSIGN_OR_RETURN(const Location in, Locate("input_uri", r.input_uri(), store));
  ASSIGN_OR_RETURN(const Location out, Locate("output_uri", r.output_uri(), store));
  if (!r.calibration_uri().empty()) {
    RETURN_IF_ERROR(Locate("calibration_uri", r.calibration_uri(), store).status());
  }
  if (Contains(in, out) && Contains(out, in)) {
    return absl::InvalidArgumentError("output_uri must differ from input_uri");
  }
  if (Contains(in, out)) {
    return absl::InvalidArgumentError("output_uri must not be inside input_uri");
  }
  if (Contains(out, in)) {
    return absl::InvalidArgumentError("input_uri must not be inside output_uri");
  }
  return absl::OkStatus();
}

absl::Status CheckTensorHeader(const v1::TensorHeader& header, const RequestLimits& limits) {
  RETURN_IF_ERROR(CheckSize("TensorHeader.name", header.name(), limits.max_tensor_name_bytes, ""));
  if (header.shape_size() > limits.max_shape_rank) {
    return absl::InvalidArgumentError(absl::StrCat("TensorHeader.shape has ", header.shape_size(),
                                                   " dimensions, over the limit of ",
                                                   limits.max_shape_rank));
  }
  return absl::OkStatus();
}

absl::Status CheckJobId(absl::string_view job_id, const RequestLimits& limits) {
  if (job_id.empty()) return absl::InvalidArgumentError("job_id is required");
  return CheckSize("job_id", job_id, limits.max_job_id_bytes, "");
}

absl::Status CheckListJobsRequest(const v1::ListJobsRequest& r, const RequestLimits& limits) {
  RETURN_IF_ERROR(CheckSize("page_token", r.page_token(), limits.max_page_token_bytes, ""));
  if (r.states_size() > limits.max_states) {
    return absl::InvalidArgumentError(absl::StrCat("states has ", r.states_size(),
                                                   " entries, over the limit of ",
                                                   limits.max_states));
  }
  for (int s : r.states()) {
    if (!v1::JobState_IsValid(s)) {
      return absl::InvalidArgumentError(absl::StrCat("states: unknown job state ", s));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckReadResultRequest(const v1::ReadResultRequest& r, const RequestLimits& limits) {
  RETURN_IF_ERROR(CheckJobId(r.job_id(), limits));
  return CheckSize("name", r.name(), limits.max_tensor_name_bytes, "");
}

absl::StatusOr<v1::ListJobsResponse> BoundListJobsPage(
    const v1::ListJobsRequest& request, int64_t max_bytes,
    const std::function<absl::StatusOr<v1::ListJobsResponse>(const v1::ListJobsRequest&)>& list) {
  v1::ListJobsRequest r = request;
  while (true) {
    ASSIGN_OR_RETURN(v1::ListJobsResponse page, list(r));
    // A repeated message field costs its tag and a length prefix (at most 6 bytes) per entry.
    int64_t bytes = 64;  // next_page_token
    int fit = 0;
    for (const v1::Job& job : page.jobs()) {
      const int64_t size = static_cast<int64_t>(job.ByteSizeLong()) + 6;
      if (fit > 0 && bytes + size > max_bytes) break;
      bytes += size;
      ++fit;
    }
    if (fit == page.jobs_size()) return page;
    // Ask again for the jobs that fit: the lister then sets its own next_page_token. Each round
    // asks for fewer jobs, and one job always fits, so this ends.
    r.set_page_size(fit);
  }
}

}  // namespace nvfp4::server
