// Routes object-store calls by URI scheme: file:// to the local store, s3:// to S3 (when
// configured; FAILED_PRECONDITION otherwise), and builds such a router from a StoreConfig.
//
//   storage::StoreConfig config;                 // S3 endpoint/region/credentials from AWS_* env
//   config.data_roots = {"/data"};               // file:// confined to /data
//   ASSIGN_OR_RETURN(auto store, storage::MakeStorageRouter(config));
//   ASSIGN_OR_RETURN(std::string text, store->ReadAll("s3://bucket/model/config.json"));
#ifndef NVFP4_STORAGE_ROUTER_H_
#define NVFP4_STORAGE_ROUTER_H_

#include <memory>
#include <string>
#include <vector>

#include "storage/object_store.h"
#include "storage/s3_store.h"

namespace nvfp4::storage {

class StorageRouter : public ObjectStore {
 public:
  // Either store may be null (that scheme is then refused).
  StorageRouter(std::unique_ptr<ObjectStore> local, std::unique_ptr<ObjectStore> s3)
      : local_(std::move(local)), s3_(std::move(s3)) {}

  absl::StatusOr<int64_t> Size(absl::string_view uri) override;
  absl::Status ReadAt(absl::string_view uri, int64_t offset, int64_t length, char* dst) override;
  absl::StatusOr<std::vector<ObjectInfo>> List(absl::string_view prefix_uri) override;
  absl::StatusOr<std::unique_ptr<ObjectWriter>> OpenWrite(absl::string_view uri) override;
  absl::Status Delete(absl::string_view uri) override;
  absl::Status Copy(absl::string_view from, absl::string_view to) override;
  absl::StatusOr<std::optional<std::string>> LocalPath(absl::string_view uri) override;

  ObjectStore* local() const { return local_.get(); }
  ObjectStore* s3() const { return s3_.get(); }

 private:
  absl::StatusOr<ObjectStore*> Route(absl::string_view uri) const;
  std::unique_ptr<ObjectStore> local_;
  std::unique_ptr<ObjectStore> s3_;
};

// How to reach storage: the local data roots and the S3 endpoint.
struct StoreConfig {
  // Local directories that file:// URIs must stay within (relative file:// paths resolve against
  // the first). Empty: no local object store (callers use local paths directly, unconfined).
  std::vector<std::string> data_roots;
  // S3 endpoint URL and region; empty: $AWS_ENDPOINT_URL and $AWS_REGION/$AWS_DEFAULT_REGION
  // (else us-east-1). Credentials always come from the environment, never from flags:
  // AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN (a mounted secret exposed as
  // environment variables), else STS web identity (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN).
  std::string s3_endpoint;
  std::string s3_region;
  // Use https://s3.<region>.amazonaws.com when no endpoint is given at all (the CLI; the server
  // leaves S3 off instead).
  bool s3_default_aws_endpoint = false;
  int64_t s3_part_bytes = 64ll << 20;
  int s3_upload_concurrency = 4;  // multipart parts in flight per upload (S3Config)
  // Optional per-request observer for S3 metrics (see S3Config::observer).
  std::function<void(absl::string_view op, double seconds, absl::string_view error)> s3_observer;
  // Optional log of S3 credential refreshes (web identity).
  std::function<void(const std::string&)> s3_log;
};

// A router with a LocalObjectStore over `data_roots` (when any) and an S3ObjectStore when an
// endpoint is known and credentials are present. INVALID_ARGUMENT for a bad root or S3 config
// (an endpoint without credentials).
absl::StatusOr<std::unique_ptr<StorageRouter>> MakeStorageRouter(const StoreConfig& config);

}  // namespace nvfp4::storage

#endif  // NVFP4_STORAGE_ROUTER_H_
