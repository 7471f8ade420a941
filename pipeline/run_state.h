// The shared state of a streaming QuantizeModel run (pipeline/quantize_model.cc): the bounded
// queues between its reader, quantizer and writer stages, the run's first error and its one
// cancellation check, and the meter of the memory bound. Each piece is thread-safe and knows
// nothing of models, so each is tested alone (tests/pipeline/run_state_test.cc).
//
//   BoundedQueue<UnitPtr> to_write(depth);
//   RunState state(hooks.cancelled);
//   state.OnFail([&] { to_write.Close(); });   // a failure stops every stage
//   while (std::optional<UnitPtr> u = to_write.Pop()) {
//     if (state.failed()) continue;           // drain what is left
//     if (absl::Status s = Write(**u); !s.ok()) state.Fail(s);
//     state.CheckCancelled();                  // between units
//   }
//   if (state.failed()) return state.status();
#ifndef NVFP4_PIPELINE_RUN_STATE_H_
#define NVFP4_PIPELINE_RUN_STATE_H_

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <utility>

#include "absl/status/status.h"

namespace nvfp4::pipeline {

// The status a cancelled run ends with: CANCELLED "quantize-model cancelled".
absl::Status CancelledStatus();

// The one cancellation check of the pipeline: CancelledStatus() when `cancelled` is set and returns
// true, else OK. Polled between units (and between copied files).
absl::Status CheckCancelled(const std::function<bool()>& cancelled);

// A FIFO of at most `capacity` items (at least 1). Close() wakes every waiter: Push then fails
// and Pop drains what is left, then returns nullopt.
template <typename T>
class BoundedQueue {
 public:
  explicit BoundedQueue(size_t capacity) : capacity_(std::max<size_t>(capacity, 1)) {}

  // Blocks while the queue is full. False (and `item` dropped) once closed.
  bool Push(T item) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return closed_ || items_.size() < capacity_; });
    if (closed_) return false;
    items_.push_back(std::move(item));
    cv_.notify_all();
    return true;
  }
  // Blocks while the queue is empty and open. nullopt once closed and drained.
  std::optional<T> Pop() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return closed_ || !items_.empty(); });
    if (items_.empty()) return std::nullopt;
    T item = std::move(items_.front());
    items_.pop_front();
    cv_.notify_all();
    return item;
  }
  void Close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    cv_.notify_all();
  }

 private:
  const size_t capacity_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<T> items_;
  bool closed_ = false;
};

// The first error of any stage. Fail() keeps the first status and runs the OnFail action (which
// closes the queues, so that every stage stops).
class RunState {
 public:
  // `cancelled`: the caller's hook (PipelineHooks::cancelled), may be empty.
  explicit RunState(std::function<bool()> cancelled = {}) : cancelled_(std::move(cancelled)) {}

  // Set before the stages start.
  void OnFail(std::function<void()> action) { on_fail_ = std::move(action); }

  void Fail(absl::Status status);
  bool failed() const { return failed_.load(); }
  // OK until the first Fail().
  absl::Status status() const;

  // Polls the cancellation hook (CheckCancelled); a cancellation fails the run with
  // CancelledStatus() (unless it failed already). True when the run has failed or is cancelled.
  bool CheckCancelled();

 private:
  const std::function<bool()> cancelled_;
  std::function<void()> on_fail_;
  mutable std::mutex mu_;
  absl::Status status_;
  std::atomic<bool> failed_{false};
};

// The instrumentation of the memory bound: the units alive at once (read but not yet written) and
// the tensor bytes held in buffers at once, with their peaks.
class MemoryMeter {
 public:
  // One unit alive and the bytes of its buffers, given back on destruction (move-only).
  class Unit {
   public:
    Unit() = default;
    explicit Unit(MemoryMeter* meter) : meter_(meter) { meter_->AddUnit(); }
    Unit(Unit&& other) noexcept { *this = std::move(other); }
    Unit& operator=(Unit&& other) noexcept {
      Release();
      meter_ = std::exchange(other.meter_, nullptr);
      bytes_ = std::exchange(other.bytes_, 0);
      return *this;
    }
    ~Unit() { Release(); }

    // The unit's buffers grew by `bytes`.
    void AddBytes(uint64_t bytes) { SetBytes(bytes_ + bytes); }
    // The unit's buffers now hold `bytes` (one change of the meter, up or down).
    void SetBytes(uint64_t bytes) {
      if (meter_ != nullptr) {
        meter_->AddBytes(static_cast<int64_t>(bytes) - static_cast<int64_t>(bytes_));
      }
      bytes_ = bytes;
    }
    uint64_t bytes() const { return bytes_; }
    // Gives the unit and its bytes back now.
    void Release() {
      if (meter_ == nullptr) return;
      meter_->AddBytes(-static_cast<int64_t>(bytes_));
      meter_->RemoveUnit();
      meter_ = nullptr;
      bytes_ = 0;
    }

   private:
    MemoryMeter* meter_ = nullptr;
    uint64_t bytes_ = 0;
  };

  void AddUnit();
  void RemoveUnit();
  // Bytes held outside any unit (e.g. a copy buffer): +n when taken, -n when given back.
  void AddBytes(int64_t delta);

  int peak_units() const;
  uint64_t peak_bytes() const;

 private:
  mutable std::mutex mu_;
  int units_ = 0, peak_units_ = 0;
  int64_t bytes_ = 0, peak_bytes_ = 0;
};

}  // namespace nvfp4::pipeline

#endif  // NVFP4_PIPELINE_RUN_STATE_H_
