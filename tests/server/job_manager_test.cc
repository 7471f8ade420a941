#include "server/job_manager.h"

#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "pipeline/resume.h"
#include "server/job_journal.h"
#include "tests/server/fakes.h"
#include "tests/testing/temp_dir.h"

namespace nvfp4::server {
namespace {

using testing::FakePipeline;

class JobManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::vector<std::unique_ptr<QuantizerBackend>> b;
    b.push_back(MakeCpuBackend(1));
    devices_ = std::make_unique<DevicePool>(std::move(b));
  }
  std::unique_ptr<JobManager> Make(int capacity, int64_t max_finished = 10000,
                                   absl::Duration ttl = absl::Hours(1)) {
    JobManagerOptions o;
    o.max_finished_jobs = max_finished;
    o.finished_job_ttl = ttl;
    o.queue_capacity = capacity;
    o.workers = 1;
    o.default_heartbeat = absl::Seconds(1);
    auto m = std::make_unique<JobManager>(o, &pipeline_, nullptr, devices_.get(), &store_, nullptr);
    EXPECT_TRUE(m->Start().ok());
    return m;
  }
  static v1::QuantizeModelRequest Req(const std::string& in, const std::string& rid = "") {
    v1::QuantizeModelRequest r;
    r.set_input_uri(in);
    r.set_output_uri("file:///out");
    r.set_request_id(rid);
    return r;
  }
  v1::Job WaitTerminal(JobManager& m, const std::string& id) {
    for (int i = 0; i < 500; ++i) {
      auto j = m.Get(id);
      if (j.ok() && IsTerminal(j->state())) return *j;
      absl::SleepFor(absl::Milliseconds(10));
    }
    ADD_FAILURE() << "job " << id << " did not finish";
    return {};
  }
  FakePipeline pipeline_;
  MemoryJobStore store_;
  std::unique_ptr<DevicePool> devices_;
};

TEST_F(JobManagerTest, RunsToSuccessWithProgress) {
  auto m = Make(4);
  auto job = m->Submit(Req("file:///in"));
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), v1::JOB_STATE_QUEUED);
  v1::Job done = WaitTerminal(*m, job->job_id());
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done.progress().tensors_done(), 3);
  EXPECT_EQ(done.progress().bytes_in(), 3000);
  EXPECT_EQ(done.outputs_size(), 1);
}

TEST_F(JobManagerTest, RetentionForgetsTheOldestFinishedJobs) {
  pipeline_.per_tensor = absl::Milliseconds(1);
  auto m = Make(4, /*max_finished=*/2);
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) {
    auto job = m->Submit(Req(absl::StrCat(i == 1 ? "file:///fail" : "file:///in", i),
                             absl::StrCat("rid-", i)));
    ASSERT_TRUE(job.ok()) << job.status();
    ids.push_back(job->job_id());
    WaitTerminal(*m, job->job_id());
  }
  EXPECT_TRUE(absl::IsNotFound(m->Get(ids[0]).status()));
  EXPECT_TRUE(absl::IsNotFound(m->Get(ids[1]).status()));
  EXPECT_TRUE(m->Get(ids[2]).ok());
  EXPECT_TRUE(m->Get(ids[3]).ok());
  auto saved = store_.LoadAll();
  ASSERT_TRUE(saved.ok());
  EXPECT_EQ(saved->size(), 2u);  // the store forgets them too
  auto listed = m->List(v1::ListJobsRequest());
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->jobs_size(), 2);
  // The request_id of a forgotten job is free again; the kept ones stay idempotent.
  auto reused = m->Submit(Req("file:///other", "rid-0"));
  ASSERT_TRUE(reused.ok()) << reused.status();
  EXPECT_NE(reused->job_id(), ids[0]);
  EXPECT_TRUE(absl::IsAlreadyExists(m->Submit(Req("file:///other", "rid-3")).status()));
  WaitTerminal(*m, reused->job_id());
}

