#include "formats/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <map>
#include <set>
#include <thread>
#include <utility>

#include "absl/strings/str_join.h"
#include "base/errno_status.h"
#include "base/fd_io.h"
#include "base/sha256.h"
#include "base/status_macros.h"
#include "base/str_util.h"
#include "formats/dtypes.h"
#include "formats/json_util.h"
#include "nlohmann/json.hpp"

namespace nvfp4::formats {
namespace {

using Json = nlohmann::json;

std::string ShapeString(const std::vector<int64_t>& shape) {
  return StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::Status TensorError(std::string_view file, std::string_view tensor, std::string_view what) {
  return absl::InvalidArgumentError(StrCat(file, ": tensor '", tensor, "': ", what));
}

// Product of `shape` times `item_size` with overflow checks; nullopt on overflow.
std::optional<uint64_t> CheckedByteSize(const std::vector<int64_t>& shape, uint64_t item_size) {
  uint64_t bytes = item_size;
  for (int64_t d : shape) {
    if (d < 0) return std::nullopt;
    if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(d), &bytes)) return std::nullopt;
  }
  return bytes;
}

// Parses one header entry's value. Errors name the file and tensor.
absl::StatusOr<TensorInfo> ParseEntry(std::string_view file, const std::string& name,
                                      const Json& value, uint64_t* begin, uint64_t* end) {
  if (!value.is_object()) {
    return TensorError(file, name,
                       StrCat("entry must be an object with dtype, shape and "
                              "data_offsets, got ",
                              value.type_name()));
  }
  for (const auto& [key, unused] : value.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      return TensorError(
          file, name,
          StrCat("unexpected key '", key, "' (an entry has only dtype, shape and data_offsets)"));
    }
  }
  TensorInfo info;
  info.name = name;

  auto dtype_it = value.find("dtype");
  if (dtype_it == value.end()) return TensorError(file, name, "missing 'dtype'");
  if (!dtype_it->is_string()) return TensorError(file, name, "'dtype' must be a string");
  info.dtype = dtype_it->get<std::string>();
  const std::optional<int> item_size = SafetensorsDTypeSize(info.dtype);
  if (!item_size) {
    return TensorError(file, name,
                       StrCat("unknown dtype '", info.dtype,
                              "' (known: BF16 F16 F32 F64 U8 I8 F8_E4M3 F8_E5M2 I16 U16 I32 "
                              "U32 I64 U64 BOOL)"));
  }

  auto shape_it = value.find("shape");
  if (shape_it == value.end()) return TensorError(file, name, "missing 'shape'");
  if (!shape_it->is_array()) return TensorError(file, name, "'shape' must be an array");
  for (size_t i = 0; i < shape_it->size(); ++i) {
    const Json& d = (*shape_it)[i];
    if (d.is_number_integer() && !d.is_number_unsigned()) {
      return TensorError(file, name,
                         StrCat("shape dimension ", i, " is negative (", d.get<int64_t>(), ")"));
    }
    if (!d.is_number_unsigned()) {
      return TensorError(
          file, name, StrCat("shape dimension ", i, " is not a non-negative integer: ", d.dump()));
    }
    const uint64_t v = d.get<uint64_t>();
    if (v > static_cast<uint64_t>(INT64_MAX)) {
      return TensorError(file, name, StrCat("shape dimension ", i, " is too large: ", v));
    }
    info.shape.push_back(static_cast<int64_t>(v));
  }

  auto offsets_it = value.find("data_offsets");
  if (offsets_it == value.end()) return TensorError(file, name, "missing 'data_offsets'");
  if (!offsets_it->is_array() || offsets_it->size() != 2 ||
      !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned()) {
    return TensorError(file, name,
                       StrCat("'data_offsets' must be [begin, end] with non-negative "
                              "integers, got ",
                              offsets_it->dump()));
  }
  *begin = (*offsets_it)[0].get<uint64_t>();
  *end = (*offsets_it)[1].get<uint64_t>();
  if (*end < *begin) {
    return TensorError(file, name,
                       StrCat("data_offsets [", *begin, ", ", *end, "] end before begin"));
  }

