#include "client/cli/metrics_output.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace nvfp4::cli {
namespace {

nlohmann::ordered_json Number(double v) {
  return std::isfinite(v) ? nlohmann::ordered_json(v) : nlohmann::ordered_json(nullptr);
}

// printf into a std::string.
template <typename... Args>
std::string Format(const char* format, Args... args) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), format, args...);
  return buffer;
}

std::string Pad(const std::string& s, size_t width, bool left) {
  if (s.size() >= width) return s;
  const std::string fill(width - s.size(), ' ');
  return left ? s + fill : fill + s;
}

struct Column {
  const char* title;
  size_t width;
};
constexpr Column kColumns[] = {{"shape", 14},       {"method", 10},   {"objective", 9},
                               {"device", 7},       {"nmse", 10},     {"sqnr_db", 8},
                               {"max_abs_err", 11}, {"rtn_nmse", 10}, {"vs_rtn", 7},
                               {"output_nmse", 11}, {"iters", 5},     {"seconds", 8}};

// The first columns (shape, method, objective, device) are text and align left; numbers right.
constexpr size_t kTextColumns = 4;

}  // namespace

std::string FormatShape(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

nlohmann::ordered_json ReportToJson(const TensorReport& r) {
  nlohmann::ordered_json j;
  j["tensor"] = r.tensor;
  j["shape"] = r.shape;
  j["method"] = r.method;
  j["objective"] = r.objective;
  j["device"] = r.device;
  j["nmse"] = Number(r.nmse);
  j["sqnr_db"] = Number(r.sqnr_db);
  j["max_abs_err"] = Number(r.max_abs_err);
  j["rtn_nmse"] = Number(r.rtn_nmse);
  j["nmse_vs_rtn"] = Number(r.nmse_vs_rtn);
  if (r.output_nmse) j["output_nmse"] = Number(*r.output_nmse);
  j["iterations"] = r.iterations;
  if (r.gptq_dampening) j["gptq_dampening"] = Number(*r.gptq_dampening);
  j["seconds"] = Number(r.seconds);
  return j;
}

MetricsTable::MetricsTable(std::ostream& out, size_t tensor_width)
    : out_(out), tensor_width_(std::max<size_t>(tensor_width, 6)) {}

void MetricsTable::PrintHeader() {
  std::string line = Pad("tensor", tensor_width_, /*left=*/true);
  for (size_t i = 0; i < std::size(kColumns); ++i) {
    line += "  " + Pad(kColumns[i].title, kColumns[i].width, /*left=*/i < kTextColumns);
  }
  out_ << line << "\n";
}

void MetricsTable::PrintRow(const TensorReport& r) {
  const std::string cells[] = {
      FormatShape(r.shape),
      r.method,
      r.objective,
      r.device,
      Format("%.3e", r.nmse),
      std::isfinite(r.sqnr_db) ? Format("%.2f", r.sqnr_db) : std::string("inf"),
      Format("%.3e", r.max_abs_err),
      Format("%.3e", r.rtn_nmse),
      Format("%.3f", r.nmse_vs_rtn),
      r.output_nmse ? Format("%.3e", *r.output_nmse) : std::string("-"),
      std::to_string(r.iterations),
      Format("%.3f", r.seconds),
  };
  std::string line = Pad(r.tensor, tensor_width_, /*left=*/true);
  for (size_t i = 0; i < std::size(kColumns); ++i) {
    line += "  " + Pad(cells[i], kColumns[i].width, /*left=*/i < kTextColumns);
  }
  out_ << line << "\n";
  out_.flush();
}

}  // namespace nvfp4::cli
