// Routes object-store calls by URI scheme: file:// to the local store, s3:// to S3 (when
// configured; FAILED_PRECONDITION otherwise).
#ifndef NVFP4_SERVER_STORAGE_H_
#define NVFP4_SERVER_STORAGE_H_

#include <memory>

#include "server/object_store.h"

namespace nvfp4::server {

class StorageRouter : public ObjectStore {
 public:
  // Either store may be null (that scheme is then refused).
  StorageRouter(std::unique_ptr<ObjectStore> local, std::unique_ptr<ObjectStore> s3)
      : local_(std::move(local)), s3_(std::move(s3)) {}

  absl::StatusOr<int64_t> Size(absl::string_view uri) override;
  absl::Status ReadAt(absl::string_view uri, int64_t offset, int64_t length, char* dst) override;
  absl::StatusOr<std::vector<ObjectInfo>> List(absl::string_view prefix_uri) override;
  absl::StatusOr<std::unique_ptr<ObjectWriter>> OpenWrite(absl::string_view uri) override;

  ObjectStore* local() const { return local_.get(); }
  ObjectStore* s3() const { return s3_.get(); }

 private:
  absl::StatusOr<ObjectStore*> Route(absl::string_view uri) const;
  std::unique_ptr<ObjectStore> local_;
  std::unique_ptr<ObjectStore> s3_;
};

}  // namespace nvfp4::server

#endif  // NVFP4_SERVER_STORAGE_H_
