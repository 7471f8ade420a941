// In-process gRPC server on port 0 with the real service, a CPU device and a fake pipeline.
#include <cmath>
#include <cstring>
#include <random>

#include "client/remote/quantizer_client.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "server/quantizer_service.h"
#include "tests/server/fakes.h"

namespace nvfp4::server {
namespace {

using testing::FakePipeline;

std::vector<uint16_t> RandomBf16(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, 0.02f);
  std::vector<uint16_t> out(n);
  for (auto& v : out) {
    float f = dist(rng);
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    v = static_cast<uint16_t>(bits >> 16);
  }
  return out;
}

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(/*capacity=*/4, /*max_tensor_bytes=*/64 << 20); }
  void TearDown() override {
    pipeline_.hold = false;
    if (server_) server_->Shutdown(absl::ToChronoTime(absl::Now()));
    if (jobs_) jobs_->Stop();
  }
  void Start(int capacity, int64_t max_tensor_bytes) {
    std::vector<std::unique_ptr<QuantizerBackend>> b;
    b.push_back(MakeCpuBackend(2));
    devices_ = std::make_unique<DevicePool>(std::move(b));
    JobManagerOptions jo;
    jo.queue_capacity = capacity;
    jobs_ = std::make_unique<JobManager>(jo, &pipeline_, nullptr, devices_.get(), &store_, nullptr);
    ASSERT_TRUE(jobs_->Start().ok());
    ServiceOptions so = options_;
    so.max_tensor_bytes = max_tensor_bytes;
    so.chunk_bytes = 256 << 10;
    service_ =
        std::make_unique<QuantizerService>(so, jobs_.get(), devices_.get(), nullptr, nullptr);
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    builder.SetMaxReceiveMessageSize(8 << 20);
    server_ = builder.BuildAndStart();
    ASSERT_NE(port, 0);
    client::ClientOptions co;
    co.target = "127.0.0.1:" + std::to_string(port);
    co.chunk_bytes = 256 << 10;
    auto c = client::QuantizerClient::Connect(co);
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = *std::move(c);
  }

  ServiceOptions options_;  // Start()'s service options (limits set by Start aside)
  FakePipeline pipeline_;
  MemoryJobStore store_;
  std::unique_ptr<DevicePool> devices_;
  std::unique_ptr<JobManager> jobs_;
  std::unique_ptr<QuantizerService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<client::QuantizerClient> client_;
};

TEST_F(ServiceTest, QuantizeTensorMatchesLocalBackendBitForBit) {
  const int64_t n = 256, k = 1024;  // 512 KiB of bf16: several 256 KiB chunks each way
  std::vector<uint16_t> data = RandomBf16(n * k, 7);
  TensorView view{"layer.weight", DType::kBF16, {n, k}, data.data()};
  for (Method method : {Method::kRtn, Method::kSoar}) {
    QuantizeOptions opts;
    opts.method = method;
    client::QuantizeTensorInfo info;
    auto remote = client_->QuantizeTensor(view, opts, nullptr, &info);
    ASSERT_TRUE(remote.ok()) << remote.status();
    auto local = MakeCpuBackend(1)->Quantize(view, opts);
    ASSERT_TRUE(local.ok());
    EXPECT_EQ(remote->packed, local->packed);
    EXPECT_EQ(remote->scales, local->scales);
    EXPECT_EQ(remote->global_scale, local->global_scale);
    EXPECT_EQ(remote->rows, n);
    EXPECT_EQ(remote->cols, k);
    EXPECT_DOUBLE_EQ(remote->metrics.nmse, local->metrics.nmse);
    EXPECT_EQ(info.device, "cpu");
  }
}

