// PostgresJobStore against a real PostgreSQL server (tests/testing/with_postgres.sh starts one and
// sets NVFP4_TEST_PG_URI; CTest runs this binary through it). Each test gets a database of its
// own. Without NVFP4_TEST_PG_URI every test fails: a fleet store that was never tested is not
// "skipped".
#include "server/postgres_job_store.h"

#include <libpq-fe.h>

#include <atomic>
#include <cstdlib>
#include <functional>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "server/job_manager.h"
#include "tests/server/fakes.h"

namespace nvfp4::server {
namespace {

std::string BaseUri() {
  const char* uri = std::getenv("NVFP4_TEST_PG_URI");
  return uri != nullptr ? uri : "";
}

class PostgresJobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string base = BaseUri();
    ASSERT_FALSE(base.empty()) << "NVFP4_TEST_PG_URI is not set: run this test through "
                                  "tests/testing/with_postgres.sh (ctest does)";
    std::mt19937_64 rng{std::random_device{}()};
    db_ = absl::StrFormat("t_%016x", rng());
    PGconn* c = PQconnectdb(base.c_str());
    ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c);
    PGresult* r = PQexec(c, absl::StrCat("CREATE DATABASE ", db_).c_str());
    ASSERT_EQ(PQresultStatus(r), PGRES_COMMAND_OK) << PQerrorMessage(c);
    PQclear(r);
    PQfinish(c);
    const size_t slash = base.rfind('/');
    uri_ = absl::StrCat(base.substr(0, slash + 1), db_);
  }

  std::unique_ptr<PostgresJobStore> Replica(const std::string& name) {
    absl::StatusOr<std::unique_ptr<PostgresJobStore>> s = PostgresJobStore::Connect(uri_, name);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *std::move(s) : nullptr;
  }

  static v1::Job NewJob(const std::string& id, const std::string& request_id = "") {
    v1::Job j;
    j.set_job_id(id);
    j.set_kind("model");
    j.set_state(v1::JOB_STATE_QUEUED);
    j.mutable_request()->set_input_uri("file:///in/" + id);
    j.mutable_request()->set_output_uri("file:///out/" + id);
    j.mutable_request()->set_request_id(request_id);
    return j;
  }

  std::string db_;
  std::string uri_;
};

TEST_F(PostgresJobStoreTest, SchemaCreationIsIdempotentAcrossReplicasStartingTogether) {
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 6; ++i) {
    threads.emplace_back([&, i] {
      auto s = PostgresJobStore::Connect(uri_, absl::StrCat("r", i));
      if (s.ok()) ++ok;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 6);
  EXPECT_NE(Replica("again"), nullptr);
}

TEST_F(PostgresJobStoreTest, ConnectToNothingIsUnavailableAndHidesThePassword) {
  auto s = PostgresJobStore::Connect("postgresql://u:s3cr3t@127.0.0.1:1/db?connect_timeout=2", "r");
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::IsUnavailable(s.status())) << s.status();
  EXPECT_EQ(std::string(s.status().message()).find("s3cr3t"), std::string::npos);
}

TEST_F(PostgresJobStoreTest, SaveLoadAllDeleteAsAnyJobStore) {
  auto a = Replica("a");
  ASSERT_NE(a, nullptr);
  v1::Job j = NewJob("job-1");
  ASSERT_TRUE(a->Save(j).ok());
  j.set_state(v1::JOB_STATE_SUCCEEDED);
  ASSERT_TRUE(a->Save(j).ok());
  ASSERT_TRUE(a->Save(NewJob("job-2")).ok());
  auto all = Replica("b")->LoadAll();
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].job_id(), "job-1");
  EXPECT_EQ((*all)[0].state(), v1::JOB_STATE_SUCCEEDED);
  ASSERT_TRUE(a->Delete("job-1").ok());
  ASSERT_TRUE(a->Delete("unknown").ok());
  EXPECT_EQ(a->LoadAll()->size(), 1u);
}

TEST_F(PostgresJobStoreTest, InsertIsIdempotentPerRequestIdAndBoundedByQueueCapacity) {
  auto a = Replica("a");
  auto b = Replica("b");
  bool existed = true;
  ASSERT_TRUE(a->Insert(NewJob("job-1", "req-1"), 2, &existed).ok());
  EXPECT_FALSE(existed);
  auto again = b->Insert(NewJob("job-other", "req-1"), 2, &existed);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(existed);
  EXPECT_EQ(again->job_id(), "job-1");
  ASSERT_TRUE(b->Insert(NewJob("job-2"), 2, &existed).ok());
  auto full = a->Insert(NewJob("job-3"), 2, &existed);
  EXPECT_TRUE(absl::IsUnavailable(full.status())) << full.status();
  EXPECT_TRUE(absl::IsNotFound(a->Get("job-3").status()));
}

