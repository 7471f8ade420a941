// ObjectStore over the local filesystem, confined to a set of allowed data roots.
//
// Every path is checked after normalization: no `..` components, and the real path of the
// deepest existing ancestor (symlinks resolved) must lie inside one of the roots, so neither
// `..` nor a symlink can reach outside. Writes go to a hidden temp file in the target directory,
// are fsync'ed, and are renamed into place on Commit().
//
// Unconfined() is the store of local paths when no data roots are configured (nvfp4ctl --local):
// any absolute or relative (to the working directory) path, not canonicalized, and listings
// include hidden files, as a plain directory walk does.
#ifndef NVFP4_STORAGE_LOCAL_STORE_H_
#define NVFP4_STORAGE_LOCAL_STORE_H_

#include <filesystem>
#include <string>
#include <vector>

#include "storage/object_store.h"

namespace nvfp4::storage {

class LocalObjectStore : public ObjectStore {
 public:
  // Creates missing roots. INVALID_ARGUMENT when `roots` is empty.
  static absl::StatusOr<std::unique_ptr<LocalObjectStore>> Create(
      const std::vector<std::string>& roots);

  absl::StatusOr<int64_t> Size(absl::string_view uri) override;
  absl::Status ReadAt(absl::string_view uri, int64_t offset, int64_t length, char* dst) override;
  absl::StatusOr<std::vector<ObjectInfo>> List(absl::string_view prefix_uri) override;
  absl::StatusOr<std::unique_ptr<ObjectWriter>> OpenWrite(absl::string_view uri) override;
  absl::Status Delete(absl::string_view uri) override;
  // Resolve(uri) as a string: this store's files are local.
  absl::StatusOr<std::optional<std::string>> LocalPath(absl::string_view uri) override;

  // The unconfined store (see above), shared by the process (never destroyed).
  static LocalObjectStore& Unconfined();

  // Maps a file:// URI (or a bare path) to a checked absolute path inside a root.
  // PERMISSION_DENIED outside the roots, INVALID_ARGUMENT for `..` components. Unconfined: the
  // absolute, lexically normal path.
  absl::StatusOr<std::filesystem::path> Resolve(absl::string_view uri) const;

  const std::vector<std::filesystem::path>& roots() const { return roots_; }

 private:
  explicit LocalObjectStore(std::vector<std::filesystem::path> roots, bool confined = true)
      : roots_(std::move(roots)), confined_(confined) {}
  std::vector<std::filesystem::path> roots_;  // canonical; empty when unconfined
  bool confined_;
};

}  // namespace nvfp4::storage

#endif  // NVFP4_STORAGE_LOCAL_STORE_H_
