#include "server/storage.h"

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace nvfp4::server {

absl::StatusOr<ObjectStore*> StorageRouter::Route(absl::string_view uri) const {
  ASSIGN_OR_RETURN(StorageUri u, ParseStorageUri(uri));
  ObjectStore* store = u.scheme == StorageUri::Scheme::kS3 ? s3_.get() : local_.get();
  if (store == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "storage for '", uri, "' is not configured on this server",
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

}  // namespace nvfp4::server
