// Request bounds (server/request_limits.h), alone and through the real service over loopback: a
// request over a limit or with a location that cannot work is refused at submit and never becomes
// a job; ListJobs pages stay under their byte bound.
#include "server/request_limits.h"

#include <set>
#include <string>

#include "client/remote/quantizer_client.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "server/quantizer_service.h"
#include "storage/router.h"
#include "tests/server/fakes.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace nvfp4::server {
namespace {

using ::nvfp4::testing::IsOk;
using ::nvfp4::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

v1::QuantizeModelRequest Request(const std::string& in, const std::string& out) {
  v1::QuantizeModelRequest r;
  r.set_input_uri(in);
  r.set_output_uri(out);
  return r;
}

TEST(RequestLimitsTest, OversizedFieldsNameTheFieldAndTheLimit) {
  RequestLimits limits;
  v1::QuantizeModelRequest r = Request("file:///m/" + std::string(7 << 20, 'a'), "file:///o");
  EXPECT_THAT(CheckQuantizeModelRequest(r, limits, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("input_uri is 7340042 bytes"), HasSubstr("4096"),
                             HasSubstr("--max_uri_bytes"))));
  r = Request("file:///m", "file:///o");
  r.set_calibration_uri("s3://b/" + std::string(5000, 'c'));
  EXPECT_THAT(CheckQuantizeModelRequest(r, limits, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("calibration_uri is")));
  r = Request("file:///m", "file:///o");
  r.set_request_id(std::string(129, 'r'));
  EXPECT_THAT(CheckQuantizeModelRequest(r, limits, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("request_id"), HasSubstr("128"))));
  r = Request("file:///m", "file:///o");
  for (int i = 0; i < 257; ++i) r.add_exclude_patterns("lm_head");
  EXPECT_THAT(CheckQuantizeModelRequest(r, limits, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("exclude_patterns has 257 entries"), HasSubstr("256"),
                             HasSubstr("--max_patterns"))));
  r = Request("file:///m", "file:///o");
  r.add_include_patterns("*");
  r.add_include_patterns(std::string(1025, '*'));
  EXPECT_THAT(CheckQuantizeModelRequest(r, limits, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("include_patterns[1] is 1025 bytes"),
                             HasSubstr("--max_pattern_bytes"))));
  r = Request("file:///m\nforged log line", "file:///o");
  EXPECT_THAT(CheckQuantizeModelRequest(r, limits, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input_uri contains the control byte 0x0a at offset 9")));
  r = Request("file:///m", "file:///o");
  EXPECT_THAT(CheckQuantizeModelRequest(r, limits, nullptr), IsOk());

  v1::TensorHeader h;
  h.set_name(std::string(1025, 'n'));
  EXPECT_THAT(CheckTensorHeader(h, limits),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("TensorHeader.name")));
  h.set_name("w");
  for (int i = 0; i < 9; ++i) h.add_shape(1);
  EXPECT_THAT(CheckTensorHeader(h, limits),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("TensorHeader.shape")));
  EXPECT_THAT(CheckJobId(std::string(65, 'j'), limits),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("job_id")));
  v1::ListJobsRequest list;
  list.set_page_token(std::string(33, '1'));
  EXPECT_THAT(CheckListJobsRequest(list, limits),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("page_token")));
  list.clear_page_token();
  for (int i = 0; i < 9; ++i) list.add_states(v1::JOB_STATE_QUEUED);
  EXPECT_THAT(CheckListJobsRequest(list, limits),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("states has 9 entries")));
  v1::ReadResultRequest read;
  read.set_job_id("job-1");
  read.set_name(std::string(2000, 'f'));
  EXPECT_THAT(CheckReadResultRequest(read, limits),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("name is 2000 bytes")));
}

