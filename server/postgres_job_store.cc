#include "server/postgres_job_store.h"

#include <libpq-fe.h>

#include <cstdlib>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "server/utf8_fields.h"

namespace nvfp4::server {
namespace {

constexpr unsigned kByteaOid = 17;
// Any constant: serializes schema creation among replicas starting together.
constexpr char kSchemaLockKey[] = "7236150043";

constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS nvfp4_jobs (
  seq BIGSERIAL NOT NULL UNIQUE,
  job_id TEXT PRIMARY KEY,
  request_id TEXT UNIQUE,
  state INTEGER NOT NULL,
  job BYTEA NOT NULL,
  owner TEXT NOT NULL DEFAULT '',
  lease_expires TIMESTAMPTZ,
  cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
  version BIGINT NOT NULL DEFAULT 1,
  end_at TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS nvfp4_jobs_state_seq ON nvfp4_jobs (state, seq);
CREATE TABLE IF NOT EXISTS nvfp4_job_units (
  n BIGSERIAL PRIMARY KEY,
  job_id TEXT NOT NULL REFERENCES nvfp4_jobs (job_id) ON DELETE CASCADE,
  unit BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS nvfp4_job_units_job ON nvfp4_job_units (job_id, n);
CREATE TABLE IF NOT EXISTS nvfp4_job_tensors (
  n BIGSERIAL PRIMARY KEY,
  job_id TEXT NOT NULL REFERENCES nvfp4_jobs (job_id) ON DELETE CASCADE,
  result BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS nvfp4_job_tensors_job ON nvfp4_job_tensors (job_id, n);
)sql";

constexpr char kTerminalStates[] = "(3, 4, 5)";  // SUCCEEDED, FAILED, CANCELLED

bool Terminal(v1::JobState s) {
  return s == v1::JOB_STATE_SUCCEEDED || s == v1::JOB_STATE_FAILED || s == v1::JOB_STATE_CANCELLED;
}

void SetTime(google::protobuf::Timestamp* ts, absl::Time t) {
  const int64_t ns = absl::ToUnixNanos(t);
  ts->set_seconds(ns / 1000000000);
  ts->set_nanos(static_cast<int32_t>(ns % 1000000000));
}

using Param = PostgresJobStore::Param;
Param Text(std::string v) { return Param{std::move(v), false, false}; }
Param Bytes(std::string v) { return Param{std::move(v), true, false}; }
Param Null() { return Param{"", false, true}; }
Param RequestIdParam(const v1::Job& job) {
  return job.request().request_id().empty() ? Null() : Text(job.request().request_id());
}
Param Seconds(absl::Duration d) { return Text(absl::StrCat(absl::ToDoubleSeconds(d))); }

int64_t ToInt(const std::string& s) {
  int64_t v = 0;
  (void)absl::SimpleAtoi(s, &v);
  return v;
}

absl::StatusOr<v1::Job> ParseJob(const std::string& bytes) {
  // Rows written before names were escaped (server/utf8_fields.h) are read with theirs escaped.
  v1::Job job;
  if (!ParseRepairingUtf8(bytes, &job)) {
    return absl::DataLossError("malformed job record in the store");
  }
  return job;
}

// Columns: seq, job, cancel_requested, version, owner.
constexpr char kJobColumns[] = "seq, job, cancel_requested, version, owner";
absl::StatusOr<StoredJob> ParseStored(const std::vector<std::string>& row) {
  StoredJob out;
  out.seq = ToInt(row[0]);
  ASSIGN_OR_RETURN(out.job, ParseJob(row[1]));
  if (row[2] == "t") out.job.set_cancel_requested(true);
  out.version = ToInt(row[3]);
  out.owner = row[4];
  return out;
}

class PostgresResumeJournal : public pipeline::ResumeJournal {
 public:
  PostgresResumeJournal(PostgresJobStore* store, std::string job_id)
      : store_(store), job_id_(std::move(job_id)) {}
  absl::StatusOr<std::vector<pipeline::JournaledUnit>> Load() override {
    ASSIGN_OR_RETURN(std::vector<std::string> records, store_->Units(job_id_));
    std::vector<pipeline::JournaledUnit> out;
    for (const std::string& r : records) {
      ASSIGN_OR_RETURN(pipeline::JournaledUnit u, pipeline::DecodeJournaledUnit(r));
      out.push_back(std::move(u));
    }
    return out;
  }
  absl::Status Append(const pipeline::JournaledUnit& unit) override {
    return store_->AppendUnit(job_id_, pipeline::EncodeJournaledUnit(unit));
  }
  absl::Status Reset() override { return store_->ResetUnits(job_id_); }

 private:
  PostgresJobStore* store_;
  std::string job_id_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<PostgresJobStore>> PostgresJobStore::Connect(
    const std::string& uri, const std::string& replica_id) {
  if (replica_id.empty()) return absl::InvalidArgumentError("a replica id is required");
  std::unique_ptr<PostgresJobStore> store(new PostgresJobStore(uri, replica_id));
  {
    absl::MutexLock lock(&store->mu_);
    RETURN_IF_ERROR(store->ConnectLocked());
  }
  RETURN_IF_ERROR(store->CreateSchema());
  return store;
}

PostgresJobStore::~PostgresJobStore() {
  absl::MutexLock lock(&mu_);
  if (conn_ != nullptr) PQfinish(conn_);
}

absl::Status PostgresJobStore::ConnectLocked() {
  if (conn_ != nullptr) PQfinish(conn_);
  // connect_timeout first: a value in the URI overrides it.
  const char* keys[] = {"connect_timeout", "application_name", "dbname", nullptr};
  const char* values[] = {"10", "nvfp4d", conninfo_.c_str(), nullptr};
  conn_ = PQconnectdbParams(keys, values, /*expand_dbname=*/1);
  if (conn_ == nullptr) return absl::ResourceExhaustedError("libpq: out of memory");
  if (PQstatus(conn_) != CONNECTION_OK) {
    // libpq's message names host and port, never the password.
    return absl::UnavailableError(
        absl::StrCat("cannot connect to the job store: ", PQerrorMessage(conn_)));
  }
  // The schema's "already exists, skipping" notices are not worth a log line.
  PQsetNoticeProcessor(
      conn_, [](void*, const char*) {}, nullptr);
  return absl::OkStatus();
}

absl::StatusOr<PostgresJobStore::Rows> PostgresJobStore::ExecLocked(
    const std::string& sql, const std::vector<Param>& params, bool retry) {
  if (conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK) {
    RETURN_IF_ERROR(ConnectLocked());
  }
  std::vector<const char*> values;
  std::vector<int> lengths;
  std::vector<int> formats;
  for (const Param& p : params) {
    values.push_back(p.null ? nullptr : p.value.data());
    lengths.push_back(static_cast<int>(p.value.size()));
    formats.push_back(p.binary ? 1 : 0);
  }
  PGresult* res = PQexecParams(conn_, sql.c_str(), static_cast<int>(params.size()), nullptr,
                               values.data(), lengths.data(), formats.data(), /*text*/ 0);
  const ExecStatusType st = res == nullptr ? PGRES_FATAL_ERROR : PQresultStatus(res);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    std::string message = res != nullptr ? PQresultErrorMessage(res) : PQerrorMessage(conn_);
    const char* code = res != nullptr ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
    const std::string sqlstate = code != nullptr ? code : "";
    if (res != nullptr) PQclear(res);
    while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) {
      message.pop_back();
    }
    if (PQstatus(conn_) != CONNECTION_OK) {
      if (retry) {
        PQreset(conn_);
        if (PQstatus(conn_) == CONNECTION_OK) return ExecLocked(sql, params, false);
      }
      return absl::UnavailableError(absl::StrCat("job store connection lost: ", message));
    }
    if (sqlstate == "23505") return absl::AlreadyExistsError(message);
    if (sqlstate.rfind("40", 0) == 0) return absl::AbortedError(message);  // serialization
    return absl::InternalError(absl::StrCat("job store: ", message));
  }
  Rows out;
  const char* affected = PQcmdTuples(res);
  if (affected != nullptr && affected[0] != '\0') out.affected = ToInt(affected);
  const int n = PQntuples(res);
  const int cols = PQnfields(res);
  out.rows.resize(n);
  for (int r = 0; r < n; ++r) {
    out.rows[r].resize(cols);
    for (int c = 0; c < cols; ++c) {
      if (PQgetisnull(res, r, c)) continue;
      const char* v = PQgetvalue(res, r, c);
      if (PQftype(res, c) == kByteaOid) {
        size_t len = 0;
        unsigned char* raw = PQunescapeBytea(reinterpret_cast<const unsigned char*>(v), &len);
        if (raw == nullptr) {
          PQclear(res);
          return absl::ResourceExhaustedError("libpq: out of memory");
        }
        out.rows[r][c].assign(reinterpret_cast<const char*>(raw), len);
        PQfreemem(raw);
      } else {
        out.rows[r][c].assign(v, PQgetlength(res, r, c));
      }
    }
  }
  PQclear(res);
  return out;
}

absl::StatusOr<PostgresJobStore::Rows> PostgresJobStore::Exec(const std::string& sql,
                                                              const std::vector<Param>& params) {
  absl::MutexLock lock(&mu_);
  return ExecLocked(sql, params);
}

void PostgresJobStore::RollbackLocked() { (void)ExecLocked("ROLLBACK", {}, false); }

absl::Status PostgresJobStore::CreateSchema() {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(ExecLocked("BEGIN", {}).status());
  absl::Status s =
      ExecLocked(absl::StrCat("SELECT pg_advisory_xact_lock(", kSchemaLockKey, ")"), {}, false)
          .status();
  if (s.ok()) {
    // PQexecParams runs one statement at a time.
    for (absl::string_view stmt : absl::StrSplit(kSchema, ';')) {
      if (absl::StripAsciiWhitespace(stmt).empty()) continue;
      s = ExecLocked(std::string(stmt), {}, false).status();
      if (!s.ok()) break;
    }
  }
  if (s.ok()) s = ExecLocked("COMMIT", {}, false).status();
  if (!s.ok()) RollbackLocked();
  return s;
}

absl::Status PostgresJobStore::Save(const v1::Job& job) {
  return Exec(absl::StrCat("INSERT INTO nvfp4_jobs (job_id, request_id, state, job, end_at) "
                           "VALUES ($1, $2, $3::int, $4, CASE WHEN $3::int IN ",
                           kTerminalStates,
                           " THEN now() END) ON CONFLICT (job_id) DO UPDATE SET "
                           "state = EXCLUDED.state, job = EXCLUDED.job, end_at = EXCLUDED.end_at, "
                           "version = nvfp4_jobs.version + 1"),
              {Text(job.job_id()), RequestIdParam(job),
               Text(absl::StrCat(static_cast<int>(job.state()))), Bytes(job.SerializeAsString())})
      .status();
}

absl::StatusOr<std::vector<v1::Job>> PostgresJobStore::LoadAll() {
  ASSIGN_OR_RETURN(Rows rows,
                   Exec(absl::StrCat("SELECT ", kJobColumns, " FROM nvfp4_jobs ORDER BY seq"), {}));
  std::vector<v1::Job> out;
  for (const auto& row : rows.rows) {
    ASSIGN_OR_RETURN(StoredJob j, ParseStored(row));
    out.push_back(std::move(j.job));
  }
  return out;
}

absl::Status PostgresJobStore::Delete(const std::string& job_id) {
  return Exec("DELETE FROM nvfp4_jobs WHERE job_id = $1", {Text(job_id)}).status();
}

std::unique_ptr<pipeline::ResumeJournal> PostgresJobStore::ResumeJournalFor(
    const std::string& job_id) {
  return std::make_unique<PostgresResumeJournal>(this, job_id);
}

absl::StatusOr<std::vector<std::string>> PostgresJobStore::Units(const std::string& job_id) {
  ASSIGN_OR_RETURN(Rows rows, Exec("SELECT unit FROM nvfp4_job_units WHERE job_id = $1 ORDER BY n",
                                   {Text(job_id)}));
  std::vector<std::string> out;
  for (auto& row : rows.rows) out.push_back(std::move(row[0]));
  return out;
}

absl::Status PostgresJobStore::AppendUnit(const std::string& job_id,
                                          const std::string& encoded_unit) {
  ASSIGN_OR_RETURN(Rows rows,
                   Exec("INSERT INTO nvfp4_job_units (job_id, unit) SELECT $1, $2 WHERE EXISTS "
                        "(SELECT 1 FROM nvfp4_jobs WHERE job_id = $1 AND owner IN ($3, ''))",
                        {Text(job_id), Bytes(encoded_unit), Text(replica_id_)}));
  if (rows.affected != 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_id, " is no longer held by replica ", replica_id_));
  }
  return absl::OkStatus();
}

absl::Status PostgresJobStore::ResetUnits(const std::string& job_id) {
  return Exec("DELETE FROM nvfp4_job_units WHERE job_id = $1", {Text(job_id)}).status();
}

absl::StatusOr<v1::Job> PostgresJobStore::Insert(const v1::Job& job, int queue_capacity,
                                                 bool* existed) {
  *existed = false;
  const auto existing = [&]() -> absl::StatusOr<v1::Job> {
    ASSIGN_OR_RETURN(Rows rows, Exec(absl::StrCat("SELECT ", kJobColumns,
                                                  " FROM nvfp4_jobs WHERE request_id = $1"),
                                     {Text(job.request().request_id())}));
    if (rows.rows.empty()) return absl::NotFoundError("");
    ASSIGN_OR_RETURN(StoredJob j, ParseStored(rows.rows[0]));
    return j.job;
  };
  if (!job.request().request_id().empty()) {
    absl::StatusOr<v1::Job> found = existing();
    if (found.ok()) {
      *existed = true;
      return found;
    }
    if (!absl::IsNotFound(found.status())) return found.status();
  }
  ASSIGN_OR_RETURN(int64_t queued, Count(v1::JOB_STATE_QUEUED));
  if (queued >= queue_capacity) {
    return absl::UnavailableError(
        absl::StrCat("job queue is full (", queue_capacity, " queued); retry later"));
  }
  ASSIGN_OR_RETURN(Rows rows, Exec("INSERT INTO nvfp4_jobs (job_id, request_id, state, job) "
                                   "VALUES ($1, $2, $3::int, $4) ON CONFLICT DO NOTHING",
                                   {Text(job.job_id()), RequestIdParam(job),
                                    Text(absl::StrCat(static_cast<int>(job.state()))),
                                    Bytes(job.SerializeAsString())}));
  if (rows.affected == 1) return job;
  // Another replica inserted the same request_id in between.
  absl::StatusOr<v1::Job> found = existing();
  if (!found.ok()) return absl::AbortedError("job insert conflicted; retry");
  *existed = true;
  return found;
}

absl::StatusOr<StoredJob> PostgresJobStore::Get(const std::string& job_id) {
  ASSIGN_OR_RETURN(Rows rows,
                   Exec(absl::StrCat("SELECT ", kJobColumns, " FROM nvfp4_jobs WHERE job_id = $1"),
                        {Text(job_id)}));
  if (rows.rows.empty()) return absl::NotFoundError(absl::StrCat("job '", job_id, "' not found"));
  return ParseStored(rows.rows[0]);
}

absl::StatusOr<std::vector<StoredJob>> PostgresJobStore::List(
    const std::vector<v1::JobState>& states, int64_t before_seq, int limit) {
  std::vector<std::string> st;
  for (v1::JobState s : states) st.push_back(absl::StrCat(static_cast<int>(s)));
  ASSIGN_OR_RETURN(
      Rows rows,
      Exec(absl::StrCat("SELECT ", kJobColumns,
                        " FROM nvfp4_jobs WHERE ($1::bigint = 0 OR seq < $1::bigint) AND "
                        "(cardinality($2::int[]) = 0 OR state = ANY($2::int[])) "
                        "ORDER BY seq DESC LIMIT $3::int"),
           {Text(absl::StrCat(before_seq)), Text(absl::StrCat("{", absl::StrJoin(st, ","), "}")),
            Text(absl::StrCat(limit))}));
  std::vector<StoredJob> out;
  for (const auto& row : rows.rows) {
    ASSIGN_OR_RETURN(StoredJob j, ParseStored(row));
    out.push_back(std::move(j));
  }
  return out;
}

absl::StatusOr<std::optional<v1::Job>> PostgresJobStore::ClaimOneLocked(absl::Duration lease,
                                                                        absl::Time now) {
  ASSIGN_OR_RETURN(Rows rows,
                   ExecLocked("SELECT job, cancel_requested FROM nvfp4_jobs WHERE state = 1 OR "
                              "(state = 2 AND lease_expires < now()) ORDER BY seq LIMIT 1 "
                              "FOR UPDATE SKIP LOCKED",
                              {}, false));
  if (rows.rows.empty()) return std::optional<v1::Job>();
  ASSIGN_OR_RETURN(v1::Job job, ParseJob(rows.rows[0][0]));
  if (rows.rows[0][1] == "t") {
    // Cancelled while its owner was gone: finish it here rather than run it.
    job.set_cancel_requested(true);
    job.set_state(v1::JOB_STATE_CANCELLED);
    job.mutable_error()->set_code(static_cast<int>(absl::StatusCode::kCancelled));
    job.mutable_error()->set_message("cancelled by a client");
    SetTime(job.mutable_end_time(), now);
    RETURN_IF_ERROR(ExecLocked("UPDATE nvfp4_jobs SET job = $2, state = 5, owner = '', "
                               "lease_expires = NULL, end_at = now(), version = version + 1 "
                               "WHERE job_id = $1",
                               {Text(job.job_id()), Bytes(job.SerializeAsString())}, false)
                        .status());
    RETURN_IF_ERROR(
        ExecLocked("DELETE FROM nvfp4_job_units WHERE job_id = $1", {Text(job.job_id())}, false)
            .status());
    job.Clear();  // claimed nothing; look again
    return std::optional<v1::Job>(std::move(job));
  }
  job.set_state(v1::JOB_STATE_RUNNING);
  SetTime(job.mutable_start_time(), now);
  // The units an earlier owner journaled (none for a new job): the progress every replica
  // reports from the claim on, until the new run passes it.
  ASSIGN_OR_RETURN(Rows units,
                   ExecLocked("SELECT unit FROM nvfp4_job_units WHERE job_id = $1 ORDER BY n",
                              {Text(job.job_id())}, false));
  std::vector<pipeline::JournaledUnit> journaled;
  for (const auto& row : units.rows) {
    absl::StatusOr<pipeline::JournaledUnit> u = pipeline::DecodeJournaledUnit(row[0]);
    if (u.ok()) journaled.push_back(*std::move(u));  // the run itself reports a bad record
  }
  *job.mutable_progress() = JournaledProgress(journaled);
  RETURN_IF_ERROR(
      ExecLocked(
          "UPDATE nvfp4_jobs SET job = $2, state = 2, owner = $3, lease_expires = "
          "now() + make_interval(secs => $4::float8), version = version + 1 "
          "WHERE job_id = $1",
          {Text(job.job_id()), Bytes(job.SerializeAsString()), Text(replica_id_), Seconds(lease)},
          false)
          .status());
  // The watchers' tensor list starts over with the new run.
  RETURN_IF_ERROR(
      ExecLocked("DELETE FROM nvfp4_job_tensors WHERE job_id = $1", {Text(job.job_id())}, false)
          .status());
  return std::optional<v1::Job>(std::move(job));
}

absl::StatusOr<std::optional<v1::Job>> PostgresJobStore::Claim(absl::Duration lease,
                                                               absl::Time now) {
  absl::MutexLock lock(&mu_);
  while (true) {
    RETURN_IF_ERROR(ExecLocked("BEGIN", {}).status());
    absl::StatusOr<std::optional<v1::Job>> out = ClaimOneLocked(lease, now);
    if (!out.ok()) {
      RollbackLocked();
      return out.status();
    }
    RETURN_IF_ERROR(ExecLocked("COMMIT", {}, false).status());
    if (out->has_value() && (*out)->job_id().empty()) continue;  // cancelled one; look again
    return out;
  }
}

absl::StatusOr<LeaseRenewal> PostgresJobStore::Renew(
    const std::string& job_id, absl::Duration lease, const v1::Job* progress,
    const std::vector<v1::TensorResult>& new_tensors) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(
      Rows rows,
      ExecLocked("UPDATE nvfp4_jobs SET lease_expires = now() + make_interval(secs => "
                 "$3::float8), job = COALESCE($4, job), version = version + "
                 "CASE WHEN $4 IS NULL THEN 0 ELSE 1 END "
                 "WHERE job_id = $1 AND owner = $2 AND state = 2 RETURNING cancel_requested",
                 {Text(job_id), Text(replica_id_), Seconds(lease),
                  progress != nullptr ? Bytes(progress->SerializeAsString()) : Null()}));
  LeaseRenewal out;
  if (rows.rows.empty()) return out;
  out.held = true;
  out.cancel_requested = rows.rows[0][0] == "t";
  for (const v1::TensorResult& t : new_tensors) {
    RETURN_IF_ERROR(ExecLocked("INSERT INTO nvfp4_job_tensors (job_id, result) VALUES ($1, $2)",
                               {Text(job_id), Bytes(t.SerializeAsString())})
                        .status());
  }
  return out;
}

