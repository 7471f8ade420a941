#include "storage/router.h"

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "storage/local_store.h"

namespace nvfp4::storage {

absl::StatusOr<ObjectStore*> StorageRouter::Route(absl::string_view uri) const {
  ASSIGN_OR_RETURN(StorageUri u, ParseStorageUri(uri));
  ObjectStore* store = u.scheme == StorageUri::Scheme::kS3 ? s3_.get() : local_.get();
  if (store == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "storage for '", uri, "' is not configured",
        u.scheme == StorageUri::Scheme::kS3 ? " (set --s3_endpoint and AWS credentials)" : ""));
  }
  return store;
}

absl::StatusOr<int64_t> StorageRouter::Size(absl::string_view uri) {
  ASSIGN_OR_RETURN(ObjectStore * s, Route(uri));
  return s->Size(uri);
}

absl::Status StorageRouter::ReadAt(absl::string_view uri, int64_t offset, int64_t length,
                                   char* dst) {
  ASSIGN_OR_RETURN(ObjectStore * s, Route(uri));
  return s->ReadAt(uri, offset, length, dst);
}

absl::StatusOr<std::vector<ObjectInfo>> StorageRouter::List(absl::string_view prefix_uri) {
  ASSIGN_OR_RETURN(ObjectStore * s, Route(prefix_uri));
  return s->List(prefix_uri);
}

absl::StatusOr<std::unique_ptr<ObjectWriter>> StorageRouter::OpenWrite(absl::string_view uri) {
  ASSIGN_OR_RETURN(ObjectStore * s, Route(uri));
  return s->OpenWrite(uri);
}

absl::Status StorageRouter::Delete(absl::string_view uri) {
  ASSIGN_OR_RETURN(ObjectStore * s, Route(uri));
  return s->Delete(uri);
}

absl::Status StorageRouter::Copy(absl::string_view from, absl::string_view to) {
  ASSIGN_OR_RETURN(ObjectStore * a, Route(from));
  ASSIGN_OR_RETURN(ObjectStore * b, Route(to));
  if (a == b) return a->Copy(from, to);
  return ObjectStore::Copy(from, to);  // across stores: through this process
}

absl::StatusOr<std::optional<std::string>> StorageRouter::LocalPath(absl::string_view uri) {
  ASSIGN_OR_RETURN(ObjectStore * s, Route(uri));
  return s->LocalPath(uri);
}

}  // namespace nvfp4::storage

namespace nvfp4::storage {

absl::StatusOr<std::unique_ptr<StorageRouter>> MakeStorageRouter(const StoreConfig& config) {
  std::unique_ptr<ObjectStore> local;
  if (!config.data_roots.empty()) {
    ASSIGN_OR_RETURN(local, LocalObjectStore::Create(config.data_roots));
  }
  S3Config s3 = S3ConfigFromEnv(config.s3_endpoint, config.s3_region);
  s3.part_size = config.s3_part_bytes;
  s3.upload_concurrency = config.s3_upload_concurrency;
  s3.observer = config.s3_observer;
  s3.web_identity.log = config.s3_log;
  const bool has_credentials = !s3.access_key_id.empty() || !s3.web_identity.token_file.empty() ||
                               !s3.web_identity.role_arn.empty();
  if (s3.endpoint.empty() && config.s3_default_aws_endpoint && has_credentials) {
    s3.endpoint = absl::StrCat("https://s3.", s3.region, ".amazonaws.com");
  }
  std::unique_ptr<ObjectStore> s3_store;
  if (!s3.endpoint.empty()) {
    ASSIGN_OR_RETURN(s3_store, S3ObjectStore::Create(std::move(s3)));
  }
  return std::make_unique<StorageRouter>(std::move(local), std::move(s3_store));
}

}  // namespace nvfp4::storage