TEST(RequestLimitsTest, LocationsAreCheckedAtSubmit) {
  nvfp4::testing::TempDir root, outside;
  std::filesystem::create_directories(root.path() / "m");
  storage::StoreConfig config;
  config.data_roots = {root.path().string()};
  auto router = storage::MakeStorageRouter(config);
  ASSERT_TRUE(router.ok()) << router.status();
  const std::string m = "file://" + (root.path() / "m").string();
  RequestLimits limits;
  auto check = [&](const std::string& in, const std::string& out) {
    return CheckQuantizeModelRequest(Request(in, out), limits, router->get());
  };
  EXPECT_THAT(check(m, m + "-nvfp4"), IsOk());
  EXPECT_THAT(check(m, "file://" + outside.Path("o")),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       AllOf(HasSubstr("output_uri"), HasSubstr("outside the allowed data roots"))));
  EXPECT_THAT(check("file://" + outside.Path("m"), m + "-nvfp4"),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("input_uri")));
  EXPECT_THAT(check(m + "/../../etc", m + "-nvfp4"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'..'")));
  EXPECT_THAT(check(m, m + "/"), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("output_uri must differ from input_uri")));
  EXPECT_THAT(check(m, m + "/./"), StatusIs(absl::StatusCode::kInvalidArgument,
                                            HasSubstr("output_uri must differ")));
  EXPECT_THAT(check(m, m + "/nvfp4"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("output_uri must not be inside input_uri")));
  EXPECT_THAT(check(m + "/sub", m), StatusIs(absl::StatusCode::kInvalidArgument,
                                             HasSubstr("input_uri must not be inside output_uri")));
  EXPECT_THAT(check("http://x/m", m + "-nvfp4"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("input_uri")));
  // No S3 endpoint on this server: refused at submit, not when the job runs.
  EXPECT_THAT(check("s3://bucket/m", m + "-nvfp4"),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("input_uri"), HasSubstr("--s3_endpoint"))));
  // S3 prefixes compare by key component (no router: schemes are not checked).
  EXPECT_THAT(CheckQuantizeModelRequest(Request("s3://b/m", "s3://b/m/q"), limits, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("inside input_uri")));
  EXPECT_THAT(CheckQuantizeModelRequest(Request("s3://b/m", "s3://b/m-q"), limits, nullptr), IsOk());
  EXPECT_THAT(CheckQuantizeModelRequest(Request("s3://b/m", "s3://c/m"), limits, nullptr), IsOk());
}

// The real service over loopback, its store a router over a temp data root.
class RequestLimitsServiceTest : public ::testing::Test {
 protected:
  void Start(RequestLimits limits, int capacity = 64) {
    storage::StoreConfig config;
    config.data_roots = {root_.path().string()};
    auto router = storage::MakeStorageRouter(config);
    ASSERT_TRUE(router.ok()) << router.status();
    store_ = *std::move(router);
    std::vector<std::unique_ptr<QuantizerBackend>> b;
    b.push_back(MakeCpuBackend(1));
    devices_ = std::make_unique<DevicePool>(std::move(b));
    JobManagerOptions jo;
    jo.queue_capacity = capacity;
    pipeline_.hold = true;  // jobs stay QUEUED/RUNNING
    jobs_ = std::make_unique<JobManager>(jo, &pipeline_, store_.get(), devices_.get(), &job_store_,
                                         nullptr);
    ASSERT_TRUE(jobs_->Start().ok());
    ServiceOptions so;
    so.limits = limits;
    service_ = std::make_unique<QuantizerService>(so, jobs_.get(), devices_.get(), store_.get(),
                                                  nullptr);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    builder.SetMaxReceiveMessageSize(8 << 20);
    server_ = builder.BuildAndStart();
    ASSERT_NE(port, 0);
    client::ClientOptions co;
    co.target = "127.0.0.1:" + std::to_string(port);
    auto c = client::QuantizerClient::Connect(co);
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = *std::move(c);
  }
  void TearDown() override {
    pipeline_.hold = false;
    if (server_) server_->Shutdown(absl::ToChronoTime(absl::Now()));
    if (jobs_) jobs_->Stop();
  }
  int JobCount() {
    auto page = client_->ListJobs(v1::ListJobsRequest());
    EXPECT_TRUE(page.ok()) << page.status();
    return page.ok() ? page->jobs_size() : -1;
  }
  std::string Uri(const std::string& name) { return "file://" + root_.Path(name); }

