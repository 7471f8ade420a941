#include "storage/memory_store.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace nvfp4::storage {

class MemoryObjectStore::Writer : public ObjectWriter {
 public:
  Writer(MemoryObjectStore* store, std::string key) : store_(store), key_(std::move(key)) {}

  absl::Status Append(absl::string_view data) override {
    if (closed_) return absl::FailedPreconditionError("writer is closed");
    data_.append(data.data(), data.size());
    return absl::OkStatus();
  }
  absl::Status Commit() override {
    if (closed_) return absl::FailedPreconditionError("writer is closed");
    closed_ = true;
    store_->Publish(key_, std::move(data_));
    return absl::OkStatus();
  }
  void Abort() override {
    closed_ = true;
    data_.clear();
  }
  int64_t bytes_written() const override { return static_cast<int64_t>(data_.size()); }

 private:
  MemoryObjectStore* store_;
  std::string key_;
  std::string data_;
  bool closed_ = false;
};

absl::StatusOr<std::string> MemoryObjectStore::Key(absl::string_view uri) {
  ASSIGN_OR_RETURN(StorageUri parsed, ParseStorageUri(uri));
  (void)parsed;
  while (!uri.empty() && uri.back() == '/') uri.remove_suffix(1);
  return std::string(uri);
}

void MemoryObjectStore::Publish(const std::string& key, std::string data) {
  absl::MutexLock lock(&mu_);
  objects_[key] = std::move(data);
}

absl::StatusOr<int64_t> MemoryObjectStore::Size(absl::string_view uri) {
  ASSIGN_OR_RETURN(std::string key, Key(uri));
  absl::MutexLock lock(&mu_);
  auto it = objects_.find(key);
  if (it == objects_.end()) return absl::NotFoundError(absl::StrCat("'", uri, "' not found"));
  return static_cast<int64_t>(it->second.size());
}

absl::Status MemoryObjectStore::ReadAt(absl::string_view uri, int64_t offset, int64_t length,
                                       char* dst) {
  ASSIGN_OR_RETURN(std::string key, Key(uri));
  absl::MutexLock lock(&mu_);
  auto it = objects_.find(key);
  if (it == objects_.end()) return absl::NotFoundError(absl::StrCat("'", uri, "' not found"));
  const int64_t size = static_cast<int64_t>(it->second.size());
  if (offset < 0 || length < 0 || offset > size || length > size - offset) {
    return absl::OutOfRangeError(absl::StrCat("'", uri, "': read of ", length, " bytes at ", offset,
                                              " past the end (", size, " bytes)"));
  }
  it->second.copy(dst, static_cast<size_t>(length), static_cast<size_t>(offset));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ObjectInfo>> MemoryObjectStore::List(absl::string_view prefix_uri) {
  ASSIGN_OR_RETURN(std::string key, Key(prefix_uri));
  const std::string prefix = key + "/";
  std::vector<ObjectInfo> out;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = objects_.lower_bound(prefix);
         it != objects_.end() && absl::StartsWith(it->first, prefix); ++it) {
      out.push_back({it->first.substr(prefix.size()), static_cast<int64_t>(it->second.size())});
    }
  }
  if (out.empty() && absl::StartsWith(key, "file://")) {
    return absl::NotFoundError(absl::StrCat("'", prefix_uri, "': no such directory"));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<ObjectWriter>> MemoryObjectStore::OpenWrite(absl::string_view uri) {
  ASSIGN_OR_RETURN(std::string key, Key(uri));
  return std::unique_ptr<ObjectWriter>(new Writer(this, std::move(key)));
}

size_t MemoryObjectStore::object_count() const {
  absl::MutexLock lock(&mu_);
  return objects_.size();
}

absl::Status MemoryObjectStore::Delete(absl::string_view uri) {
  ASSIGN_OR_RETURN(std::string key, Key(uri));
  absl::MutexLock lock(&mu_);
  objects_.erase(key);
  return absl::OkStatus();
}

}  // namespace nvfp4::storage
