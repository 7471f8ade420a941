// An ObjectStore in memory: the fake that storage/object_store.h promises, for tests of the code
// above storage/ (no filesystem, no S3 server). It keeps the interface's contract, which
// tests/storage/object_store_contract_test.cc checks against this store and LocalObjectStore:
// NOT_FOUND for an absent object, OUT_OF_RANGE for a read past the end, List recursive and sorted
// with names relative to the prefix, writers that publish atomically on Commit().
//
// URIs are validated with ParseStorageUri (file:// and s3://) and used as keys, trailing '/'
// dropped; nothing resolves relative paths or data roots. There are no directories: listing a
// prefix with no object below it is NOT_FOUND for file:// (a missing directory) and empty for
// s3:// (an empty prefix), as the real stores answer.
//
//   MemoryObjectStore store;
//   ASSERT_TRUE(store.WriteAll("s3://bucket/model/config.json", "{}").ok());
//   RunCodeUnderTest(store);
//   EXPECT_EQ(*store.ReadAll("s3://bucket/out/config.json"), "...");
#ifndef NVFP4_STORAGE_MEMORY_STORE_H_
#define NVFP4_STORAGE_MEMORY_STORE_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "storage/object_store.h"

namespace nvfp4::storage {

class MemoryObjectStore : public ObjectStore {
 public:
  absl::StatusOr<int64_t> Size(absl::string_view uri) override;
  absl::Status ReadAt(absl::string_view uri, int64_t offset, int64_t length, char* dst) override;
  absl::StatusOr<std::vector<ObjectInfo>> List(absl::string_view prefix_uri) override;
  absl::StatusOr<std::unique_ptr<ObjectWriter>> OpenWrite(absl::string_view uri) override;
  absl::Status Delete(absl::string_view uri) override;

  // Objects published so far.
  size_t object_count() const;

 private:
  class Writer;
  // The key of `uri`: the URI without trailing '/'. INVALID_ARGUMENT for a URI ParseStorageUri
  // rejects.
  static absl::StatusOr<std::string> Key(absl::string_view uri);
  void Publish(const std::string& key, std::string data);

  mutable absl::Mutex mu_;
  std::map<std::string, std::string> objects_ ABSL_GUARDED_BY(mu_);
};

}  // namespace nvfp4::storage

#endif  // NVFP4_STORAGE_MEMORY_STORE_H_
