// Fuzz target: the safetensors file parser (formats/safetensors.h).
//
// The input is a whole safetensors file. It is opened with SafetensorsReader over a MemorySource
// (length prefix, header limits, ParseSafetensorsHeader, tiling of the data buffer) and, when it
// is accepted, every tensor is looked up and read back whole and in two ranges, and the header is
// re-serialized with BuildSafetensorsHeader and parsed again (the writer's output must be accepted
// by the reader and describe the same tensors). The input is also fed to ParseSafetensorsHeader
// directly as header JSON, and to CheckpointReader::OpenSingle.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "formats/random_access_source.h"
#include "formats/safetensors.h"
#include "formats/sharded.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using nvfp4::formats::MemorySource;
using nvfp4::formats::SafetensorsReader;
using nvfp4::formats::TensorInfo;


void CheckReader(const SafetensorsReader& reader, uint64_t file_size) {
  uint64_t covered = 0;
  for (const TensorInfo& t : reader.tensors()) {
    FUZZ_CHECK(reader.Find(t.name) == &t);
    FUZZ_CHECK(t.offset >= 8 + reader.header_size());
    FUZZ_CHECK(t.size <= file_size && t.offset <= file_size - t.size);
    FUZZ_CHECK(t.numel() >= 0);
    covered += t.size;
    absl::StatusOr<std::vector<uint8_t>> bytes = reader.ReadTensor(t);
    FUZZ_CHECK(bytes.ok());
    FUZZ_CHECK(bytes->size() == t.size);
    // Two halves through the range API must give the same bytes.
    std::vector<uint8_t> halves(t.size);
    const uint64_t mid = t.size / 2;
    FUZZ_CHECK(reader.ReadTensorRange(t, 0, std::span<uint8_t>(halves.data(), mid)).ok());
    FUZZ_CHECK(
        reader.ReadTensorRange(t, mid, std::span<uint8_t>(halves.data() + mid, t.size - mid)).ok());
    FUZZ_CHECK(halves == *bytes);
    // Out-of-range reads fail cleanly.
    uint8_t one = 0;
    FUZZ_CHECK(!reader.ReadTensorRange(t, t.size, std::span<uint8_t>(&one, 1)).ok());
    FUZZ_CHECK(!reader.ReadTensorRange(t, UINT64_MAX, std::span<uint8_t>(&one, 1)).ok());
  }
  // The tensors tile the data buffer exactly.
  FUZZ_CHECK(covered == file_size - 8 - reader.header_size());
  FUZZ_CHECK(!reader.ReadTensor(std::string_view("\x01 no such tensor")).ok() ||
             reader.Find("\x01 no such tensor") != nullptr);
}

// The writer's header for the tensors of an accepted file must itself be accepted.
void CheckRoundTrip(const SafetensorsReader& reader) {
  std::vector<nvfp4::formats::TensorSpec> specs;
  for (const TensorInfo& t : reader.tensors()) specs.push_back({t.name, t.dtype, t.shape});
  absl::StatusOr<std::string> header =
      nvfp4::formats::BuildSafetensorsHeader(specs, reader.metadata());
  if (!header.ok()) return;  // e.g. an empty tensor name: the writer is stricter than the reader
  uint64_t data_size = 0;
  for (const TensorInfo& t : reader.tensors()) data_size += t.size;
  FUZZ_CHECK(header->size() >= 8);
  const std::string_view json(header->data() + 8, header->size() - 8);
  absl::StatusOr<nvfp4::formats::SafetensorsHeader> parsed =
      nvfp4::formats::ParseSafetensorsHeader(json, header->size() + data_size, "roundtrip");
  if (!parsed.ok()) {
    std::fprintf(stderr, "re-parse of the writer's header failed: %s\n",
                 std::string(parsed.status().message()).c_str());
    std::abort();
  }
  FUZZ_CHECK(parsed->tensors.size() == specs.size());
  for (const TensorInfo& t : parsed->tensors) {
    const TensorInfo* orig = reader.Find(t.name);
    FUZZ_CHECK(orig != nullptr);
    FUZZ_CHECK(orig->dtype == t.dtype && orig->shape == t.shape && orig->size == t.size);
  }
  for (const auto& [k, v] : reader.metadata()) {
    auto it = parsed->metadata.find(k);
    FUZZ_CHECK(it != parsed->metadata.end() && it->second == v);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> bytes(data, data + size);
  {
    absl::StatusOr<std::unique_ptr<SafetensorsReader>> reader =
        SafetensorsReader::Open(std::make_unique<MemorySource>(bytes, "fuzz.safetensors"));
    if (reader.ok()) {
      CheckReader(**reader, size);
      CheckRoundTrip(**reader);
    } else {
      FUZZ_CHECK(absl::IsInvalidArgument(reader.status()));
    }
  }
  {
    auto checkpoint = nvfp4::formats::CheckpointReader::OpenSingle(
        std::make_unique<MemorySource>(std::move(bytes), "fuzz.safetensors"));
    if (checkpoint.ok()) {
      for (const auto& loc : (*checkpoint)->tensors()) {
        FUZZ_CHECK((*checkpoint)->Find(loc.info->name) != nullptr);
      }
    }
  }
  // The raw input as header JSON of a file with a few bytes of data after it.
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  for (uint64_t extra : {uint64_t{0}, uint64_t{16}}) {
    (void)nvfp4::formats::ParseSafetensorsHeader(json, 8 + size + extra, "fuzz.json");
  }
  return 0;
}