absl::Status PostgresJobStore::Release(const v1::Job& job) {
  ASSIGN_OR_RETURN(
      Rows rows,
      Exec(absl::StrCat("UPDATE nvfp4_jobs SET job = $4, state = $3::int, owner = '', "
                        "lease_expires = NULL, version = version + 1, end_at = "
                        "CASE WHEN $3::int IN ",
                        kTerminalStates, " THEN now() END WHERE job_id = $1 AND owner = $2"),
           {Text(job.job_id()), Text(replica_id_),
            Text(absl::StrCat(static_cast<int>(job.state()))), Bytes(job.SerializeAsString())}));
  if (rows.affected != 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", job.job_id(), " is no longer held by replica ", replica_id_, " (lease lost)"));
  }
  if (Terminal(job.state())) return ResetUnits(job.job_id());
  return absl::OkStatus();
}

absl::StatusOr<v1::Job> PostgresJobStore::RequestCancelLocked(const std::string& job_id,
                                                              absl::Time now, bool* was_queued) {
  ASSIGN_OR_RETURN(Rows rows,
                   ExecLocked(absl::StrCat("SELECT ", kJobColumns,
                                           " FROM nvfp4_jobs WHERE job_id = $1 FOR UPDATE"),
                              {Text(job_id)}, false));
  if (rows.rows.empty()) return absl::NotFoundError(absl::StrCat("job '", job_id, "' not found"));
  ASSIGN_OR_RETURN(StoredJob stored, ParseStored(rows.rows[0]));
  v1::Job& job = stored.job;
  if (Terminal(job.state())) return job;
  job.set_cancel_requested(true);
  if (job.state() == v1::JOB_STATE_QUEUED) {
    *was_queued = true;
    job.set_state(v1::JOB_STATE_CANCELLED);
    job.mutable_error()->set_code(static_cast<int>(absl::StatusCode::kCancelled));
    job.mutable_error()->set_message("cancelled by a client while queued");
    SetTime(job.mutable_end_time(), now);
    RETURN_IF_ERROR(ExecLocked("UPDATE nvfp4_jobs SET job = $2, state = 5, "
                               "cancel_requested = TRUE, end_at = now(), version = version + 1 "
                               "WHERE job_id = $1",
                               {Text(job_id), Bytes(job.SerializeAsString())}, false)
                        .status());
    RETURN_IF_ERROR(
        ExecLocked("DELETE FROM nvfp4_job_units WHERE job_id = $1", {Text(job_id)}, false)
            .status());
  } else {
    RETURN_IF_ERROR(ExecLocked("UPDATE nvfp4_jobs SET cancel_requested = TRUE, "
                               "version = version + 1 WHERE job_id = $1",
                               {Text(job_id)}, false)
                        .status());
  }
  return job;
}

