#include "pipeline/run_state.h"

namespace nvfp4::pipeline {

absl::Status CancelledStatus() { return absl::CancelledError("quantize-model cancelled"); }

absl::Status CheckCancelled(const std::function<bool()>& cancelled) {
  return cancelled && cancelled() ? CancelledStatus() : absl::OkStatus();
}

void RunState::Fail(absl::Status status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (status_.ok()) status_ = std::move(status);
  }
  failed_.store(true);
  if (on_fail_) on_fail_();
}

absl::Status RunState::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return status_;
}

bool RunState::CheckCancelled() {
  if (failed()) return true;
  if (absl::Status s = pipeline::CheckCancelled(cancelled_); !s.ok()) Fail(std::move(s));
  return failed();
}

void MemoryMeter::AddUnit() {
  std::lock_guard<std::mutex> lock(mu_);
  peak_units_ = std::max(peak_units_, ++units_);
}

void MemoryMeter::RemoveUnit() {
  std::lock_guard<std::mutex> lock(mu_);
  --units_;
}

void MemoryMeter::AddBytes(int64_t delta) {
  std::lock_guard<std::mutex> lock(mu_);
  bytes_ += delta;
  peak_bytes_ = std::max(peak_bytes_, bytes_);
}

int MemoryMeter::peak_units() const {
  std::lock_guard<std::mutex> lock(mu_);
  return peak_units_;
}

uint64_t MemoryMeter::peak_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<uint64_t>(peak_bytes_);
}

}  // namespace nvfp4::pipeline
