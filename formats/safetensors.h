// safetensors: a validating, streaming reader and a streaming writer.
//
// Format (docs/CHECKPOINTS.md): an 8-byte little-endian u64 `n`, `n` bytes of UTF-8 JSON (an
// object, right-padded with spaces), then the data buffer. Each header entry is
//   "name": {"dtype": "BF16", "shape": [N, K], "data_offsets": [begin, end]}
// with offsets relative to the buffer start; an optional "__metadata__" maps strings to strings.
//
// Reading never trusts the file: SafetensorsReader::Open validates the whole header (size limits,
// JSON syntax, duplicate names, dtypes, shapes, byte sizes with overflow checks, and that the
// entries tile the buffer exactly up to the end of the file) and reports the first violation as
// INVALID_ARGUMENT naming the file, the tensor and the problem. Tensors are then read one at a time
// with positioned reads, so a checkpoint is never loaded whole.
//
// Writing goes to `<path>.tmp`, renamed to `<path>` by Finish(), so a reader never sees a partial
// file. SafetensorsWriter declares every tensor (name, dtype, shape) up front, writes the header,
// and then accepts the data of each tensor — whole or in sequential chunks, tensors in any order —
// so a multi-gigabyte shard never sits in memory.
//
//   ASSIGN_OR_RETURN(auto reader, SafetensorsReader::Open("model.safetensors"));
//   for (const TensorInfo& t : reader->tensors()) {
//     ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, reader->ReadTensor(t));
//   }
//
//   ASSIGN_OR_RETURN(auto writer, SafetensorsWriter::Create("out.safetensors", specs));
//   RETURN_IF_ERROR(writer->WriteTensor("w", bytes));
//   RETURN_IF_ERROR(writer->Finish());
#ifndef NVFP4_FORMATS_SAFETENSORS_H_
#define NVFP4_FORMATS_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "formats/random_access_source.h"

namespace nvfp4::formats {

// Readers reject headers longer than this (the limit of the reference implementation).
inline constexpr uint64_t kMaxHeaderSize = 100'000'000;

// The metadata key of the header.
inline constexpr std::string_view kMetadataKey = "__metadata__";

// One tensor of a safetensors file, as validated by the reader.
struct TensorInfo {
  std::string name;
  std::string dtype;           // safetensors spelling: "BF16", "F32", "U8", "F8_E4M3", ...
  std::vector<int64_t> shape;  // [] for a scalar
  uint64_t offset = 0;         // absolute byte offset in the file (8 + n + data_offsets[0])
  uint64_t size = 0;           // bytes (data_offsets[1] - data_offsets[0])

  // Number of elements (1 for a scalar). Cannot overflow: the reader checked it.
  int64_t numel() const;
};

// The validated header of a safetensors file.
struct SafetensorsHeader {
  uint64_t header_size = 0;                     // n
  std::vector<TensorInfo> tensors;              // in file (offset) order
  std::map<std::string, std::string> metadata;  // "__metadata__", empty when absent
};

// Validates header JSON `json` (the n bytes after the length prefix) of a file of `file_size`
// bytes and returns its tensors. `file` names the file in error messages. Exposed for tests and
// fuzzing; SafetensorsReader::Open calls it. Errors: INVALID_ARGUMENT "<file>: tensor '<name>':
// <what is wrong>".
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::string_view json, uint64_t file_size,
                                                         std::string_view file);

// Reads tensors from a safetensors file on any RandomAccessSource. Reads are positioned; the
// reader holds only the parsed header. Thread-safe: tensors may be read concurrently.
class SafetensorsReader {
 public:
  // Opens and validates a local file.
  static absl::StatusOr<std::unique_ptr<SafetensorsReader>> Open(const std::string& path);
  // Opens and validates a file on `source` (local, in memory, object store).
  static absl::StatusOr<std::unique_ptr<SafetensorsReader>> Open(
      std::unique_ptr<RandomAccessSource> source);

  // All tensors in file order.
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  // The "__metadata__" map (empty when absent).
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  // n, the JSON header length.
  uint64_t header_size() const { return header_.header_size; }
  // The source's description (path or URL), for messages.
  const std::string& name() const { return name_; }

