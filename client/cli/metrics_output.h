// Per-tensor quantization reports as nvfp4ctl prints them: an aligned table for people and one
// JSON object per line (--json) for scripts. Shared by the local (--local) and remote modes, so
// both print identical output.
#ifndef NVFP4_CLIENT_CLI_METRICS_OUTPUT_H_
#define NVFP4_CLIENT_CLI_METRICS_OUTPUT_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace nvfp4::cli {

// What was done to one tensor and how well (docs/NUMERICS.md section 4).
struct TensorReport {
  std::string tensor;
  std::vector<int64_t> shape;  // the source shape
  std::string method;          // "rtn" | "4over6" | "scalesweep" | "soar" | "gptq"
  std::string objective;       // "mse" | "wmse" | "hessian"
  std::string device;          // "cpu" | "cuda:N" (the backend that ran)
  double nmse = 0;
  double sqnr_db = 0;  // +inf when nmse == 0
  double max_abs_err = 0;
  double rtn_nmse = 0;
  double nmse_vs_rtn = 1;
  std::optional<double> output_nmse;  // with calibration data only
  int iterations = 0;
  std::optional<double> gptq_dampening;  // gptq only: the dampening used
  double seconds = 0;  // wall time of the quantization
};

// {"tensor","shape","method","objective","device","nmse","sqnr_db","max_abs_err","rtn_nmse",
//  "nmse_vs_rtn","output_nmse" (only when present),"iterations","gptq_dampening" (gptq only),
//  "seconds"}. Non-finite numbers
// (sqnr_db of an exact result) become null, as JSON has no infinity.
nlohmann::ordered_json ReportToJson(const TensorReport& report);

// Prints reports as an aligned table: a header row, then one row per tensor as it completes.
class MetricsTable {
 public:
  // `tensor_width`: width of the tensor-name column (the longest name to be printed).
  MetricsTable(std::ostream& out, size_t tensor_width);

  void PrintHeader();
  void PrintRow(const TensorReport& report);

 private:
  std::ostream& out_;
  size_t tensor_width_;
};

// "[N, K]".
std::string FormatShape(const std::vector<int64_t>& shape);

}  // namespace nvfp4::cli

#endif  // NVFP4_CLIENT_CLI_METRICS_OUTPUT_H_
