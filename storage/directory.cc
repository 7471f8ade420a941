#include "storage/directory.h"

#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <system_error>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "base/sha256.h"
#include "base/status_macros.h"
#include "base/str_util.h"
#include "storage/local_store.h"

namespace nvfp4::storage {
namespace fs = std::filesystem;

namespace {

// Positioned reads of one object with a read-ahead buffer for small reads.
class ObjectSource : public formats::RandomAccessSource {
 public:
  ObjectSource(ObjectStore* store, std::string uri, uint64_t size,
               std::shared_ptr<ObjectStore> owner)
      : store_(store), uri_(std::move(uri)), size_(size), owner_(std::move(owner)) {}

  absl::StatusOr<uint64_t> Size() override { return size_; }

  absl::Status ReadAt(uint64_t offset, std::span<uint8_t> out) override {
    const uint64_t n = out.size();
    if (offset > size_ || n > size_ - offset) {
      return absl::OutOfRangeError(StrCat(uri_, ": read of ", n, " bytes at ", offset,
                                          " is past the end (", size_, " bytes)"));
    }
    if (n == 0) return absl::OkStatus();
    if (n >= StoreInputDirectory::kReadAheadBytes) {
      return store_->ReadAt(uri_, static_cast<int64_t>(offset), static_cast<int64_t>(n),
                            reinterpret_cast<char*>(out.data()));
    }
    absl::MutexLock lock(&mu_);
    if (offset < buffer_offset_ || offset + n > buffer_offset_ + buffer_.size()) {
      const uint64_t len = std::min<uint64_t>(StoreInputDirectory::kReadAheadBytes, size_ - offset);
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
  ObjectStore* store_;
  std::string uri_;
  uint64_t size_;
  std::shared_ptr<ObjectStore> owner_;
  absl::Mutex mu_;
  uint64_t buffer_offset_ ABSL_GUARDED_BY(mu_) = 0;
  std::string buffer_ ABSL_GUARDED_BY(mu_);
};

void StripTrailingSlashes(std::string& s) {
  while (s.size() > 1 && s.back() == '/') s.pop_back();
}

// The regular files below `dir`, relative, '/'-separated (unsorted).
absl::StatusOr<std::vector<std::string>> WalkFiles(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_regular_file(ec)) names.push_back(fs::relative(it->path(), dir).generic_string());
  }
  if (ec) return absl::InternalError(StrCat("listing ", dir, ": ", ec.message()));
  return names;
}

// Upload order: everything else, then the index, then hf_quant_config.json, then config.json.
int UploadRank(const std::string& name) {
  if (name == "config.json") return 3;
  if (name == "hf_quant_config.json") return 2;
  if (absl::EndsWith(name, ".safetensors.index.json")) return 1;
  return 0;
}

// Uploads one staged file to `uri`, hashing it.
absl::StatusOr<PublishedFile> UploadFile(ObjectStore& store, const fs::path& from,
                                         const std::string& name, const std::string& uri,
                                         std::string& buf) {
  PublishedFile f;
  f.name = name;
  f.uri = uri;
  std::ifstream in(from, std::ios::binary);
  if (!in) return absl::InternalError(StrCat("cannot open staged file ", name));
  ASSIGN_OR_RETURN(std::unique_ptr<ObjectWriter> w, store.OpenWrite(f.uri));
  Sha256 sha;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const std::streamsize n = in.gcount();
    if (n <= 0) break;
    sha.Update(buf.data(), static_cast<size_t>(n));
    RETURN_IF_ERROR(w->Append(absl::string_view(buf.data(), static_cast<size_t>(n))));
    f.size += n;
  }
  if (in.bad()) return absl::InternalError("reading staged file " + name);
  RETURN_IF_ERROR(w->Commit());
  f.sha256 = sha.HexDigest();
  return f;
}

// Publishes under `prefix`, in upload order, every file staged in `staging` (uploaded) and every
// file of `handed` (handed over earlier: copied from `handed_prefix` inside the store). A staged
// file wins over a handed-over one of the same name.
absl::Status UploadStaged(ObjectStore& store, const std::string& staging, const std::string& prefix,
                          const std::vector<HandedOverFile>& handed,
                          const std::string& handed_prefix, std::vector<PublishedFile>& published) {
  ASSIGN_OR_RETURN(std::vector<std::string> names, WalkFiles(staging));
  const std::set<std::string> local(names.begin(), names.end());
  std::map<std::string, const HandedOverFile*> remote;
  for (const HandedOverFile& f : handed) {
    if (!local.count(f.name)) {
      remote[f.name] = &f;
      names.push_back(f.name);
    }
  }
  std::sort(names.begin(), names.end(), [](const std::string& a, const std::string& b) {
    const int ra = UploadRank(a), rb = UploadRank(b);
    return ra != rb ? ra < rb : a < b;
  });
  std::string buf;
  for (const std::string& name : names) {
    if (auto it = remote.find(name); it != remote.end()) {
      const std::string uri = JoinUri(prefix, name);
      RETURN_IF_ERROR(store.Copy(JoinUri(handed_prefix, name), uri));
      published.push_back({name, uri, it->second->size, it->second->sha256});
      continue;
    }
    if (buf.empty()) buf.assign(8u << 20, '\0');
    ASSIGN_OR_RETURN(PublishedFile f,
                     UploadFile(store, fs::path(staging) / name, name, JoinUri(prefix, name), buf));
    published.push_back(std::move(f));
  }
  return absl::OkStatus();
}

// Removes every object under `prefix` (best effort: the first error is returned).
absl::Status DeletePrefix(ObjectStore& store, const std::string& prefix) {
  absl::StatusOr<std::vector<ObjectInfo>> list = store.List(prefix);
  if (!list.ok()) return absl::IsNotFound(list.status()) ? absl::OkStatus() : list.status();
  absl::Status first;
  for (const ObjectInfo& o : *list) first.Update(store.Delete(JoinUri(prefix, o.name)));
  return first;
}

// The name of the staging prefix of resume key `key`, inside the output prefix.
std::string HandOverDirName(const std::string& key) { return StrCat(".nvfp4-staging-", key); }

constexpr char kHandOverRecordSuffix[] = ".sha256";

// A fresh `nvfp4-staging-XXXXXX` under `root` (created).
absl::StatusOr<std::string> MakeScratchStaging(const fs::path& root) {
  std::error_code ec;
  fs::create_directories(root, ec);
  std::string tmpl = (root / "nvfp4-staging-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return absl::InternalError(StrCat("cannot create a staging directory under ", root.string(),
                                      ": ", std::strerror(errno)));
  }
  return tmpl;
}

