// Valid UTF-8 in every string field (server/utf8_fields.h): escaping through nested and repeated
// fields, and the field-by-field recovery of records that protobuf refuses for invalid UTF-8.
#include "server/utf8_fields.h"

#include <string>

#include "base/str_util.h"
#include "gtest/gtest.h"
#include "nvfp4/v1/quantizer.pb.h"

namespace nvfp4::server {
namespace {

v1::Job HostileJob() {
  v1::Job job;
  job.set_job_id("job-1");
  job.set_state(v1::JOB_STATE_FAILED);
  job.mutable_request()->set_input_uri("file:///data/in");
  job.mutable_request()->add_include_patterns("ok");
  job.mutable_request()->add_include_patterns("bad\xff");
  job.mutable_progress()->set_current_tensor("w\xfe.weight");
  job.mutable_progress()->set_tensors_done(3);
  job.mutable_error()->set_code(3);
  job.mutable_error()->set_message("tensor 'w\xff\xfe.weight': bad");
  job.add_outputs()->set_name("caf\xc3\xa9.txt");  // valid: unchanged
  job.add_outputs()->set_name("n\x80.txt");
  job.mutable_outputs(1)->set_size_bytes(42);
  job.add_warnings("w\xc3");
  return job;
}

TEST(Utf8FieldsTest, EscapesEveryStringFieldAndNothingElse) {
  v1::Job job = HostileJob();
  EXPECT_EQ(EscapeInvalidUtf8Fields(&job), 5);
  EXPECT_EQ(job.request().include_patterns(0), "ok");
  EXPECT_EQ(job.request().include_patterns(1), "bad\\xff");
  EXPECT_EQ(job.progress().current_tensor(), "w\\xfe.weight");
  EXPECT_EQ(job.progress().tensors_done(), 3);
  EXPECT_EQ(job.error().message(), "tensor 'w\\xff\\xfe.weight': bad");
  EXPECT_EQ(job.outputs(0).name(), "caf\xc3\xa9.txt");
  EXPECT_EQ(job.outputs(1).name(), "n\\x80.txt");
  EXPECT_EQ(job.outputs(1).size_bytes(), 42);
  EXPECT_EQ(job.warnings(0), "w\\xc3");
  v1::Job parsed;
  EXPECT_TRUE(parsed.ParseFromString(job.SerializeAsString()));
  EXPECT_EQ(EscapeInvalidUtf8Fields(&job), 0);  // idempotent on valid text
}

TEST(Utf8FieldsTest, RecoversARecordTheParserRefuses) {
  const std::string wire = HostileJob().SerializeAsString();
  v1::Job strict;
  ASSERT_FALSE(strict.ParseFromString(wire));
  v1::Job job;
  int dropped = 0;
  ASSERT_TRUE(ParseRepairingUtf8(wire, &job, &dropped));
  EXPECT_EQ(dropped, 0);
  v1::Job expected = HostileJob();
  EscapeInvalidUtf8Fields(&expected);
  EXPECT_EQ(job.SerializeAsString(), expected.SerializeAsString());
}

TEST(Utf8FieldsTest, ValidRecordsParseAsUsual) {
  v1::Job in = HostileJob();
  EscapeInvalidUtf8Fields(&in);
  v1::Job out;
  ASSERT_TRUE(ParseRepairingUtf8(in.SerializeAsString(), &out));
  EXPECT_EQ(out.SerializeAsString(), in.SerializeAsString());
}

TEST(Utf8FieldsTest, NotAMessageAtAll) {
  v1::Job job;
  EXPECT_FALSE(ParseRepairingUtf8(std::string("\x0a\xff\xff\xff\xff\x0f", 6), &job));
}

}  // namespace
}  // namespace nvfp4::server
