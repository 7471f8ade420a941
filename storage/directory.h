// Directories over object storage (storage/object_store.h): where a model pipeline reads its input
// checkpoint and writes its output, for local directories and S3 prefixes alike.
//
//   ASSIGN_OR_RETURN(auto store, MakeStorageRouter(config));   // or LocalObjectStore::Unconfined()
//   ASSIGN_OR_RETURN(auto in, OpenInputDirectory("s3://models/llama", *store));
//   ASSIGN_OR_RETURN(auto out, OpenOutputDirectory("/models/llama-nvfp4", *store));
//   ASSIGN_OR_RETURN(std::string staging, out->Begin());   // write files under `staging`
//   ...
//   RETURN_IF_ERROR(out->Commit());                         // or out->Abort()
//
// Three directories, each one class over any ObjectStore:
//   StoreInputDirectory    a read-only directory (a checkpoint) under a URI prefix.
//   StagedOutputDirectory  an output written all at once: staged, then published by Commit().
//   SharedOutputDirectory  one output written by several processes (sharded runs, shard_plan.h):
//                          each publishes its own files and leaves the others' alone.
// Local files take a fast path through the store's LocalPath() capability (the LocalObjectStore:
// confined to data roots in the server, Unconfined() for nvfp4ctl --local): files are read
// through an open descriptor, outputs are staged in a hidden sibling of the target (one
// filesystem) and published by rename. Other stores (S3) are read with positioned reads through a
// small read-ahead buffer, so the safetensors reader's small header reads cost one request, and
// outputs are staged in a local scratch directory and uploaded by Commit() (multipart for large
// files): weight shards first, then the safetensors index, then hf_quant_config.json and
// config.json last, each appearing atomically, so a loader that keys on config.json never sees a
// checkpoint whose weights are not all there. Durable runs (a resume key) hand each finished file
// over to the store early (HandOver: `<uri>/.nvfp4-staging-<key>/`), so the scratch holds only
// the files being written and another process can resume the run; Commit copies them in place.
#ifndef NVFP4_STORAGE_DIRECTORY_H_
#define NVFP4_STORAGE_DIRECTORY_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "formats/random_access_source.h"
#include "storage/object_store.h"
#include "storage/router.h"

namespace nvfp4::storage {

// A read-only directory of files (a checkpoint). Names are relative paths with '/' separators.
// Implementations must allow concurrent Open/ReadAt calls from several threads.
class InputDirectory {
 public:
  virtual ~InputDirectory() = default;

  // Every regular file below the directory (recursively), as relative paths, sorted.
  virtual absl::StatusOr<std::vector<std::string>> ListFiles() = 0;
  // Opens a file for positioned reads. NOT_FOUND when absent.
  virtual absl::StatusOr<std::unique_ptr<formats::RandomAccessSource>> OpenFile(
      const std::string& name) = 0;
  // True when `name` exists.
  virtual bool Exists(const std::string& name) = 0;
  // A path or URL naming the directory, for messages.
  virtual std::string Describe() const = 0;

  // Reads a whole (small) file. INVALID_ARGUMENT when it is larger than `max_bytes`.
  absl::StatusOr<std::string> ReadSmallFile(const std::string& name,
                                            uint64_t max_bytes = 64u << 20);
};

// The objects under a prefix of an ObjectStore, listed once by Open().
class StoreInputDirectory : public InputDirectory {
 public:
  // `store` is not owned unless `owner` holds it. `name`: what Describe() answers ("": the
  // prefix). A local directory (the store's LocalPath): NOT_FOUND when missing,
  // FAILED_PRECONDITION when not a directory; other stores: NOT_FOUND when the prefix holds no
  // object.
  static absl::StatusOr<std::unique_ptr<StoreInputDirectory>> Open(
      ObjectStore* store, std::string prefix_uri, std::string name = "",
      std::shared_ptr<ObjectStore> owner = nullptr);