fs::path ScratchRoot(const std::string& scratch_root) {
  std::error_code ec;
  return scratch_root.empty() ? fs::temp_directory_path(ec) : fs::path(scratch_root);
}

// ALREADY_EXISTS when `prefix` holds objects (unless `overwrite`); a missing prefix is empty.
// Objects below `ignore/` (a name inside the prefix; "" = none) do not count.
absl::Status CheckEmptyPrefix(ObjectStore& store, const std::string& prefix, bool overwrite,
                              const std::string& ignore = "") {
  absl::StatusOr<std::vector<ObjectInfo>> existing = store.List(prefix);
  if (existing.ok() && !ignore.empty()) {
    std::erase_if(*existing,
                  [&](const ObjectInfo& o) { return absl::StartsWith(o.name, ignore + "/"); });
  }
  if (existing.ok() && !existing->empty() && !overwrite) {
    return absl::AlreadyExistsError(StrCat(prefix, ": already holds ", existing->size(),
                                           " object(s) (e.g. '", (*existing)[0].name,
                                           "'); choose another output or overwrite"));
  }
  if (!existing.ok() && !absl::IsNotFound(existing.status())) return existing.status();
  return absl::OkStatus();
}

std::string ToFileUri(const std::string& path_or_uri) {
  if (absl::StartsWith(path_or_uri, "file://")) return path_or_uri;
  std::error_code ec;
  return "file://" + fs::absolute(path_or_uri, ec).lexically_normal().string();
}

std::string StripFileScheme(const std::string& p) {
  return absl::StartsWith(p, "file://") ? p.substr(7) : p;
}

absl::Status S3NotConfigured(const std::string& uri) {
  return absl::FailedPreconditionError(
      StrCat("'", uri,
             "': S3 is not configured (give an endpoint: --s3-endpoint / --s3_endpoint or "
             "AWS_ENDPOINT_URL, and credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"));
}