absl::StatusOr<v1::Job> PostgresJobStore::RequestCancel(const std::string& job_id, absl::Time now,
                                                        bool* was_queued) {
  *was_queued = false;
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(ExecLocked("BEGIN", {}).status());
  absl::StatusOr<v1::Job> out = RequestCancelLocked(job_id, now, was_queued);
  if (!out.ok()) {
    RollbackLocked();
    return out.status();
  }
  RETURN_IF_ERROR(ExecLocked("COMMIT", {}, false).status());
  return out;
}

absl::StatusOr<std::vector<v1::TensorResult>> PostgresJobStore::TensorsAfter(
    const std::string& job_id, int64_t after, int64_t* last) {
  ASSIGN_OR_RETURN(Rows rows, Exec("SELECT n, result FROM nvfp4_job_tensors WHERE job_id = $1 "
                                   "AND n > $2::bigint ORDER BY n",
                                   {Text(job_id), Text(absl::StrCat(after))}));
  std::vector<v1::TensorResult> out;
  for (const auto& row : rows.rows) {
    v1::TensorResult t;
    if (!ParseRepairingUtf8(row[1], &t)) return absl::DataLossError("malformed tensor record");
    out.push_back(std::move(t));
    *last = ToInt(row[0]);
  }
  return out;
}

absl::StatusOr<int64_t> PostgresJobStore::Prune(int64_t max_finished, absl::Duration ttl) {
  ASSIGN_OR_RETURN(
      Rows rows,
      Exec(absl::StrCat("DELETE FROM nvfp4_jobs WHERE state IN ", kTerminalStates,
                        " AND (end_at < now() - make_interval(secs => $1::float8) OR seq <= "
                        "COALESCE((SELECT seq FROM nvfp4_jobs WHERE state IN ",
                        kTerminalStates, " ORDER BY seq DESC OFFSET $2::bigint LIMIT 1), 0))"),
           {Seconds(ttl), Text(absl::StrCat(max_finished))}));
  return rows.affected;
}

absl::StatusOr<int64_t> PostgresJobStore::Count(v1::JobState state) {
  ASSIGN_OR_RETURN(Rows rows, Exec("SELECT count(*) FROM nvfp4_jobs WHERE state = $1::int",
                                   {Text(absl::StrCat(static_cast<int>(state)))}));
  return ToInt(rows.rows[0][0]);
}

}  // namespace nvfp4::server
