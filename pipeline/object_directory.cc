#include "pipeline/object_directory.h"

#include <stdlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/sha256.h"
#include "base/status_macros.h"
#include "storage/local_store.h"

namespace nvfp4::pipeline {
namespace fs = std::filesystem;

namespace {

// Positioned reads of one object with a read-ahead buffer for small reads.
class ObjectSource : public formats::RandomAccessSource {
 public:
  ObjectSource(storage::ObjectStore* store, std::string uri, uint64_t size,
               std::shared_ptr<storage::ObjectStore> owner)
      : store_(store), uri_(std::move(uri)), size_(size), owner_(std::move(owner)) {}

  absl::StatusOr<uint64_t> Size() override { return size_; }

  absl::Status ReadAt(uint64_t offset, std::span<uint8_t> out) override {
    const uint64_t n = out.size();
    if (offset > size_ || n > size_ - offset) {
      return absl::OutOfRangeError(absl::StrCat(uri_, ": read of ", n, " bytes at ", offset,
                                                " is past the end (", size_, " bytes)"));
    }
    if (n == 0) return absl::OkStatus();
    if (n >= ObjectInputDirectory::kReadAheadBytes) {
      return store_->ReadAt(uri_, static_cast<int64_t>(offset), static_cast<int64_t>(n),
                            reinterpret_cast<char*>(out.data()));
    }
    absl::MutexLock lock(&mu_);
    if (offset < buffer_offset_ || offset + n > buffer_offset_ + buffer_.size()) {
      const uint64_t len = std::min<uint64_t>(ObjectInputDirectory::kReadAheadBytes, size_ - offset);
      buffer_.resize(len);
      buffer_offset_ = offset;
      if (absl::Status s = store_->ReadAt(uri_, static_cast<int64_t>(offset),
                                          static_cast<int64_t>(len), buffer_.data());
          !s.ok()) {
        buffer_.clear();
        return s;
      }
    }
    std::memcpy(out.data(), buffer_.data() + (offset - buffer_offset_), n);
    return absl::OkStatus();
  }

  std::string Describe() override { return uri_; }

 private:
  storage::ObjectStore* store_;
  std::string uri_;
  uint64_t size_;
  std::shared_ptr<storage::ObjectStore> owner_;
  absl::Mutex mu_;
  uint64_t buffer_offset_ ABSL_GUARDED_BY(mu_) = 0;
  std::string buffer_ ABSL_GUARDED_BY(mu_);
};

// Upload order: everything else, then the index, then hf_quant_config.json, then config.json.
int UploadRank(const std::string& name) {
  if (name == "config.json") return 3;
  if (name == "hf_quant_config.json") return 2;
  if (absl::EndsWith(name, ".safetensors.index.json")) return 1;
  return 0;
}

std::string ToFileUri(const std::string& path_or_uri) {
  if (absl::StartsWith(path_or_uri, "file://")) return path_or_uri;
  std::error_code ec;
  return "file://" + fs::absolute(path_or_uri, ec).lexically_normal().string();
}

std::string StripFileScheme(const std::string& p) {
  return absl::StartsWith(p, "file://") ? p.substr(7) : p;
}

absl::StatusOr<std::unique_ptr<InputDirectory>> OpenInput(
    const std::string& uri, storage::StorageRouter& store,
    std::shared_ptr<storage::ObjectStore> owner) {
  if (uri.empty()) return absl::InvalidArgumentError("empty input location");
  if (IsObjectStoreUri(uri)) {
    RETURN_IF_ERROR(storage::ParseStorageUri(uri).status());
    if (store.s3() == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "'", uri, "': S3 is not configured (give an endpoint: --s3-endpoint / --s3_endpoint or "
          "AWS_ENDPOINT_URL, and credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"));
    }
    ASSIGN_OR_RETURN(auto dir, ObjectInputDirectory::Open(store.s3(), uri, std::move(owner)));
    return std::unique_ptr<InputDirectory>(std::move(dir));
  }
  if (absl::StrContains(uri, "://") && !absl::StartsWith(uri, "file://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported location '", uri, "': expected a path, file://... or s3://..."));
  }
  if (store.local() != nullptr) {
    ASSIGN_OR_RETURN(auto dir,
                     ObjectInputDirectory::Open(store.local(), ToFileUri(uri), std::move(owner)));
    return std::unique_ptr<InputDirectory>(std::move(dir));
  }
  ASSIGN_OR_RETURN(auto dir, LocalInputDirectory::Open(StripFileScheme(uri)));
  return std::unique_ptr<InputDirectory>(std::move(dir));
}