// Where `uri` lives: the store, the URI to give it and the name to describe it by.
struct Location {
  ObjectStore* store = nullptr;
  std::string uri;
  std::string name;  // "" for the directories' defaults
};

absl::StatusOr<Location> Locate(const std::string& uri, StorageRouter& router, bool output) {
  if (uri.empty())
    return absl::InvalidArgumentError(output ? "empty output location" : "empty input location");
  if (IsObjectStoreUri(uri)) {
    ASSIGN_OR_RETURN(StorageUri parsed, ParseStorageUri(uri));
    if (output && parsed.path.empty()) {
      return absl::InvalidArgumentError(
          StrCat("output '", uri, "': give a prefix inside the bucket (s3://bucket/prefix)"));
    }
    if (router.s3() == nullptr) return S3NotConfigured(uri);
    return Location{router.s3(), uri, ""};
  }
  if (absl::StrContains(uri, "://") && !absl::StartsWith(uri, "file://")) {
    return absl::InvalidArgumentError(
        StrCat("unsupported location '", uri, "': expected a path, file://... or s3://..."));
  }
  if (router.local() != nullptr) return Location{router.local(), ToFileUri(uri), ""};
  // No data roots: any local path, described as written.
  std::string name = StripFileScheme(uri);
  StripTrailingSlashes(name);
  return Location{&LocalObjectStore::Unconfined(), ToFileUri(uri), std::move(name)};
}

absl::StatusOr<std::unique_ptr<InputDirectory>> OpenInput(const std::string& uri,
                                                          StorageRouter& router,
                                                          std::shared_ptr<ObjectStore> owner) {
  ASSIGN_OR_RETURN(Location loc, Locate(uri, router, /*output=*/false));
  ASSIGN_OR_RETURN(auto dir, StoreInputDirectory::Open(loc.store, std::move(loc.uri),
                                                       std::move(loc.name), std::move(owner)));
  return std::unique_ptr<InputDirectory>(std::move(dir));
}

absl::StatusOr<std::unique_ptr<StagedOutputDirectory>> OpenOutput(
    const std::string& uri, StorageRouter& router, bool overwrite, const std::string& scratch_root,
    std::shared_ptr<ObjectStore> owner) {
  ASSIGN_OR_RETURN(Location loc, Locate(uri, router, /*output=*/true));
  return StagedOutputDirectory::Open(loc.store, std::move(loc.uri),
                                     {overwrite, scratch_root, std::move(loc.name)},
                                     std::move(owner));
}

}  // namespace

// ---- InputDirectory ----

absl::StatusOr<std::string> InputDirectory::ReadSmallFile(const std::string& name,
                                                          uint64_t max_bytes) {
  ASSIGN_OR_RETURN(std::unique_ptr<formats::RandomAccessSource> src, OpenFile(name));
  ASSIGN_OR_RETURN(uint64_t size, src->Size());
  if (size > max_bytes) {
    return absl::InvalidArgumentError(
        StrCat(src->Describe(), ": ", size, " bytes, more than the ", max_bytes, " expected"));
  }
  std::string text(size, '\0');
  RETURN_IF_ERROR(
      src->ReadAt(0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(text.data()), text.size())));
  return text;
}

absl::StatusOr<std::unique_ptr<StoreInputDirectory>> StoreInputDirectory::Open(
    ObjectStore* store, std::string prefix_uri, std::string name,
    std::shared_ptr<ObjectStore> owner) {
  StripTrailingSlashes(prefix_uri);
  if (name.empty()) name = prefix_uri;
  ASSIGN_OR_RETURN(std::optional<std::string> local, store->LocalPath(prefix_uri));
  if (local.has_value()) {  // a directory: it must exist; it may be empty
    std::error_code ec;
    if (!fs::exists(*local, ec)) return absl::NotFoundError(StrCat(name, ": no such directory"));
    if (!fs::is_directory(*local, ec)) {
      return absl::FailedPreconditionError(StrCat(name, ": not a directory"));
    }
  }
  ASSIGN_OR_RETURN(std::vector<ObjectInfo> list, store->List(prefix_uri));
  if (list.empty() && !local.has_value()) {
    return absl::NotFoundError(StrCat(prefix_uri, ": no such directory (no objects)"));
  }
  std::map<std::string, int64_t> files;
  for (ObjectInfo& o : list) files.emplace(std::move(o.name), o.size);
  return std::unique_ptr<StoreInputDirectory>(
      new StoreInputDirectory(store, std::move(prefix_uri), std::move(name), local.has_value(),
                              std::move(owner), std::move(files)));
}