  const std::optional<uint64_t> bytes = CheckedByteSize(info.shape, *item_size);
  if (!bytes) {
    return TensorError(file, name,
                       StrCat("shape ", ShapeString(info.shape), " overflows 64-bit size"));
  }
  if (*end - *begin != *bytes) {
    return TensorError(file, name,
                       StrCat("shape ", ShapeString(info.shape), " of ", info.dtype, " needs ",
                              *bytes, " bytes but data_offsets [", *begin, ", ", *end, "] span ",
                              *end - *begin, " bytes"));
  }
  info.size = *bytes;
  return info;
}

// "<what> <path>: <strerror(errno)>" (base/errno_status.h).
absl::Status ErrnoError(std::string_view what, const std::string& path) {
  return ErrnoToStatus(errno, StrCat(what, " ", path));
}

absl::Status PWriteAll(int fd, std::span<const uint8_t> data, uint64_t offset,
                       const std::string& path) {
  return ::nvfp4::PWriteAll(fd, data, offset, StrCat("cannot write ", path));
}

// Reads exactly out.size() bytes at `offset`; false on an error or a short file.
bool PReadAll(int fd, std::span<uint8_t> out, uint64_t offset) {
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n =
        ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// Opens `tmp_path` (or a finished `path`, moved back to `tmp_path`) when it holds exactly
// `header` and is `file_size` bytes long: the partial file of an interrupted write. -1 otherwise.
int OpenPartial(const std::string& path, const std::string& tmp_path, const std::string& header,
                uint64_t file_size) {
  struct stat st;
  if (::stat(tmp_path.c_str(), &st) != 0 && ::stat(path.c_str(), &st) == 0 &&
      std::rename(path.c_str(), tmp_path.c_str()) != 0) {
    return -1;
  }
  const int fd = ::open(tmp_path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return -1;
  std::vector<uint8_t> head(header.size());
  if (::fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) != file_size ||
      !PReadAll(fd, head, 0) || std::memcmp(head.data(), header.data(), header.size()) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

int64_t TensorInfo::numel() const {
  // A zero dimension first: [2^62, 2, 0] is a valid empty tensor whose partial product overflows.
  for (int64_t d : shape) {
    if (d == 0) return 0;
  }
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // <= size (bytes), which the reader checked against the file
  return n;
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::string_view json, uint64_t file_size,
                                                         std::string_view file) {
  SafetensorsHeader header;
  header.header_size = json.size();
  if (json.size() > kMaxHeaderSize) {
    return absl::InvalidArgumentError(StrCat(file, ": header length ", json.size(),
                                             " exceeds the limit of ", kMaxHeaderSize, " bytes"));
  }
  if (file_size < 8 || json.size() > file_size - 8) {
    return absl::InvalidArgumentError(StrCat(file, ": header length ", json.size(),
                                             " extends past the end of the file (", file_size,
                                             " bytes)"));
  }
  if (json.empty() || json[0] != '{') {
    return absl::InvalidArgumentError(
        StrCat(file, ": header is not a JSON object (it must start with '{')"));
  }
  ASSIGN_OR_RETURN(Json root, ParseJsonRejectingDuplicates(json, file, /*tensor_name_depth=*/1));
  if (!root.is_object()) {
    return absl::InvalidArgumentError(
        StrCat(file, ": header is a JSON ", root.type_name(), ", not an object"));
  }

  struct Placed {
    uint64_t begin;
    uint64_t end;
    TensorInfo info;
  };
  std::vector<Placed> placed;
  placed.reserve(root.size());
  for (const auto& [key, value] : root.items()) {
    if (key == kMetadataKey) {
      if (!value.is_object()) {
        return absl::InvalidArgumentError(
            StrCat(file, ": __metadata__ must be an object of strings, got ", value.type_name()));
      }
      for (const auto& [mkey, mvalue] : value.items()) {
        if (!mvalue.is_string()) {
          return absl::InvalidArgumentError(StrCat(file, ": __metadata__ value of '", mkey,
                                                   "' must be a string, got ", mvalue.type_name()));
        }
        header.metadata[mkey] = mvalue.get<std::string>();
      }
      continue;
    }
    Placed p;
    ASSIGN_OR_RETURN(p.info, ParseEntry(file, key, value, &p.begin, &p.end));
    placed.push_back(std::move(p));
  }

  const uint64_t data_start = 8 + json.size();
  const uint64_t buffer_size = file_size - data_start;
  for (const Placed& p : placed) {
    if (p.end > buffer_size) {
      return TensorError(
          file, p.info.name,
          StrCat("data_offsets [", p.begin, ", ", p.end, "] out of range: the data buffer has ",
                 buffer_size, " bytes (file truncated?)"));
    }
  }
  std::stable_sort(placed.begin(), placed.end(), [](const Placed& a, const Placed& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected = 0;
  const Placed* previous = nullptr;
  for (const Placed& p : placed) {
    if (p.begin < expected) {
      return TensorError(
          file, p.info.name,
          StrCat("data_offsets [", p.begin, ", ", p.end, "] overlap tensor '", previous->info.name,
                 "' [", previous->begin, ", ", previous->end, "]"));
    }
    if (p.begin > expected) {
      if (previous == nullptr) {
        return TensorError(file, p.info.name,
                           StrCat("data_offsets do not start at 0: the first tensor begins "
                                  "at ",
                                  p.begin));
      }
      return TensorError(
          file, p.info.name,
          StrCat("gap of ", p.begin - expected, " bytes before data_offsets [", p.begin, ", ",
                 p.end, "] (previous tensor '", previous->info.name, "' ends at ", expected, ")"));
    }
    expected = p.end;
    previous = &p;
  }
  if (expected != buffer_size) {
    return absl::InvalidArgumentError(StrCat(
        file, ": ", buffer_size - expected, " trailing bytes after the last tensor (tensors cover ",
        expected, " bytes of a ", buffer_size, "-byte data buffer)"));
  }
  header.tensors.reserve(placed.size());
  for (Placed& p : placed) {
    p.info.offset = data_start + p.begin;
    header.tensors.push_back(std::move(p.info));
  }
  return header;
}

absl::StatusOr<std::unique_ptr<SafetensorsReader>> SafetensorsReader::Open(
    const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<LocalFileSource> source, LocalFileSource::Open(path));
  return Open(std::move(source));
}

absl::StatusOr<std::unique_ptr<SafetensorsReader>> SafetensorsReader::Open(
    std::unique_ptr<RandomAccessSource> source) {
  const std::string name = source->Describe();
  ASSIGN_OR_RETURN(const uint64_t file_size, source->Size());
  if (file_size < 8) {
    return absl::InvalidArgumentError(
        StrCat(name, ": file is ", file_size, " bytes, too short for the 8-byte header length"));
  }
  uint8_t prefix[8];
  RETURN_IF_ERROR(source->ReadAt(0, prefix));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | prefix[i];
  if (n > kMaxHeaderSize) {
    return absl::InvalidArgumentError(
        StrCat(name, ": header length ", n, " exceeds the limit of ", kMaxHeaderSize, " bytes"));
  }
  if (n > file_size - 8) {
    return absl::InvalidArgumentError(StrCat(name, ": header length ", n,
                                             " extends past the end of the file (", file_size,
                                             " bytes; truncated?)"));
  }
  std::string json(n, '\0');
  RETURN_IF_ERROR(
      source->ReadAt(8, std::span<uint8_t>(reinterpret_cast<uint8_t*>(json.data()), json.size())));
  ASSIGN_OR_RETURN(SafetensorsHeader header, ParseSafetensorsHeader(json, file_size, name));
  return std::unique_ptr<SafetensorsReader>(
      new SafetensorsReader(std::move(source), std::move(header)));
}

SafetensorsReader::SafetensorsReader(std::unique_ptr<RandomAccessSource> source,
                                     SafetensorsHeader header)
    : source_(std::move(source)), header_(std::move(header)), name_(source_->Describe()) {
  for (size_t i = 0; i < header_.tensors.size(); ++i) by_name_[header_.tensors[i].name] = i;
}

const TensorInfo* SafetensorsReader::Find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &header_.tensors[it->second];
}

absl::Status SafetensorsReader::ReadTensor(const TensorInfo& info, std::span<uint8_t> out) const {
  if (out.size() != info.size) {
    return absl::InvalidArgumentError(StrCat(name_, ": tensor '", info.name, "' has ", info.size,
                                             " bytes but the buffer has ", out.size()));
  }
  return ReadTensorRange(info, 0, out);
}

absl::StatusOr<std::vector<uint8_t>> SafetensorsReader::ReadTensor(const TensorInfo& info) const {
  std::vector<uint8_t> bytes(info.size);
  RETURN_IF_ERROR(ReadTensorRange(info, 0, bytes));
  return bytes;
}

absl::StatusOr<std::vector<uint8_t>> SafetensorsReader::ReadTensor(std::string_view name) const {
  const TensorInfo* info = Find(name);
  if (info == nullptr) {
    return absl::NotFoundError(StrCat(name_, ": no tensor named '", name, "'"));
  }
  return ReadTensor(*info);
}

absl::Status SafetensorsReader::ReadTensorRange(const TensorInfo& info, uint64_t offset,
                                                std::span<uint8_t> out) const {
  if (offset > info.size || out.size() > info.size - offset) {
    return absl::OutOfRangeError(StrCat(name_, ": tensor '", info.name, "': read of ", out.size(),
                                        " bytes at ", offset, " exceeds its ", info.size,
                                        " bytes"));
  }
  return source_->ReadAt(info.offset + offset, out);
}

absl::StatusOr<uint64_t> TensorByteSize(const TensorSpec& spec) {
  const std::optional<int> item_size = SafetensorsDTypeSize(spec.dtype);
  if (!item_size) {
    return absl::InvalidArgumentError(
        StrCat("tensor '", spec.name, "': unknown dtype '", spec.dtype, "'"));
  }
  for (int64_t d : spec.shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(StrCat("tensor '", spec.name, "': shape ",
                                               ShapeString(spec.shape),
                                               " has a negative dimension"));
    }
  }
  const std::optional<uint64_t> bytes = CheckedByteSize(spec.shape, *item_size);
  if (!bytes) {
    return absl::InvalidArgumentError(StrCat("tensor '", spec.name, "': shape ",
                                             ShapeString(spec.shape), " overflows 64-bit size"));
  }
  return *bytes;
}

namespace {

// Position of a dtype in the reference implementation's `Dtype` enum, which is declared in
// increasing alignment order; its writer sorts by this rank, descending, then by name.
int ReferenceDTypeRank(std::string_view dtype) {
  static constexpr std::string_view kOrder[] = {
      "BOOL", "F4",  "F6_E2M3", "F6_E3M2", "U8",  "I8",  "F8_E5M2", "F8_E4M3", "F8_E8M0", "I16",
      "U16",  "F16", "BF16",    "I32",     "U32", "F32", "F64",     "I64",     "U64"};
  for (size_t i = 0; i < std::size(kOrder); ++i) {
    if (kOrder[i] == dtype) return static_cast<int>(i);
  }
  return -1;
}

}  // namespace

void SortForWriting(std::vector<TensorSpec>& specs) {
  std::stable_sort(specs.begin(), specs.end(), [](const TensorSpec& a, const TensorSpec& b) {
    const int ra = ReferenceDTypeRank(a.dtype);
    const int rb = ReferenceDTypeRank(b.dtype);
    return ra != rb ? ra > rb : a.name < b.name;
  });
}

namespace {

// Offsets of `specs` in the data buffer, validating every spec.
absl::StatusOr<std::vector<std::pair<uint64_t, uint64_t>>> LayOut(
    std::span<const TensorSpec> specs) {
  std::vector<std::pair<uint64_t, uint64_t>> offsets;
  offsets.reserve(specs.size());
  std::set<std::string_view> names;
  uint64_t at = 0;
  for (const TensorSpec& spec : specs) {
    if (spec.name.empty()) return absl::InvalidArgumentError("a tensor has an empty name");
    if (spec.name == kMetadataKey) {
      return absl::InvalidArgumentError("a tensor cannot be named __metadata__");
    }
    if (!names.insert(spec.name).second) {
      return absl::InvalidArgumentError(StrCat("duplicate tensor name '", spec.name, "'"));
    }
    ASSIGN_OR_RETURN(const uint64_t size, TensorByteSize(spec));
    uint64_t end;
    if (__builtin_add_overflow(at, size, &end)) {
      return absl::InvalidArgumentError("total tensor size overflows 64 bits");
    }
    offsets.emplace_back(at, end);
    at = end;
  }
  return offsets;
}

}  // namespace

absl::StatusOr<std::string> BuildSafetensorsHeader(
    std::span<const TensorSpec> specs, const std::map<std::string, std::string>& metadata) {
  ASSIGN_OR_RETURN(auto offsets, LayOut(specs));
  nlohmann::ordered_json root = nlohmann::ordered_json::object();
  nlohmann::ordered_json meta = nlohmann::ordered_json::object();
  meta["format"] = "pt";
  for (const auto& [k, v] : metadata) meta[k] = v;
  root[std::string(kMetadataKey)] = std::move(meta);
  for (size_t i = 0; i < specs.size(); ++i) {
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = specs[i].dtype;
    entry["shape"] = specs[i].shape;
    entry["data_offsets"] = {offsets[i].first, offsets[i].second};
    root[specs[i].name] = std::move(entry);
  }
  std::string json;
  try {
    json = root.dump();
  } catch (const nlohmann::json::exception& e) {  // a name or metadata that is not valid UTF-8
    return absl::InvalidArgumentError(StrCat("cannot serialize header: ", e.what()));
  }
  json.append((8 - json.size() % 8) % 8, ' ');
  if (json.size() > kMaxHeaderSize) {
    return absl::InvalidArgumentError(
        StrCat("header of ", json.size(), " bytes exceeds the limit of ", kMaxHeaderSize));
  }
  std::string out(8, '\0');
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  out += json;
  return out;
}

// Hashes a file front to back while it is written in any order: Ready(begin, end) says that the
// bytes [begin, end) are on disk; a thread hashes from its cursor whenever the run starting there is
// ready, reading it back with pread (from the page cache: the bytes were just written).
class SafetensorsWriter::Digester {
 public:
  Digester(int fd, uint64_t size, std::string path)
      : fd_(fd), size_(size), path_(std::move(path)), thread_([this] { Run(); }) {}
  ~Digester() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void Ready(uint64_t begin, uint64_t end) {
    if (end <= begin) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ready_[begin] = end;
    }
    cv_.notify_all();
  }
  // Waits until the whole file is hashed: its hex digest, or the read error.
  absl::StatusOr<std::string> Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return finished_; });
    if (!status_.ok()) return status_;
    return hex_;
  }

 private:
  void Run() {
    Sha256 sha;
    std::vector<uint8_t> buf;  // sized per run, freed while idle: a writer per output file waits
    uint64_t cursor = 0;
    std::unique_lock<std::mutex> lock(mu_);
    while (cursor < size_) {
      auto it = ready_.find(cursor);
      if (it == ready_.end()) {
        if (stop_) break;
        cv_.wait(lock);
        continue;
      }
      const uint64_t end = it->second;
      ready_.erase(it);
      lock.unlock();
      buf.resize(std::min<uint64_t>(end - cursor, 1u << 20));
      absl::Status s;
      for (uint64_t at = cursor; at < end;) {
        const ssize_t r = ::pread(fd_, buf.data(), std::min<uint64_t>(buf.size(), end - at),
                                  static_cast<off_t>(at));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
          s = r < 0 ? ErrnoError("cannot read back", path_)
                    : absl::DataLossError(StrCat(path_, ": short read at ", at));
          break;
        }
        sha.Update(buf.data(), static_cast<size_t>(r));
        at += static_cast<uint64_t>(r);
      }
      buf.clear();
      buf.shrink_to_fit();
      lock.lock();
      if (!s.ok()) {
        status_ = s;
        break;
      }
      cursor = end;
    }
    if (status_.ok()) {
      if (cursor == size_) {
        hex_ = sha.HexDigest();
      } else {
        status_ = absl::CancelledError(StrCat(path_, ": digest stopped"));
      }
    }
    finished_ = true;
    cv_.notify_all();
  }

  const int fd_;
  const uint64_t size_;
  const std::string path_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, uint64_t> ready_;  // begin -> end of runs on disk, not yet hashed
  bool stop_ = false;
  bool finished_ = false;
  absl::Status status_;
  std::string hex_;
  std::thread thread_;  // last: starts once the members above exist
};