  // The tensor called `name`, or nullptr.
  const TensorInfo* Find(std::string_view name) const;

  // Reads the whole tensor into `out`, which must be exactly `info.size` bytes.
  absl::Status ReadTensor(const TensorInfo& info, std::span<uint8_t> out) const;
  // Reads the whole tensor into a new buffer.
  absl::StatusOr<std::vector<uint8_t>> ReadTensor(const TensorInfo& info) const;
  // Same, by name. NOT_FOUND names the file and the tensor.
  absl::StatusOr<std::vector<uint8_t>> ReadTensor(std::string_view name) const;
  // Reads bytes [offset, offset + out.size()) of the tensor's data (for chunked copies).
  absl::Status ReadTensorRange(const TensorInfo& info, uint64_t offset,
                               std::span<uint8_t> out) const;

 private:
  SafetensorsReader(std::unique_ptr<RandomAccessSource> source, SafetensorsHeader header);

  std::unique_ptr<RandomAccessSource> source_;
  SafetensorsHeader header_;
  std::string name_;
  std::unordered_map<std::string_view, size_t> by_name_;
};

// A tensor to be written: its name, dtype and shape (the data comes separately).
struct TensorSpec {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
};

// Byte size of a spec: numel * itemsize. INVALID_ARGUMENT for an unknown dtype, a negative
// dimension, or overflow.
absl::StatusOr<uint64_t> TensorByteSize(const TensorSpec& spec);

// Sorts specs the way the reference writer (huggingface/safetensors) lays tensors out: by its
// dtype order descending — U64 I64 F64 F32 U32 I32 BF16 F16 U16 I16 F8_E4M3 F8_E5M2 I8 U8 BOOL,
// i.e. by alignment — then by name. So a quantized layer is stored as X_scale_2 (F32),
// X_scale (F8_E4M3), X (U8). Unknown dtypes sort last.
void SortForWriting(std::vector<TensorSpec>& specs);

// Serializes the header for `specs` laid out in the given order: the 8-byte length followed by the
// JSON, padded with spaces so its length is a multiple of 8. `metadata` is written as
// "__metadata__" together with "format": "pt" (unless it sets "format" itself).
// Errors: INVALID_ARGUMENT for a bad spec (unknown dtype, negative dimension, duplicate or empty
// name, the name "__metadata__", overflow).
absl::StatusOr<std::string> BuildSafetensorsHeader(
    std::span<const TensorSpec> specs, const std::map<std::string, std::string>& metadata = {});

// Streaming writer. Create() declares every tensor and writes the header to `<path>.tmp`; the data
// of each tensor is then written with WriteTensor or AppendTensorData (tensors in any order, a
// tensor's chunks in sequence); Finish() checks that every byte was written, syncs, and renames
// the file to `path`. Dropping the writer without Finish() deletes the temporary file.
// WriteTensor/AppendTensorData are thread-safe for distinct tensors.
class SafetensorsWriter {
 public:
  struct Options {
    // Extra "__metadata__" entries; "format": "pt" is always present.
    std::map<std::string, std::string> metadata;
    // Lay tensors out with SortForWriting (the reference order). When false, the given order.
    bool sort = true;
    // fdatasync before the rename (durability); tests may turn it off.
    bool sync = true;
    // Resume a write that an interrupted process left behind (durable server jobs): when
    // `<path>.tmp` (or, failing that, a finished `<path>`, which is moved back to `<path>.tmp`)
    // exists with exactly this header and size, its bytes are kept and reused() is true; no tensor
    // counts as written until MarkWritten() (the caller verifies the bytes first). Otherwise the
    // file is started anew. Dropping such a writer without Finish() keeps `<path>.tmp`.
    bool reuse_partial = false;
    // Compute the file's sha256 while it is written (sha256() after Finish()): a thread hashes
    // each run of bytes as soon as everything before it is written, reading the bytes back from the
    // page cache, so tensors may still arrive in any order and nothing is read again afterwards.
    bool sha256 = false;
  };

