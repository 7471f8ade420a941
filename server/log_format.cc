#include "server/log_format.h"

#include <atomic>
#include <cstdint>
#include <cstdio>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "base/str_util.h"

namespace nvfp4::server {
namespace {

std::atomic<int> g_format{static_cast<int>(LogFormat::kText)};

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
    case LogLevel::kInfo:
      break;
  }
  return "info";
}

bool IsKey(absl::string_view key) {
  if (key.empty()) return false;
  for (char c : key) {
    if (!absl::ascii_islower(c) && !absl::ascii_isdigit(c) && c != '_') return false;
  }
  return true;
}

void Write(const std::string& line) {
  std::fwrite(line.data(), 1, line.size(), stderr);  // one call: stdio locks the stream
  std::fflush(stderr);
}

}  // namespace

absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name) {
  if (name == "text") return LogFormat::kText;
  if (name == "json") return LogFormat::kJson;
  return absl::InvalidArgumentError(
      absl::StrCat("--log_format must be text or json, not '", EscapeLogText(name), "'"));
}

void SetLogFormat(LogFormat format) { g_format.store(static_cast<int>(format)); }
LogFormat GetLogFormat() { return static_cast<LogFormat>(g_format.load()); }

std::string EscapeLogText(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    uint32_t cp = 0;
    const size_t n = Utf8SequenceAt(std::string_view(s.data(), s.size()), i, &cp);
    if (n == 0) {
      absl::StrAppendFormat(&out, "\\x%02x", static_cast<unsigned char>(s[i]));
      ++i;
      continue;
    }
    if (n == 1) {
      const char c = s[i];
      if (c == '\\') {
        out += "\\\\";
      } else if (c == '\n') {
        out += "\\n";
      } else if (c == '\r') {
        out += "\\r";
      } else if (c == '\t') {
        out += "\\t";
      } else if (cp < 0x20 || cp == 0x7f) {
        absl::StrAppendFormat(&out, "\\x%02x", cp);
      } else {
        out += c;
      }
    } else if ((cp >= 0x80 && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029) {
      absl::StrAppendFormat(&out, "\\u%04x", cp);
    } else {
      out.append(s.data() + i, n);
    }
    i += n;
  }
  return out;
}

std::string JsonQuote(absl::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      absl::StrAppendFormat(&out, "\\u%04x", u);
    } else {
      out += c;
    }
  }
  out += '"';
  return out;
}

LogRecord ParseLogMessage(absl::string_view message) {
  LogRecord rec;
  rec.message = std::string(message);
  absl::string_view rest = message;
  if (absl::StartsWith(rest, "job job-")) {
    rest.remove_prefix(4);
    const size_t end = rest.find(' ');
    rec.job_id = std::string(rest.substr(0, end));
    rest = end == absl::string_view::npos ? absl::string_view() : rest.substr(end + 1);
  }
  std::vector<absl::string_view> tokens = absl::StrSplit(rest, ' ', absl::SkipEmpty());
  std::string first = tokens.empty() ? "" : std::string(tokens[0]);
  while (!first.empty() && (first.back() == ':' || first.back() == ',')) first.pop_back();
  rec.event = rec.job_id.empty() ? first : absl::StrCat("job.", first);
  size_t start = 0;
  if (first == "state" && tokens.size() > 1) {
    std::pair<std::string, std::string> t = absl::StrSplit(tokens[1], absl::MaxSplits("->", 1));
    rec.fields.emplace_back("from", t.first);
    // "QUEUED" of "RUNNING->QUEUED (interrupted ...)" is the token; the rest is in the message.
    rec.fields.emplace_back("to", t.second);
    start = 2;
  }
  for (size_t i = start; i < tokens.size(); ++i) {
    absl::string_view t = tokens[i];
    if (absl::StartsWith(t, "(") && t.find('=') != absl::string_view::npos) t.remove_prefix(1);
    const size_t eq = t.find('=');
    if (eq != absl::string_view::npos && IsKey(t.substr(0, eq))) {
      rec.fields.emplace_back(std::string(t.substr(0, eq)), std::string(t.substr(eq + 1)));
    } else if (!rec.fields.empty() && i > start && rec.fields.back().first != "to" &&
               rec.fields.back().first != "from") {
      absl::StrAppend(&rec.fields.back().second, " ", t);  // a value with spaces (error=...)
    }
  }
  for (auto& [key, value] : rec.fields) {  // "(running=1, queued=0)"
    while (!value.empty() && (value.back() == ',' || (value.back() == ')' &&
                                                      value.find('(') == std::string::npos))) {
      value.pop_back();
    }
  }
  const std::string lower = absl::AsciiStrToLower(message);
  bool failed_job = false;
  for (const auto& [key, value] : rec.fields) failed_job |= key == "to" && value == "FAILED";
  if (failed_job || absl::StrContains(lower, "cannot") || absl::StrContains(lower, "could not") ||
      absl::StrContains(lower, "failed")) {
    rec.level = LogLevel::kError;
  } else if (absl::StrContains(lower, "ignoring") || absl::StrContains(lower, "skipping") ||
             absl::StrContains(lower, "interrupting")) {
    rec.level = LogLevel::kWarning;
  }
  return rec;
}

std::string FormatLogLine(absl::Time time, const LogRecord& record, LogFormat format) {
  const std::string ts = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", time, absl::UTCTimeZone());
  if (format == LogFormat::kText) {
    return absl::StrCat(ts, " nvfp4d ", EscapeLogText(record.message), "\n");
  }
  std::string line = absl::StrCat(
      "{\"time\":\"", ts, "\",\"level\":\"", LevelName(record.level),
      "\",\"event\":", JsonQuote(EscapeLogText(record.event)),
      ",\"job_id\":", JsonQuote(EscapeLogText(record.job_id)),
      ",\"message\":", JsonQuote(EscapeLogText(record.message)), ",\"fields\":{");
  for (size_t i = 0; i < record.fields.size(); ++i) {
    absl::StrAppend(&line, i == 0 ? "" : ",", JsonQuote(EscapeLogText(record.fields[i].first)),
                    ":", JsonQuote(EscapeLogText(record.fields[i].second)));
  }
  line += "}}\n";
  return line;
}

void WriteLogMessage(absl::string_view message) {
  const LogFormat format = GetLogFormat();
  LogRecord rec;
  if (format == LogFormat::kJson) {
    rec = ParseLogMessage(message);
  } else {
    rec.message = std::string(message);
  }
  Write(FormatLogLine(absl::Now(), rec, format));
}

void WriteLogRecord(const LogRecord& record) {
  Write(FormatLogLine(absl::Now(), record, GetLogFormat()));
}

void LogEvent(LogLevel level, std::string event, std::string job_id,
              std::vector<std::pair<std::string, std::string>> fields) {
  LogRecord rec;
  rec.level = level;
  rec.message = event;
  if (!job_id.empty()) absl::StrAppend(&rec.message, " job=", job_id);
  for (const auto& [key, value] : fields) absl::StrAppend(&rec.message, " ", key, "=", value);
  rec.event = std::move(event);
  rec.job_id = std::move(job_id);
  rec.fields = std::move(fields);
  WriteLogRecord(rec);
}

}  // namespace nvfp4::server
