#include "storage/object_store.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace nvfp4::storage {

absl::StatusOr<StorageUri> ParseStorageUri(absl::string_view uri) {
  StorageUri out;
  if (absl::StartsWith(uri, "file://")) {
    out.scheme = StorageUri::Scheme::kFile;
    out.path = std::string(uri.substr(7));
    if (out.path.empty())
      return absl::InvalidArgumentError(absl::StrCat("empty file URI '", uri, "'"));
    return out;
  }
  if (absl::StartsWith(uri, "s3://")) {
    out.scheme = StorageUri::Scheme::kS3;
    absl::string_view rest = uri.substr(5);
    size_t slash = rest.find('/');
    out.bucket = std::string(rest.substr(0, slash));
    if (slash != absl::string_view::npos) out.path = std::string(rest.substr(slash + 1));
    if (out.bucket.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("S3 URI '", uri, "' has no bucket"));
    }
    return out;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported URI '", uri, "': expected file://... or s3://bucket/prefix"));
}

std::string JoinUri(absl::string_view base, absl::string_view name) {
  while (!base.empty() && base.back() == '/') base.remove_suffix(1);
  while (!name.empty() && name.front() == '/') name.remove_prefix(1);
  return absl::StrCat(base, "/", name);
}

absl::StatusOr<std::string> ObjectStore::ReadAll(absl::string_view uri) {
  ASSIGN_OR_RETURN(int64_t size, Size(uri));
  std::string out(static_cast<size_t>(size), '\0');
  if (size > 0) RETURN_IF_ERROR(ReadAt(uri, 0, size, out.data()));
  return out;
}

absl::Status ObjectStore::WriteAll(absl::string_view uri, absl::string_view data) {
  ASSIGN_OR_RETURN(std::unique_ptr<ObjectWriter> w, OpenWrite(uri));
  RETURN_IF_ERROR(w->Append(data));
  return w->Commit();
}

absl::Status ObjectStore::Copy(absl::string_view from, absl::string_view to) {
  ASSIGN_OR_RETURN(int64_t size, Size(from));
  ASSIGN_OR_RETURN(std::unique_ptr<ObjectWriter> w, OpenWrite(to));
  std::string buf(static_cast<size_t>(std::min<int64_t>(size, 8ll << 20)), '\0');
  for (int64_t off = 0; off < size;) {
    const int64_t n = std::min<int64_t>(static_cast<int64_t>(buf.size()), size - off);
    RETURN_IF_ERROR(ReadAt(from, off, n, buf.data()));
    RETURN_IF_ERROR(w->Append(absl::string_view(buf.data(), static_cast<size_t>(n))));
    off += n;
  }
  return w->Commit();
}

absl::StatusOr<std::optional<std::string>> ObjectStore::LocalPath(absl::string_view /*uri*/) {
  return std::nullopt;
}

}  // namespace nvfp4::storage