  absl::StatusOr<std::vector<std::string>> ListFiles() override;
  absl::StatusOr<std::unique_ptr<formats::RandomAccessSource>> OpenFile(
      const std::string& name) override;
  bool Exists(const std::string& name) override;
  std::string Describe() const override { return name_; }

  // Bytes fetched per small read (reads at least this large bypass the buffer).
  static constexpr uint64_t kReadAheadBytes = 256u << 10;

 private:
  StoreInputDirectory(ObjectStore* store, std::string prefix, std::string name, bool local,
                      std::shared_ptr<ObjectStore> owner, std::map<std::string, int64_t> files)
      : store_(store),
        prefix_(std::move(prefix)),
        name_(std::move(name)),
        local_(local),
        owner_(std::move(owner)),
        files_(std::move(files)) {}
  ObjectStore* store_;
  std::string prefix_;
  std::string name_;
  bool local_;  // the store has local paths: files are opened there
  std::shared_ptr<ObjectStore> owner_;
  std::map<std::string, int64_t> files_;  // name -> size
};

// Opens one object as a RandomAccessSource (through its local path when the store has one).
absl::StatusOr<std::unique_ptr<formats::RandomAccessSource>> OpenStoreFile(
    ObjectStore& store, const std::string& uri, std::shared_ptr<ObjectStore> owner = nullptr);

// A staged file that a durable run handed over to the object store (OutputDirectory::HandOver).
struct HandedOverFile {
  std::string name;  // relative to the staging directory (and the output prefix)
  int64_t size = 0;
  std::string sha256;  // lowercase hex
  std::string tag;     // as given to HandOver (the pipeline's plan fingerprint)
};

// An output directory: Begin() gives an empty local staging directory, the pipeline writes its
// files there, and Commit() publishes them at the target. Abort() (and the destructor, without
// Commit) removes the staging directory.
class OutputDirectory {
 public:
  virtual ~OutputDirectory() = default;
  // Creates the staging directory and returns its local path. ALREADY_EXISTS when the target
  // exists and is not empty (unless the implementation was told to overwrite).
  virtual absl::StatusOr<std::string> Begin() = 0;
  // Publishes the staging directory at the target.
  virtual absl::Status Commit() = 0;
  // Removes the staging directory (idempotent).
  virtual void Abort() = 0;
  // A path or URL naming the target, for messages.
  virtual std::string Describe() const = 0;

  // Durable runs (pipeline/resume.h): the staging directory is named by `key` (letters, digits,
  // '.', '_', '-'; e.g. a job id) and survives failures: Begin() reuses the one an interrupted run
  // left (its files stay, for QuantizeModel to verify and resume from), and Abort() and the
  // destructor leave it in place; Discard() removes it. Call before Begin(). UNIMPLEMENTED unless
  // the implementation supports it.
  virtual absl::Status SetResumeKey(const std::string& key);
  // Removes the staging directory, a kept one included (idempotent).
  virtual void Discard() { Abort(); }
  // True when Commit() publishes the staged files by renaming them (local targets): files hashed
  // while staged are the published bytes. False when it uploads them (see published()).
  virtual bool PublishesByRename() const = 0;

