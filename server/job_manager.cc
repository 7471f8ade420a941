#include "server/job_manager.h"

#include <algorithm>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/message_differencer.h"
#include "base/str_util.h"
#include "server/log.h"
#include "server/utf8_fields.h"

namespace nvfp4::server {
namespace {

void SetTime(google::protobuf::Timestamp* ts, absl::Time t) {
  const int64_t ns = absl::ToUnixNanos(t);
  ts->set_seconds(ns / 1000000000);
  ts->set_nanos(static_cast<int32_t>(ns % 1000000000));
}

absl::Time FromTs(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

std::string NewJobId() {
  static std::mt19937_64 rng{std::random_device{}()};
  static absl::Mutex mu;
  absl::MutexLock lock(&mu);
  return absl::StrFormat("job-%016x", rng());
}

std::string Outcome(v1::JobState s) {
  switch (s) {
    case v1::JOB_STATE_SUCCEEDED:
      return "succeeded";
    case v1::JOB_STATE_FAILED:
      return "failed";
    case v1::JOB_STATE_CANCELLED:
      return "cancelled";
    default:
      return "unknown";
  }
}

std::string MethodLabel(const v1::QuantizeOptions& o) {
  switch (o.method()) {
    case v1::METHOD_RTN:
      return "rtn";
    case v1::METHOD_FOUR_OVER_SIX:
      return "4over6";
    case v1::METHOD_SCALESWEEP:
      return "scalesweep";
    default:
      return "soar";
  }
}

// The final state of a run that was not interrupted: SUCCEEDED with its outputs, CANCELLED when
// a client cancelled it, else FAILED with the error; sets the end time. Returns the log detail.
std::string FinishJob(v1::Job& job, absl::StatusOr<std::vector<v1::OutputFile>>& result,
                      bool cancel_requested) {
  std::string detail;
  if (result.ok()) {
    job.set_state(v1::JOB_STATE_SUCCEEDED);
    job.mutable_progress()->set_eta_seconds(0);
    for (v1::OutputFile& f : *result) *job.add_outputs() = std::move(f);
  } else if (cancel_requested && absl::IsCancelled(result.status())) {
    job.set_state(v1::JOB_STATE_CANCELLED);
    job.mutable_error()->set_code(static_cast<int>(absl::StatusCode::kCancelled));
    job.mutable_error()->set_message("cancelled by a client");
  } else {
    job.set_state(v1::JOB_STATE_FAILED);
    job.mutable_error()->set_code(static_cast<int>(result.status().code()));
    job.mutable_error()->set_message(std::string(result.status().message()));
    detail = absl::StrCat(" error=", result.status().ToString());
  }
  SetTime(job.mutable_end_time(), absl::Now());
  // Names from the checkpoint reach the error and the outputs: valid UTF-8 for every client.
  EscapeInvalidUtf8Fields(&job);
  return detail;
}

// The progress an interrupted run journaled in `journal` (server/job_store.h JournaledProgress).
v1::JobProgress JournaledProgressOf(pipeline::ResumeJournal* journal) {
  if (journal != nullptr) {
    absl::StatusOr<std::vector<pipeline::JournaledUnit>> units = journal->Load();
    if (units.ok()) return JournaledProgress(*units);
  }
  return JournaledProgress({});
}

}  // namespace

std::string JobStateName(v1::JobState state) {
  std::string n = v1::JobState_Name(state);
  constexpr absl::string_view kPrefix = "JOB_STATE_";
  if (n.rfind(std::string(kPrefix), 0) == 0) n = n.substr(kPrefix.size());
  return n;
}

bool IsTerminal(v1::JobState s) {
  return s == v1::JOB_STATE_SUCCEEDED || s == v1::JOB_STATE_FAILED || s == v1::JOB_STATE_CANCELLED;
}

struct JobManager::Record {
  v1::Job job;
  int64_t seq = 0;
  int64_t version = 0;
  std::vector<v1::TensorResult> tensors;  // finished tensors, for watchers
  std::atomic<bool> cancel{false};
  std::atomic<bool> interrupt{false};  // server shutdown
  int watchers = 0;                    // WatchJob streams reading it (guarded by mu_)
  // The progress journaled by an interrupted earlier run (restored at Start): reported as a floor
  // until the resumed run has caught up, instead of 0 (guarded by mu_).
  v1::JobProgress restored;
  // Shared mode (guarded by mu_ but lease_lost).
  std::atomic<bool> lease_lost{false};  // another replica claimed it: abandon the run
  bool finishing = false;               // its outcome is being saved; the keeper leaves it
  int64_t saved_version = 0;            // version last saved to the store
  size_t saved_tensors = 0;             // tensors already in the store
};

class JobManager::Sink : public ProgressSink {
 public:
  Sink(JobManager* m, Record* rec, absl::Time start) : m_(m), rec_(rec), start_(start) {}