absl::StatusOr<std::vector<std::string>> StoreInputDirectory::ListFiles() {
  std::vector<std::string> names;
  names.reserve(files_.size());
  for (const auto& [name, size] : files_) names.push_back(name);
  return names;  // std::map keeps them sorted
}

absl::StatusOr<std::unique_ptr<formats::RandomAccessSource>> StoreInputDirectory::OpenFile(
    const std::string& name) {
  auto it = files_.find(name);
  if (it == files_.end()) {
    return absl::NotFoundError(StrCat(JoinUri(prefix_, name), ": not found"));
  }
  const std::string uri = JoinUri(prefix_, name);
  if (local_) return OpenStoreFile(*store_, uri, owner_);
  return std::unique_ptr<formats::RandomAccessSource>(
      std::make_unique<ObjectSource>(store_, uri, static_cast<uint64_t>(it->second), owner_));
}

bool StoreInputDirectory::Exists(const std::string& name) { return files_.count(name) > 0; }

absl::StatusOr<std::unique_ptr<formats::RandomAccessSource>> OpenStoreFile(
    ObjectStore& store, const std::string& uri, std::shared_ptr<ObjectStore> owner) {
  ASSIGN_OR_RETURN(std::optional<std::string> local, store.LocalPath(uri));
  if (local.has_value()) {
    ASSIGN_OR_RETURN(auto src, formats::LocalFileSource::Open(*local));
    return std::unique_ptr<formats::RandomAccessSource>(std::move(src));
  }
  ASSIGN_OR_RETURN(int64_t size, store.Size(uri));
  return std::unique_ptr<formats::RandomAccessSource>(
      std::make_unique<ObjectSource>(&store, uri, static_cast<uint64_t>(size), std::move(owner)));
}

// ---- OutputDirectory ----

absl::Status OutputDirectory::SetResumeKey(const std::string& /*key*/) {
  return absl::UnimplementedError(StrCat(Describe(), ": this output cannot resume a run"));
}

absl::Status ValidateResumeKey(const std::string& key) {
  bool ok = !key.empty() && key.size() <= 128 && key[0] != '.';
  for (char c : key) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '.' || c == '_' || c == '-');
  }
  if (!ok) return absl::InvalidArgumentError(StrCat("invalid resume key '", key, "'"));
  return absl::OkStatus();
}

// ---- StagedOutputDirectory ----

absl::StatusOr<std::unique_ptr<StagedOutputDirectory>> StagedOutputDirectory::Open(
    ObjectStore* store, std::string uri, Options options, std::shared_ptr<ObjectStore> owner) {
  if (uri.empty()) return absl::InvalidArgumentError("empty output location");
  StripTrailingSlashes(uri);
  ASSIGN_OR_RETURN(std::optional<std::string> local, store->LocalPath(uri));
  return std::unique_ptr<StagedOutputDirectory>(new StagedOutputDirectory(
      store, std::move(uri), std::move(local), std::move(options), std::move(owner)));
}

StagedOutputDirectory::StagedOutputDirectory(ObjectStore* store, std::string uri,
                                             std::optional<std::string> local, Options options,
                                             std::shared_ptr<ObjectStore> owner)
    : store_(store),
      uri_(std::move(uri)),
      local_(std::move(local)),
      options_(std::move(options)),
      owner_(std::move(owner)) {
  name_ = !options_.name.empty() ? options_.name : local_.has_value() ? *local_ : uri_;
}

StagedOutputDirectory::~StagedOutputDirectory() { Abort(); }

absl::StatusOr<std::string> StagedOutputDirectory::Begin() {
  if (!staging_.empty()) return absl::FailedPreconditionError("output already begun");
  return local_.has_value() ? BeginLocal() : BeginUpload();
}