TEST_F(JobManagerTest, RetentionTtlWaitsForWatchers) {
  pipeline_.per_tensor = absl::Milliseconds(1);
  auto m = Make(4, /*max_finished=*/100, /*ttl=*/absl::Milliseconds(50));
  auto job = m->Submit(Req("file:///in"));
  ASSERT_TRUE(job.ok());
  WaitTerminal(*m, job->job_id());
  // A watcher that blocks in its first send keeps the finished job past its ttl.
  absl::Notification in_send, release;
  std::thread watcher([&] {
    (void)m->Watch(
        job->job_id(), absl::Seconds(1),
        [&](const v1::JobEvent&) {
          if (!in_send.HasBeenNotified()) in_send.Notify();
          release.WaitForNotification();
          return true;
        },
        [] { return false; });
  });
  in_send.WaitForNotification();
  absl::SleepFor(absl::Milliseconds(120));
  ASSERT_TRUE(m->List(v1::ListJobsRequest()).ok());  // an eviction pass
  EXPECT_TRUE(m->Get(job->job_id()).ok()) << "evicted while a stream reads it";
  release.Notify();
  watcher.join();
  ASSERT_TRUE(m->List(v1::ListJobsRequest()).ok());
  EXPECT_TRUE(absl::IsNotFound(m->Get(job->job_id()).status()));
}

// The ETA follows the quantized bytes: a large copied tensor that finishes at once must not make
// the job look almost done (by bytes it is 99.6% done after it).
TEST_F(JobManagerTest, EtaFollowsQuantizedBytesNotCopiedBytes) {
  pipeline_.tensors = 4;
  pipeline_.per_tensor = absl::Milliseconds(100);
  pipeline_.copy_bytes = 1'000'000;
  auto m = Make(4);
  auto job = m->Submit(Req("file:///in"));
  ASSERT_TRUE(job.ok());
  std::vector<v1::Job> seen;
  ASSERT_TRUE(m->Watch(
                   job->job_id(), absl::Seconds(1),
                   [&](const v1::JobEvent& e) {
                     seen.push_back(e.job());
                     return true;
                   },
                   [] { return false; })
                  .ok());
  int checked = 0;
  for (const v1::Job& j : seen) {
    const int64_t done = j.progress().tensors_done();
    if (j.state() != v1::JOB_STATE_RUNNING || done == 0) continue;
    if (done == 1) {  // only the copy: no estimate yet
      EXPECT_EQ(j.progress().eta_seconds(), -1);
    } else if (done < 5) {  // k of 4 quantized tensors done: 4 - k remain, 100 ms each
      const double remaining = 0.1 * static_cast<double>(5 - done);
      EXPECT_GE(j.progress().eta_seconds(), 0.5 * remaining) << "tensors_done " << done;
      EXPECT_LT(j.progress().eta_seconds(), 30.0);
      ++checked;
    }
  }
  EXPECT_GE(checked, 1);
}