absl::StatusOr<std::unique_ptr<OutputDirectory>> OpenOutput(
    const std::string& uri, storage::StorageRouter& store, bool overwrite,
    const std::string& scratch_root, std::shared_ptr<storage::ObjectStore> owner) {
  if (uri.empty()) return absl::InvalidArgumentError("empty output location");
  if (IsObjectStoreUri(uri)) {
    ASSIGN_OR_RETURN(storage::StorageUri parsed, storage::ParseStorageUri(uri));
    if (parsed.path.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("output '", uri, "': give a prefix inside the bucket (s3://bucket/prefix)"));
    }
    if (store.s3() == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "'", uri, "': S3 is not configured (give an endpoint: --s3-endpoint / --s3_endpoint or "
          "AWS_ENDPOINT_URL, and credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"));
    }
    return std::unique_ptr<OutputDirectory>(std::make_unique<ObjectOutputDirectory>(
        store.s3(), uri, scratch_root, overwrite, std::move(owner)));
  }
  if (absl::StrContains(uri, "://") && !absl::StartsWith(uri, "file://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported location '", uri, "': expected a path, file://... or s3://..."));
  }
  std::string path = StripFileScheme(uri);
  if (store.local() != nullptr) {
    auto* local = dynamic_cast<storage::LocalObjectStore*>(store.local());
    if (local == nullptr) {
      return absl::InternalError("the local store of this router is not a LocalObjectStore");
    }
    ASSIGN_OR_RETURN(fs::path resolved, local->Resolve(ToFileUri(uri)));
    path = resolved.string();
  }
  return std::unique_ptr<OutputDirectory>(
      std::make_unique<LocalOutputDirectory>(std::move(path), overwrite));
}

}  // namespace

bool IsObjectStoreUri(const std::string& uri) { return absl::StartsWith(uri, "s3://"); }

// ---- ObjectInputDirectory ----

absl::StatusOr<std::unique_ptr<ObjectInputDirectory>> ObjectInputDirectory::Open(
    storage::ObjectStore* store, std::string prefix_uri,
    std::shared_ptr<storage::ObjectStore> owner) {
  while (prefix_uri.size() > 1 && prefix_uri.back() == '/') prefix_uri.pop_back();
  ASSIGN_OR_RETURN(std::vector<storage::ObjectInfo> list, store->List(prefix_uri));
  if (list.empty()) {
    return absl::NotFoundError(absl::StrCat(prefix_uri, ": no such directory (no objects)"));
  }
  std::map<std::string, int64_t> files;
  for (storage::ObjectInfo& o : list) files.emplace(std::move(o.name), o.size);
  return std::unique_ptr<ObjectInputDirectory>(
      new ObjectInputDirectory(store, std::move(prefix_uri), std::move(owner), std::move(files)));
}

absl::StatusOr<std::vector<std::string>> ObjectInputDirectory::ListFiles() {
  std::vector<std::string> names;
  names.reserve(files_.size());
  for (const auto& [name, size] : files_) names.push_back(name);
  return names;  // std::map keeps them sorted
}

