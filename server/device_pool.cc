#include "server/device_pool.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"

namespace nvfp4::server {

absl::StatusOr<std::unique_ptr<DevicePool>> DevicePool::Create(absl::string_view spec) {
  std::vector<std::unique_ptr<QuantizerBackend>> backends;
  if (spec.empty() || spec == "auto") {
    int n = CudaDeviceCount();
    for (int i = 0; i < n; ++i) {
      ASSIGN_OR_RETURN(auto b, MakeBackend(absl::StrCat("cuda:", i)));
      backends.push_back(std::move(b));
    }
    if (backends.empty()) {
      ASSIGN_OR_RETURN(auto b, MakeBackend("cpu"));
      backends.push_back(std::move(b));
    }
  } else if (spec == "cpu") {
    ASSIGN_OR_RETURN(auto b, MakeBackend("cpu"));
    backends.push_back(std::move(b));
  } else if (absl::StartsWith(spec, "cuda")) {
    absl::string_view list = spec.substr(4);
    if (absl::StartsWith(list, ":")) list.remove_prefix(1);
    if (list.empty()) list = "0";
    for (absl::string_view item : absl::StrSplit(list, ',')) {
      if (absl::StartsWith(item, "cuda:")) item.remove_prefix(5);
      std::string dev = absl::StrCat("cuda:", item);
      ASSIGN_OR_RETURN(auto b, MakeBackend(dev));
      backends.push_back(std::move(b));
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--devices '", spec, "': expected auto, cpu or cuda:0,1,..."));
  }
  return std::make_unique<DevicePool>(std::move(backends));
}

DevicePool::DevicePool(std::vector<std::unique_ptr<QuantizerBackend>> backends)
    : backends_(std::move(backends)), busy_(backends_.size(), false) {}

DevicePool::Lease::~Lease() {
  if (pool_ != nullptr) pool_->Release(index_);
}

QuantizerBackend* DevicePool::Lease::backend() const { return pool_->backends_[index_].get(); }

absl::StatusOr<DevicePool::Lease> DevicePool::Acquire(const std::function<bool()>& cancelled,
                                                      int preferred) {
  absl::MutexLock lock(&mu_);
  while (true) {
    if (preferred >= 0 && preferred < size() && !busy_[preferred]) {
      busy_[preferred] = true;
      return Lease(this, preferred);
    }
    for (int i = 0; i < size(); ++i) {
      if (!busy_[i]) {
        busy_[i] = true;
        return Lease(this, i);
      }
    }
    if (cancelled && cancelled())
      return absl::CancelledError("cancelled while waiting for a device");
    auto any_free = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      for (bool b : busy_) {
        if (!b) return true;
      }
      return false;
    };
    mu_.AwaitWithTimeout(absl::Condition(&any_free), absl::Milliseconds(100));
  }
}

void DevicePool::Release(int index) {
  absl::MutexLock lock(&mu_);
  busy_[index] = false;
}

std::vector<std::string> DevicePool::names() const {
  std::vector<std::string> out;
  for (const auto& b : backends_) out.push_back(b->name());
  return out;
}

std::string DevicePool::kind() const {
  return !backends_.empty() && absl::StartsWith(backends_.front()->name(), "cuda") ? "cuda" : "cpu";
}

}  // namespace nvfp4::server