  void SetTotals(int64_t tensors, int64_t bytes_in_total) override {
    absl::MutexLock lock(&m_->mu_);
    rec_->job.mutable_progress()->set_tensors_total(tensors);
    rec_->job.mutable_progress()->set_bytes_in_total(bytes_in_total);
    Bump();
  }
  void TensorStarted(absl::string_view name) override {
    absl::MutexLock lock(&m_->mu_);
    rec_->job.mutable_progress()->set_current_tensor(
        EscapeInvalidUtf8(std::string_view(name.data(), name.size())));
    Bump();
  }
  void TensorFinished(const v1::TensorResult& result, int64_t bytes_in,
                      int64_t bytes_out) override {
    if (m_->metrics_ != nullptr) {
      m_->metrics_->InputBytes(bytes_in);
      m_->metrics_->OutputBytes(bytes_out);
      if (result.quantized()) {
        m_->metrics_->TensorQuantized(MethodLabel(rec_->job.request().options()), result.device(),
                                      result.quantize_seconds(), result.metrics().nmse_vs_rtn());
      }
    }
    absl::MutexLock lock(&m_->mu_);
    v1::JobProgress* p = rec_->job.mutable_progress();
    live_.set_tensors_done(live_.tensors_done() + 1);
    live_.set_bytes_in(live_.bytes_in() + bytes_in);
    live_.set_bytes_out(live_.bytes_out() + bytes_out);
    const v1::JobProgress& floor = rec_->restored;
    p->set_tensors_done(std::max(live_.tensors_done(), floor.tensors_done()));
    p->set_bytes_in(std::max(live_.bytes_in(), floor.bytes_in()));
    p->set_bytes_out(std::max(live_.bytes_out(), floor.bytes_out()));
    if (result.quantized()) quantized_bytes_done_ += bytes_in;
    const double elapsed = absl::ToDoubleSeconds(absl::Now() - start_);
    p->set_bytes_per_second(elapsed > 0 ? static_cast<double>(live_.bytes_in()) / elapsed : 0);
    // The fraction of the work done: by quantized bytes when the run has any (a copied embedding
    // streams in a fraction of the time its bytes would suggest; unknown until a quantized
    // tensor finished), else by bytes, else by tensors.
    double fraction = -1;
    if (quantized_bytes_total_ > 0) {
      fraction = static_cast<double>(quantized_bytes_done_) /
                 static_cast<double>(quantized_bytes_total_);
    } else if (p->bytes_in_total() > 0) {
      fraction = static_cast<double>(live_.bytes_in()) / static_cast<double>(p->bytes_in_total());
    } else if (p->tensors_total() > 0) {
      fraction =
          static_cast<double>(live_.tensors_done()) / static_cast<double>(p->tensors_total());
    }
    p->set_eta_seconds(fraction > 0 ? elapsed * (1 - fraction) / fraction : -1);
    rec_->tensors.push_back(result);
    EscapeInvalidUtf8Fields(&rec_->tensors.back());
    Bump();
  }
  bool Cancelled() const override { return rec_->cancel.load() || rec_->interrupt.load(); }
  bool Interrupted() const override { return rec_->interrupt.load() && !rec_->cancel.load(); }
  void SetQuantizedBytesTotal(int64_t bytes) override {
    absl::MutexLock lock(&m_->mu_);
    quantized_bytes_total_ = bytes;
  }
  void Warn(absl::string_view message) override {
    absl::MutexLock lock(&m_->mu_);
    rec_->job.add_warnings(EscapeInvalidUtf8(std::string_view(message.data(), message.size())));
    Bump();
  }
  void SetResumed(int64_t tensors) override {
    absl::MutexLock lock(&m_->mu_);
    rec_->job.mutable_progress()->set_tensors_resumed(tensors);
    Bump();
  }
  absl::Status CheckOwnership() override { return m_->ConfirmLease(rec_); }

