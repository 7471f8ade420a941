#include "server/stream_deadlines.h"

#include <string>

#include "absl/time/clock.h"
#include "grpc/grpc.h"

namespace nvfp4::server {

StreamDeadlines::StreamDeadlines(absl::Duration poll) : poll_(poll) {
  thread_ = std::thread([this] { Loop(); });
}

StreamDeadlines::~StreamDeadlines() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

std::unique_ptr<StreamDeadlines::Watch> StreamDeadlines::Add(grpc::ServerContext* context,
                                                             absl::Duration idle,
                                                             absl::Status idle_status,
                                                             absl::Duration total,
                                                             absl::Status total_status) {
  std::unique_ptr<Watch> w(new Watch(this, context));
  const absl::Time now = absl::Now();
  absl::MutexLock lock(&mu_);
  w->idle_ = idle > absl::ZeroDuration() ? idle : absl::InfiniteDuration();
  w->idle_status_ = std::move(idle_status);
  w->total_status_ = std::move(total_status);
  w->last_ = now;
  w->deadline_ = total > absl::ZeroDuration() ? now + total : absl::InfiniteFuture();
  watches_.insert(w.get());
  return w;
}

int64_t StreamDeadlines::cancelled() const {
  absl::MutexLock lock(&mu_);
  return cancelled_;
}

void StreamDeadlines::Remove(Watch* w) {
  absl::MutexLock lock(&mu_);
  watches_.erase(w);
}

void StreamDeadlines::Loop() {
  absl::MutexLock lock(&mu_);
  while (!stop_) {
    mu_.AwaitWithTimeout(absl::Condition(&stop_), poll_);
    if (stop_) break;
    const absl::Time now = absl::Now();
    for (Watch* w : watches_) {
      if (!w->expired_.ok()) continue;
      if (now - w->last_ >= w->idle_) {
        w->expired_ = w->idle_status_;
      } else if (now >= w->deadline_) {
        w->expired_ = w->total_status_;
      } else {
        continue;
      }
      // Under mu_: the Watch (and so the call) cannot go away meanwhile.
      const std::string message(w->expired_.message());
      grpc_call_cancel_with_status(w->context_->c_call(),
                                   static_cast<grpc_status_code>(w->expired_.code()),
                                   message.c_str(), nullptr);
      ++cancelled_;
    }
  }
}

StreamDeadlines::Watch::~Watch() { owner_->Remove(this); }

void StreamDeadlines::Watch::Touch() {
  absl::MutexLock lock(&owner_->mu_);
  last_ = absl::Now();
}

void StreamDeadlines::Watch::StopIdle() {
  absl::MutexLock lock(&owner_->mu_);
  idle_ = absl::InfiniteDuration();
}

absl::Status StreamDeadlines::Watch::expired() const {
  absl::MutexLock lock(&owner_->mu_);
  return expired_;
}

}  // namespace nvfp4::server