absl::StatusOr<std::unique_ptr<formats::RandomAccessSource>> ObjectInputDirectory::OpenFile(
    const std::string& name) {
  auto it = files_.find(name);
  if (it == files_.end()) {
    return absl::NotFoundError(absl::StrCat(storage::JoinUri(prefix_, name), ": not found"));
  }
  return std::unique_ptr<formats::RandomAccessSource>(std::make_unique<ObjectSource>(
      store_, storage::JoinUri(prefix_, name), static_cast<uint64_t>(it->second), owner_));
}

bool ObjectInputDirectory::Exists(const std::string& name) { return files_.count(name) > 0; }

// ---- ObjectOutputDirectory ----

ObjectOutputDirectory::ObjectOutputDirectory(storage::ObjectStore* store, std::string prefix_uri,
                                             std::string scratch_root, bool overwrite,
                                             std::shared_ptr<storage::ObjectStore> owner)
    : store_(store),
      prefix_(std::move(prefix_uri)),
      scratch_root_(std::move(scratch_root)),
      overwrite_(overwrite),
      owner_(std::move(owner)) {
  while (prefix_.size() > 1 && prefix_.back() == '/') prefix_.pop_back();
}

ObjectOutputDirectory::~ObjectOutputDirectory() { Abort(); }

absl::StatusOr<std::string> ObjectOutputDirectory::Begin() {
  if (!staging_.empty()) return absl::FailedPreconditionError("output already begun");
  absl::StatusOr<std::vector<storage::ObjectInfo>> existing = store_->List(prefix_);
  if (existing.ok() && !existing->empty() && !overwrite_) {
    return absl::AlreadyExistsError(
        absl::StrCat(prefix_, ": already holds ", existing->size(), " object(s) (e.g. '",
                     (*existing)[0].name, "'); choose another output or overwrite"));
  }
  if (!existing.ok() && !absl::IsNotFound(existing.status())) return existing.status();
  std::error_code ec;
  fs::path root = ScratchRoot();
  fs::create_directories(root, ec);
  published_.clear();
  if (!resume_key_.empty()) {  // reused when an interrupted run left it
    const fs::path staging = root / resume_key_;
    fs::create_directories(staging, ec);
    if (ec || !fs::is_directory(staging, ec)) {
      return absl::InternalError(
          absl::StrCat("cannot create a staging directory ", staging.string(), ": ", ec.message()));
    }
    staging_ = staging.string();
    return staging_;
  }
  std::string tmpl = (root / "nvfp4-staging-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return absl::InternalError(
        absl::StrCat("cannot create a staging directory under ", root.string(), ": ",
                     std::strerror(errno)));
  }
  staging_ = tmpl;
  published_.clear();
  return staging_;
}

absl::Status ObjectOutputDirectory::Commit() {
  if (staging_.empty()) return absl::FailedPreconditionError("output not begun");
  std::vector<std::string> names;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(staging_, ec), end; !ec && it != end;
       it.increment(ec)) {
    if (it->is_regular_file(ec)) names.push_back(fs::relative(it->path(), staging_).generic_string());
  }
  if (ec) {
    Abort();
    return absl::InternalError(absl::StrCat("listing ", staging_, ": ", ec.message()));
  }
  std::sort(names.begin(), names.end(), [](const std::string& a, const std::string& b) {
    const int ra = UploadRank(a), rb = UploadRank(b);
    return ra != rb ? ra < rb : a < b;
  });
  std::string buf(8u << 20, '\0');
  absl::Status status;
  for (const std::string& name : names) {
    PublishedFile f;
    f.name = name;
    f.uri = storage::JoinUri(prefix_, name);
    std::ifstream in(fs::path(staging_) / name, std::ios::binary);
    if (!in) {
      status = absl::InternalError(absl::StrCat("cannot open staged file ", name));
      break;
    }
    absl::StatusOr<std::unique_ptr<storage::ObjectWriter>> w = store_->OpenWrite(f.uri);
    if (!w.ok()) {
      status = w.status();
      break;
    }
    Sha256 sha;
    while (status.ok() && in) {
      in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      const std::streamsize n = in.gcount();
      if (n <= 0) break;
      sha.Update(buf.data(), static_cast<size_t>(n));
      status = (*w)->Append(absl::string_view(buf.data(), static_cast<size_t>(n)));
      f.size += n;
    }
    if (status.ok() && in.bad()) status = absl::InternalError("reading staged file " + name);
    if (status.ok()) status = (*w)->Commit();
    if (!status.ok()) break;
    f.sha256 = sha.HexDigest();
    published_.push_back(std::move(f));
  }
  RemoveStaging();
  return status;
}