  static absl::StatusOr<std::unique_ptr<SafetensorsWriter>> Create(const std::string& path,
                                                                   std::vector<TensorSpec> specs,
                                                                   Options options);
  static absl::StatusOr<std::unique_ptr<SafetensorsWriter>> Create(const std::string& path,
                                                                   std::vector<TensorSpec> specs);
  ~SafetensorsWriter();

  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // The declared tensors in file order.
  const std::vector<TensorSpec>& specs() const { return specs_; }
  // Final size of the file in bytes.
  uint64_t file_size() const { return file_size_; }
  const std::string& path() const { return path_; }
  // Where the data is written until Finish() (`<path>.tmp`).
  const std::string& temp_path() const { return tmp_path_; }
  // True when Options::reuse_partial found and kept an earlier partial file.
  bool reused() const { return reused_; }
  // Absolute byte offset and size of tensor `name` in the file. NOT_FOUND when not declared.
  absl::StatusOr<std::pair<uint64_t, uint64_t>> TensorRange(std::string_view name) const;
  // Counts tensor `name` as completely written: its bytes are already in the reused file (the
  // caller verified them). FAILED_PRECONDITION when the file was not reused or this writer wrote
  // some of the tensor's bytes.
  absl::Status MarkWritten(std::string_view name);

  // Writes all the data of tensor `name`; `data.size()` must equal its byte size and nothing of it
  // may have been written before. INVALID_ARGUMENT / FAILED_PRECONDITION otherwise.
  absl::Status WriteTensor(std::string_view name, std::span<const uint8_t> data);
  // Appends the next chunk of tensor `name`'s data; chunks must not exceed its byte size.
  absl::Status AppendTensorData(std::string_view name, std::span<const uint8_t> chunk);
  // Completes the file. FAILED_PRECONDITION names the first tensor with missing bytes.
  absl::Status Finish();
  // True when every tensor's bytes are on disk (Finish() would succeed but for I/O errors).
  bool AllWritten();
  // True after a successful Finish().
  bool finished();
  // Lowercase hex sha256 of the finished file (Options::sha256); empty otherwise.
  const std::string& sha256() const { return sha256_; }

 private:
  struct Slot {
    uint64_t offset = 0;  // absolute
    uint64_t size = 0;
    uint64_t written = 0;  // bytes reserved by writes (the pwrite may still be running)
    uint64_t done = 0;     // bytes on disk
  };
  class Digester;
  SafetensorsWriter(std::string path, std::string tmp_path, int fd, std::vector<TensorSpec> specs,
                    std::vector<Slot> slots, uint64_t file_size, bool sync, bool keep_partial);
  absl::Status Write(std::string_view name, std::span<const uint8_t> data, bool whole);
  void Abandon();
  // Counts `n` bytes of slot `i` as on disk; feeds the digester when the slot is complete.
  void Done(size_t i, uint64_t n);

  std::string path_;
  std::string tmp_path_;
  int fd_;
  std::vector<TensorSpec> specs_;
  std::vector<Slot> slots_;
  std::unordered_map<std::string, size_t> index_;
  uint64_t file_size_;
  bool sync_;
  bool keep_partial_;  // Options::reuse_partial: keep `<path>.tmp` when abandoned
  bool reused_ = false;
  bool finished_ = false;
  std::mutex mu_;
  absl::Status error_;  // first write error; guarded by mu_
  std::unique_ptr<Digester> digester_;  // Options::sha256
  std::string sha256_;
};

// File name -> sha256 of the finished writers that computed one (Options::sha256); `files[i]` names
// the file of `writers[i]`.
std::map<std::string, std::string> FinishedSha256s(
    const std::vector<std::string>& files,
    const std::vector<std::unique_ptr<SafetensorsWriter>>& writers);

// A tensor with its data, for the one-shot writer.
struct TensorToWrite {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::span<const uint8_t> data;  // numel * itemsize bytes; must outlive the call
};

// Writes a complete safetensors file in the reference order (via SafetensorsWriter).
absl::Status WriteSafetensors(const std::string& path, std::span<const TensorToWrite> tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace nvfp4::formats

#endif  // NVFP4_FORMATS_SAFETENSORS_H_
