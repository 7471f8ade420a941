// Object storage behind one interface: the local filesystem (allowed roots only) and S3.
//
// URIs: `file:///abs/path` (or `file://rel/path`, relative to the first data root) and
// `s3://bucket/key`. Directories/prefixes are listed recursively; names are relative to the prefix.
// Writers publish atomically: nothing is visible at the URI until Commit() succeeds (temp file +
// rename, or a completed multipart upload); a writer destroyed without Commit() aborts.
#ifndef NVFP4_STORAGE_OBJECT_STORE_H_
#define NVFP4_STORAGE_OBJECT_STORE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace nvfp4::storage {

// A parsed storage URI.
struct StorageUri {
  enum class Scheme { kFile, kS3 };
  Scheme scheme = Scheme::kFile;
  std::string bucket;  // s3 only
  std::string path;  // file: the path as written (absolute or relative); s3: the key (no leading /)
};

// Parses `file://...` or `s3://bucket/key`. INVALID_ARGUMENT otherwise.
absl::StatusOr<StorageUri> ParseStorageUri(absl::string_view uri);

// Joins a directory/prefix URI and a relative name with exactly one '/'.
std::string JoinUri(absl::string_view base, absl::string_view name);

// One listed object.
struct ObjectInfo {
  std::string name;  // relative to the listed prefix, '/'-separated
  int64_t size = 0;
};

// An in-progress atomic write. Not thread-safe.
class ObjectWriter {
 public:
  virtual ~ObjectWriter() = default;
  // Appends bytes to the object.
  virtual absl::Status Append(absl::string_view data) = 0;
  // Publishes the object at its URI. After a failed Commit the writer is aborted.
  virtual absl::Status Commit() = 0;
  // Discards everything written (idempotent; also done by the destructor when not committed).
  virtual void Abort() = 0;
  // Bytes appended so far.
  virtual int64_t bytes_written() const = 0;
};

// Storage interface (thread-safe). Tests replace it with fakes.
class ObjectStore {
 public:
  virtual ~ObjectStore() = default;
  // Size of one object. NOT_FOUND when absent.
  virtual absl::StatusOr<int64_t> Size(absl::string_view uri) = 0;
  // Reads exactly `length` bytes at `offset` into `dst`. OUT_OF_RANGE when past the end.
  virtual absl::Status ReadAt(absl::string_view uri, int64_t offset, int64_t length, char* dst) = 0;
  // Lists the objects under a directory/prefix, recursively, sorted by name.
  // NOT_FOUND when the directory does not exist (an empty S3 prefix lists as empty).
  virtual absl::StatusOr<std::vector<ObjectInfo>> List(absl::string_view prefix_uri) = 0;
  // Starts an atomic write of one object.
  virtual absl::StatusOr<std::unique_ptr<ObjectWriter>> OpenWrite(absl::string_view uri) = 0;
  // Removes one object. OK when it is absent.
  virtual absl::Status Delete(absl::string_view uri) = 0;
  // Copies object `from` to `to`, published at `to` atomically as OpenWrite publishes. The default
  // streams the bytes through this process (8 MiB reads); stores that copy server-side (S3's
  // CopyObject) override it. NOT_FOUND when `from` is absent.
  virtual absl::Status Copy(absl::string_view from, absl::string_view to);
  // The capability of stores backed by the local filesystem: the checked local path of `uri`
  // (which need not exist yet), for fast paths (positioned reads of an open file, staging in a
  // sibling directory published by one rename). std::nullopt for stores without local files (the
  // default); errors as the store's other calls answer them (e.g. PERMISSION_DENIED outside the
  // data roots).
  virtual absl::StatusOr<std::optional<std::string>> LocalPath(absl::string_view uri);
  // One line for start-up logs (S3: endpoint, region, credential source); empty by default.
  virtual std::string Describe() const { return ""; }

  // Convenience: reads a whole object.
  absl::StatusOr<std::string> ReadAll(absl::string_view uri);
  // Convenience: writes a whole object atomically.
  absl::Status WriteAll(absl::string_view uri, absl::string_view data);
};

}  // namespace nvfp4::storage

#endif  // NVFP4_STORAGE_OBJECT_STORE_H_
