// Writes this project's own decoding of an NVFP4 checkpoint to a safetensors file, so that the
// Python interoperability tests can compare it with torch and compressed-tensors:
//   <m>.dequantized  F32 [N, K]     Nvfp4Checkpoint::Dequantize (the layout's loader formula)
//   <m>.scales_f32   F32 [N, K/16]  DecodeE4M3 of every block-scale byte
//   e4m3_table       F32 [256]      DecodeE4M3(code) for every byte value
//   e2m1_table       F32 [16]       DecodeE2M1(code) for every nibble
// Usage: nvfp4_interop_dequantize NVFP4_DIR OUT.safetensors
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "formats/safetensors.h"
#include "kernels/codec.h"
#include "pipeline/nvfp4_checkpoint.h"

namespace {

std::vector<uint8_t> Bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace nvfp4;
  if (argc != 3) {
    std::cerr << "usage: nvfp4_interop_dequantize NVFP4_DIR OUT.safetensors\n";
    return 2;
  }
  auto dir = storage::OpenLocalInputDirectory(argv[1]);
  if (!dir.ok()) {
    std::cerr << dir.status() << "\n";
    return 2;
  }
  auto ckpt = pipeline::Nvfp4Checkpoint::Open(**dir);
  if (!ckpt.ok()) {
    std::cerr << ckpt.status() << "\n";
    return 1;
  }
  std::vector<std::vector<uint8_t>> store;
  store.reserve(2 * (*ckpt)->modules().size() + 2);
  std::vector<formats::TensorToWrite> out;
  for (const pipeline::Nvfp4Module& m : (*ckpt)->modules()) {
    auto w = (*ckpt)->Dequantize(m);
    auto q = (*ckpt)->Load(m);
    if (!w.ok() || !q.ok()) {
      std::cerr << (w.ok() ? q.status() : w.status()) << "\n";
      return 1;
    }
    std::vector<float> s(q->scales.size());
    for (size_t i = 0; i < s.size(); ++i) s[i] = DecodeE4M3(q->scales[i]);
    store.push_back(Bytes(*w));
    out.push_back({m.name + ".dequantized", "F32", {m.rows, m.cols}, store.back()});
    store.push_back(Bytes(s));
    out.push_back({m.name + ".scales_f32", "F32", {m.rows, m.cols / 16}, store.back()});
  }
  std::vector<float> e4m3(256), e2m1(16);
  for (int i = 0; i < 256; ++i) e4m3[i] = DecodeE4M3(static_cast<uint32_t>(i));
  for (int i = 0; i < 16; ++i) e2m1[i] = DecodeE2M1(static_cast<uint32_t>(i));
  store.push_back(Bytes(e4m3));
  out.push_back({"e4m3_table", "F32", {256}, store.back()});
  store.push_back(Bytes(e2m1));
  out.push_back({"e2m1_table", "F32", {16}, store.back()});
  if (absl::Status s = formats::WriteSafetensors(argv[2], out); !s.ok()) {
    std::cerr << s << "\n";
    return 1;
  }
  return 0;
}
