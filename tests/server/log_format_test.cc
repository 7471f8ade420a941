// Log escaping and the text / JSON line formats (server/log_format.h). Issue 12, item 5: newlines
// in a URI forged whole log lines and NUL bytes made the log binary.
#include "server/log_format.h"

#include <algorithm>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/log.h"

namespace nvfp4::server {
namespace {

using namespace std::string_literals;

const absl::Time kTime = absl::FromUnixSeconds(1700000000);

TEST(LogFormatTest, EscapesControlBytesBackslashesAndInvalidUtf8) {
  EXPECT_EQ(EscapeLogText("plain text: file:///m/a b=c é ✓ 😀"), "plain text: file:///m/a b=c é ✓ 😀");
  EXPECT_EQ(EscapeLogText("a\nb\r\tc"), "a\\nb\\r\\tc");
  EXPECT_EQ(EscapeLogText("nul\0here"s), "nul\\x00here");
  EXPECT_EQ(EscapeLogText("\x1b[31mred\x7f"), "\\x1b[31mred\\x7f");
  EXPECT_EQ(EscapeLogText("back\\slash"), "back\\\\slash");
  EXPECT_EQ(EscapeLogText("bad \xff\xfe utf8 \xc3"), "bad \\xff\\xfe utf8 \\xc3");
  EXPECT_EQ(EscapeLogText("overlong \xc0\xaf surrogate \xed\xa0\x80"),
            "overlong \\xc0\\xaf surrogate \\xed\\xa0\\x80");
  EXPECT_EQ(EscapeLogText("c1 \xc2\x85 ls \xe2\x80\xa8"), "c1 \\u0085 ls \\u2028");
}

TEST(LogFormatTest, TextLineIsOneLineWhateverTheMessage) {
  LogRecord rec;
  rec.message = "job job-1 state NEW->QUEUED input=file:///m\n2023-01-01T00:00:00.000Z nvfp4d forged\0"s;
  const std::string line = FormatLogLine(kTime, rec, LogFormat::kText);
  EXPECT_EQ(std::count(line.begin(), line.end(), '\n'), 1);
  EXPECT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\0'), std::string::npos);
  EXPECT_EQ(line,
            "2023-11-14T22:13:20.000Z nvfp4d job job-1 state NEW->QUEUED input=file:///m\\n"
            "2023-01-01T00:00:00.000Z nvfp4d forged\\x00\n");
}

TEST(LogFormatTest, JsonLineHasTheStandardKeys) {
  LogRecord rec = ParseLogMessage(
      "job job-1f2e state NEW->QUEUED input=file:///m\n\"x\xff output=file:///o queued=1");
  EXPECT_EQ(rec.job_id, "job-1f2e");
  EXPECT_EQ(rec.event, "job.state");
  EXPECT_EQ(rec.level, LogLevel::kInfo);
  const std::string line = FormatLogLine(kTime, rec, LogFormat::kJson);
  EXPECT_EQ(std::count(line.begin(), line.end(), '\n'), 1);
  nlohmann::json j = nlohmann::json::parse(line);
  EXPECT_EQ(j["time"], "2023-11-14T22:13:20.000Z");
  EXPECT_EQ(j["level"], "info");
  EXPECT_EQ(j["event"], "job.state");
  EXPECT_EQ(j["job_id"], "job-1f2e");
  EXPECT_EQ(j["fields"]["from"], "NEW");
  EXPECT_EQ(j["fields"]["to"], "QUEUED");
  EXPECT_EQ(j["fields"]["input"], "file:///m\\n\"x\\xff");
  EXPECT_EQ(j["fields"]["output"], "file:///o");
  EXPECT_EQ(j["fields"]["queued"], "1");
  EXPECT_EQ(j["message"],
            "job job-1f2e state NEW->QUEUED input=file:///m\\n\"x\\xff output=file:///o queued=1");
}

TEST(LogFormatTest, ParsesLevelsAndValuesWithSpaces) {
  LogRecord failed = ParseLogMessage(
      "job job-9 state RUNNING->FAILED worker=0 run=1.5s tensors=1/3 bytes_in=10 bytes_out=0 "
      "error=INVALID_ARGUMENT: tensor 'a b' is bad");
  EXPECT_EQ(failed.level, LogLevel::kError);
  ASSERT_FALSE(failed.fields.empty());
  EXPECT_EQ(failed.fields.back(),
            std::make_pair("error"s, "INVALID_ARGUMENT: tensor 'a b' is bad"s));
  LogRecord serving = ParseLogMessage("serving nvfp4.v1.Quantizer on port 5 (tls=off)");
  EXPECT_EQ(serving.event, "serving");
  EXPECT_EQ(serving.job_id, "");
  EXPECT_EQ(serving.level, LogLevel::kInfo);
  LogRecord drain = ParseLogMessage("received signal 15: draining (running=1, queued=2)");
  EXPECT_EQ(drain.event, "received");
  EXPECT_EQ(drain.fields,
            (std::vector<std::pair<std::string, std::string>>{{"running", "1"}, {"queued", "2"}}));
  EXPECT_EQ(ParseLogMessage("journal /s/j: skipping an unparsable job record").level,
            LogLevel::kWarning);
  EXPECT_EQ(ParseLogMessage("job job-3 could not be saved: x").level, LogLevel::kError);
}

TEST(LogFormatTest, ParseLogFormat) {
  EXPECT_EQ(*ParseLogFormat("text"), LogFormat::kText);
  EXPECT_EQ(*ParseLogFormat("json"), LogFormat::kJson);
  EXPECT_FALSE(ParseLogFormat("xml").ok());
}

}  // namespace
}  // namespace nvfp4::server