absl::StatusOr<std::string> StagedOutputDirectory::BeginLocal() {
  std::error_code ec;
  const fs::path target(*local_);
  if (fs::exists(target, ec)) {
    if (!fs::is_directory(target, ec)) {
      return absl::AlreadyExistsError(StrCat(name_, ": exists and is not a directory"));
    }
    if (!options_.overwrite && !fs::is_empty(target, ec)) {
      return absl::AlreadyExistsError(
          StrCat(name_, ": exists and is not empty (choose another output or remove it)"));
    }
  }
  const fs::path parent = target.parent_path();
  if (!fs::is_directory(parent, ec)) {
    return absl::NotFoundError(StrCat(parent.string(), ": parent of the output does not exist"));
  }
  if (!resume_key_.empty()) {  // reused when an interrupted run left it
    const std::string staging = KeptStagingPath();
    fs::create_directory(staging, ec);
    if (ec || !fs::is_directory(staging, ec)) {
      return absl::PermissionDeniedError(
          StrCat(staging, ": cannot create staging directory: ", ec.message()));
    }
    staging_ = staging;
    return staging_;
  }
  static std::atomic<int> counter{0};
  for (int attempt = 0; attempt < 100; ++attempt) {
    const fs::path staging =
        parent / StrCat(".", target.filename().string(), ".tmp-", static_cast<int64_t>(getpid()),
                        "-", counter.fetch_add(1));
    if (fs::create_directory(staging, ec)) {
      staging_ = staging.string();
      return staging_;
    }
    if (ec) {
      return absl::PermissionDeniedError(
          StrCat(staging.string(), ": cannot create staging directory: ", ec.message()));
    }
  }
  return absl::InternalError(StrCat(name_, ": cannot find a free staging directory name"));
}

absl::StatusOr<std::string> StagedOutputDirectory::BeginUpload() {
  RETURN_IF_ERROR(CheckEmptyPrefix(*store_, uri_, options_.overwrite,
                                   resume_key_.empty() ? "" : HandOverDirName(resume_key_)));
  published_.clear();
  if (resume_key_.empty()) {
    ASSIGN_OR_RETURN(staging_, MakeScratchStaging(ScratchRoot(options_.scratch_root)));
    return staging_;
  }
  // Reused when an interrupted run left it.
  const std::string staging = KeptStagingPath();
  std::error_code ec;
  fs::create_directories(staging, ec);
  if (ec || !fs::is_directory(staging, ec)) {
    return absl::InternalError(
        StrCat("cannot create a staging directory ", staging, ": ", ec.message()));
  }
  staging_ = staging;
  return staging_;
}

absl::Status StagedOutputDirectory::Commit() {
  if (staging_.empty()) {
    return absl::FailedPreconditionError(local_.has_value() ? "Commit() without Begin()"
                                                            : "output not begun");
  }
  if (local_.has_value()) return CommitLocal();
  absl::Status status;
  std::vector<HandedOverFile> handed;
  if (HandsOver()) {
    absl::StatusOr<std::vector<HandedOverFile>> h = HandedOver();
    if (h.ok()) handed = *std::move(h);
    status = h.status();
  }
  if (status.ok()) {
    status = UploadStaged(*store_, staging_, uri_, handed, HandsOver() ? StagingPrefix() : "",
                          published_);
  }
  // Published: the handed-over files are no longer needed.
  if (status.ok() && HandsOver()) status = DeletePrefix(*store_, StagingPrefix());
  std::error_code ec;
  fs::remove_all(staging_, ec);
  staging_.clear();
  return status;
}

absl::Status StagedOutputDirectory::CommitLocal() {
  std::error_code ec;
  const fs::path target(*local_);
  fs::path old;
  if (fs::exists(target, ec)) {
    if (fs::is_directory(target, ec) && fs::is_empty(target, ec)) {
      fs::remove(target, ec);
    } else if (options_.overwrite) {
      old = fs::path(staging_ + ".old");
      fs::rename(target, old, ec);
      if (ec) return absl::InternalError(StrCat(name_, ": cannot move aside: ", ec.message()));
    } else {
      return absl::AlreadyExistsError(
          StrCat(name_, ": appeared while writing; output kept in ", staging_));
    }
  }
  fs::rename(staging_, target, ec);
  if (ec) {
    if (!old.empty()) fs::rename(old, target, ec);
    return absl::InternalError(
        StrCat("cannot rename ", staging_, " to ", name_, ": ", ec.message()));
  }
  staging_.clear();
  if (!old.empty()) fs::remove_all(old, ec);
  return absl::OkStatus();
}

void StagedOutputDirectory::Abort() {
  if (staging_.empty()) return;
  std::error_code ec;
  if (resume_key_.empty()) fs::remove_all(staging_, ec);  // a resumable one is kept
  staging_.clear();
}