 private:
  void Bump() ABSL_EXCLUSIVE_LOCKS_REQUIRED(m_->mu_) {
    ++rec_->version;
    m_->changed_.SignalAll();
  }
  JobManager* m_;
  Record* rec_;
  absl::Time start_;
  v1::JobProgress live_ ABSL_GUARDED_BY(m_->mu_);  // what this run finished
  int64_t quantized_bytes_total_ ABSL_GUARDED_BY(m_->mu_) = 0;
  int64_t quantized_bytes_done_ ABSL_GUARDED_BY(m_->mu_) = 0;
};

JobManager::JobManager(JobManagerOptions options, ModelPipeline* pipeline, storage::StorageRouter* store,
                       DevicePool* devices, JobStore* job_store, Metrics* metrics)
    : options_(options),
      pipeline_(pipeline),
      store_(store),
      devices_(devices),
      job_store_(job_store),
      shared_(job_store->AsShared()),
      metrics_(metrics) {}

JobManager::~JobManager() { Stop(); }

absl::Status JobManager::Start() {
  if (shared_ != nullptr) {
    // The store is the source of truth: nothing to reload; interrupted jobs are claimed by
    // whichever replica's worker comes first once their lease expired.
    LogLine("job store shared by a fleet: replica ", shared_->replica_id(), ", lease ",
            absl::FormatDuration(options_.lease));
    for (int i = 0; i < std::max(1, options_.workers); ++i) {
      workers_.emplace_back([this, i] { SharedWorkerLoop(i); });
    }
    keeper_ = std::thread([this] { KeeperLoop(); });
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<v1::Job>> saved = job_store_->LoadAll();
  if (!saved.ok()) return saved.status();
  std::sort(saved->begin(), saved->end(), [](const v1::Job& a, const v1::Job& b) {
    return FromTs(a.create_time()) < FromTs(b.create_time());
  });
  {
    absl::MutexLock lock(&mu_);
    std::vector<std::pair<absl::Time, std::string>> finished;
    for (v1::Job& job : *saved) {
      auto rec = std::make_unique<Record>();
      rec->seq = next_seq_++;
      if (!IsTerminal(job.state())) {
        // Interrupted by a crash or shutdown: run it again. With a durable store the run resumes
        // from the units it journaled (pipeline/resume.h); outputs are atomic either way.
        job.set_state(v1::JOB_STATE_QUEUED);
        job.clear_start_time();
        job.clear_progress();
        rec->restored = JournaledProgressOf(job_store_->ResumeJournalFor(job.job_id()).get());
        *job.mutable_progress() = rec->restored;
        queue_.push_back(job.job_id());
        LogLine("job ", job.job_id(), " restored QUEUED (was interrupted)");
      } else {
        finished.emplace_back(FromTs(job.end_time()), job.job_id());
      }
      if (!job.request().request_id().empty()) {
        by_request_id_[job.request().request_id()] = job.job_id();
      }
      rec->job = std::move(job);
      SaveLocked(*rec);
      jobs_[rec->job.job_id()] = std::move(rec);
    }
    std::sort(finished.begin(), finished.end());
    for (auto& [end, id] : finished) finished_.push_back(std::move(id));
    EvictLocked();
    UpdateGaugesLocked();
  }
  for (int i = 0; i < std::max(1, options_.workers); ++i) {
    workers_.emplace_back([this, i] { WorkerLoop(i); });
  }
  return absl::OkStatus();
}

void JobManager::SaveLocked(const Record& rec) {
  absl::Status s = job_store_->Save(rec.job);
  if (!s.ok()) LogLine("job ", rec.job.job_id(), " could not be saved: ", s.ToString());
}

void JobManager::FinishedLocked(const std::string& job_id) {
  finished_.push_back(job_id);
  EvictLocked();
}

void JobManager::EvictLocked() {
  const absl::Time now = absl::Now();
  int64_t evicted = 0;
  while (!finished_.empty()) {
    auto it = jobs_.find(finished_.front());
    if (it == jobs_.end()) {
      finished_.pop_front();
      continue;
    }
    const Record& rec = *it->second;
    const bool over = static_cast<int64_t>(finished_.size()) > options_.max_finished_jobs;
    const bool expired = now - FromTs(rec.job.end_time()) > options_.finished_job_ttl;
    // A job a stream is reading waits for a later call; so do the ones that finished after it.
    if ((!over && !expired) || rec.watchers > 0) break;
    const std::string id = it->first;
    const std::string& request_id = rec.job.request().request_id();
    if (auto r = by_request_id_.find(request_id); r != by_request_id_.end() && r->second == id) {
      by_request_id_.erase(r);
    }
    if (absl::Status s = job_store_->Delete(id); !s.ok()) {
      LogLine("job ", id, " could not be deleted from the job store: ", s.ToString());
    }
    jobs_.erase(it);
    finished_.pop_front();
    ++evicted;
  }
  if (evicted > 0) {
    LogLine("retention: forgot ", evicted, " finished job(s); ", finished_.size(),
            " finished kept (max ", options_.max_finished_jobs, ", ttl ",
            absl::FormatDuration(options_.finished_job_ttl), ")");
  }
}

void JobManager::UpdateGaugesLocked() {
  if (metrics_ == nullptr) return;
  metrics_->SetQueued(shared_ != nullptr ? shared_queued_ : static_cast<int64_t>(queue_.size()));
  metrics_->SetRunning(running_);
}

v1::Job JobManager::SnapshotLocked(const Record& rec) const { return rec.job; }

absl::StatusOr<v1::Job> JobManager::Submit(const v1::QuantizeModelRequest& request) {
  if (draining_.load()) return absl::UnavailableError("server is draining; not accepting new jobs");
  if (absl::Status s = pipeline_->Validate(request); !s.ok()) return s;
  if (shared_ != nullptr) return SharedSubmit(request);
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("server is shutting down");
  EvictLocked();  // jobs past their ttl
  if (!request.request_id().empty()) {
    auto it = by_request_id_.find(request.request_id());
    if (it != by_request_id_.end()) {
      const Record& existing = *jobs_.at(it->second);
      if (google::protobuf::util::MessageDifferencer::Equals(existing.job.request(), request)) {
        return SnapshotLocked(existing);
      }
      return absl::AlreadyExistsError(
          absl::StrCat("request_id '", request.request_id(), "' was already used for job ",
                       existing.job.job_id(), " with different parameters"));
    }
  }
  if (static_cast<int>(queue_.size()) >= options_.queue_capacity) {
    return absl::UnavailableError(
        absl::StrCat("job queue is full (", options_.queue_capacity, " queued); retry later"));
  }
  auto rec = std::make_unique<Record>();
  rec->seq = next_seq_++;
  rec->job.set_job_id(NewJobId());
  rec->job.set_kind("model");
  rec->job.set_state(v1::JOB_STATE_QUEUED);
  *rec->job.mutable_request() = request;
  rec->job.mutable_progress()->set_eta_seconds(-1);
  SetTime(rec->job.mutable_create_time(), absl::Now());
  const std::string id = rec->job.job_id();
  if (!request.request_id().empty()) by_request_id_[request.request_id()] = id;
  SaveLocked(*rec);
  queue_.push_back(id);
  v1::Job snapshot = rec->job;
  jobs_[id] = std::move(rec);
  if (metrics_ != nullptr) metrics_->JobSubmitted("model");
  UpdateGaugesLocked();
  LogLine("job ", id, " state NEW->QUEUED input=", request.input_uri(),
          " output=", request.output_uri(), " queued=", queue_.size());
  changed_.SignalAll();
  return snapshot;
}

absl::StatusOr<v1::Job> JobManager::Get(const std::string& job_id) {
  if (shared_ != nullptr) {
    {
      // Running here: the freshest progress is the local one.
      absl::MutexLock lock(&mu_);
      if (auto it = jobs_.find(job_id); it != jobs_.end()) return SnapshotLocked(*it->second);
    }
    absl::StatusOr<StoredJob> stored = shared_->Get(job_id);
    if (!stored.ok()) return stored.status();
    return stored->job;
  }
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("job '", job_id, "' not found"));
  return SnapshotLocked(*it->second);
}

absl::StatusOr<v1::Job> JobManager::Cancel(const std::string& job_id) {
  bool discard = false;
  if (shared_ != nullptr) {
    absl::StatusOr<v1::Job> out = shared_->RequestCancel(job_id, absl::Now(), &discard);
    if (!out.ok()) return out;
    {
      absl::MutexLock lock(&mu_);
      if (auto it = jobs_.find(job_id); it != jobs_.end() && !IsTerminal(out->state())) {
        // Running here: stop it between tensors without waiting for the keeper.
        it->second->cancel.store(true);
        it->second->job.set_cancel_requested(true);
        ++it->second->version;
        changed_.SignalAll();
        *out = SnapshotLocked(*it->second);
      }
    }
    if (discard) {
      if (metrics_ != nullptr) metrics_->JobFinished("model", "cancelled", 0);
      LogLine("job ", job_id, " state QUEUED->CANCELLED (shared store)");
      pipeline_->DiscardStaged(job_id, out->request(), store_);
    } else if (!IsTerminal(out->state())) {
      LogLine("job ", job_id, " cancel requested while RUNNING (shared store)");
    }
    return out;
  }
  absl::StatusOr<v1::Job> out = CancelImpl(job_id, &discard);
  // A job cancelled while queued never runs again: drop what an interrupted run of it staged.
  if (discard && out.ok()) pipeline_->DiscardStaged(job_id, out->request(), store_);
  return out;
}

absl::StatusOr<v1::Job> JobManager::CancelImpl(const std::string& job_id, bool* discard) {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("job '", job_id, "' not found"));
  Record& rec = *it->second;
  if (IsTerminal(rec.job.state())) return SnapshotLocked(rec);
  rec.job.set_cancel_requested(true);
  rec.cancel.store(true);
  if (rec.job.state() == v1::JOB_STATE_QUEUED) {
    queue_.erase(std::remove(queue_.begin(), queue_.end(), job_id), queue_.end());
    rec.job.set_state(v1::JOB_STATE_CANCELLED);
    rec.job.mutable_error()->set_code(static_cast<int>(absl::StatusCode::kCancelled));
    rec.job.mutable_error()->set_message("cancelled by a client while queued");
    *discard = true;
    SetTime(rec.job.mutable_end_time(), absl::Now());
    if (metrics_ != nullptr) metrics_->JobFinished("model", "cancelled", 0);
    LogLine("job ", job_id, " state QUEUED->CANCELLED queue_wait=",
            absl::FormatDuration(absl::Now() - FromTs(rec.job.create_time())));
    UpdateGaugesLocked();
  } else {
    LogLine("job ", job_id, " cancel requested while RUNNING");
  }
  ++rec.version;
  SaveLocked(rec);
  changed_.SignalAll();
  v1::Job snapshot = SnapshotLocked(rec);
  if (*discard) FinishedLocked(job_id);
  return snapshot;
}

absl::StatusOr<v1::ListJobsResponse> JobManager::List(const v1::ListJobsRequest& request) {
  int page_size = request.page_size() <= 0 ? 50 : std::min(request.page_size(), 1000);
  int64_t before = INT64_MAX;
  if (!request.page_token().empty() && !absl::SimpleAtoi(request.page_token(), &before)) {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed page_token '", request.page_token(), "'"));
  }
  if (shared_ != nullptr) return SharedList(request);
  absl::MutexLock lock(&mu_);
  EvictLocked();  // jobs past their ttl
  std::vector<const Record*> matching;
  for (const auto& [id, rec] : jobs_) {
    if (rec->seq >= before) continue;
    if (request.states_size() > 0 && std::find(request.states().begin(), request.states().end(),
                                               rec->job.state()) == request.states().end()) {
      continue;
    }
    matching.push_back(rec.get());
  }
  std::sort(matching.begin(), matching.end(),
            [](const Record* a, const Record* b) { return a->seq > b->seq; });
  v1::ListJobsResponse out;
  for (size_t i = 0; i < matching.size() && static_cast<int>(i) < page_size; ++i) {
    *out.add_jobs() = SnapshotLocked(*matching[i]);
  }
  if (static_cast<int>(matching.size()) > page_size) {
    out.set_next_page_token(std::to_string(matching[page_size - 1]->seq));
  }
  return out;
}

absl::Status JobManager::Watch(const std::string& job_id, absl::Duration heartbeat,
                               const std::function<bool(const v1::JobEvent&)>& send,
                               const std::function<bool()>& cancelled) {
  if (heartbeat <= absl::ZeroDuration()) heartbeat = options_.default_heartbeat;
  if (shared_ != nullptr) return SharedWatch(job_id, heartbeat, send, cancelled);
  Record* rec = nullptr;
  v1::JobEvent event;
  int64_t seen_version = 0;
  size_t seen_tensors = 0;
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("job '", job_id, "' not found"));
    rec = it->second.get();  // kept while watchers > 0 (EvictLocked)
    ++rec->watchers;
    event.set_type(v1::EVENT_TYPE_SNAPSHOT);
    *event.mutable_job() = SnapshotLocked(*rec);
    SetTime(event.mutable_time(), absl::Now());
    seen_version = rec->version;
    seen_tensors = rec->tensors.size();
  }
  // Released after any lock of the loop below (destroyed last).
  struct Unwatch {
    JobManager* m;
    Record* rec;
    ~Unwatch() {
      absl::MutexLock lock(&m->mu_);
      --rec->watchers;
    }
  } unwatch{this, rec};
  if (!send(event)) return absl::CancelledError("watcher went away");
  bool terminal = IsTerminal(event.job().state());
  if (terminal) {  // already finished: the snapshot is followed by the terminal event
    event.set_type(v1::EVENT_TYPE_TERMINAL);
    SetTime(event.mutable_time(), absl::Now());
    if (!send(event)) return absl::CancelledError("watcher went away");
    return absl::OkStatus();
  }
  absl::Time last_sent = absl::Now();
  while (!terminal) {
    event.Clear();
    {
      absl::MutexLock lock(&mu_);
      const absl::Time deadline = last_sent + heartbeat;
      // Draining: a job that is not running here will not move before the restart (a RUNNING
      // one may still finish within the drain, or is interrupted back to QUEUED): the stream
      // ends with UNAVAILABLE, which clients take as "re-attach" (nvfp4ctl jobs watch retries).
      const auto drained = [&] {
        mu_.AssertHeld();
        return draining_.load() && rec->job.state() != v1::JOB_STATE_RUNNING &&
               !IsTerminal(rec->job.state());
      };
      while (rec->version == seen_version && !stopping_ && !drained() && absl::Now() < deadline) {
        if (cancelled && cancelled()) return absl::CancelledError("watcher went away");
        absl::Duration wait = std::min(deadline - absl::Now(), absl::Milliseconds(250));
        changed_.WaitWithTimeout(&mu_, std::max(wait, absl::Milliseconds(1)));
      }
      if (stopping_ && !IsTerminal(rec->job.state())) {
        return absl::UnavailableError("server is shutting down; re-attach to the job later");
      }
      if (drained()) {
        return absl::UnavailableError("server is draining; re-attach to the job later");
      }
      terminal = IsTerminal(rec->job.state());
      if (rec->version != seen_version) {
        event.set_type(terminal ? v1::EVENT_TYPE_TERMINAL : v1::EVENT_TYPE_PROGRESS);
        for (size_t i = seen_tensors; i < rec->tensors.size(); ++i) {
          *event.add_tensors() = rec->tensors[i];
        }
        seen_tensors = rec->tensors.size();
        seen_version = rec->version;
      } else {
        event.set_type(terminal ? v1::EVENT_TYPE_TERMINAL : v1::EVENT_TYPE_HEARTBEAT);
      }
      *event.mutable_job() = SnapshotLocked(*rec);
    }
    SetTime(event.mutable_time(), absl::Now());
    if (!send(event)) return absl::CancelledError("watcher went away");
    last_sent = absl::Now();
  }
  return absl::OkStatus();
}

