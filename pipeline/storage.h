// Where a model pipeline reads its input checkpoint and writes its output: two small interfaces
// (a read-only directory of files, and an output directory that is staged and published
// atomically) with local-filesystem implementations. The server plugs in object stores (S3) by
// implementing the same interfaces.
//
//   ASSIGN_OR_RETURN(auto in, LocalInputDirectory::Open("/models/llama"));
//   LocalOutputDirectory out("/models/llama-nvfp4");
//   ASSIGN_OR_RETURN(std::string staging, out.Begin());   // write files under `staging`
//   ...
//   RETURN_IF_ERROR(out.Commit());                         // or out.Abort()
#ifndef NVFP4_PIPELINE_STORAGE_H_
#define NVFP4_PIPELINE_STORAGE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "formats/random_access_source.h"

namespace nvfp4::pipeline {

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

// The local directory `root`.
class LocalInputDirectory : public InputDirectory {
 public:
  // NOT_FOUND / FAILED_PRECONDITION when `root` is missing or not a directory.
  static absl::StatusOr<std::unique_ptr<LocalInputDirectory>> Open(const std::string& root);

  absl::StatusOr<std::vector<std::string>> ListFiles() override;
  absl::StatusOr<std::unique_ptr<formats::RandomAccessSource>> OpenFile(
      const std::string& name) override;
  bool Exists(const std::string& name) override;
  std::string Describe() const override { return root_; }

 private:
  explicit LocalInputDirectory(std::string root) : root_(std::move(root)) {}
  std::string root_;
};

// An output directory written all at once: Begin() gives an empty local staging directory, the
// pipeline writes the complete output there, and Commit() publishes it at the target (atomically
// for the local implementation: one rename). Abort() (and the destructor, without Commit) removes
// the staging directory, so nothing appears at the target on failure or cancellation.
class OutputDirectory {
 public:
  virtual ~OutputDirectory() = default;
  // Creates the staging directory and returns its local path. ALREADY_EXISTS when the target
  // exists and is not an empty directory (unless the implementation was told to overwrite).
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
};

// INVALID_ARGUMENT unless `key` is a valid resume key (see SetResumeKey).
absl::Status ValidateResumeKey(const std::string& key);

// Stages in a hidden sibling of `target` (`.<name>.tmp-<pid>-<n>` in the same parent directory, so
// that the final rename stays on one filesystem) and renames it to `target` on Commit(). With a
// resume key the sibling is `.<name>.resume-<key>`.
class LocalOutputDirectory : public OutputDirectory {
 public:
  // `overwrite`: replace an existing non-empty target on Commit (the old one is removed only after
  // the new one is complete).
  explicit LocalOutputDirectory(std::string target, bool overwrite = false);
  ~LocalOutputDirectory() override;

  absl::StatusOr<std::string> Begin() override;
  absl::Status Commit() override;
  void Abort() override;
  std::string Describe() const override { return target_; }
  absl::Status SetResumeKey(const std::string& key) override;
  void Discard() override;
  // The staging path (empty before Begin / after Commit or Abort).
  const std::string& staging() const { return staging_; }

 private:
  std::string ResumeStagingPath() const;
  std::string target_;
  bool overwrite_;
  std::string resume_key_;
  std::string staging_;
};

// Copies file `name` of `in` to the local path `dest` in chunks (never whole in memory).
absl::Status CopyFileToLocal(InputDirectory& in, const std::string& name, const std::string& dest);

}  // namespace nvfp4::pipeline

#endif  // NVFP4_PIPELINE_STORAGE_H_