absl::StatusOr<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::Create(
    const std::string& path, std::vector<TensorSpec> specs) {
  return Create(path, std::move(specs), Options());
}

absl::StatusOr<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::Create(
    const std::string& path, std::vector<TensorSpec> specs, Options options) {
  if (options.sort) SortForWriting(specs);
  auto header_or = BuildSafetensorsHeader(specs, options.metadata);
  if (!header_or.ok()) {
    return absl::InvalidArgumentError(StrCat(path, ": ", header_or.status().message()));
  }
  const std::string& header = *header_or;
  ASSIGN_OR_RETURN(auto offsets, LayOut(specs));
  std::vector<Slot> slots;
  slots.reserve(specs.size());
  for (const auto& [begin, end] : offsets) {
    slots.push_back(Slot{header.size() + begin, end - begin, 0});
  }
  const uint64_t file_size = header.size() + (offsets.empty() ? 0 : offsets.back().second);

  const std::string tmp_path = path + ".tmp";
  const int partial_fd =
      options.reuse_partial ? OpenPartial(path, tmp_path, header, file_size) : -1;
  const int fd = partial_fd >= 0
                     ? partial_fd
                     : ::open(tmp_path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return ErrnoToStatus(errno, StrCat("cannot create ", tmp_path));
  }
  std::unique_ptr<SafetensorsWriter> writer(
      new SafetensorsWriter(path, tmp_path, fd, std::move(specs), std::move(slots), file_size,
                            options.sync, options.reuse_partial));
  if (options.sha256) writer->digester_ = std::make_unique<Digester>(fd, file_size, tmp_path);
  if (partial_fd >= 0) {
    writer->reused_ = true;
  } else {
    const auto* header_bytes = reinterpret_cast<const uint8_t*>(header.data());
    RETURN_IF_ERROR(PWriteAll(fd, {header_bytes, header.size()}, 0, tmp_path));
    // Size the file now: an all-empty file and sparse extents are then both correct.
    if (::ftruncate(fd, static_cast<off_t>(file_size)) != 0) {
      return ErrnoError("cannot size", tmp_path);
    }
  }
  if (writer->digester_ != nullptr) writer->digester_->Ready(0, header.size());
  return writer;
}

