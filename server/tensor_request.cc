#include "server/tensor_request.h"

#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nvfp4/v1/convert.h"

namespace nvfp4::server {
namespace {

std::string ShapeString(const google::protobuf::RepeatedField<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace

absl::Status TensorRequestError(const v1::TensorHeader& header, const std::string& what) {
  return absl::InvalidArgumentError(
      absl::StrCat("tensor '", header.name(), "' ", ShapeString(header.shape()), ": ", what));
}

absl::StatusOr<TensorRequest> ValidateTensorHeader(const v1::QuantizeTensorRequest& first,
                                                   int64_t max_tensor_bytes) {
  if (!first.has_header()) {
    return absl::InvalidArgumentError("the first QuantizeTensor message must be a TensorHeader");
  }
  return ValidateTensorHeader(first.header(), max_tensor_bytes);
}

absl::StatusOr<TensorRequest> ValidateTensorHeader(const v1::TensorHeader& header,
                                                   int64_t max_tensor_bytes) {
  TensorRequest req;
  req.header = header;
  const std::string& name = header.name();
  absl::StatusOr<nvfp4::DType> dtype = v1::FromProto(header.dtype());
  if (!dtype.ok()) return dtype.status();
  req.dtype = *dtype;
  absl::StatusOr<nvfp4::QuantizeOptions> options = v1::FromProto(header.options());
  if (!options.ok()) return TensorRequestError(header, std::string(options.status().message()));
  req.options = *options;
  if (header.shape_size() == 0) {
    return TensorRequestError(header, "a scalar cannot be quantized (need rank >= 1)");
  }
  int64_t numel = 1;
  for (int64_t d : header.shape()) {
    if (d <= 0) return TensorRequestError(header, "every dimension must be positive");
    if (numel > (INT64_MAX / 8) / d) {
      return absl::ResourceExhaustedError(absl::StrCat("tensor '", name, "': too many elements"));
    }
    numel *= d;
  }
  req.numel = numel;
  req.cols = header.shape(header.shape_size() - 1);
  if (req.cols % 16 != 0) {
    return TensorRequestError(header, absl::StrCat("K=", req.cols, " is not a multiple of 16"));
  }
  req.bytes = numel * DTypeSize(req.dtype);
  if (req.bytes > max_tensor_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("tensor '", name, "' is ", req.bytes, " bytes, over the server limit of ",
                     max_tensor_bytes, " bytes (--max_tensor_bytes)"));
  }
  if (header.has_gram()) {
    if (req.cols > 0 && req.cols > (INT64_MAX / 4) / req.cols) {
      return absl::ResourceExhaustedError(absl::StrCat("tensor '", name, "': Gram too large"));
    }
    req.gram_bytes = req.cols * req.cols * 4;
    if (req.gram_bytes > max_tensor_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "tensor '", name, "': its input Gram is ", req.gram_bytes,
          " bytes, over the server limit of ", max_tensor_bytes, " bytes (--max_tensor_bytes)"));
    }
  }
  if (req.options.method == nvfp4::Method::kGptq && !header.has_gram()) {
    return TensorRequestError(header, "method gptq needs the input Gram (has_gram and PART_GRAM "
                                      "chunks of K*K F32)");
  }
  if (header.importance_size() != 0 && header.importance_size() != req.cols) {
    return TensorRequestError(header, absl::StrCat("importance has ", header.importance_size(),
                                                   " entries, expected K=", req.cols));
  }
  return req;
}

SourceAssembler::SourceAssembler(const TensorRequest& request)
    : header_(&request.header), bytes_(request.bytes), gram_bytes_(request.gram_bytes) {
  // Reserve only: pages are touched (become resident) as data arrives.
  data_.reserve(static_cast<size_t>(bytes_));
}

absl::Status SourceAssembler::Add(const v1::QuantizeTensorRequest& msg) {
  if (!msg.has_chunk()) {
    return TensorRequestError(*header_, "a second TensorHeader arrived; expected data chunks");
  }
  const v1::DataChunk& c = msg.chunk();
  const bool gram = c.part() == v1::PART_GRAM;
  if (!gram && c.part() != v1::PART_SOURCE && c.part() != v1::PART_UNSPECIFIED) {
    return TensorRequestError(*header_,
                              "data chunks sent to the server must be PART_SOURCE or PART_GRAM");
  }
  if (gram && gram_bytes_ == 0) {
    return TensorRequestError(*header_, "a PART_GRAM chunk arrived but the header has no has_gram");
  }
  if (gram && received() != bytes_) {
    return TensorRequestError(*header_, absl::StrCat("a PART_GRAM chunk arrived after ", received(),
                                                     " of ", bytes_, " source bytes"));
  }
  if (!gram && !gram_.empty()) {
    return TensorRequestError(*header_, "a PART_SOURCE chunk arrived after the Gram");
  }
  std::vector<uint8_t>& buf = gram ? gram_ : data_;
  const int64_t limit = gram ? gram_bytes_ : bytes_;
  const int64_t have = static_cast<int64_t>(buf.size());
  if (c.offset() != static_cast<uint64_t>(have)) {
    return TensorRequestError(*header_, absl::StrCat(gram ? "Gram chunk" : "chunk", " at offset ",
                                                     c.offset(), ", expected ", have));
  }
  if (static_cast<int64_t>(c.data().size()) > limit - have) {
    return TensorRequestError(
        *header_, gram ? absl::StrCat("more Gram data than K*K*4 (", limit, " bytes)")
                       : absl::StrCat("more data than the shape and dtype describe (", limit,
                                      " bytes)"));
  }
  if (gram && buf.empty()) buf.reserve(static_cast<size_t>(gram_bytes_));
  buf.insert(buf.end(), c.data().begin(), c.data().end());
  return absl::OkStatus();
}

absl::Status SourceAssembler::Finish() const {
  if (received() != bytes_) {
    return TensorRequestError(*header_,
                              absl::StrCat("received ", received(), " of ", bytes_, " bytes"));
  }
  if (static_cast<int64_t>(gram_.size()) != gram_bytes_) {
    return TensorRequestError(*header_, absl::StrCat("received ", gram_.size(), " of ",
                                                     gram_bytes_, " Gram bytes"));
  }
  return absl::OkStatus();
}

std::vector<float> SourceAssembler::Gram() const {
  std::vector<float> g(gram_.size() / 4);
  if (!g.empty()) std::memcpy(g.data(), gram_.data(), g.size() * 4);
  return g;
}

}  // namespace nvfp4::server