  // Durable runs (a resume key) to stores without local paths: staged file `name` is complete and
  // will not change. It is uploaded under the target's staging prefix,
  // `<uri>/.nvfp4-staging-<key>/<name>`, then a record `<name>.sha256` (its sha256, size and
  // `tag`, letters and digits), and removed from local disk: local disk holds only the files still
  // being written, and any process can resume the run from what was handed over. Commit()
  // publishes handed-over files by a copy inside the store; Commit() and Discard() remove the
  // staging prefix. Other directories: nothing is done (the default).
  virtual absl::Status HandOver(const std::string& name, const std::string& tag);
  // True when HandOver() moves files off local disk (so a run should finish files early).
  virtual bool HandsOver() const { return false; }
  // Forgets a handed-over file (its record first, then the file): Commit() will not publish it.
  // For files an earlier attempt handed over that the run does not trust (another plan).
  virtual absl::Status DropHandedOver(const std::string& name);
  // The files handed over so far (after Begin(); earlier attempts' included), each with a complete
  // record. Empty by default.
  virtual absl::StatusOr<std::vector<HandedOverFile>> HandedOver();
};

// INVALID_ARGUMENT unless `key` is a valid resume key (see SetResumeKey).
absl::Status ValidateResumeKey(const std::string& key);

// One file uploaded by Commit() to a store without local paths.
struct PublishedFile {
  std::string name;  // relative to the output prefix
  std::string uri;
  int64_t size = 0;
  std::string sha256;  // lowercase hex
};

// An output written all at once and published at the target URI by Commit():
// - a local target: staged in a hidden sibling (`.<name>.tmp-<pid>-<n>`, or `.<name>.resume-<key>`
//   with a resume key) and renamed to the target: the whole directory appears at once. The target
//   must not exist or be an empty directory, unless `overwrite` (the old one is then removed only
//   after the new one is in place). Its parent must exist.
// - other stores: staged under `scratch_root` (`nvfp4-staging-XXXXXX`, or `<key>` with a resume
//   key; "" = the system temp directory) and uploaded in the order described at the top. Objects
//   under the prefix are refused (ALREADY_EXISTS) unless `overwrite`, which replaces same-named
//   objects and leaves others (the run's own staging prefix, `.nvfp4-staging-<key>/`, does not
//   count). On a failed upload the objects already uploaded stay (config.json, uploaded last, is
//   then absent); the staging directory is removed by Commit either way. With a resume key, files
//   handed over (HandOver) live under the staging prefix until Commit copies them into place.
class StagedOutputDirectory : public OutputDirectory {
 public:
  struct Options {
    bool overwrite = false;
    std::string scratch_root;
    std::string name;  // what Describe() answers ("": the local path, else the URI)
  };
  // `store` is not owned unless `owner` holds it. Errors of the store's LocalPath (e.g.
  // PERMISSION_DENIED outside the data roots); INVALID_ARGUMENT for an empty URI.
  static absl::StatusOr<std::unique_ptr<StagedOutputDirectory>> Open(
      ObjectStore* store, std::string uri, Options options,
      std::shared_ptr<ObjectStore> owner = nullptr);
  ~StagedOutputDirectory() override;

  absl::StatusOr<std::string> Begin() override;
  absl::Status Commit() override;
  void Abort() override;
  std::string Describe() const override { return name_; }
  absl::Status SetResumeKey(const std::string& key) override;
  void Discard() override;
  bool PublishesByRename() const override { return local_.has_value(); }
  absl::Status HandOver(const std::string& name, const std::string& tag) override;
  absl::StatusOr<std::vector<HandedOverFile>> HandedOver() override;
  bool HandsOver() const override { return !local_.has_value() && !resume_key_.empty(); }
  absl::Status DropHandedOver(const std::string& name) override;

  // The files uploaded by Commit (with size and sha256), in upload order; empty for local targets.
  const std::vector<PublishedFile>& published() const { return published_; }

 private:
  StagedOutputDirectory(ObjectStore* store, std::string uri, std::optional<std::string> local,
                        Options options, std::shared_ptr<ObjectStore> owner);
  absl::StatusOr<std::string> BeginLocal();
  absl::Status CommitLocal();
  absl::StatusOr<std::string> BeginUpload();
  std::string KeptStagingPath() const;  // where a resume key puts the staging directory
  // Stores without local paths, with a resume key: where handed-over files go.
  std::string StagingPrefix() const;