SafetensorsWriter::SafetensorsWriter(std::string path, std::string tmp_path, int fd,
                                     std::vector<TensorSpec> specs, std::vector<Slot> slots,
                                     uint64_t file_size, bool sync, bool keep_partial)
    : path_(std::move(path)),
      tmp_path_(std::move(tmp_path)),
      fd_(fd),
      specs_(std::move(specs)),
      slots_(std::move(slots)),
      file_size_(file_size),
      sync_(sync),
      keep_partial_(keep_partial) {
  for (size_t i = 0; i < specs_.size(); ++i) index_[specs_[i].name] = i;
}

SafetensorsWriter::~SafetensorsWriter() {
  if (!finished_) Abandon();
}

void SafetensorsWriter::Abandon() {
  digester_.reset();  // stops its reads of fd_
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (!keep_partial_) ::unlink(tmp_path_.c_str());
}

absl::StatusOr<std::pair<uint64_t, uint64_t>> SafetensorsWriter::TensorRange(
    std::string_view name) const {
  auto it = index_.find(std::string(name));
  if (it == index_.end()) {
    return absl::NotFoundError(StrCat(path_, ": tensor '", name, "' was not declared"));
  }
  return std::make_pair(slots_[it->second].offset, slots_[it->second].size);
}

absl::Status SafetensorsWriter::MarkWritten(std::string_view name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = index_.find(std::string(name));
  if (it == index_.end()) {
    return absl::InvalidArgumentError(
        StrCat(path_, ": tensor '", name, "' was not declared when the writer was created"));
  }
  if (!reused_) {
    return absl::FailedPreconditionError(
        StrCat(path_, ": MarkWritten('", name, "') but no partial file was reused"));
  }
  Slot& slot = slots_[it->second];
  if (slot.written != 0) {
    return absl::FailedPreconditionError(
        StrCat(path_, ": tensor '", name, "' already has bytes written"));
  }
  slot.written = slot.size;
  slot.done = slot.size;
  if (digester_ != nullptr) digester_->Ready(slot.offset, slot.offset + slot.size);
  return absl::OkStatus();
}

