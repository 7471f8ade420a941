// The formats of nvfp4d's log (server/log.h writes it): escaping and text or JSON lines.
//
// Every logged string goes through EscapeLogText first, so a log line is always one line of valid
// UTF-8, whatever a client or a checkpoint put in a URI, a tensor name or an error message:
// backslash -> `\\`, newline/CR/tab -> `\n` `\r` `\t`, other control bytes (C0, DEL, NUL) and
// bytes that are not valid UTF-8 -> `\xNN`, C1 controls and U+2028/U+2029 -> `\uNNNN`.
//
// --log_format=text (default): "<RFC3339 time> nvfp4d <message>".
// --log_format=json: one JSON object per line, the convention of Kubernetes log collectors:
//   {"time":"2026-...Z","level":"info","event":"job.state","job_id":"job-1f..",
//    "message":"job job-1f.. state NEW->QUEUED input=... queued=1",
//    "fields":{"from":"NEW","to":"QUEUED","input":"file:///m","queued":"1"}}
// `job_id` is "" for lines about no job. String values are the escaped text above, JSON-encoded.
// LogLine's free-form messages are mapped onto these keys by ParseLogMessage (see there); LogEvent
// states them directly.
#ifndef NVFP4_SERVER_LOG_FORMAT_H_
#define NVFP4_SERVER_LOG_FORMAT_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace nvfp4::server {

enum class LogFormat { kText, kJson };
enum class LogLevel { kInfo, kWarning, kError };

// "text" or "json"; INVALID_ARGUMENT otherwise.
absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name);
// The process-wide format (set once at startup, by --log_format).
void SetLogFormat(LogFormat format);
LogFormat GetLogFormat();

// `text` as one line of printable, valid UTF-8 (the rules above). Valid UTF-8 text without
// control bytes or backslashes is returned unchanged.
std::string EscapeLogText(absl::string_view text);
// `text` as a JSON string literal (quotes included); `text` must be valid UTF-8.
std::string JsonQuote(absl::string_view text);

// One log record. `message` is the text line's message.
struct LogRecord {
  LogLevel level = LogLevel::kInfo;
  std::string event;
  std::string job_id;
  std::vector<std::pair<std::string, std::string>> fields;
  std::string message;
};

// Maps a free-form LogLine message onto a record: "job <job-id> ..." gives job_id and the event
// "job.<next word>" ("job.state", with fields from/to for "state A->B"); other messages give the
// event "<first word>"; every "key=value" token is a field (a value runs to the next key=);
// the level is error for a FAILED job or "cannot"/"could not"/"failed", warning for
// "ignoring"/"skipping"/"interrupting", info otherwise.
LogRecord ParseLogMessage(absl::string_view message);

// The whole line (ending in '\n') for `record` at `time`, every string escaped.
std::string FormatLogLine(absl::Time time, const LogRecord& record, LogFormat format);

// Writes the line of a free-form message (LogLine) / of a record to stderr in the current format.
void WriteLogMessage(absl::string_view message);
void WriteLogRecord(const LogRecord& record);

// A structured event: the text format shows "<event> [job=<id>] key=value ...".
void LogEvent(LogLevel level, std::string event, std::string job_id,
              std::vector<std::pair<std::string, std::string>> fields);

}  // namespace nvfp4::server

#endif  // NVFP4_SERVER_LOG_FORMAT_H_