void ObjectOutputDirectory::Abort() {
  if (!resume_key_.empty()) {  // a resumable staging directory is kept
    staging_.clear();
    return;
  }
  RemoveStaging();
}

void ObjectOutputDirectory::RemoveStaging() {
  if (staging_.empty()) return;
  std::error_code ec;
  fs::remove_all(staging_, ec);
  staging_.clear();
}

std::string ObjectOutputDirectory::ScratchRoot() const {
  std::error_code ec;
  return scratch_root_.empty() ? fs::temp_directory_path(ec).string() : scratch_root_;
}

absl::Status ObjectOutputDirectory::SetResumeKey(const std::string& key) {
  if (!staging_.empty()) return absl::FailedPreconditionError("SetResumeKey() after Begin()");
  if (absl::Status s = ValidateResumeKey(key); !s.ok()) return s;
  resume_key_ = key;
  return absl::OkStatus();
}

void ObjectOutputDirectory::Discard() {
  if (resume_key_.empty()) return Abort();
  std::error_code ec;
  fs::remove_all(fs::path(ScratchRoot()) / resume_key_, ec);
  staging_.clear();
}

// ---- factories ----

absl::StatusOr<std::unique_ptr<InputDirectory>> OpenInputDirectory(const std::string& uri,
                                                                   storage::StorageRouter& store) {
  return OpenInput(uri, store, nullptr);
}

absl::StatusOr<std::unique_ptr<OutputDirectory>> OpenOutputDirectory(
    const std::string& uri, storage::StorageRouter& store, bool overwrite,
    const std::string& scratch_root) {
  return OpenOutput(uri, store, overwrite, scratch_root, nullptr);
}

absl::StatusOr<std::unique_ptr<InputDirectory>> OpenInputDirectory(
    const std::string& uri, const storage::StoreConfig& config) {
  ASSIGN_OR_RETURN(std::shared_ptr<storage::StorageRouter> router,
                   storage::MakeStorageRouter(config));
  return OpenInput(uri, *router, router);
}

absl::StatusOr<std::unique_ptr<OutputDirectory>> OpenOutputDirectory(
    const std::string& uri, const storage::StoreConfig& config, bool overwrite,
    const std::string& scratch_root) {
  ASSIGN_OR_RETURN(std::shared_ptr<storage::StorageRouter> router,
                   storage::MakeStorageRouter(config));
  return OpenOutput(uri, *router, overwrite, scratch_root, router);
}

absl::StatusOr<std::unique_ptr<formats::RandomAccessSource>> OpenObjectFile(
    const std::string& uri, storage::StorageRouter& store) {
  if (!IsObjectStoreUri(uri) && store.local() == nullptr) {
    ASSIGN_OR_RETURN(auto src, formats::LocalFileSource::Open(StripFileScheme(uri)));
    return std::unique_ptr<formats::RandomAccessSource>(std::move(src));
  }
  const std::string full = IsObjectStoreUri(uri) ? uri : ToFileUri(uri);
  ASSIGN_OR_RETURN(int64_t size, store.Size(full));
  return std::unique_ptr<formats::RandomAccessSource>(
      std::make_unique<ObjectSource>(&store, full, static_cast<uint64_t>(size), nullptr));
}

}  // namespace nvfp4::pipeline