void SafetensorsWriter::Done(size_t i, uint64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  Slot& slot = slots_[i];
  slot.done += n;
  if (slot.done == slot.size && digester_ != nullptr) {
    digester_->Ready(slot.offset, slot.offset + slot.size);
  }
}

absl::Status SafetensorsWriter::WriteTensor(std::string_view name, std::span<const uint8_t> data) {
  return Write(name, data, /*whole=*/true);
}

absl::Status SafetensorsWriter::AppendTensorData(std::string_view name,
                                                 std::span<const uint8_t> chunk) {
  return Write(name, chunk, /*whole=*/false);
}

absl::Status SafetensorsWriter::Write(std::string_view name, std::span<const uint8_t> data,
                                      bool whole) {
  uint64_t at = 0;
  size_t index = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) {
      return absl::FailedPreconditionError(StrCat(path_, ": write after Finish()"));
    }
    if (!error_.ok()) return error_;
    auto it = index_.find(std::string(name));
    if (it == index_.end()) {
      return absl::InvalidArgumentError(
          StrCat(path_, ": tensor '", name, "' was not declared when the writer was created"));
    }
    index = it->second;
    Slot& slot = slots_[index];
    if (whole && slot.written != 0) {
      return absl::FailedPreconditionError(
          StrCat(path_, ": tensor '", name, "' was already written"));
    }
    if (whole && data.size() != slot.size) {
      return absl::InvalidArgumentError(
          StrCat(path_, ": tensor '", name, "' needs ", slot.size, " bytes, got ", data.size()));
    }
    if (data.size() > slot.size - slot.written) {
      return absl::InvalidArgumentError(StrCat(path_, ": tensor '", name, "': ", data.size(),
                                               " more bytes exceed its ", slot.size, " bytes (",
                                               slot.written, " already written)"));
    }
    at = slot.offset + slot.written;
    slot.written += data.size();  // reserve the range; the write below is outside the lock
  }
  absl::Status status = PWriteAll(fd_, data, at, tmp_path_);
  if (!status.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    if (error_.ok()) error_ = status;
    return status;
  }
  Done(index, data.size());
  return status;
}

