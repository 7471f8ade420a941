// Validation and chunk reassembly of QuantizeTensor request streams (server/tensor_request.h).
#include "server/tensor_request.h"

#include <string>

#include "gtest/gtest.h"

namespace nvfp4::server {
namespace {

v1::QuantizeTensorRequest Header(const std::string& name, std::initializer_list<int64_t> shape,
                                 v1::DType dtype = v1::DTYPE_BF16) {
  v1::QuantizeTensorRequest m;
  v1::TensorHeader* h = m.mutable_header();
  h->set_name(name);
  h->set_dtype(dtype);
  for (int64_t d : shape) h->add_shape(d);
  return m;
}

v1::QuantizeTensorRequest Chunk(uint64_t offset, const std::string& data,
                                v1::Part part = v1::PART_SOURCE) {
  v1::QuantizeTensorRequest m;
  m.mutable_chunk()->set_part(part);
  m.mutable_chunk()->set_offset(offset);
  m.mutable_chunk()->set_data(data);
  return m;
}

void ExpectError(const absl::Status& s, absl::StatusCode code, const std::string& needle) {
  EXPECT_EQ(s.code(), code) << s;
  EXPECT_NE(s.message().find(needle), std::string::npos) << s;
}

TEST(TensorRequestTest, ValidHeaderComputesSizes) {
  absl::StatusOr<TensorRequest> r = ValidateTensorHeader(Header("w", {3, 32}), 1 << 20);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->numel, 96);
  EXPECT_EQ(r->cols, 32);
  EXPECT_EQ(r->bytes, 192);
}

TEST(TensorRequestTest, RejectsBadHeadersWithReason) {
  v1::QuantizeTensorRequest not_header = Chunk(0, "x");
  ExpectError(ValidateTensorHeader(not_header, 1 << 20).status(),
              absl::StatusCode::kInvalidArgument, "must be a TensorHeader");
  ExpectError(ValidateTensorHeader(Header("w", {}), 1 << 20).status(),
              absl::StatusCode::kInvalidArgument, "tensor 'w' []: a scalar");
  ExpectError(ValidateTensorHeader(Header("w", {4, 0, 16}), 1 << 20).status(),
              absl::StatusCode::kInvalidArgument, "every dimension must be positive");
  ExpectError(ValidateTensorHeader(Header("w", {4, 24}), 1 << 20).status(),
              absl::StatusCode::kInvalidArgument, "tensor 'w' [4, 24]: K=24 is not a multiple of 16");
  v1::QuantizeTensorRequest imp = Header("w", {2, 32});
  imp.mutable_header()->add_importance(1.f);
  ExpectError(ValidateTensorHeader(imp, 1 << 20).status(), absl::StatusCode::kInvalidArgument,
              "importance has 1 entries, expected K=32");
}

TEST(TensorRequestTest, LimitsAreResourceExhausted) {
  ExpectError(ValidateTensorHeader(Header("big", {1024, 1024}), 1 << 20).status(),
              absl::StatusCode::kResourceExhausted, "over the server limit");
  ExpectError(
      ValidateTensorHeader(Header("huge", {1LL << 40, 1LL << 40, 16}), INT64_MAX).status(),
      absl::StatusCode::kResourceExhausted, "too many elements");
}

TEST(TensorRequestTest, ReassemblesContiguousChunks) {
  absl::StatusOr<TensorRequest> r = ValidateTensorHeader(Header("w", {1, 16}), 1 << 20);
  ASSERT_TRUE(r.ok());
  SourceAssembler a(*r);
  EXPECT_EQ(a.received(), 0);  // nothing resident before data arrives
  ASSERT_TRUE(a.Add(Chunk(0, std::string(10, 'a'))).ok());
  ExpectError(a.Finish(), absl::StatusCode::kInvalidArgument, "received 10 of 32 bytes");
  ASSERT_TRUE(a.Add(Chunk(10, std::string(22, 'b'), v1::PART_UNSPECIFIED)).ok());
  ASSERT_TRUE(a.Finish().ok());
  EXPECT_EQ(std::string(a.data().begin(), a.data().end()),
            std::string(10, 'a') + std::string(22, 'b'));
}

TEST(TensorRequestTest, RejectsGapsOverrunsAndWrongParts) {
  absl::StatusOr<TensorRequest> r = ValidateTensorHeader(Header("w", {1, 16}), 1 << 20);
  ASSERT_TRUE(r.ok());
  {
    SourceAssembler a(*r);
    ExpectError(a.Add(Chunk(4, "abcd")), absl::StatusCode::kInvalidArgument,
                "chunk at offset 4, expected 0");
  }
  {
    SourceAssembler a(*r);
    ExpectError(a.Add(Chunk(0, std::string(33, 'x'))), absl::StatusCode::kInvalidArgument,
                "more data than the shape and dtype describe (32 bytes)");
  }
  {
    SourceAssembler a(*r);
    ExpectError(a.Add(Chunk(0, "ab", v1::PART_PACKED)), absl::StatusCode::kInvalidArgument,
                "must be PART_SOURCE");
  }
  {
    SourceAssembler a(*r);
    ExpectError(a.Add(Header("w", {1, 16})), absl::StatusCode::kInvalidArgument,
                "a second TensorHeader");
  }
}

}  // namespace
}  // namespace nvfp4::server
