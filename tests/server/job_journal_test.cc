// The durable job journal (server/job_journal.h): append and replay, torn and corrupt tails
// ignored (and cut off, so later appends survive), fsync on every append and of the directory,
// unit records dropped with finished jobs, reset, the state-dir lock, import of the old store.
#include "server/job_journal.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "server/job_store.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace nvfp4::server {
namespace {

using ::nvfp4::testing::StatusIs;

namespace fs = std::filesystem;

using ::nvfp4::testing::TempDir;

v1::Job MakeJob(const std::string& id, v1::JobState state) {
  v1::Job j;
  j.set_job_id(id);
  j.set_kind("model");
  j.set_state(state);
  j.mutable_request()->set_input_uri("file:///data/in");
  j.mutable_request()->set_output_uri("file:///data/out-" + id);
  return j;
}

std::map<std::string, v1::Job> ById(JobJournal& j) {
  std::map<std::string, v1::Job> m;
  auto all = j.LoadAll();
  EXPECT_TRUE(all.ok());
  if (all.ok()) {
    for (v1::Job& job : *all) m[job.job_id()] = job;
  }
  return m;
}

std::string JournalPath(const TempDir& d) { return d.Path(JobJournal::kFileName); }

int64_t FileSize(const std::string& p) { return static_cast<int64_t>(fs::file_size(p)); }

// A record written with raw bytes in a string field (by an nvfp4d before names were escaped) is
// refused by protobuf's parser: it is recovered with the bytes escaped, so a finished job keeps
// its state instead of falling back to its RUNNING record and running again.
TEST(JobJournalTest, RecordWithInvalidUtf8IsRecoveredNotSkipped) {
  TempDir dir;
  {
    auto j = JobJournal::Open(dir.path());
    ASSERT_TRUE(j.ok()) << j.status();
    ASSERT_TRUE((*j)->Save(MakeJob("job-a", v1::JOB_STATE_RUNNING)).ok());
    v1::Job done = MakeJob("job-a", v1::JOB_STATE_SUCCEEDED);
    v1::OutputFile* f = done.add_outputs();
    f->set_name("notes-\xff.txt");
    f->set_size_bytes(7);
    v1::Job failed = MakeJob("job-b", v1::JOB_STATE_FAILED);
    failed.mutable_error()->set_message("model.safetensors: tensor 'w\xff\xfe.weight' is bad");
    ASSERT_FALSE(failed.ParseFromString(failed.SerializeAsString()));  // what replay used to hit
    ASSERT_TRUE((*j)->Save(done).ok());
    ASSERT_TRUE((*j)->Save(failed).ok());
  }
  auto j = JobJournal::Open(dir.path());
  ASSERT_TRUE(j.ok()) << j.status();
  auto jobs = ById(**j);
  ASSERT_EQ(jobs.size(), 2u);
  EXPECT_EQ(jobs["job-a"].state(), v1::JOB_STATE_SUCCEEDED);
  ASSERT_EQ(jobs["job-a"].outputs_size(), 1);
  EXPECT_EQ(jobs["job-a"].outputs(0).name(), "notes-\\xff.txt");
  EXPECT_EQ(jobs["job-a"].outputs(0).size_bytes(), 7);
  EXPECT_EQ(jobs["job-a"].request().output_uri(), "file:///data/out-job-a");
  EXPECT_EQ(jobs["job-b"].state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(jobs["job-b"].error().message(),
            "model.safetensors: tensor 'w\\xff\\xfe.weight' is bad");
  // The compacted journal holds the escaped records: they parse as they are.
  v1::Job reparsed;
  EXPECT_TRUE(reparsed.ParseFromString(jobs["job-b"].SerializeAsString()));
}

TEST(JobJournalTest, AppendAndReplay) {
  TempDir dir;
  {
    auto j = JobJournal::Open(dir.path());
    ASSERT_TRUE(j.ok()) << j.status();
    ASSERT_TRUE((*j)->Save(MakeJob("job-a", v1::JOB_STATE_QUEUED)).ok());
    ASSERT_TRUE((*j)->Save(MakeJob("job-b", v1::JOB_STATE_QUEUED)).ok());
    ASSERT_TRUE((*j)->Save(MakeJob("job-a", v1::JOB_STATE_RUNNING)).ok());
    for (int i = 0; i < 5; ++i) {
      ASSERT_TRUE((*j)->AppendUnit("job-a", "unit-" + std::to_string(i)).ok());
    }
    ASSERT_TRUE((*j)->Save(MakeJob("job-b", v1::JOB_STATE_SUCCEEDED)).ok());
  }  // "crash": nothing is flushed or compacted on the way out
  auto j = JobJournal::Open(dir.path());
  ASSERT_TRUE(j.ok()) << j.status();
  auto jobs = ById(**j);
  ASSERT_EQ(jobs.size(), 2u);
  EXPECT_EQ(jobs["job-a"].state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(jobs["job-b"].state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ((*j)->Units("job-a"),
            (std::vector<std::string>{"unit-0", "unit-1", "unit-2", "unit-3", "unit-4"}));
  EXPECT_TRUE((*j)->Units("job-b").empty());
  EXPECT_EQ((*j)->stats().records_replayed, 9);  // 4 job records + 5 units
  EXPECT_EQ((*j)->stats().torn_bytes, 0);
  // Compacted at open: one record per job plus the units of the unfinished one.
  EXPECT_FALSE(fs::exists(JournalPath(dir) + ".tmp"));
  EXPECT_EQ((*j)->stats().compactions, 1);
}

// Writes job-a RUNNING + units u0, u1 and a 100-byte unit; returns the size before the last one.
int64_t WriteThreeUnits(const TempDir& dir) {
  auto j = JobJournal::Open(dir.path());
  EXPECT_TRUE(j.ok());
  EXPECT_TRUE((*j)->Save(MakeJob("job-a", v1::JOB_STATE_RUNNING)).ok());
  EXPECT_TRUE((*j)->AppendUnit("job-a", "u0").ok());
  EXPECT_TRUE((*j)->AppendUnit("job-a", "u1").ok());
  const int64_t before = FileSize(JournalPath(dir));
  EXPECT_TRUE((*j)->AppendUnit("job-a", std::string(100, 'x')).ok());
  return before;
}

TEST(JobJournalTest, TornTailIsIgnoredAndCutOff) {
  // A crash in the middle of the last write: every cut of the last record is ignored.
  int cuts = 0;
  for (int64_t delta = 1;; delta += 7) {
    TempDir dir;
    const int64_t before = WriteThreeUnits(dir);
    const int64_t full = FileSize(JournalPath(dir));
    if (before + delta >= full) break;
    ASSERT_EQ(::truncate(JournalPath(dir).c_str(), before + delta), 0);
    auto j = JobJournal::Open(dir.path());
    ASSERT_TRUE(j.ok()) << j.status();
    EXPECT_EQ((*j)->Units("job-a"), (std::vector<std::string>{"u0", "u1"})) << delta;
    EXPECT_EQ((*j)->stats().torn_bytes, delta);
    EXPECT_EQ(ById(**j)["job-a"].state(), v1::JOB_STATE_RUNNING);
    ++cuts;
  }
  EXPECT_GT(cuts, 10);

  TempDir dir;
  WriteThreeUnits(dir);
  {
    auto j = JobJournal::Open(dir.path());  // compacts: job + u0 + u1 + x
    ASSERT_TRUE(j.ok());
    ASSERT_TRUE((*j)->ResetUnits("job-a").ok());
    ASSERT_TRUE((*j)->AppendUnit("job-a", "u0").ok());
    ASSERT_TRUE((*j)->AppendUnit("job-a", "u1").ok());
    ASSERT_TRUE((*j)->AppendUnit("job-a", "u2").ok());
  }
  // A corrupt last record (bit flip) and trailing garbage are ignored too.
  {
    std::fstream f(JournalPath(dir), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(FileSize(JournalPath(dir)) - 1);
    f.put('!');
  }
  {
    auto j = JobJournal::Open(dir.path());
    ASSERT_TRUE(j.ok());
    EXPECT_EQ((*j)->Units("job-a"), (std::vector<std::string>{"u0", "u1"}));
    EXPECT_GT((*j)->stats().torn_bytes, 0);
    // Appends after the ignored tail are readable: the tail was cut off.
    ASSERT_TRUE((*j)->AppendUnit("job-a", "u2b").ok());
  }
  {
    std::ofstream f(JournalPath(dir), std::ios::app | std::ios::binary);
    f << "\xff\xff\xff\x7fgarbage";
  }
  auto j = JobJournal::Open(dir.path());
  ASSERT_TRUE(j.ok());
  EXPECT_EQ((*j)->Units("job-a"), (std::vector<std::string>{"u0", "u1", "u2b"}));
  EXPECT_EQ(ById(**j)["job-a"].state(), v1::JOB_STATE_RUNNING);
}

TEST(JobJournalTest, TornCreationAndForeignFiles) {
  TempDir dir;
  { std::ofstream(JournalPath(dir), std::ios::binary) << "NVFP"; }  // torn while being created
  {
    auto j = JobJournal::Open(dir.path());
    ASSERT_TRUE(j.ok()) << j.status();
    EXPECT_TRUE(ById(**j).empty());
    ASSERT_TRUE((*j)->Save(MakeJob("job-a", v1::JOB_STATE_QUEUED)).ok());
  }
  {
    auto j = JobJournal::Open(dir.path());
    ASSERT_TRUE(j.ok());
    EXPECT_EQ(ById(**j).size(), 1u);
  }
  { std::ofstream(JournalPath(dir), std::ios::binary) << "{\"not\": \"a journal\"}"; }
  EXPECT_THAT(JobJournal::Open(dir.path()), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(JobJournalTest, EveryAppendIsSyncedAndTheDirectoryToo) {
  TempDir dir;
  auto j = JobJournal::Open(dir.path());
  ASSERT_TRUE(j.ok());
  const JobJournal::Stats at_open = (*j)->stats();
  EXPECT_GE(at_open.dir_syncs, 1);  // the new file's directory entry
  EXPECT_EQ(at_open.file_syncs, 0);
  ASSERT_TRUE((*j)->Save(MakeJob("job-a", v1::JOB_STATE_RUNNING)).ok());
  constexpr int kUnits = 100;
  const std::string unit(300, 'u');  // about the size of a journaled unit
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kUnits; ++i) ASSERT_TRUE((*j)->AppendUnit("job-a", unit).ok());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const JobJournal::Stats st = (*j)->stats();
  EXPECT_EQ(st.appends, kUnits + 1);
  EXPECT_EQ(st.file_syncs, kUnits + 1);
  EXPECT_EQ(st.file_bytes, FileSize(JournalPath(dir)));
  std::printf("journal append+fdatasync: %.3f ms per unit record (%d records, %s)\n",
              1e3 * seconds / kUnits, kUnits, dir.path().c_str());

  TempDir nosync_dir;
  JobJournal::Options nosync;
  nosync.sync = false;
  auto n = JobJournal::Open(nosync_dir.path(), nosync);
  ASSERT_TRUE(n.ok());
  ASSERT_TRUE((*n)->AppendUnit("job-a", unit).ok());
  EXPECT_EQ((*n)->stats().file_syncs, 0);
  EXPECT_EQ((*n)->stats().dir_syncs, 0);
}

TEST(JobJournalTest, FinishedJobsDropTheirUnitsAndResetForgetsThem) {
  TempDir dir;
  {
    auto j = JobJournal::Open(dir.path());
    ASSERT_TRUE(j.ok());
    ASSERT_TRUE((*j)->Save(MakeJob("job-a", v1::JOB_STATE_RUNNING)).ok());
    ASSERT_TRUE((*j)->Save(MakeJob("job-b", v1::JOB_STATE_RUNNING)).ok());
    for (int i = 0; i < 50; ++i) {
      ASSERT_TRUE((*j)->AppendUnit("job-a", std::string(200, 'a')).ok());
      ASSERT_TRUE((*j)->AppendUnit("job-b", std::string(200, 'b')).ok());
    }
    ASSERT_TRUE((*j)->ResetUnits("job-b").ok());
    EXPECT_TRUE((*j)->Units("job-b").empty());
    ASSERT_TRUE((*j)->AppendUnit("job-b", "after-reset").ok());
    ASSERT_TRUE((*j)->Save(MakeJob("job-a", v1::JOB_STATE_SUCCEEDED)).ok());
    EXPECT_TRUE((*j)->Units("job-a").empty());
  }
  const int64_t before = FileSize(JournalPath(dir));
  auto j = JobJournal::Open(dir.path());
  ASSERT_TRUE(j.ok());
  EXPECT_TRUE((*j)->Units("job-a").empty());
  EXPECT_EQ((*j)->Units("job-b"), std::vector<std::string>{"after-reset"});
  EXPECT_LT(FileSize(JournalPath(dir)), before / 10);  // compaction dropped the garbage
}

TEST(JobJournalTest, ResumeJournalOfAJob) {
  TempDir dir;
  {
    auto j = JobJournal::Open(dir.path());
    ASSERT_TRUE(j.ok());
    ASSERT_TRUE((*j)->Save(MakeJob("job-a", v1::JOB_STATE_RUNNING)).ok());
    std::unique_ptr<pipeline::ResumeJournal> r = (*j)->ResumeJournalFor("job-a");
    ASSERT_NE(r, nullptr);
    pipeline::JournaledUnit u;
    u.plan = "p";
    u.unit = 3;
    u.name = "lm_head.weight";
    u.tensors.push_back({"lm_head.weight", "model.safetensors", 128, 64, "00ff"});
    ASSERT_TRUE(r->Append(u).ok());
    u.unit = 4;
    ASSERT_TRUE(r->Append(u).ok());
    ASSERT_TRUE((*j)->AppendUnit("job-a", "not an encoded unit").ok());  // skipped on Load
  }
  auto j = JobJournal::Open(dir.path());
  ASSERT_TRUE(j.ok());
  auto units = (*j)->ResumeJournalFor("job-a")->Load();
  ASSERT_TRUE(units.ok()) << units.status();
  ASSERT_EQ(units->size(), 2u);
  EXPECT_EQ((*units)[0].unit, 3);
  EXPECT_EQ((*units)[1].unit, 4);
  EXPECT_EQ((*units)[1].tensors[0].offset, 128u);
  EXPECT_TRUE((*(*j)->ResumeJournalFor("job-other")->Load()).empty());
}

TEST(JobJournalTest, OneServerPerStateDir) {
  TempDir dir;
  auto a = JobJournal::Open(dir.path());
  ASSERT_TRUE(a.ok());
  EXPECT_THAT(JobJournal::Open(dir.path()), StatusIs(absl::StatusCode::kFailedPrecondition));
  a->reset();
  EXPECT_TRUE(JobJournal::Open(dir.path()).ok());
}

TEST(JobJournalTest, ImportsTheOneFilePerJobStore) {
  TempDir dir;
  {
    auto old = FileJobStore::Create(dir.path());
    ASSERT_TRUE(old.ok());
    ASSERT_TRUE((*old)->Save(MakeJob("job-old", v1::JOB_STATE_SUCCEEDED)).ok());
    ASSERT_TRUE((*old)->Save(MakeJob("job-q", v1::JOB_STATE_QUEUED)).ok());
  }
  {
    auto j = JobJournal::Open(dir.path());
    ASSERT_TRUE(j.ok());
    auto jobs = ById(**j);
    EXPECT_EQ(jobs.size(), 2u);
    EXPECT_FALSE(fs::exists(fs::path(dir.path()) / "jobs"));  // imported once, then removed
    ASSERT_TRUE((*j)->Save(MakeJob("job-q", v1::JOB_STATE_RUNNING)).ok());
  }
  auto j = JobJournal::Open(dir.path());  // the journal's newer record wins over the old file
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(ById(**j)["job-q"].state(), v1::JOB_STATE_RUNNING);
}

TEST(JobJournalTest, DeletedJobsStayDeletedAcrossReopenAndImport) {
  TempDir dir;
  {
    auto old = FileJobStore::Create(dir.path());  // an imported record must not come back
    ASSERT_TRUE(old.ok());
    ASSERT_TRUE((*old)->Save(MakeJob("job-imported", v1::JOB_STATE_SUCCEEDED)).ok());
  }
  {
    auto j = JobJournal::Open(dir.path());
    ASSERT_TRUE(j.ok());
    ASSERT_TRUE((*j)->Save(MakeJob("job-a", v1::JOB_STATE_SUCCEEDED)).ok());
    ASSERT_TRUE((*j)->Save(MakeJob("job-b", v1::JOB_STATE_FAILED)).ok());
    ASSERT_TRUE((*j)->Delete("job-a").ok());
    ASSERT_TRUE((*j)->Delete("job-imported").ok());
    ASSERT_TRUE((*j)->Delete("job-unknown").ok());  // nothing to forget: OK, nothing appended
    EXPECT_EQ(ById(**j).size(), 1u);
  }
  auto j = JobJournal::Open(dir.path());
  ASSERT_TRUE(j.ok());
  auto jobs = ById(**j);
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_TRUE(jobs.count("job-b"));
}

TEST(Crc32cTest, KnownValue) {
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);  // the CRC-32C check value
  EXPECT_EQ(Crc32c(""), 0u);
}

}  // namespace
}  // namespace nvfp4::server