bool SafetensorsWriter::AllWritten() {
  std::lock_guard<std::mutex> lock(mu_);
  for (const Slot& s : slots_) {
    if (s.done != s.size) return false;
  }
  return true;
}

bool SafetensorsWriter::finished() {
  std::lock_guard<std::mutex> lock(mu_);
  return finished_;
}

absl::Status SafetensorsWriter::Finish() {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) return absl::FailedPreconditionError(StrCat(path_, ": Finish() twice"));
  if (!error_.ok()) return error_;
  for (size_t i = 0; i < specs_.size(); ++i) {
    if (slots_[i].done != slots_[i].size) {  // on disk, not only reserved by a running write
      return absl::FailedPreconditionError(StrCat(path_, ": tensor '", specs_[i].name, "' has ",
                                                  slots_[i].done, " of ", slots_[i].size,
                                                  " bytes written"));
    }
  }
  if (digester_ != nullptr) {
    absl::StatusOr<std::string> hex = digester_->Wait();
    digester_.reset();
    if (!hex.ok()) return hex.status();
    sha256_ = *std::move(hex);
  }
  if (sync_ && ::fdatasync(fd_) != 0) return ErrnoError("cannot sync", tmp_path_);
  if (::close(fd_) != 0) {
    fd_ = -1;
    return ErrnoError("cannot close", tmp_path_);
  }
  fd_ = -1;
  if (std::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    return ErrnoError(StrCat("cannot rename ", tmp_path_, " to"), path_);
  }
  finished_ = true;
  return absl::OkStatus();
}

std::map<std::string, std::string> FinishedSha256s(
    const std::vector<std::string>& files,
    const std::vector<std::unique_ptr<SafetensorsWriter>>& writers) {
  std::map<std::string, std::string> out;
  for (size_t i = 0; i < writers.size() && i < files.size(); ++i) {
    if (!writers[i]->sha256().empty()) out[files[i]] = writers[i]->sha256();
  }
  return out;
}

absl::Status WriteSafetensors(const std::string& path, std::span<const TensorToWrite> tensors,
                              const std::map<std::string, std::string>& metadata) {
  std::vector<TensorSpec> specs;
  specs.reserve(tensors.size());
  for (const TensorToWrite& t : tensors) specs.push_back({t.name, t.dtype, t.shape});
  SafetensorsWriter::Options options;
  options.metadata = metadata;
  ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsWriter> writer,
                   SafetensorsWriter::Create(path, std::move(specs), std::move(options)));
  for (const TensorToWrite& t : tensors) RETURN_IF_ERROR(writer->WriteTensor(t.name, t.data));
  return writer->Finish();
}

}  // namespace nvfp4::formats
