// Validation and reassembly of a QuantizeTensor request stream, without gRPC: the first message
// (a TensorHeader) is checked by ValidateTensorHeader, the data chunks that follow are appended by
// a SourceAssembler. Pure functions of the messages, so they can be unit-tested and fuzzed
// (tests/fuzz/fuzz_tensor_request.cc); QuantizerService::DoQuantizeTensor calls them.
//
//   ASSIGN_OR_RETURN(TensorRequest req, ValidateTensorHeader(msg, max_tensor_bytes));
//   SourceAssembler source(req);
//   while (stream->Read(&msg)) RETURN_IF_ERROR(source.Add(msg));
//   RETURN_IF_ERROR(source.Finish());
//   ... source.data() holds req.bytes bytes ...
//
// Messages are exactly those of the service: INVALID_ARGUMENT "tensor '<name>' [<shape>]: <what>",
// RESOURCE_EXHAUSTED for a tensor over the size limit.
#ifndef NVFP4_SERVER_TENSOR_REQUEST_H_
#define NVFP4_SERVER_TENSOR_REQUEST_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/types.h"
#include "nvfp4/v1/quantizer.pb.h"

namespace nvfp4::server {

// A validated TensorHeader.
struct TensorRequest {
  v1::TensorHeader header;
  nvfp4::DType dtype = nvfp4::DType::kF32;
  nvfp4::QuantizeOptions options;
  int64_t numel = 0;  // product of the shape (every dimension > 0)
  int64_t cols = 0;   // K, the last dimension (a multiple of 16)
  int64_t bytes = 0;  // numel * DTypeSize(dtype) <= max_tensor_bytes
  int64_t gram_bytes = 0;  // K * K * 4 when header.has_gram(), else 0 (<= max_tensor_bytes)
};

// INVALID_ARGUMENT "tensor '<name>' [<shape>]: <what>".
absl::Status TensorRequestError(const v1::TensorHeader& header, const std::string& what);

// Validates the first message of a QuantizeTensor stream: it must be a TensorHeader with a
// supported dtype, valid options, rank >= 1, positive dimensions, K % 16 == 0, at most
// `max_tensor_bytes` bytes of data, and an importance vector that is empty or has K entries.
absl::StatusOr<TensorRequest> ValidateTensorHeader(const v1::QuantizeTensorRequest& first,
                                                   int64_t max_tensor_bytes);
absl::StatusOr<TensorRequest> ValidateTensorHeader(const v1::TensorHeader& header,
                                                   int64_t max_tensor_bytes);

// Reassembles the source bytes from the DataChunk messages that follow the header: chunks must be
// PART_SOURCE (or unspecified), contiguous from offset 0, and never exceed the declared size; then,
// when the header has_gram, the Gram's PART_GRAM chunks, contiguous from offset 0.
// Memory grows with the data received (the declared size is only reserved), so a header that
// claims a large tensor costs no resident memory until its bytes arrive.
class SourceAssembler {
 public:
  // `request` must outlive the assembler.
  explicit SourceAssembler(const TensorRequest& request);

  // Appends the chunk of `msg`. INVALID_ARGUMENT for a second header, a wrong part (a Gram chunk
  // before the source is complete, or without has_gram), a gap or overlap, or more data than
  // declared; the assembler must not be used after an error.
  absl::Status Add(const v1::QuantizeTensorRequest& msg);
  // INVALID_ARGUMENT unless exactly the declared number of bytes (source and Gram) arrived.
  absl::Status Finish() const;
  // The Gram as K*K floats (empty without has_gram); valid after a successful Finish().
  std::vector<float> Gram() const;

  int64_t received() const { return static_cast<int64_t>(data_.size()); }
  int64_t gram_received() const { return static_cast<int64_t>(gram_.size()); }
  // The bytes received so far (all of them after a successful Finish()).
  std::vector<uint8_t>& data() { return data_; }
  const std::vector<uint8_t>& data() const { return data_; }

 private:
  const v1::TensorHeader* header_;
  int64_t bytes_;
  int64_t gram_bytes_;
  std::vector<uint8_t> data_;
  std::vector<uint8_t> gram_;
};

}  // namespace nvfp4::server

#endif  // NVFP4_SERVER_TENSOR_REQUEST_H_