void JobManager::WorkerLoop(int worker_index) {
  while (true) {
    Record* rec = nullptr;
    {
      absl::MutexLock lock(&mu_);
      while (!stopping_ && (queue_.empty() || draining_.load())) {
        changed_.WaitWithTimeout(&mu_, absl::Milliseconds(500));
      }
      if (stopping_) return;
      std::string id = queue_.front();
      queue_.pop_front();
      rec = jobs_.at(id).get();
      const absl::Time now = absl::Now();
      const absl::Duration wait = now - FromTs(rec->job.create_time());
      rec->job.set_state(v1::JOB_STATE_RUNNING);
      SetTime(rec->job.mutable_start_time(), now);
      ++rec->version;
      ++running_;
      SaveLocked(*rec);
      UpdateGaugesLocked();
      if (metrics_ != nullptr) metrics_->QueueWait(absl::ToDoubleSeconds(wait));
      LogLine("job ", id, " state QUEUED->RUNNING worker=", worker_index,
              " queue_wait=", absl::FormatDuration(wait));
      changed_.SignalAll();
    }
    RunJob(rec, worker_index);
  }
}

void JobManager::RunJob(Record* rec, int worker_index) {
  const absl::Time start = absl::Now();
  Sink sink(this, rec, start);
  ModelJobContext ctx;
  ctx.job_id = rec->job.job_id();
  v1::QuantizeModelRequest request;
  {
    absl::MutexLock lock(&mu_);
    request = rec->job.request();
  }
  ctx.request = &request;
  ctx.store = store_;
  ctx.devices = devices_;
  ctx.progress = &sink;
  std::unique_ptr<pipeline::ResumeJournal> resume = job_store_->ResumeJournalFor(ctx.job_id);
  ctx.resume = resume.get();
  absl::StatusOr<std::vector<v1::OutputFile>> result = pipeline_->Run(ctx);
  const absl::Duration run = absl::Now() - start;

  if (shared_ != nullptr) {
    std::string detail;
    bool interrupted = false;
    {
      absl::MutexLock lock(&mu_);
      v1::Job& job = rec->job;
      job.mutable_progress()->clear_current_tensor();
      interrupted = rec->lease_lost.load() || (rec->interrupt.load() && !rec->cancel.load());
      if (interrupted) {
        job.set_state(v1::JOB_STATE_QUEUED);
        job.clear_start_time();
      } else {
        detail = FinishJob(job, result, rec->cancel.load());
      }
    }
    SharedFinish(rec, worker_index, run, interrupted, detail);
    return;
  }
  absl::MutexLock lock(&mu_);
  v1::Job& job = rec->job;
  --running_;
  job.mutable_progress()->clear_current_tensor();
  if (!result.ok() && rec->interrupt.load() && !rec->cancel.load()) {
    // Shutdown: leave it queued in the store so that a restarted server runs it again.
    job.set_state(v1::JOB_STATE_QUEUED);
    job.clear_start_time();
    SaveLocked(*rec);
    ++rec->version;
    UpdateGaugesLocked();
    LogLine("job ", job.job_id(),
            " state RUNNING->QUEUED (interrupted by shutdown) run=", absl::FormatDuration(run));
    changed_.SignalAll();
    return;
  }
  const std::string detail = FinishJob(job, result, rec->cancel.load());
  ++rec->version;
  SaveLocked(*rec);
  UpdateGaugesLocked();
  if (metrics_ != nullptr) {
    metrics_->JobFinished("model", Outcome(job.state()), absl::ToDoubleSeconds(run));
  }
  LogLine("job ", job.job_id(), " state RUNNING->", JobStateName(job.state()),
          " worker=", worker_index, " run=", absl::FormatDuration(run),
          " tensors=", job.progress().tensors_done(), "/", job.progress().tensors_total(),
          " bytes_in=", job.progress().bytes_in(), " bytes_out=", job.progress().bytes_out(),
          detail);
  changed_.SignalAll();
  FinishedLocked(std::string(job.job_id()));  // may delete *rec
}

