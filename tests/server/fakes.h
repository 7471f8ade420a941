// Test doubles for the server: a scripted ModelPipeline and an in-process server harness.
#ifndef NVFP4_TESTS_SERVER_FAKES_H_
#define NVFP4_TESTS_SERVER_FAKES_H_

#include <atomic>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "server/job_manager.h"
#include "server/model_job.h"
#include "server/quantizer_service.h"

namespace nvfp4::server::testing {

// Reports `tensors` fake tensors, `per_tensor` apart; fails when the input URI contains "fail".
// `hold` keeps a job running (between tensors) until released. Before returning its outputs it
// asks ProgressSink::CheckOwnership, as the checkpoint pipeline does before publishing.
class FakePipeline : public ModelPipeline {
 public:
  int tensors = 3;
  absl::Duration per_tensor = absl::Milliseconds(20);
  int64_t copy_bytes = 0;  // > 0: a copied tensor of this size finishes first, at once
  std::atomic<bool> hold{false};
  std::atomic<int> runs{0};
  std::atomic<int> published{0};  // runs that passed ProgressSink::CheckOwnership
  std::atomic<int> returned{0};   // runs that returned, whatever the outcome

  absl::Status Validate(const v1::QuantizeModelRequest& r) override {
    if (r.input_uri().empty()) return absl::InvalidArgumentError("input_uri is required");
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<v1::OutputFile>> Run(const ModelJobContext& ctx) override {
    runs++;
    struct Returned {
      std::atomic<int>& n;
      ~Returned() { n++; }
    } count_return{returned};
    ctx.progress->SetTotals(tensors + (copy_bytes > 0 ? 1 : 0), tensors * 1000 + copy_bytes);
    ctx.progress->SetQuantizedBytesTotal(tensors * 1000);
    if (copy_bytes > 0) {
      v1::TensorResult copied;
      copied.set_name("model.embed_tokens.weight");
      ctx.progress->TensorFinished(copied, copy_bytes, copy_bytes);
    }
    for (int i = 0; i < tensors; ++i) {
      do {
        if (ctx.progress->Cancelled()) return absl::CancelledError("cancelled");
        absl::SleepFor(per_tensor);
      } while (hold.load());
      if (ctx.request->input_uri().find("fail") != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat("tensor 't", i, "': bad"));
      }
      v1::TensorResult r;
      r.set_name(absl::StrCat("t", i, ".weight"));
      r.set_quantized(true);
      r.mutable_metrics()->set_nmse(0.01);
      ctx.progress->TensorFinished(r, 1000, 300);
    }
    // As CheckpointPipeline does right before it commits the output.
    if (absl::Status s = ctx.progress->CheckOwnership(); !s.ok()) return s;
    published++;
    v1::OutputFile f;
    f.set_name("model.safetensors");
    f.set_uri(ctx.request->output_uri() + "/model.safetensors");
    return std::vector<v1::OutputFile>{f};
  }
};

}  // namespace nvfp4::server::testing

#endif  // NVFP4_TESTS_SERVER_FAKES_H_