// The Gram travels as PART_GRAM chunks (K*K*4 = 1 MiB here: several chunks) and drives gptq
// exactly as in-process; without it gptq is refused before any data is read.
TEST_F(ServiceTest, QuantizeTensorGptqSendsTheGram) {
  const int64_t n = 64, k = 512;
  std::vector<uint16_t> data = RandomBf16(n * k, 9);
  TensorView view{"mlp.up_proj.weight", DType::kBF16, {n, k}, data.data()};
  std::vector<float> gram(k * k);
  for (int64_t i = 0; i < k; ++i) {
    for (int64_t j = 0; j < k; ++j) {
      gram[i * k + j] = (i == j ? 2.0f : 0.0f) + (std::abs(i - j) == 1 ? 0.9f : 0.0f);
    }
  }
  Calibration cal;
  cal.gram = gram;
  QuantizeOptions opts;
  opts.method = Method::kGptq;
  opts.objective = Objective::kHessian;
  opts.gptq.global_scale = GptqGlobalScale::kAmax;
  auto remote = client_->QuantizeTensor(view, opts, nullptr, nullptr, &gram);
  ASSERT_TRUE(remote.ok()) << remote.status();
  auto local = MakeCpuBackend(1)->Quantize(view, opts, &cal);
  ASSERT_TRUE(local.ok()) << local.status();
  EXPECT_EQ(remote->packed, local->packed);
  EXPECT_EQ(remote->scales, local->scales);
  EXPECT_EQ(remote->global_scale, local->global_scale);
  ASSERT_TRUE(remote->metrics.output_nmse.has_value());
  EXPECT_DOUBLE_EQ(*remote->metrics.output_nmse, *local->metrics.output_nmse);
  EXPECT_EQ(remote->metrics.gptq_dampening, 0.01);

  auto missing = client_->QuantizeTensor(view, opts);
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(missing.status())) << missing.status();
  EXPECT_NE(missing.status().message().find("mlp.up_proj.weight"), std::string::npos);
  EXPECT_NE(missing.status().message().find("method gptq needs the input Gram"),
            std::string::npos);
}

// A stream that sends a header and then nothing is cut off with DEADLINE_EXCEEDED naming the flag
// (server/stream_deadlines.h), although the sync handler was blocked in Read().
TEST_F(ServiceTest, IdleTensorStreamIsCutOff) {
  TearDown();
  options_.tensor_stream_idle_timeout = absl::Milliseconds(300);
  Start(/*capacity=*/4, /*max_tensor_bytes=*/64 << 20);
  grpc::ClientContext ctx;
  auto stream = client_->stub()->QuantizeTensor(&ctx);
  v1::QuantizeTensorRequest header;
  header.mutable_header()->set_name("idle.weight");
  header.mutable_header()->set_dtype(v1::DTYPE_BF16);
  header.mutable_header()->add_shape(16);
  header.mutable_header()->add_shape(64);
  const absl::Time t0 = absl::Now();
  ASSERT_TRUE(stream->Write(header));
  v1::QuantizeTensorResponse response;
  EXPECT_FALSE(stream->Read(&response));
  const grpc::Status s = stream->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();
  EXPECT_NE(s.error_message().find("--tensor_stream_idle_timeout"), std::string::npos)
      << s.error_message();
  EXPECT_GE(absl::Now() - t0, absl::Milliseconds(250));
  EXPECT_LT(absl::Now() - t0, absl::Seconds(10));
}

TEST_F(ServiceTest, BadTensorIsInvalidArgumentNamingTensor) {
  std::vector<uint16_t> data = RandomBf16(4 * 100, 1);
  TensorView view{"bad.weight", DType::kBF16, {4, 100}, data.data()};
  auto r = client_->QuantizeTensor(view, QuantizeOptions{});
  EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
  EXPECT_NE(r.status().message().find("bad.weight"), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("multiple of 16"), std::string::npos) << r.status();

  std::vector<float> nan(4 * 16, 1.0f);
  nan[5] = std::nanf("");
  TensorView nv{"nan.weight", DType::kF32, {4, 16}, nan.data()};
  auto r2 = client_->QuantizeTensor(nv, QuantizeOptions{});
  EXPECT_TRUE(absl::IsInvalidArgument(r2.status())) << r2.status();
  EXPECT_NE(r2.status().message().find("nan.weight"), std::string::npos) << r2.status();
}

