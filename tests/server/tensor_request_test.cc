// Validation and chunk reassembly of QuantizeTensor request streams (server/tensor_request.h).
#include "server/tensor_request.h"

#include <cstring>
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

TEST(TensorRequestTest, GramFollowsTheSource) {
  v1::QuantizeTensorRequest h = Header("w", {1, 16}, v1::DTYPE_BF16);
  h.mutable_header()->set_has_gram(true);
  absl::StatusOr<TensorRequest> r = ValidateTensorHeader(h, 1 << 20);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->gram_bytes, 16 * 16 * 4);
  const std::string src(32, 'a');
  std::string gram(1024, '\0');
  const float one = 1.0f;
  std::memcpy(gram.data() + 4 * 17, &one, 4);  // gram[1][1] = 1
  {
    SourceAssembler a(*r);
    ExpectError(a.Add(Chunk(0, gram.substr(0, 8), v1::PART_GRAM)),
                absl::StatusCode::kInvalidArgument, "after 0 of 32 source bytes");
  }
  SourceAssembler a(*r);
  ASSERT_TRUE(a.Add(Chunk(0, src)).ok());
  ASSERT_TRUE(a.Add(Chunk(0, gram.substr(0, 600), v1::PART_GRAM)).ok());
  ExpectError(a.Finish(), absl::StatusCode::kInvalidArgument, "received 600 of 1024 Gram bytes");
  ExpectError(a.Add(Chunk(32, "x")), absl::StatusCode::kInvalidArgument,
              "PART_SOURCE chunk arrived after the Gram");
  SourceAssembler b(*r);
  ASSERT_TRUE(b.Add(Chunk(0, src)).ok());
  ASSERT_TRUE(b.Add(Chunk(0, gram.substr(0, 600), v1::PART_GRAM)).ok());
  ExpectError(b.Add(Chunk(500, gram.substr(600), v1::PART_GRAM)),
              absl::StatusCode::kInvalidArgument, "Gram chunk at offset 500, expected 600");
  ASSERT_TRUE(b.Add(Chunk(600, gram.substr(600), v1::PART_GRAM)).ok());
  ExpectError(b.Add(Chunk(1024, "x", v1::PART_GRAM)), absl::StatusCode::kInvalidArgument,
              "more Gram data than K*K*4");
  ASSERT_TRUE(b.Finish().ok());
  EXPECT_EQ(b.Gram().size(), 256u);
  EXPECT_EQ(b.Gram()[17], 1.0f);

  // Without has_gram a Gram chunk is an error, and gptq needs the Gram.
  absl::StatusOr<TensorRequest> plain = ValidateTensorHeader(Header("w", {1, 16}), 1 << 20);
  SourceAssembler c(*plain);
  ASSERT_TRUE(c.Add(Chunk(0, std::string(32, 'a'))).ok());
  ExpectError(c.Add(Chunk(0, "x", v1::PART_GRAM)), absl::StatusCode::kInvalidArgument,
              "no has_gram");
  v1::QuantizeTensorRequest g = Header("w", {1, 16});
  g.mutable_header()->mutable_options()->set_method(v1::METHOD_GPTQ);
  ExpectError(ValidateTensorHeader(g, 1 << 20).status(), absl::StatusCode::kInvalidArgument,
              "method gptq needs the input Gram");
  // The Gram counts against the size limit.
  v1::QuantizeTensorRequest big = Header("w", {1, 1024});
  big.mutable_header()->set_has_gram(true);
  ExpectError(ValidateTensorHeader(big, 1 << 20).status(), absl::StatusCode::kResourceExhausted,
              "input Gram is 4194304 bytes");
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
