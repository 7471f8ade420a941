// Byte sources for checkpoint readers: a random-access, read-only view of one file.
//
// The safetensors reader only needs the size and positioned reads, so the same reader serves local
// files (LocalFileSource, pread), in-memory buffers (MemorySource, tests) and, in the server,
// object stores (an S3 source that issues ranged GETs).
#ifndef NVFP4_FORMATS_RANDOM_ACCESS_SOURCE_H_
#define NVFP4_FORMATS_RANDOM_ACCESS_SOURCE_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace nvfp4::formats {

// A read-only byte source with positioned reads. Implementations must make Size() and ReadAt()
// safe to call from several threads at once (readers read tensors concurrently).
class RandomAccessSource {
 public:
  virtual ~RandomAccessSource() = default;

  // Total size in bytes. Constant for the lifetime of the source.
  virtual absl::StatusOr<uint64_t> Size() = 0;

  // Fills `out` with bytes [offset, offset + out.size()). Either reads all of them or fails:
  // OUT_OF_RANGE when the range extends past Size(), DATA_LOSS when the source is shorter than
  // it claimed (truncated while open), other codes for I/O errors.
  virtual absl::Status ReadAt(uint64_t offset, std::span<uint8_t> out) = 0;

  // Human-readable identity for error messages: a path or URL.
  virtual std::string Describe() = 0;
};

// A local file read with pread(2). The size is taken once, at Open.
class LocalFileSource : public RandomAccessSource {
 public:
  // Errors: NOT_FOUND when the file does not exist, PERMISSION_DENIED, FAILED_PRECONDITION when the
  // path is a directory, INTERNAL for other errors. Messages name the path.
  static absl::StatusOr<std::unique_ptr<LocalFileSource>> Open(const std::string& path);
  ~LocalFileSource() override;

  LocalFileSource(const LocalFileSource&) = delete;
  LocalFileSource& operator=(const LocalFileSource&) = delete;

  absl::StatusOr<uint64_t> Size() override;
  absl::Status ReadAt(uint64_t offset, std::span<uint8_t> out) override;
  std::string Describe() override;

 private:
  LocalFileSource(int fd, uint64_t size, std::string path);

  int fd_;
  uint64_t size_;
  std::string path_;
};

// An in-memory source (tests, small objects already downloaded).
class MemorySource : public RandomAccessSource {
 public:
  MemorySource(std::vector<uint8_t> bytes, std::string name);

  absl::StatusOr<uint64_t> Size() override;
  absl::Status ReadAt(uint64_t offset, std::span<uint8_t> out) override;
  std::string Describe() override;

 private:
  std::vector<uint8_t> bytes_;
  std::string name_;
};

}  // namespace nvfp4::formats

#endif  // NVFP4_FORMATS_RANDOM_ACCESS_SOURCE_H_