TEST_F(ServiceTest, OversizeTensorIsResourceExhausted) {
  TearDown();
  Start(4, /*max_tensor_bytes=*/1024);
  std::vector<uint16_t> data = RandomBf16(64 * 64, 1);
  TensorView view{"big.weight", DType::kBF16, {64, 64}, data.data()};
  auto r = client_->QuantizeTensor(view, QuantizeOptions{});
  EXPECT_TRUE(absl::IsResourceExhausted(r.status())) << r.status();
}

TEST_F(ServiceTest, UnknownJobIsNotFound) {
  EXPECT_TRUE(absl::IsNotFound(client_->GetJob("job-missing").status()));
  EXPECT_TRUE(absl::IsNotFound(client_->CancelJob("job-missing").status()));
  EXPECT_TRUE(absl::IsNotFound(client_->WatchJob("job-missing", nullptr, 1, 0).status()));
}

TEST_F(ServiceTest, QueueFullIsUnavailableOverGrpc) {
  TearDown();
  pipeline_.hold = true;
  Start(/*capacity=*/1, 64 << 20);
  v1::QuantizeModelRequest r;
  r.set_input_uri("file:///in");
  r.set_output_uri("file:///out");
  ASSERT_TRUE(client_->QuantizeModel(r).ok());
  for (int i = 0; i < 200 && jobs_->running() == 0; ++i) absl::SleepFor(absl::Milliseconds(5));
  ASSERT_TRUE(client_->QuantizeModel(r).ok());
  auto third = client_->QuantizeModel(r);
  EXPECT_TRUE(absl::IsUnavailable(third.status())) << third.status();
}

TEST_F(ServiceTest, ModelJobWatchCancelListReattach) {
  pipeline_.hold = true;
  v1::QuantizeModelRequest r;
  r.set_input_uri("file:///in");
  r.set_output_uri("file:///out");
  auto job = client_->QuantizeModel(r);
  ASSERT_TRUE(job.ok());
  // A watcher that disconnects does not cancel the job.
  {
    grpc::ClientContext ctx;
    v1::WatchJobRequest wr;
    wr.set_job_id(job->job_id());
    auto reader = client_->stub()->WatchJob(&ctx, wr);
    v1::JobEvent e;
    ASSERT_TRUE(reader->Read(&e));
    EXPECT_EQ(e.type(), v1::EVENT_TYPE_SNAPSHOT);
    ctx.TryCancel();
    reader->Finish();
  }
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_FALSE(IsTerminal(client_->GetJob(job->job_id())->state()));
  v1::ListJobsRequest lr;
  lr.add_states(v1::JOB_STATE_RUNNING);
  auto list = client_->ListJobs(lr);
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->jobs_size(), 1);
  // Re-attach and cancel from another thread.
  std::thread canceller([&] {
    absl::SleepFor(absl::Milliseconds(200));
    EXPECT_TRUE(client_->CancelJob(job->job_id()).ok());
  });
  auto final_job = client_->WatchJob(job->job_id(), nullptr, 1);
  canceller.join();
  ASSERT_TRUE(final_job.ok()) << final_job.status();
  EXPECT_EQ(final_job->state(), v1::JOB_STATE_CANCELLED);
}

TEST_F(ServiceTest, HealthReportsServingAndDrainRefusesWork) {
  auto h = client_->Health("");
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(*h, "SERVING");
  jobs_->BeginDrain();
  v1::QuantizeModelRequest r;
  r.set_input_uri("file:///in");
  r.set_output_uri("file:///out");
  EXPECT_TRUE(absl::IsUnavailable(client_->QuantizeModel(r).status()));
  std::vector<float> data(16 * 16, 1.0f);
  TensorView view{"w", DType::kF32, {16, 16}, data.data()};
  EXPECT_TRUE(absl::IsUnavailable(client_->QuantizeTensor(view, QuantizeOptions{}).status()));
}

}  // namespace
}  // namespace nvfp4::server
