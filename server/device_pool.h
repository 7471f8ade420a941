// The quantizer devices of the server: one backend per GPU (or one CPU backend), leased to one
// tensor at a time. Model-job workers and QuantizeTensor handlers share the pool.
#ifndef NVFP4_SERVER_DEVICE_POOL_H_
#define NVFP4_SERVER_DEVICE_POOL_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "kernels/backend.h"

namespace nvfp4::server {

class DevicePool {
 public:
  // `spec`: "auto" (every visible GPU, else the CPU), "cpu", or "cuda:0,1" / "cuda:0,cuda:1".
  static absl::StatusOr<std::unique_ptr<DevicePool>> Create(absl::string_view spec);
  // Takes ownership of ready backends (tests).
  explicit DevicePool(std::vector<std::unique_ptr<QuantizerBackend>> backends);

  // Exclusive use of one backend until destroyed.
  class Lease {
   public:
    Lease(Lease&& other) noexcept : pool_(other.pool_), index_(other.index_) {
      other.pool_ = nullptr;
    }
    Lease& operator=(Lease&&) = delete;
    ~Lease();
    QuantizerBackend* backend() const;
    int index() const { return index_; }

   private:
    friend class DevicePool;
    Lease(DevicePool* pool, int index) : pool_(pool), index_(index) {}
    DevicePool* pool_;
    int index_;
  };

  // Blocks until a backend is free. CANCELLED when `cancelled` (polled) returns true.
  // `preferred` >= 0 tries that device first.
  absl::StatusOr<Lease> Acquire(const std::function<bool()>& cancelled = nullptr,
                                int preferred = -1);

  int size() const { return static_cast<int>(backends_.size()); }
  std::vector<std::string> names() const;
  // "cpu" or "cuda" (for the nvfp4_devices{kind} metric).
  std::string kind() const;

 private:
  void Release(int index);
  std::vector<std::unique_ptr<QuantizerBackend>> backends_;
  absl::Mutex mu_;
  std::vector<bool> busy_ ABSL_GUARDED_BY(mu_);
};

}  // namespace nvfp4::server

#endif  // NVFP4_SERVER_DEVICE_POOL_H_