  ObjectStore* store_;
  std::string uri_;
  std::optional<std::string> local_;  // the target's local path
  Options options_;
  std::string name_;
  std::shared_ptr<ObjectStore> owner_;
  std::string resume_key_;
  std::string staging_;
  std::vector<PublishedFile> published_;
};

// An output for several writers (the processes of a sharded run): Commit() publishes every staged
// file at the target, replacing a file of the same name and leaving other files alone. Files
// named in `publish_last` (the index and config.json) are published after the others, in that
// order.
// - a local target: staged in a hidden sibling (`.<name>.part-<host>-<pid>-<n>`; the parent is
//   created), each file moved into the target by one rename (the target and subdirectories are
//   created as needed).
// - other stores: staged under `scratch_root` and uploaded as StagedOutputDirectory uploads.
class SharedOutputDirectory : public OutputDirectory {
 public:
  struct Options {
    std::string scratch_root;
    std::string name;  // what Describe() answers ("": the local path, else the URI)
    std::vector<std::string> publish_last = {"model.safetensors.index.json", "config.json"};
  };
  static absl::StatusOr<std::unique_ptr<SharedOutputDirectory>> Open(
      ObjectStore* store, std::string uri, Options options,
      std::shared_ptr<ObjectStore> owner = nullptr);
  ~SharedOutputDirectory() override;

  absl::StatusOr<std::string> Begin() override;
  absl::Status Commit() override;
  void Abort() override;
  std::string Describe() const override;
  bool PublishesByRename() const override;

 private:
  SharedOutputDirectory(std::string local, Options options)
      : local_(std::move(local)), options_(std::move(options)) {}
  explicit SharedOutputDirectory(std::unique_ptr<StagedOutputDirectory> upload)
      : upload_(std::move(upload)) {}
  std::string local_;  // the target's local path (empty when uploading)
  Options options_;
  std::string staging_;
  std::unique_ptr<StagedOutputDirectory> upload_;  // a store without local paths
};

// ---- locations: s3://bucket/prefix, file://path or a plain path ----

// True for s3:// URIs.
bool IsObjectStoreUri(const std::string& uri);

// Opens `uri` as an input directory. s3:// goes through `store` (FAILED_PRECONDITION when it has
// no S3 store); local paths through its local store when it has one (confined to the data roots),
// else through LocalObjectStore::Unconfined(). `store` must outlive the directory.
absl::StatusOr<std::unique_ptr<InputDirectory>> OpenInputDirectory(const std::string& uri,
                                                                   StorageRouter& store);
// The same for a StagedOutputDirectory. `scratch_root` stages object-store outputs.
absl::StatusOr<std::unique_ptr<StagedOutputDirectory>> OpenOutputDirectory(
    const std::string& uri, StorageRouter& store, bool overwrite = false,
    const std::string& scratch_root = "");
// The same for a SharedOutputDirectory.
absl::StatusOr<std::unique_ptr<SharedOutputDirectory>> OpenSharedOutputDirectory(
    const std::string& uri, StorageRouter& store, const std::string& scratch_root = "");
// Opens one file (e.g. a calibration file), routed as OpenInputDirectory routes.
absl::StatusOr<std::unique_ptr<formats::RandomAccessSource>> OpenObjectFile(const std::string& uri,
                                                                            StorageRouter& store);

// Convenience for tools: builds the router from `config` (kept alive by the directory).
absl::StatusOr<std::unique_ptr<InputDirectory>> OpenInputDirectory(const std::string& uri,
                                                                   const StoreConfig& config);
absl::StatusOr<std::unique_ptr<StagedOutputDirectory>> OpenOutputDirectory(
    const std::string& uri, const StoreConfig& config, bool overwrite = false,
    const std::string& scratch_root = "");

// Local directories, unconfined (LocalObjectStore::Unconfined()).
absl::StatusOr<std::unique_ptr<InputDirectory>> OpenLocalInputDirectory(const std::string& path);
absl::StatusOr<std::unique_ptr<StagedOutputDirectory>> OpenLocalOutputDirectory(
    const std::string& path, bool overwrite = false);

// Copies file `name` of `in` to the local path `dest` in chunks (never whole in memory).
absl::Status CopyFileToLocal(InputDirectory& in, const std::string& name, const std::string& dest);

}  // namespace nvfp4::storage

#endif  // NVFP4_STORAGE_DIRECTORY_H_