TEST_F(JobManagerTest, FailureCarriesCodeAndMessage) {
  auto m = Make(4);
  auto job = m->Submit(Req("file:///fail"));
  ASSERT_TRUE(job.ok());
  v1::Job done = WaitTerminal(*m, job->job_id());
  EXPECT_EQ(done.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(done.error().code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_NE(done.error().message().find("t0"), std::string::npos);
}

TEST_F(JobManagerTest, QueueFullIsUnavailable) {
  pipeline_.hold = true;
  auto m = Make(1);
  auto a = m->Submit(Req("file:///a"));
  ASSERT_TRUE(a.ok());
  // Wait until the worker took job a; then b fills the queue and c is refused.
  for (int i = 0; i < 200 && m->running() == 0; ++i) absl::SleepFor(absl::Milliseconds(5));
  ASSERT_TRUE(m->Submit(Req("file:///b")).ok());
  auto c = m->Submit(Req("file:///c"));
  EXPECT_TRUE(absl::IsUnavailable(c.status())) << c.status();
  pipeline_.hold = false;
}

TEST_F(JobManagerTest, RequestIdIsIdempotent) {
  auto m = Make(4);
  auto a = m->Submit(Req("file:///a", "rid-1"));
  auto b = m->Submit(Req("file:///a", "rid-1"));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->job_id(), b->job_id());
  auto c = m->Submit(Req("file:///other", "rid-1"));
  EXPECT_TRUE(absl::IsAlreadyExists(c.status())) << c.status();
}

TEST_F(JobManagerTest, CancelRunningAndQueuedIdempotent) {
  pipeline_.hold = true;
  auto m = Make(4);
  auto a = m->Submit(Req("file:///a"));
  auto b = m->Submit(Req("file:///b"));
  ASSERT_TRUE(a.ok() && b.ok());
  for (int i = 0; i < 200 && m->running() == 0; ++i) absl::SleepFor(absl::Milliseconds(5));
  auto cb = m->Cancel(b->job_id());
  ASSERT_TRUE(cb.ok());
  EXPECT_EQ(cb->state(), v1::JOB_STATE_CANCELLED);
  const absl::Time t0 = absl::Now();
  ASSERT_TRUE(m->Cancel(a->job_id()).ok());
  v1::Job done = WaitTerminal(*m, a->job_id());
  EXPECT_EQ(done.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_LT(absl::Now() - t0, absl::Seconds(1));
  auto again = m->Cancel(a->job_id());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->state(), v1::JOB_STATE_CANCELLED);
  EXPECT_TRUE(absl::IsNotFound(m->Cancel("job-nope").status()));
}

TEST_F(JobManagerTest, ListIsNewestFirstPaginatedAndFiltered) {
  auto m = Make(16);
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(m->Submit(Req("file:///x"))->job_id());
  for (const auto& id : ids) WaitTerminal(*m, id);
  ASSERT_TRUE(m->Submit(Req("file:///fail")).ok());
  v1::ListJobsRequest r;
  r.set_page_size(2);
  r.add_states(v1::JOB_STATE_SUCCEEDED);
  std::vector<std::string> seen;
  while (true) {
    auto page = m->List(r);
    ASSERT_TRUE(page.ok());
    for (const auto& j : page->jobs()) seen.push_back(j.job_id());
    if (page->next_page_token().empty()) break;
    r.set_page_token(page->next_page_token());
  }
  ASSERT_EQ(seen.size(), 5u);
  EXPECT_EQ(seen.front(), ids.back());
  EXPECT_EQ(seen.back(), ids.front());
}

TEST_F(JobManagerTest, WatchSendsSnapshotProgressAndTerminal) {
  pipeline_.per_tensor = absl::Milliseconds(50);
  auto m = Make(4);
  auto job = m->Submit(Req("file:///in"));
  ASSERT_TRUE(job.ok());
  std::vector<v1::JobEvent> events;
  absl::Status s = m->Watch(
      job->job_id(), absl::Seconds(1),
      [&](const v1::JobEvent& e) {
        events.push_back(e);
        return true;
      },
      [] { return false; });
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events.front().type(), v1::EVENT_TYPE_SNAPSHOT);
  EXPECT_EQ(events.back().type(), v1::EVENT_TYPE_TERMINAL);
  EXPECT_EQ(events.back().job().state(), v1::JOB_STATE_SUCCEEDED);
  int tensors = 0;
  for (const auto& e : events) tensors += e.tensors_size();
  EXPECT_EQ(tensors, 3);
  // Re-attach after the end: snapshot + terminal.
  events.clear();
  ASSERT_TRUE(m->Watch(
                   job->job_id(), absl::Seconds(1),
                   [&](const v1::JobEvent& e) {
                     events.push_back(e);
                     return true;
                   },
                   [] { return false; })
                  .ok());
  ASSERT_EQ(events.size(), 2u);
  EXPECT_TRUE(absl::IsNotFound(m->Watch(
      "job-x", absl::Seconds(1), [](const v1::JobEvent&) { return true; }, nullptr)));
}

// A held job makes no progress: the watcher gets a heartbeat after each quiet interval (5 ms
// here: the mechanism is the same at the service's seconds), and the job is let go after the third.
TEST_F(JobManagerTest, WatchHeartbeats) {
  pipeline_.hold = true;
  auto m = Make(4);
  auto job = m->Submit(Req("file:///in"));
  constexpr absl::Duration kInterval = absl::Milliseconds(5);
  int heartbeats = 0;
  absl::Time third = absl::InfiniteFuture();
  const absl::Time start = absl::Now();
  ASSERT_TRUE(m->Watch(
                   job->job_id(), kInterval,
                   [&](const v1::JobEvent& e) {
                     if (e.type() == v1::EVENT_TYPE_HEARTBEAT && ++heartbeats == 3) {
                       third = absl::Now();
                       pipeline_.hold = false;
                     }
                     return true;
                   },
                   nullptr)
                  .ok());
  EXPECT_GE(heartbeats, 3);
  // Each heartbeat follows a quiet interval: the third comes no sooner than three intervals in.
  EXPECT_GE(third - start, 3 * kInterval);
  EXPECT_EQ(WaitTerminal(*m, job->job_id()).state(), v1::JOB_STATE_SUCCEEDED);
}