void JobManager::BeginDrain() {
  draining_.store(true);
  absl::MutexLock lock(&mu_);
  changed_.SignalAll();
  claimable_.SignalAll();
}

bool JobManager::WaitIdle(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::MutexLock lock(&mu_);
  while (running_ > 0) {
    if (absl::Now() >= deadline) return false;
    changed_.WaitWithTimeout(&mu_, std::min(deadline - absl::Now(), absl::Milliseconds(200)));
  }
  return true;
}

void JobManager::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ && workers_.empty()) return;
    for (auto& [id, rec] : jobs_) {
      if (rec->job.state() == v1::JOB_STATE_RUNNING) rec->interrupt.store(true);
    }
    // Let running jobs notice the interrupt and record themselves before the workers exit.
    draining_.store(true);
    changed_.SignalAll();
  }
  (void)WaitIdle(absl::Seconds(30));
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    changed_.SignalAll();
    claimable_.SignalAll();
  }
  for (std::thread& t : workers_) t.join();
  workers_.clear();
  if (keeper_.joinable()) keeper_.join();
}

int64_t JobManager::running() const {
  absl::MutexLock lock(&mu_);
  return running_;
}

int64_t JobManager::queued() const {
  absl::MutexLock lock(&mu_);
  if (shared_ != nullptr) return shared_queued_;
  return static_cast<int64_t>(queue_.size());
}