absl::Status StagedOutputDirectory::SetResumeKey(const std::string& key) {
  if (!staging_.empty()) return absl::FailedPreconditionError("SetResumeKey() after Begin()");
  RETURN_IF_ERROR(ValidateResumeKey(key));
  resume_key_ = key;
  return absl::OkStatus();
}

std::string StagedOutputDirectory::KeptStagingPath() const {
  if (!local_.has_value()) return (ScratchRoot(options_.scratch_root) / resume_key_).string();
  const fs::path target(*local_);
  return (target.parent_path() / StrCat(".", target.filename().string(), ".resume-", resume_key_))
      .string();
}

void StagedOutputDirectory::Discard() {
  if (resume_key_.empty()) return Abort();
  std::error_code ec;
  fs::remove_all(KeptStagingPath(), ec);
  staging_.clear();
  if (HandsOver()) (void)DeletePrefix(*store_, StagingPrefix());  // best effort
}

std::string StagedOutputDirectory::StagingPrefix() const {
  return JoinUri(uri_, HandOverDirName(resume_key_));
}

absl::Status StagedOutputDirectory::HandOver(const std::string& name, const std::string& tag) {
  if (!HandsOver()) return absl::OkStatus();
  if (staging_.empty()) return absl::FailedPreconditionError("HandOver() before Begin()");
  for (char c : tag) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c))) {
      return absl::InvalidArgumentError(
          StrCat("hand-over tag '", tag, "': letters and digits only"));
    }
  }
  const fs::path from = fs::path(staging_) / name;
  std::string buf(8u << 20, '\0');
  ASSIGN_OR_RETURN(PublishedFile f,
                   UploadFile(*store_, from, name, JoinUri(StagingPrefix(), name), buf));
  // The record last: a file without one is not handed over (a crash between the two).
  RETURN_IF_ERROR(store_->WriteAll(JoinUri(StagingPrefix(), name + kHandOverRecordSuffix),
                                   StrCat(f.sha256, " ", f.size, " ", tag, "\n")));
  std::error_code ec;
  fs::remove(from, ec);
  if (ec) return absl::InternalError(StrCat("cannot remove ", from.string(), ": ", ec.message()));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<HandedOverFile>> OutputDirectory::HandedOver() {
  return std::vector<HandedOverFile>{};
}

absl::Status OutputDirectory::HandOver(const std::string& /*name*/, const std::string& /*tag*/) {
  return absl::OkStatus();
}

absl::Status OutputDirectory::DropHandedOver(const std::string& /*name*/) {
  return absl::OkStatus();
}

absl::Status StagedOutputDirectory::DropHandedOver(const std::string& name) {
  if (!HandsOver()) return absl::OkStatus();
  RETURN_IF_ERROR(store_->Delete(JoinUri(StagingPrefix(), name + kHandOverRecordSuffix)));
  return store_->Delete(JoinUri(StagingPrefix(), name));
}

absl::StatusOr<std::vector<HandedOverFile>> StagedOutputDirectory::HandedOver() {
  std::vector<HandedOverFile> out;
  if (!HandsOver()) return out;
  const std::string prefix = StagingPrefix();
  absl::StatusOr<std::vector<ObjectInfo>> list = store_->List(prefix);
  if (absl::IsNotFound(list.status())) return out;
  RETURN_IF_ERROR(list.status());
  std::map<std::string, int64_t> sizes;
  for (const ObjectInfo& o : *list) sizes[o.name] = o.size;
  for (const auto& [record, record_size] : sizes) {
    if (!absl::EndsWith(record, kHandOverRecordSuffix) || record_size > 4096) continue;
    const std::string name = record.substr(0, record.size() - strlen(kHandOverRecordSuffix));
    ASSIGN_OR_RETURN(std::string text, store_->ReadAll(JoinUri(prefix, record)));
    std::vector<std::string> fields =
        absl::StrSplit(absl::StripAsciiWhitespace(text), ' ', absl::SkipEmpty());
    HandedOverFile f;
    f.name = name;
    auto it = sizes.find(name);
    if (fields.size() < 2 || fields.size() > 3 || !absl::SimpleAtoi(fields[1], &f.size) ||
        it == sizes.end() || it->second != f.size) {
      continue;  // not (completely) handed over
    }
    f.sha256 = fields[0];
    if (fields.size() == 3) f.tag = fields[2];
    out.push_back(std::move(f));
  }
  return out;
}