TEST_F(PostgresJobStoreTest, ConcurrentClaimsTakeEachJobExactlyOnce) {
  auto setup = Replica("setup");
  bool existed = false;
  for (int i = 0; i < 40; ++i) {
    ASSERT_TRUE(setup->Insert(NewJob(absl::StrFormat("job-%02d", i)), 100, &existed).ok());
  }
  absl::Mutex mu;
  std::multiset<std::string> claimed;
  std::vector<std::thread> threads;
  for (int r = 0; r < 4; ++r) {
    threads.emplace_back([&, r] {
      auto store = PostgresJobStore::Connect(uri_, absl::StrCat("replica-", r));
      ASSERT_TRUE(store.ok());
      while (true) {
        auto c = (*store)->Claim(absl::Seconds(30), absl::Now());
        ASSERT_TRUE(c.ok()) << c.status();
        if (!c->has_value()) return;
        EXPECT_EQ((*c)->state(), v1::JOB_STATE_RUNNING);
        absl::MutexLock lock(&mu);
        claimed.insert((*c)->job_id());
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(claimed.size(), 40u);
  EXPECT_EQ(std::set<std::string>(claimed.begin(), claimed.end()).size(), 40u);
  auto running = setup->List({v1::JOB_STATE_RUNNING}, 0, 100);
  ASSERT_TRUE(running.ok());
  EXPECT_EQ(running->size(), 40u);
  for (const StoredJob& j : *running) EXPECT_NE(j.owner, "");
}

TEST_F(PostgresJobStoreTest, ExpiredLeaseIsClaimedByAnotherReplicaAndTheOldOwnerIsFenced) {
  auto a = Replica("a");
  auto b = Replica("b");
  bool existed = false;
  ASSERT_TRUE(a->Insert(NewJob("job-1"), 10, &existed).ok());
  auto c = a->Claim(absl::Seconds(1), absl::Now());
  ASSERT_TRUE(c.ok() && c->has_value());
  auto unit = a->ResumeJournalFor("job-1");
  pipeline::JournaledUnit u;
  u.plan = "plan";
  u.unit = 0;
  u.name = "t0";
  u.modules.resize(3);  // a fused group: three tensors
  u.modules[0].module = "m.q";
  u.modules[1].module = "m.k";
  u.modules[2].module = "m.v";
  u.bytes_in = 600;
  u.bytes_out = 170;
  ASSERT_TRUE(unit->Append(u).ok());
  // Renewed: nobody else can claim it.
  auto renewed = a->Renew("job-1", absl::Seconds(1), nullptr, {});
  ASSERT_TRUE(renewed.ok() && renewed->held);
  EXPECT_FALSE(b->Claim(absl::Seconds(30), absl::Now())->has_value());
  absl::SleepFor(absl::Milliseconds(1300));  // a stops renewing: its lease expires
  auto taken = b->Claim(absl::Seconds(30), absl::Now());
  ASSERT_TRUE(taken.ok() && taken->has_value()) << taken.status();
  EXPECT_EQ((*taken)->job_id(), "job-1");
  EXPECT_EQ(b->Get("job-1")->owner, "b");
  // From the claim on, every replica reports A's journaled units as the job's progress.
  for (const v1::Job& j : {**taken, a->Get("job-1")->job}) {
    EXPECT_EQ(j.progress().tensors_done(), 3);
    EXPECT_EQ(j.progress().tensors_resumed(), 3);
    EXPECT_EQ(j.progress().bytes_in(), 600);
    EXPECT_EQ(j.progress().bytes_out(), 170);
  }
  // B resumes from A's journaled unit.
  auto units = b->ResumeJournalFor("job-1")->Load();
  ASSERT_TRUE(units.ok()) << units.status();
  ASSERT_EQ(units->size(), 1u);
  EXPECT_EQ((*units)[0].name, "t0");
  // A's writes are refused from now on.
  auto lost = a->Renew("job-1", absl::Seconds(30), nullptr, {});
  ASSERT_TRUE(lost.ok());
  EXPECT_FALSE(lost->held);
  u.unit = 1;
  EXPECT_TRUE(absl::IsFailedPrecondition(unit->Append(u)));
  v1::Job done = (*taken)->job_id().empty() ? v1::Job() : **taken;
  done.set_state(v1::JOB_STATE_SUCCEEDED);
  EXPECT_TRUE(absl::IsFailedPrecondition(a->Release(done)));
  ASSERT_TRUE(b->ResumeJournalFor("job-1")->Append(u).ok());
  // B's terminal release drops the journal.
  ASSERT_TRUE(b->Release(done).ok());
  EXPECT_EQ(b->Units("job-1")->size(), 0u);
  EXPECT_EQ(a->Get("job-1")->job.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(a->Get("job-1")->owner, "");
}

TEST_F(PostgresJobStoreTest, ReleaseAsQueuedHandsTheJobToAnotherReplica) {
  auto a = Replica("a");
  auto b = Replica("b");
  bool existed = false;
  ASSERT_TRUE(a->Insert(NewJob("job-1"), 10, &existed).ok());
  auto c = a->Claim(absl::Seconds(30), absl::Now());
  ASSERT_TRUE(c.ok() && c->has_value());
  v1::Job back = **c;
  back.set_state(v1::JOB_STATE_QUEUED);
  ASSERT_TRUE(a->Release(back).ok());
  auto taken = b->Claim(absl::Seconds(30), absl::Now());
  ASSERT_TRUE(taken.ok() && taken->has_value());
  EXPECT_EQ((*taken)->job_id(), "job-1");
}

TEST_F(PostgresJobStoreTest, CancelReachesQueuedAndRunningJobsThroughAnyReplica) {
  auto a = Replica("a");
  auto b = Replica("b");
  bool existed = false;
  ASSERT_TRUE(a->Insert(NewJob("job-run"), 10, &existed).ok());
  ASSERT_TRUE(a->Insert(NewJob("job-queued"), 10, &existed).ok());
  ASSERT_TRUE(a->Claim(absl::Seconds(30), absl::Now())->has_value());  // job-run
  bool was_queued = false;
  auto q = b->RequestCancel("job-queued", absl::Now(), &was_queued);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_TRUE(was_queued);
  EXPECT_EQ(q->state(), v1::JOB_STATE_CANCELLED);
  auto r = b->RequestCancel("job-run", absl::Now(), &was_queued);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(was_queued);
  EXPECT_EQ(r->state(), v1::JOB_STATE_RUNNING);
  EXPECT_TRUE(r->cancel_requested());
  auto renewed = a->Renew("job-run", absl::Seconds(30), nullptr, {});
  ASSERT_TRUE(renewed.ok());
  EXPECT_TRUE(renewed->held);
  EXPECT_TRUE(renewed->cancel_requested);
  EXPECT_TRUE(absl::IsNotFound(b->RequestCancel("nope", absl::Now(), &was_queued).status()));
  // Idempotent on a finished job.
  auto again = a->RequestCancel("job-queued", absl::Now(), &was_queued);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(was_queued);
  EXPECT_EQ(again->state(), v1::JOB_STATE_CANCELLED);
}

TEST_F(PostgresJobStoreTest, AnExpiredJobWhoseCancelWasRequestedIsCancelledNotRun) {
  auto a = Replica("a");
  auto b = Replica("b");
  bool existed = false;
  ASSERT_TRUE(a->Insert(NewJob("job-1"), 10, &existed).ok());
  ASSERT_TRUE(a->Claim(absl::Seconds(1), absl::Now())->has_value());
  bool was_queued = false;
  ASSERT_TRUE(b->RequestCancel("job-1", absl::Now(), &was_queued).ok());
  absl::SleepFor(absl::Milliseconds(1300));
  auto c = b->Claim(absl::Seconds(30), absl::Now());
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->has_value());
  EXPECT_EQ(b->Get("job-1")->job.state(), v1::JOB_STATE_CANCELLED);
}

TEST_F(PostgresJobStoreTest, RenewSavesProgressAndTensorsForWatchersOnOtherReplicas) {
  auto a = Replica("a");
  auto b = Replica("b");
  bool existed = false;
  ASSERT_TRUE(a->Insert(NewJob("job-1"), 10, &existed).ok());
  auto c = a->Claim(absl::Seconds(30), absl::Now());
  ASSERT_TRUE(c.ok() && c->has_value());
  const int64_t v0 = b->Get("job-1")->version;
  v1::Job progress = **c;
  progress.mutable_progress()->set_tensors_done(2);
  v1::TensorResult t0, t1;
  t0.set_name("t0");
  t1.set_name("t1");
  ASSERT_TRUE(a->Renew("job-1", absl::Seconds(30), &progress, {t0, t1})->held);
  auto seen = b->Get("job-1");
  EXPECT_GT(seen->version, v0);
  EXPECT_EQ(seen->job.progress().tensors_done(), 2);
  int64_t cursor = 0;
  auto tensors = b->TensorsAfter("job-1", 0, &cursor);
  ASSERT_TRUE(tensors.ok());
  ASSERT_EQ(tensors->size(), 2u);
  EXPECT_EQ((*tensors)[1].name(), "t1");
  EXPECT_TRUE(b->TensorsAfter("job-1", cursor, &cursor)->empty());
  // A renewal without progress leaves the version alone.
  const int64_t v1 = b->Get("job-1")->version;
  ASSERT_TRUE(a->Renew("job-1", absl::Seconds(30), nullptr, {})->held);
  EXPECT_EQ(b->Get("job-1")->version, v1);
}

TEST_F(PostgresJobStoreTest, ListPagesNewestFirstFiltersByStateAndPruneKeepsTheNewest) {
  auto a = Replica("a");
  bool existed = false;
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(a->Insert(NewJob(absl::StrCat("job-", i)), 10, &existed).ok());
  }
  auto page = a->List({}, 0, 2);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->size(), 2u);
  EXPECT_EQ((*page)[0].job.job_id(), "job-4");
  auto next = a->List({}, (*page)[1].seq, 10);
  ASSERT_EQ(next->size(), 3u);
  EXPECT_EQ((*next)[0].job.job_id(), "job-2");
  bool was_queued = false;
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(a->RequestCancel(absl::StrCat("job-", i), absl::Now(), &was_queued).ok());
  }
  EXPECT_EQ(a->List({v1::JOB_STATE_CANCELLED}, 0, 10)->size(), 4u);
  EXPECT_EQ(a->List({v1::JOB_STATE_QUEUED}, 0, 10)->size(), 1u);
  EXPECT_EQ(*a->Count(v1::JOB_STATE_QUEUED), 1);
  auto pruned = a->Prune(1, absl::Hours(1));
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ(*pruned, 3);
  auto left = a->List({}, 0, 10);
  ASSERT_EQ(left->size(), 2u);
  EXPECT_EQ((*left)[1].job.job_id(), "job-3");
}

// Two JobManagers (replicas) on one database: submit through A, watch and cancel through B.
class SharedJobManagerTest : public PostgresJobStoreTest {
 protected:
  // `lease_poll`: how often the keeper renews the leases (longer than the 2 s lease: a replica that
  // stalls past its lease).
  std::unique_ptr<JobManager> Manager(PostgresJobStore* store, testing::FakePipeline* pipeline,
                                      absl::Duration lease_poll = absl::Milliseconds(100)) {
    std::vector<std::unique_ptr<QuantizerBackend>> b;
    b.push_back(MakeCpuBackend(1));
    pools_.push_back(std::make_unique<DevicePool>(std::move(b)));
    JobManagerOptions o;
    o.lease = absl::Seconds(2);
    o.lease_poll = lease_poll;
    o.claim_poll = absl::Milliseconds(200);
    auto m =
        std::make_unique<JobManager>(o, pipeline, nullptr, pools_.back().get(), store, nullptr);
    EXPECT_TRUE(m->Start().ok());
    return m;
  }
  std::vector<std::unique_ptr<DevicePool>> pools_;
};

TEST_F(SharedJobManagerTest, AnyReplicaAnswersWatchesAndCancelsWithinASecond) {
  auto sa = Replica("a");
  auto sb = Replica("b");
  testing::FakePipeline pa, pb;
  pa.tensors = pb.tensors = 3;
  pa.hold = pb.hold = true;
  auto a = Manager(sa.get(), &pa);
  auto b = Manager(sb.get(), &pb);
  v1::QuantizeModelRequest req;
  req.set_input_uri("file:///in");
  req.set_output_uri("file:///out");
  req.set_request_id("r1");
  auto job = a->Submit(req);
  ASSERT_TRUE(job.ok()) << job.status();
  // The same request_id through the other replica is the same job.
  auto same = b->Submit(req);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->job_id(), job->job_id());
  // Some replica runs it; both answer for it.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (b->Get(job->job_id())->state() != v1::JOB_STATE_RUNNING) {
    ASSERT_LT(absl::Now(), deadline);
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(a->Get(job->job_id())->state(), v1::JOB_STATE_RUNNING);
  auto listed = b->List(v1::ListJobsRequest());
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->jobs_size(), 1);
  // Watch through the replica that does not run it; cancel through the other.
  JobManager* runner = pa.runs.load() > 0 ? a.get() : b.get();
  JobManager* other = runner == a.get() ? b.get() : a.get();
  std::vector<v1::JobEvent> events;
  absl::Time cancelled_at;
  std::thread watcher([&] {
    absl::Status s = other->Watch(
        job->job_id(), absl::Seconds(1),
        [&](const v1::JobEvent& e) {
          events.push_back(e);
          return true;
        },
        [] { return false; });
    EXPECT_TRUE(s.ok()) << s;
  });
  absl::SleepFor(absl::Milliseconds(300));
  cancelled_at = absl::Now();
  auto c = other->Cancel(job->job_id());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->cancel_requested());
  watcher.join();
  const absl::Duration took = absl::Now() - cancelled_at;
  EXPECT_LT(took, absl::Seconds(1.5));
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.front().type(), v1::EVENT_TYPE_SNAPSHOT);
  EXPECT_EQ(events.back().type(), v1::EVENT_TYPE_TERMINAL);
  EXPECT_EQ(events.back().job().state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(a->Get(job->job_id())->state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(pa.runs.load() + pb.runs.load(), 1);
}

TEST_F(SharedJobManagerTest, StopHandsARunningJobToAnotherReplicaWhichFinishesIt) {
  auto sa = Replica("a");
  testing::FakePipeline pa, pb;
  pa.tensors = pb.tensors = 3;
  pa.hold = true;
  auto a = Manager(sa.get(), &pa);
  v1::QuantizeModelRequest req;
  req.set_input_uri("file:///in");
  req.set_output_uri("file:///out");
  auto job = a->Submit(req);
  ASSERT_TRUE(job.ok());
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (pa.runs.load() == 0) {
    ASSERT_LT(absl::Now(), deadline);
    absl::SleepFor(absl::Milliseconds(20));
  }
  a->BeginDrain();
  a->Stop();  // interrupts the held run: handed back QUEUED
  EXPECT_EQ(sa->Get(job->job_id())->job.state(), v1::JOB_STATE_QUEUED);
  auto sb = Replica("b");
  auto b = Manager(sb.get(), &pb);
  std::vector<v1::JobEvent> events;
  absl::Status s = b->Watch(
      job->job_id(), absl::Seconds(1),
      [&](const v1::JobEvent& e) {
        events.push_back(e);
        return true;
      },
      [] { return false; });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(events.back().job().state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(pb.runs.load(), 1);
  int tensors = 0;
  for (const auto& e : events) tensors += e.tensors_size();
  EXPECT_EQ(tensors, 3);  // finished tensors reach a watcher on another replica
}

// The takeover race: A stalls past its lease (its keeper renews only every 30 s), B claims the job
// and runs it; when A's run then reaches its publish, the lease check stops it: A neither publishes
// nor records an outcome over B's, and B finishes the job.
// True once `done` holds, polled every 20 ms; false after `timeout`.
bool Eventually(const std::function<bool()>& done, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return true;
}

TEST_F(SharedJobManagerTest, AReplicaThatLostItsLeaseDoesNotPublishOverTheNewOwner) {
  auto sa = Replica("a");
  auto sb = Replica("b");
  testing::FakePipeline pa, pb;
  pa.tensors = pb.tensors = 2;
  pa.hold = pb.hold = true;
  auto a = Manager(sa.get(), &pa, /*lease_poll=*/absl::Seconds(30));
  v1::QuantizeModelRequest req;
  req.set_input_uri("file:///in");
  req.set_output_uri("file:///out");
  auto job = a->Submit(req);
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(Eventually([&] { return pa.runs.load() > 0; }, absl::Seconds(10)));
  auto b = Manager(sb.get(), &pb);  // claims the job once A's 2 s lease expired
  ASSERT_TRUE(Eventually([&] { return pb.runs.load() > 0; }, absl::Seconds(15)))
      << "B never claimed the job whose lease expired";
  EXPECT_EQ(sa->Get(job->job_id())->owner, "b");
  pa.hold = false;  // A wakes up and reaches its publish
  ASSERT_TRUE(Eventually([&] { return pa.returned.load() > 0; }, absl::Seconds(15)));
  EXPECT_EQ(pa.published.load(), 0) << "A published the output of a job B owns";
  auto stored = sa->Get(job->job_id());
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->job.state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(stored->owner, "b");
  pb.hold = false;
  ASSERT_TRUE(
      Eventually([&] { return sa->Get(job->job_id())->job.state() == v1::JOB_STATE_SUCCEEDED; },
                 absl::Seconds(15)));
  EXPECT_EQ(pb.published.load(), 1);
  EXPECT_EQ(pa.published.load(), 0);
}

}  // namespace
}  // namespace nvfp4::server