// ---- Shared mode (a SharedJobStore; see job_manager.h) ----

absl::StatusOr<v1::Job> JobManager::SharedSubmit(const v1::QuantizeModelRequest& request) {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return absl::UnavailableError("server is shutting down");
  }
  v1::Job job;
  job.set_job_id(NewJobId());
  job.set_kind("model");
  job.set_state(v1::JOB_STATE_QUEUED);
  *job.mutable_request() = request;
  job.mutable_progress()->set_eta_seconds(-1);
  SetTime(job.mutable_create_time(), absl::Now());
  bool existed = false;
  absl::StatusOr<v1::Job> out = shared_->Insert(job, options_.queue_capacity, &existed);
  if (!out.ok()) return out.status();
  if (existed) {
    if (google::protobuf::util::MessageDifferencer::Equals(out->request(), request)) return out;
    return absl::AlreadyExistsError(
        absl::StrCat("request_id '", request.request_id(), "' was already used for job ",
                     out->job_id(), " with different parameters"));
  }
  if (metrics_ != nullptr) metrics_->JobSubmitted("model");
  LogLine("job ", job.job_id(), " state NEW->QUEUED input=", request.input_uri(),
          " output=", request.output_uri(), " (shared store)");
  absl::MutexLock lock(&mu_);
  claimable_.SignalAll();
  return out;
}

absl::StatusOr<v1::ListJobsResponse> JobManager::SharedList(const v1::ListJobsRequest& request) {
  const int page_size = request.page_size() <= 0 ? 50 : std::min(request.page_size(), 1000);
  int64_t before = 0;
  if (!request.page_token().empty()) (void)absl::SimpleAtoi(request.page_token(), &before);
  std::vector<v1::JobState> states;
  for (int s : request.states()) states.push_back(static_cast<v1::JobState>(s));
  absl::StatusOr<std::vector<StoredJob>> jobs = shared_->List(states, before, page_size + 1);
  if (!jobs.ok()) return jobs.status();
  v1::ListJobsResponse out;
  for (size_t i = 0; i < jobs->size() && static_cast<int>(i) < page_size; ++i) {
    *out.add_jobs() = (*jobs)[i].job;
  }
  if (static_cast<int>(jobs->size()) > page_size) {
    out.set_next_page_token(std::to_string((*jobs)[page_size - 1].seq));
  }
  return out;
}