// ---- SharedOutputDirectory ----

absl::StatusOr<std::unique_ptr<SharedOutputDirectory>> SharedOutputDirectory::Open(
    ObjectStore* store, std::string uri, Options options, std::shared_ptr<ObjectStore> owner) {
  if (uri.empty()) return absl::InvalidArgumentError("empty output location");
  StripTrailingSlashes(uri);
  ASSIGN_OR_RETURN(std::optional<std::string> local, store->LocalPath(uri));
  if (!local.has_value()) {
    ASSIGN_OR_RETURN(
        std::unique_ptr<StagedOutputDirectory> upload,
        StagedOutputDirectory::Open(store, std::move(uri),
                                    {/*overwrite=*/true, options.scratch_root, options.name},
                                    std::move(owner)));
    return std::unique_ptr<SharedOutputDirectory>(new SharedOutputDirectory(std::move(upload)));
  }
  if (options.name.empty()) options.name = *local;
  return std::unique_ptr<SharedOutputDirectory>(
      new SharedOutputDirectory(std::move(*local), std::move(options)));
}

SharedOutputDirectory::~SharedOutputDirectory() { Abort(); }

std::string SharedOutputDirectory::Describe() const {
  return upload_ != nullptr ? upload_->Describe() : options_.name;
}

bool SharedOutputDirectory::PublishesByRename() const { return upload_ == nullptr; }

absl::StatusOr<std::string> SharedOutputDirectory::Begin() {
  if (upload_ != nullptr) return upload_->Begin();
  if (!staging_.empty()) return absl::FailedPreconditionError("Begin() called twice");
  static std::atomic<int> counter{0};
  const fs::path target(local_);
  std::error_code ec;
  if (fs::exists(target, ec) && !fs::is_directory(target, ec)) {
    return absl::FailedPreconditionError(StrCat(options_.name, ": exists and is not a directory"));
  }
  fs::create_directories(target.parent_path(), ec);
  if (ec) {
    return absl::InternalError(
        StrCat(target.parent_path().string(), ": cannot create: ", ec.message()));
  }
  char host[64] = {0};
  if (::gethostname(host, sizeof(host) - 1) != 0) std::snprintf(host, sizeof(host), "host");
  const fs::path staging =
      target.parent_path() / StrCat(".", target.filename().string(), ".part-", host, "-",
                                    static_cast<int64_t>(::getpid()), "-", counter.fetch_add(1));
  fs::remove_all(staging, ec);
  if (!fs::create_directory(staging, ec) || ec) {
    return absl::InternalError(StrCat(staging.string(), ": cannot create: ", ec.message()));
  }
  staging_ = staging.string();
  return staging_;
}

absl::Status SharedOutputDirectory::Commit() {
  if (upload_ != nullptr) return upload_->Commit();
  if (staging_.empty()) return absl::FailedPreconditionError("Commit() without Begin()");
  std::error_code ec;
  fs::create_directories(local_, ec);
  if (ec) return absl::InternalError(StrCat(options_.name, ": cannot create: ", ec.message()));
  absl::StatusOr<std::vector<std::string>> files = WalkFiles(staging_);
  if (!files.ok()) return files.status();
  const std::vector<std::string>& last = options_.publish_last;
  auto rank = [&](const std::string& f) {
    auto it = std::find(last.begin(), last.end(), f);
    return it == last.end() ? -1 : static_cast<int>(it - last.begin());
  };
  std::sort(files->begin(), files->end(), [&](const std::string& a, const std::string& b) {
    return std::make_pair(rank(a), a) < std::make_pair(rank(b), b);
  });
  for (const std::string& f : *files) {
    const fs::path from = fs::path(staging_) / f, to = fs::path(local_) / f;
    fs::create_directories(to.parent_path(), ec);
    if (ec) {
      return absl::InternalError(
          StrCat(to.parent_path().string(), ": cannot create: ", ec.message()));
    }
    if (std::rename(from.c_str(), to.c_str()) != 0) {
      return absl::InternalError(
          StrCat("cannot rename ", from.string(), " to ", to.string(), ": ", std::strerror(errno)));
    }
  }
  fs::remove_all(staging_, ec);
  staging_.clear();
  return absl::OkStatus();
}