TEST_F(JobManagerTest, DrainRefusesNewJobsAndStopRequeuesRunning) {
  pipeline_.hold = true;
  auto m = Make(4);
  auto a = m->Submit(Req("file:///a"));
  for (int i = 0; i < 200 && m->running() == 0; ++i) absl::SleepFor(absl::Milliseconds(5));
  m->BeginDrain();
  EXPECT_TRUE(absl::IsUnavailable(m->Submit(Req("file:///b")).status()));
  EXPECT_FALSE(m->WaitIdle(absl::Milliseconds(100)));
  m->Stop();
  auto saved = store_.LoadAll();
  ASSERT_TRUE(saved.ok());
  ASSERT_EQ(saved->size(), 1u);
  EXPECT_EQ((*saved)[0].state(), v1::JOB_STATE_QUEUED);
  // A new manager over the same store runs it again.
  pipeline_.hold = false;
  auto m2 = Make(4);
  EXPECT_EQ(WaitTerminal(*m2, a->job_id()).state(), v1::JOB_STATE_SUCCEEDED);
}

// After a restart, an interrupted job reports the progress its run journaled (tensors_done,
// bytes) while it waits and until the resumed run has caught up, instead of 0.
TEST_F(JobManagerTest, RestoredJobReportsItsJournaledProgress) {
  nvfp4::testing::TempDir dir;
  {
    auto journal = JobJournal::Open(dir.path());
    ASSERT_TRUE(journal.ok()) << journal.status();
    v1::Job job;
    job.set_job_id("job-r");
    job.set_kind("model");
    job.set_state(v1::JOB_STATE_RUNNING);
    *job.mutable_request() = Req("file:///r");
    ASSERT_TRUE((*journal)->Save(job).ok());
    auto unit = [](int64_t index, int modules) {
      pipeline::JournaledUnit u;
      u.plan = "plan-1";
      u.unit = index;
      u.name = absl::StrCat("unit", index);
      u.bytes_in = 100;
      u.bytes_out = 40;
      u.modules.resize(static_cast<size_t>(modules));
      return pipeline::EncodeJournaledUnit(u);
    };
    // A copied unit (1 tensor), a fused unit of 2 modules, unit 0 journaled again (a redone
    // unit counts once), and a quantized unit of 1 module: 4 tensors, 300 bytes in.
    for (const std::string& u : {unit(0, 0), unit(1, 2), unit(0, 0), unit(2, 1)}) {
      ASSERT_TRUE((*journal)->AppendUnit("job-r", u).ok());
    }
  }  // the server stops
  auto journal = JobJournal::Open(dir.path());
  ASSERT_TRUE(journal.ok()) << journal.status();
  pipeline_.hold = true;
  JobManagerOptions o;
  o.workers = 1;
  JobManager m(o, &pipeline_, nullptr, devices_.get(), journal->get(), nullptr);
  ASSERT_TRUE(m.Start().ok());
  auto j = m.Get("job-r");
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(j->progress().tensors_done(), 4);
  EXPECT_EQ(j->progress().tensors_resumed(), 4);
  EXPECT_EQ(j->progress().bytes_in(), 300);
  EXPECT_EQ(j->progress().bytes_out(), 120);
  // The run reports its own tensors (the fake pipeline: 3); the journaled count is a floor.
  for (int i = 0; i < 200 && m.running() == 0; ++i) absl::SleepFor(absl::Milliseconds(5));
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(m.Get("job-r")->progress().tensors_done(), 4);
  pipeline_.hold = false;
  const v1::Job done = WaitTerminal(m, "job-r");
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done.progress().tensors_done(), 4);
  m.Stop();
}

}  // namespace
}  // namespace nvfp4::server
