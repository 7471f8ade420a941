// Fuzz target: QuantizeTensor request validation and chunk reassembly (server/tensor_request.h),
// then the CPU quantizer on the reassembled tensor when it is small.
//
// Input: a QuantizeTensor request stream as the server's handler sees it: records of a 2-byte
// little-endian length followed by that many bytes of a serialized nvfp4.v1.QuantizeTensorRequest
// (records that do not parse are dropped, as gRPC would reject them). The first message goes to
// ValidateTensorHeader (server limit 1 MiB), the rest to SourceAssembler::Add until the first
// error, then Finish(). Accepted tensors of at most 1024 elements are quantized with the CPU
// backend using the request's options and importance (NaN/Inf data and importance must be
// rejected with an error, never crash).
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "kernels/backend.h"
#include "kernels/types.h"
#include "google/protobuf/stubs/logging.h"
#include "nvfp4/v1/quantizer.pb.h"
#include "server/tensor_request.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

constexpr int64_t kMaxTensorBytes = 1 << 20;
constexpr int64_t kMaxQuantizedElements = 1024;

nvfp4::QuantizerBackend& Backend() {
  static nvfp4::QuantizerBackend* backend = nvfp4::MakeCpuBackend(1).release();
  return *backend;
}

}  // namespace

// Silences protobuf's log lines for unparsable records (invalid UTF-8 in a string field, ...):
// they are expected here and slow the fuzzer down.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<nvfp4::v1::QuantizeTensorRequest> stream;
  size_t pos = 0;
  while (pos + 2 <= size) {
    const size_t n = data[pos] | (static_cast<size_t>(data[pos + 1]) << 8);
    pos += 2;
    if (n > size - pos) break;
    nvfp4::v1::QuantizeTensorRequest msg;
    if (msg.ParseFromArray(data + pos, static_cast<int>(n))) stream.push_back(std::move(msg));
    pos += n;
  }
  if (stream.empty()) return 0;

  absl::StatusOr<nvfp4::server::TensorRequest> req =
      nvfp4::server::ValidateTensorHeader(stream[0], kMaxTensorBytes);
  if (!req.ok()) {
    FUZZ_CHECK(absl::IsInvalidArgument(req.status()) ||
               absl::IsResourceExhausted(req.status()));
    return 0;
  }
  FUZZ_CHECK(req->numel > 0 && req->bytes > 0 && req->bytes <= kMaxTensorBytes);
  FUZZ_CHECK(req->cols > 0 && req->cols % 16 == 0 && req->numel % req->cols == 0);
  FUZZ_CHECK(req->bytes == req->numel * nvfp4::DTypeSize(req->dtype));

  nvfp4::server::SourceAssembler source(*req);
  FUZZ_CHECK(req->gram_bytes == (req->header.has_gram() ? req->cols * req->cols * 4 : 0));
  for (size_t i = 1; i < stream.size(); ++i) {
    const int64_t before = source.received() + source.gram_received();
    absl::Status s = source.Add(stream[i]);
    FUZZ_CHECK(source.received() <= req->bytes);
    FUZZ_CHECK(source.gram_received() <= req->gram_bytes);
    // Gram bytes only follow a complete source.
    FUZZ_CHECK(source.gram_received() == 0 || source.received() == req->bytes);
    const int64_t after = source.received() + source.gram_received();
    if (!s.ok()) {
      FUZZ_CHECK(absl::IsInvalidArgument(s));
      FUZZ_CHECK(after == before);
      return 0;
    }
    FUZZ_CHECK(after == before + static_cast<int64_t>(stream[i].chunk().data().size()));
  }
  absl::Status done = source.Finish();
  FUZZ_CHECK(done.ok() == (source.received() == req->bytes &&
                           source.gram_received() == req->gram_bytes));
  if (!done.ok()) return 0;
  FUZZ_CHECK(static_cast<int64_t>(source.data().size()) == req->bytes);

  if (req->numel > kMaxQuantizedElements) return 0;
  nvfp4::TensorView view;
  view.name = req->header.name();
  view.dtype = req->dtype;
  view.shape.assign(req->header.shape().begin(), req->header.shape().end());
  view.data = source.data().data();
  nvfp4::Calibration calibration;
  calibration.importance.assign(req->header.importance().begin(), req->header.importance().end());
  calibration.gram = source.Gram();
  FUZZ_CHECK(static_cast<int64_t>(calibration.gram.size()) * 4 == req->gram_bytes);
  nvfp4::QuantizeOptions options = req->options;
  options.soar_max_iterations = std::min(options.soar_max_iterations, 4);
  absl::StatusOr<nvfp4::QuantizedTensor> q =
      Backend().Quantize(view, options, calibration.empty() ? nullptr : &calibration);
  if (q.ok()) {
    FUZZ_CHECK(q->rows * q->cols == req->numel);
    FUZZ_CHECK(static_cast<int64_t>(q->packed.size()) == req->numel / 2);
    FUZZ_CHECK(static_cast<int64_t>(q->scales.size()) == req->numel / 16);
  }
  return 0;
}