absl::Status JobManager::SharedWatch(const std::string& job_id, absl::Duration heartbeat,
                                     const std::function<bool(const v1::JobEvent&)>& send,
                                     const std::function<bool()>& cancelled) {
  absl::StatusOr<StoredJob> stored = shared_->Get(job_id);
  if (!stored.ok()) return stored.status();
  // Tensors finished before the snapshot are not replayed (as in the one-replica mode).
  int64_t cursor = 0;
  if (absl::StatusOr<std::vector<v1::TensorResult>> t = shared_->TensorsAfter(job_id, 0, &cursor);
      !t.ok()) {
    return t.status();
  }
  v1::JobEvent event;
  event.set_type(v1::EVENT_TYPE_SNAPSHOT);
  *event.mutable_job() = stored->job;
  SetTime(event.mutable_time(), absl::Now());
  if (!send(event)) return absl::CancelledError("watcher went away");
  bool terminal = IsTerminal(stored->job.state());
  if (terminal) {
    event.set_type(v1::EVENT_TYPE_TERMINAL);
    SetTime(event.mutable_time(), absl::Now());
    if (!send(event)) return absl::CancelledError("watcher went away");
    return absl::OkStatus();
  }
  int64_t seen_version = stored->version;
  absl::Time last_sent = absl::Now();
  int failures = 0;
  while (!terminal) {
    {
      absl::MutexLock lock(&mu_);
      const absl::Time until = absl::Now() + options_.lease_poll;
      while (!stopping_ && absl::Now() < until) {
        changed_.WaitWithTimeout(&mu_, std::max(until - absl::Now(), absl::Milliseconds(1)));
      }
      if (stopping_) {
        return absl::UnavailableError("server is shutting down; re-attach to the job later");
      }
      // Draining: another replica answers for the job; the client re-attaches there.
      if (draining_.load()) {
        return absl::UnavailableError("server is draining; re-attach to the job");
      }
    }
    if (cancelled && cancelled()) return absl::CancelledError("watcher went away");
    stored = shared_->Get(job_id);
    if (!stored.ok()) {
      if (absl::IsNotFound(stored.status())) return stored.status();
      // The database is briefly unreachable: keep the stream, heartbeats stop until it is back.
      if (++failures * options_.lease_poll > absl::Seconds(30)) return stored.status();
      continue;
    }
    failures = 0;
    event.Clear();
    terminal = IsTerminal(stored->job.state());
    if (stored->version != seen_version) {
      event.set_type(terminal ? v1::EVENT_TYPE_TERMINAL : v1::EVENT_TYPE_PROGRESS);
      absl::StatusOr<std::vector<v1::TensorResult>> t =
          shared_->TensorsAfter(job_id, cursor, &cursor);
      if (t.ok()) {
        for (v1::TensorResult& r : *t) *event.add_tensors() = std::move(r);
      }
      seen_version = stored->version;
    } else if (absl::Now() - last_sent >= heartbeat) {
      event.set_type(v1::EVENT_TYPE_HEARTBEAT);
    } else {
      continue;
    }
    *event.mutable_job() = stored->job;
    SetTime(event.mutable_time(), absl::Now());
    if (!send(event)) return absl::CancelledError("watcher went away");
    last_sent = absl::Now();
  }
  return absl::OkStatus();
}

void JobManager::SharedWorkerLoop(int worker_index) {
  absl::Time last_error_log = absl::InfinitePast();
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      if (draining_.load()) {
        claimable_.WaitWithTimeout(&mu_, options_.claim_poll);
        continue;
      }
    }
    absl::StatusOr<std::optional<v1::Job>> claimed = shared_->Claim(options_.lease, absl::Now());
    if (!claimed.ok() || !claimed->has_value()) {
      if (!claimed.ok() && absl::Now() - last_error_log > absl::Seconds(30)) {
        LogLine("worker ", worker_index, ": cannot claim jobs: ", claimed.status().ToString());
        last_error_log = absl::Now();
      }
      absl::MutexLock lock(&mu_);
      if (!stopping_) claimable_.WaitWithTimeout(&mu_, options_.claim_poll);
      continue;
    }
    auto rec = std::make_unique<Record>();
    rec->job = std::move(**claimed);
    // The store set the progress of the units an earlier owner finished (JournaledProgress, in
    // the claim): a floor until this run passes it.
    rec->restored = rec->job.progress();
    Record* r = rec.get();
    {
      absl::MutexLock lock(&mu_);
      const std::string id = r->job.job_id();
      const absl::Duration wait = absl::Now() - FromTs(r->job.create_time());
      // Claimed just as a drain began: hand it back at its first check instead of holding the
      // shutdown up.
      if (draining_.load()) r->interrupt.store(true);
      jobs_[id] = std::move(rec);
      ++running_;
      UpdateGaugesLocked();
      if (metrics_ != nullptr) metrics_->QueueWait(absl::ToDoubleSeconds(wait));
      LogLine("job ", id, " state QUEUED->RUNNING worker=", worker_index, " replica=",
              shared_->replica_id(), " (claimed from the shared store)");
      changed_.SignalAll();
    }
    RunJob(r, worker_index);
  }
}

void JobManager::SharedFinish(Record* rec, int worker_index, absl::Duration run, bool interrupted,
                              const std::string& detail) {
  v1::Job job;
  std::vector<v1::TensorResult> tail;
  {
    absl::MutexLock lock(&mu_);
    rec->finishing = true;
    job = rec->job;
    tail.assign(rec->tensors.begin() + static_cast<std::ptrdiff_t>(rec->saved_tensors),
                rec->tensors.end());
  }
  const std::string id = job.job_id();
  absl::Status saved;
  if (rec->lease_lost.load()) {
    saved = absl::FailedPreconditionError("lease lost");
  } else {
    // The last tensors for watchers, then the outcome (which releases the lease).
    if (!tail.empty()) (void)shared_->Renew(id, options_.lease, &job, tail);
    saved = shared_->Release(job);
  }
  absl::MutexLock lock(&mu_);
  --running_;
  if (rec->lease_lost.load() || absl::IsFailedPrecondition(saved)) {
    LogLine("job ", id, " abandoned by replica ", shared_->replica_id(),
            ": its lease was lost to another replica, which runs it now");
  } else if (!saved.ok()) {
    LogLine("job ", id, " outcome could not be saved (its lease will expire and another replica ",
            "runs it again): ", saved.ToString());
  } else if (interrupted) {
    LogLine("job ", id, " state RUNNING->QUEUED (interrupted by shutdown; handed back to the ",
            "fleet) run=", absl::FormatDuration(run));
  } else {
    if (metrics_ != nullptr) {
      metrics_->JobFinished("model", Outcome(job.state()), absl::ToDoubleSeconds(run));
    }
    LogLine("job ", id, " state RUNNING->", JobStateName(job.state()), " worker=", worker_index,
            " run=", absl::FormatDuration(run), " tensors=", job.progress().tensors_done(), "/",
            job.progress().tensors_total(), " bytes_in=", job.progress().bytes_in(),
            " bytes_out=", job.progress().bytes_out(), detail);
  }
  jobs_.erase(id);  // deletes *rec
  UpdateGaugesLocked();
  changed_.SignalAll();
}

