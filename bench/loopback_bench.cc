// nvfp4_loopback_bench: QuantizeTensor figures against a running nvfp4d:
//   nvfp4_loopback_bench HOST:PORT [rows cols method chunk_bytes repeats]
// Prints the round-trip time, the server's quantize time, and the streaming rate
// (bytes in + bytes out) / (round trip - quantize time).
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "client/remote/quantizer_client.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s HOST:PORT [rows cols method chunk_bytes repeats]\n", argv[0]);
    return 2;
  }
  const int64_t rows = argc > 2 ? std::stoll(argv[2]) : 4096;
  const int64_t cols = argc > 3 ? std::stoll(argv[3]) : 4096;
  const std::string method = argc > 4 ? argv[4] : "rtn";
  const int chunk = argc > 5 ? std::stoi(argv[5]) : (1 << 20);
  const int repeats = argc > 6 ? std::stoi(argv[6]) : 5;
  std::vector<uint16_t> data(static_cast<size_t>(rows * cols));
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.f, 0.02f);
  for (auto& v : data) {
    float f = dist(rng);
    uint32_t b;
    std::memcpy(&b, &f, 4);
    v = static_cast<uint16_t>(b >> 16);
  }
  nvfp4::client::ClientOptions o;
  o.target = argv[1];
  o.chunk_bytes = chunk;
  auto client = nvfp4::client::QuantizerClient::Connect(o);
  if (!client.ok()) {
    std::fprintf(stderr, "%s\n", client.status().ToString().c_str());
    return 1;
  }
  nvfp4::TensorView view{"bench.weight", nvfp4::DType::kBF16, {rows, cols}, data.data()};
  nvfp4::QuantizeOptions opts;
  opts.method = *nvfp4::ParseMethod(method);
  const double in_mb = static_cast<double>(data.size() * 2) / 1e6;
  const double out_mb = static_cast<double>(rows * cols / 2 + rows * cols / 16) / 1e6;
  for (int i = 0; i < repeats; ++i) {
    nvfp4::client::QuantizeTensorInfo info;
    const auto t0 = std::chrono::steady_clock::now();
    auto q = (*client)->QuantizeTensor(view, opts, nullptr, &info);
    const double total =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!q.ok()) {
      std::fprintf(stderr, "%s\n", q.status().ToString().c_str());
      return 1;
    }
    const double stream = total - info.quantize_seconds;
    std::printf(
        "%lldx%lld bf16 %s chunk=%d: round trip %.1f ms, server quantize %.1f ms (%s), "
        "streaming %.1f ms = %.0f MB/s (%.1f MB in + %.1f MB out)\n",
        static_cast<long long>(rows), static_cast<long long>(cols), method.c_str(), chunk,
        total * 1e3, info.quantize_seconds * 1e3, info.device.c_str(), stream * 1e3,
        (in_mb + out_mb) / stream, in_mb, out_mb);
  }
  return 0;
}