void SharedOutputDirectory::Abort() {
  if (upload_ != nullptr) return upload_->Abort();
  if (staging_.empty()) return;
  std::error_code ec;
  fs::remove_all(staging_, ec);
  staging_.clear();
}

// ---- locations ----

bool IsObjectStoreUri(const std::string& uri) { return absl::StartsWith(uri, "s3://"); }

absl::StatusOr<std::unique_ptr<InputDirectory>> OpenInputDirectory(const std::string& uri,
                                                                   StorageRouter& store) {
  return OpenInput(uri, store, nullptr);
}

absl::StatusOr<std::unique_ptr<StagedOutputDirectory>> OpenOutputDirectory(
    const std::string& uri, StorageRouter& store, bool overwrite, const std::string& scratch_root) {
  return OpenOutput(uri, store, overwrite, scratch_root, nullptr);
}

absl::StatusOr<std::unique_ptr<SharedOutputDirectory>> OpenSharedOutputDirectory(
    const std::string& uri, StorageRouter& store, const std::string& scratch_root) {
  ASSIGN_OR_RETURN(Location loc, Locate(uri, store, /*output=*/true));
  SharedOutputDirectory::Options options;
  options.scratch_root = scratch_root;
  options.name = std::move(loc.name);
  return SharedOutputDirectory::Open(loc.store, std::move(loc.uri), std::move(options));
}

absl::StatusOr<std::unique_ptr<formats::RandomAccessSource>> OpenObjectFile(const std::string& uri,
                                                                            StorageRouter& store) {
  ASSIGN_OR_RETURN(Location loc, Locate(uri, store, /*output=*/false));
  return OpenStoreFile(*loc.store, loc.uri);
}

absl::StatusOr<std::unique_ptr<InputDirectory>> OpenInputDirectory(const std::string& uri,
                                                                   const StoreConfig& config) {
  ASSIGN_OR_RETURN(std::shared_ptr<StorageRouter> router, MakeStorageRouter(config));
  return OpenInput(uri, *router, router);
}

absl::StatusOr<std::unique_ptr<StagedOutputDirectory>> OpenOutputDirectory(
    const std::string& uri, const StoreConfig& config, bool overwrite,
    const std::string& scratch_root) {
  ASSIGN_OR_RETURN(std::shared_ptr<StorageRouter> router, MakeStorageRouter(config));
  return OpenOutput(uri, *router, overwrite, scratch_root, router);
}

absl::StatusOr<std::unique_ptr<InputDirectory>> OpenLocalInputDirectory(const std::string& path) {
  StorageRouter none(nullptr, nullptr);
  return OpenInput(path, none, nullptr);
}

absl::StatusOr<std::unique_ptr<StagedOutputDirectory>> OpenLocalOutputDirectory(
    const std::string& path, bool overwrite) {
  StorageRouter none(nullptr, nullptr);
  return OpenOutput(path, none, overwrite, "", nullptr);
}

// ---- copying ----

absl::Status CopyFileToLocal(InputDirectory& in, const std::string& name, const std::string& dest) {
  ASSIGN_OR_RETURN(std::unique_ptr<formats::RandomAccessSource> src, in.OpenFile(name));
  ASSIGN_OR_RETURN(uint64_t size, src->Size());
  std::error_code ec;
  fs::create_directories(fs::path(dest).parent_path(), ec);
  errno = 0;
  std::ofstream out(dest, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(StrCat(dest, ": cannot create"));
  // errno tells why a write failed (e.g. ENOSPC: "No space left on device").
  auto write_failed = [&dest] {
    return absl::InternalError(
        StrCat(dest, ": write failed: ", errno != 0 ? std::strerror(errno) : "stream error"));
  };
  std::vector<uint8_t> buf(std::min<uint64_t>(size, 8u << 20));
  for (uint64_t off = 0; off < size;) {
    const uint64_t n = std::min<uint64_t>(buf.size(), size - off);
    RETURN_IF_ERROR(src->ReadAt(off, std::span<uint8_t>(buf.data(), n)));
    out.write(reinterpret_cast<const char*>(buf.data()), static_cast<std::streamsize>(n));
    if (!out) return write_failed();
    off += n;
  }
  out.close();
  if (!out) return write_failed();
  return absl::OkStatus();
}

}  // namespace nvfp4::storage