absl::Status JobManager::ConfirmLease(Record* rec) {
  if (shared_ == nullptr) return absl::OkStatus();
  std::string id;
  {
    absl::MutexLock lock(&mu_);
    id = rec->job.job_id();
  }
  // A store that does not answer cannot confirm the lease: try for up to one lease, then give
  // the job up (its lease expires and another replica resumes it from the staging).
  const absl::Time deadline = absl::Now() + options_.lease;
  absl::Status why;
  while (!rec->lease_lost.load()) {
    absl::StatusOr<LeaseRenewal> r = shared_->Renew(id, options_.lease, nullptr, {});
    if (r.ok() && r->held) return absl::OkStatus();
    if (r.ok()) {
      why = absl::FailedPreconditionError("another replica claimed the job");
      break;
    }
    why = r.status();
    if (absl::Now() >= deadline) break;
    absl::SleepFor(std::min(options_.lease_poll, absl::Milliseconds(500)));
  }
  if (why.ok()) why = absl::FailedPreconditionError("another replica claimed the job");
  rec->interrupt.store(true);
  if (!rec->lease_lost.exchange(true)) {
    LogLine("job ", id, " left to its new owner by replica ", shared_->replica_id(),
            ": its lease could not be confirmed before publishing (", std::string(why.message()),
            ")");
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "job ", id, ": the lease of replica ", shared_->replica_id(), " could not be confirmed (",
      why.message(), "); the output and its staging are left to the job's owner"));
}

void JobManager::KeeperLoop() {
  struct Item {
    std::string id;
    int64_t version = 0;
    bool changed = false;
    v1::Job job;
    std::vector<v1::TensorResult> tensors;
  };
  absl::Time last_count = absl::InfinitePast();
  absl::Time last_prune = absl::InfinitePast();
  absl::Time last_error_log = absl::InfinitePast();
  while (true) {
    std::vector<Item> items;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_ && running_ == 0) return;
      for (auto& [id, rec] : jobs_) {
        if (rec->finishing || rec->job.state() != v1::JOB_STATE_RUNNING) continue;
        Item item;
        item.id = id;
        item.version = rec->version;
        item.changed = rec->version != rec->saved_version;
        if (item.changed) item.job = rec->job;
        item.tensors.assign(rec->tensors.begin() + static_cast<std::ptrdiff_t>(rec->saved_tensors),
                            rec->tensors.end());
        items.push_back(std::move(item));
      }
    }
    for (Item& item : items) {
      absl::StatusOr<LeaseRenewal> r = shared_->Renew(
          item.id, options_.lease, item.changed ? &item.job : nullptr, item.tensors);
      absl::MutexLock lock(&mu_);
      auto it = jobs_.find(item.id);
      if (it == jobs_.end() || it->second->finishing) continue;
      Record& rec = *it->second;
      if (!r.ok()) {
        if (absl::Now() - last_error_log > absl::Seconds(10)) {
          LogLine("job ", item.id, " lease renewal failed: ", r.status().ToString());
          last_error_log = absl::Now();
        }
        continue;
      }
      if (!r->held) {
        if (!rec.lease_lost.exchange(true)) {
          LogLine("job ", item.id, " lease lost: another replica claimed it; abandoning the run");
        }
        rec.interrupt.store(true);
        continue;
      }
      if (item.changed) rec.saved_version = item.version;
      rec.saved_tensors += item.tensors.size();
      if (r->cancel_requested && !rec.cancel.load()) {
        rec.cancel.store(true);
        rec.job.set_cancel_requested(true);
        ++rec.version;
        LogLine("job ", item.id, " cancel requested through another replica");
        changed_.SignalAll();
      }
    }
    const absl::Time now = absl::Now();
    if (now - last_count > absl::Seconds(5)) {
      last_count = now;
      if (absl::StatusOr<int64_t> q = shared_->Count(v1::JOB_STATE_QUEUED); q.ok()) {
        absl::MutexLock lock(&mu_);
        shared_queued_ = *q;
        UpdateGaugesLocked();
      }
    }
    if (now - last_prune > absl::Minutes(1)) {
      last_prune = now;
      absl::StatusOr<int64_t> n =
          shared_->Prune(options_.max_finished_jobs, options_.finished_job_ttl);
      if (n.ok() && *n > 0) LogLine("retention: forgot ", *n, " finished job(s) in the store");
    }
    absl::MutexLock lock(&mu_);
    const absl::Time until = absl::Now() + options_.lease_poll;
    while (!(stopping_ && running_ == 0) && absl::Now() < until) {
      claimable_.WaitWithTimeout(&mu_, until - absl::Now());
    }
  }
}

}  // namespace nvfp4::server
