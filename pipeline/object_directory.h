// Model-pipeline directories over object storage (storage/object_store.h), so that QuantizeModel
// reads a checkpoint from `s3://bucket/prefix` and writes one there, from the server and from
// `nvfp4ctl quantize-model --local` alike (e.g. in a Kubernetes Job).
//
//   storage::StoreConfig config;   // S3 endpoint/region + AWS_* credentials from the environment
//   ASSIGN_OR_RETURN(auto in, OpenInputDirectory("s3://models/llama", config));
//   ASSIGN_OR_RETURN(auto out, OpenOutputDirectory("s3://models/llama-nvfp4", config));
//   ASSIGN_OR_RETURN(QuantizeModelResult r, QuantizeModel(*in, *out, options));
//
// Input: listing is one recursive List of the prefix; files are read with positioned reads
// (ranged GETs on S3) through a small read-ahead buffer, so the safetensors reader's small header
// reads (8 bytes, then the JSON header) cost one request instead of one each.
//
// Output: files are staged in a local scratch directory (bounded by the output size, about a
// quarter of the input for BF16 weights), then Commit() uploads every file (multipart for large
// ones): weight shards first, then the safetensors index, then config.json and
// hf_quant_config.json last. Each object appears atomically (a completed PUT or multipart upload),
// so a reader never sees half a file, and a loader that keys on config.json never sees a
// checkpoint whose weights are not all there. Names are identical to a local run (no marker file).
// Objects already under an S3 output prefix are refused (ALREADY_EXISTS) unless `overwrite`, which
// replaces same-named objects and leaves others in place.
//
// Plain paths and file:// URIs: with no data roots configured they are local directories
// (LocalInputDirectory / LocalOutputDirectory: atomic rename of the whole directory); with data
// roots (the server) they are confined to them: inputs are read through the LocalObjectStore
// (every file checked for `..` and symlink escapes), outputs resolved inside a root first.
#ifndef NVFP4_PIPELINE_OBJECT_DIRECTORY_H_
#define NVFP4_PIPELINE_OBJECT_DIRECTORY_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "pipeline/storage.h"
#include "storage/object_store.h"
#include "storage/router.h"

namespace nvfp4::pipeline {

// A read-only directory under an object-store prefix.
class ObjectInputDirectory : public InputDirectory {
 public:
  // `store` is not owned unless `owner` holds it. NOT_FOUND when the prefix holds no object.
  static absl::StatusOr<std::unique_ptr<ObjectInputDirectory>> Open(
      storage::ObjectStore* store, std::string prefix_uri,
      std::shared_ptr<storage::ObjectStore> owner = nullptr);

  absl::StatusOr<std::vector<std::string>> ListFiles() override;
  absl::StatusOr<std::unique_ptr<formats::RandomAccessSource>> OpenFile(
      const std::string& name) override;
  bool Exists(const std::string& name) override;
  std::string Describe() const override { return prefix_; }

  // Bytes fetched per small read (reads at least this large bypass the buffer).
  static constexpr uint64_t kReadAheadBytes = 256u << 10;

 private:
  ObjectInputDirectory(storage::ObjectStore* store, std::string prefix,
                       std::shared_ptr<storage::ObjectStore> owner,
                       std::map<std::string, int64_t> files)
      : store_(store), prefix_(std::move(prefix)), owner_(std::move(owner)),
        files_(std::move(files)) {}
  storage::ObjectStore* store_;
  std::string prefix_;
  std::shared_ptr<storage::ObjectStore> owner_;
  std::map<std::string, int64_t> files_;  // name -> size, listed once at Open
};

// One file published by ObjectOutputDirectory::Commit.
struct PublishedFile {
  std::string name;  // relative to the output prefix
  std::string uri;
  int64_t size = 0;
  std::string sha256;  // lowercase hex
};

// An output prefix of an object store, staged in a local scratch directory.
class ObjectOutputDirectory : public OutputDirectory {
 public:
  // `scratch_root`: where the staging directory is made ("" = the system temp directory).
  ObjectOutputDirectory(storage::ObjectStore* store, std::string prefix_uri,
                        std::string scratch_root = "", bool overwrite = false,
                        std::shared_ptr<storage::ObjectStore> owner = nullptr);
  ~ObjectOutputDirectory() override;

  absl::StatusOr<std::string> Begin() override;
  // Uploads the staged files in the order described at the top, then removes the staging
  // directory. On failure the staging directory is removed too; objects already uploaded stay
  // (config.json, uploaded last, is then absent, so no loader takes the partial output).
  absl::Status Commit() override;
  void Abort() override;
  std::string Describe() const override { return prefix_; }
  // The staging directory is then `<scratch_root>/<key>` (kept across failures; removed by a
  // Commit, successful or not, and by Discard).
  absl::Status SetResumeKey(const std::string& key) override;
  void Discard() override;

  // The files uploaded by Commit (with size and sha256), in upload order.
  const std::vector<PublishedFile>& published() const { return published_; }

 private:
  storage::ObjectStore* store_;
  std::string prefix_;
  std::string scratch_root_;
  bool overwrite_;
  std::shared_ptr<storage::ObjectStore> owner_;
  std::string resume_key_;
  std::string staging_;
  std::vector<PublishedFile> published_;
  std::string ScratchRoot() const;
  void RemoveStaging();
};

// Opens `uri` (s3://bucket/prefix, file://path or a plain path) as a pipeline input directory.
// s3:// goes through `store` (FAILED_PRECONDITION when it has no S3 store); local paths go
// through its local store when it has one (confined to the data roots), else straight to the
// filesystem. `store` must outlive the directory.
absl::StatusOr<std::unique_ptr<InputDirectory>> OpenInputDirectory(const std::string& uri,
                                                                   storage::StorageRouter& store);
// The same for the output directory. `scratch_root` stages object-store outputs.
absl::StatusOr<std::unique_ptr<OutputDirectory>> OpenOutputDirectory(
    const std::string& uri, storage::StorageRouter& store, bool overwrite = false,
    const std::string& scratch_root = "");

// Convenience for tools: builds the router from `config` (kept alive by the directory).
absl::StatusOr<std::unique_ptr<InputDirectory>> OpenInputDirectory(
    const std::string& uri, const storage::StoreConfig& config);
absl::StatusOr<std::unique_ptr<OutputDirectory>> OpenOutputDirectory(
    const std::string& uri, const storage::StoreConfig& config, bool overwrite = false,
    const std::string& scratch_root = "");

// Opens one file (s3://..., file://... or a plain path) as a RandomAccessSource, e.g. a
// calibration file. Same routing as OpenInputDirectory.
absl::StatusOr<std::unique_ptr<formats::RandomAccessSource>> OpenObjectFile(
    const std::string& uri, storage::StorageRouter& store);

// True for s3:// URIs.
bool IsObjectStoreUri(const std::string& uri);

}  // namespace nvfp4::pipeline

#endif  // NVFP4_PIPELINE_OBJECT_DIRECTORY_H_