  nvfp4::testing::TempDir root_;
  testing::FakePipeline pipeline_;
  MemoryJobStore job_store_;
  std::unique_ptr<storage::StorageRouter> store_;
  std::unique_ptr<DevicePool> devices_;
  std::unique_ptr<JobManager> jobs_;
  std::unique_ptr<QuantizerService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<client::QuantizerClient> client_;
};

// Issue 12, item 1: 7 MB URIs were accepted (and echoed, journaled and logged) and failed only
// when the job ran; bad locations too.
TEST_F(RequestLimitsServiceTest, BadRequestsAreRefusedAtSubmitAndNeverBecomeJobs) {
  Start(RequestLimits());
  EXPECT_THAT(client_->QuantizeModel(Request(Uri(std::string(7 << 20, 'a')), Uri("o"))),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("input_uri"), HasSubstr("4096"))));
  EXPECT_THAT(client_->QuantizeModel(Request(Uri("m"), "file:///etc/nvfp4")),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("output_uri")));
  EXPECT_THAT(client_->QuantizeModel(Request(Uri("m"), Uri("m/q"))),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("inside input_uri")));
  EXPECT_THAT(client_->QuantizeModel(Request("s3://b/m", Uri("q"))),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("s3")));
  v1::GetJobRequest get;
  get.set_job_id(std::string(100, 'j'));
  EXPECT_THAT(client_->GetJob(get.job_id()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("job_id")));
  EXPECT_EQ(JobCount(), 0);
  EXPECT_THAT(client_->QuantizeModel(Request(Uri("m"), Uri("m-nvfp4"))), IsOk());
  EXPECT_EQ(JobCount(), 1);
}

// Pages stop before max_list_page_bytes (at least one job each) and together list every job once.
TEST_F(RequestLimitsServiceTest, ListJobsPagesAreBoundedInBytes) {
  RequestLimits limits;
  limits.max_list_page_bytes = 64 << 10;
  Start(limits);
  const std::string pattern(1000, 'p');
  std::set<std::string> submitted;
  for (int i = 0; i < 30; ++i) {
    v1::QuantizeModelRequest r = Request(Uri("m"), Uri("o" + std::to_string(i)));
    for (int k = 0; k < 10; ++k) r.add_exclude_patterns(pattern);  // ~10 KB per job
    auto job = client_->QuantizeModel(r);
    ASSERT_TRUE(job.ok()) << job.status();
    submitted.insert(job->job_id());
  }
  std::set<std::string> listed;
  v1::ListJobsRequest req;
  req.set_page_size(30);
  int pages = 0;
  do {
    auto page = client_->ListJobs(req);
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_GE(page->jobs_size(), 1);
    EXPECT_LE(static_cast<int64_t>(page->ByteSizeLong()), limits.max_list_page_bytes);
    for (const v1::Job& j : page->jobs()) EXPECT_TRUE(listed.insert(j.job_id()).second);
    req.set_page_token(page->next_page_token());
    ++pages;
  } while (!req.page_token().empty() && pages < 100);
  EXPECT_EQ(listed, submitted);
  EXPECT_GE(pages, 5);
  // One job over the bound still makes a page of one, so paging always advances.
  EXPECT_THAT(BoundListJobsPage(v1::ListJobsRequest(), 10,
                                [&](const v1::ListJobsRequest& r) { return jobs_->List(r); }),
              IsOk());
  auto one = BoundListJobsPage(v1::ListJobsRequest(), 10,
                               [&](const v1::ListJobsRequest& r) { return jobs_->List(r); });
  EXPECT_EQ(one->jobs_size(), 1);
  EXPECT_FALSE(one->next_page_token().empty());
}

}  // namespace
}  // namespace nvfp4::server
