#include <cmath>
#include <limits>
#include <sstream>
#include <string>

#include "absl/status/status.h"
#include "client/cli/exit_codes.h"
#include "client/cli/metrics_output.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nvfp4::cli {
namespace {

using ::testing::HasSubstr;

TensorReport SampleReport() {
  TensorReport r;
  r.tensor = "layer.weight";
  r.shape = {128, 256};
  r.method = "soar";
  r.objective = "mse";
  r.device = "cpu";
  r.nmse = 6.5e-3;
  r.sqnr_db = 21.87;
  r.max_abs_err = 0.01;
  r.rtn_nmse = 9e-3;
  r.nmse_vs_rtn = 0.72;
  r.iterations = 3;
  r.seconds = 0.5;
  return r;
}

TEST(CliLibTest, ExitCodes) {
  EXPECT_EQ(ExitCodeFor(absl::OkStatus()), kExitOk);
  EXPECT_EQ(ExitCodeFor(absl::InvalidArgumentError("x")), kExitUsage);
  EXPECT_EQ(ExitCodeFor(absl::NotFoundError("x")), kExitUsage);
  EXPECT_EQ(ExitCodeFor(absl::FailedPreconditionError("x")), kExitUsage);
  EXPECT_EQ(ExitCodeFor(absl::InternalError("x")), kExitInternal);
  EXPECT_EQ(ExitCodeFor(absl::UnavailableError("x")), kExitInternal);
}

TEST(CliLibTest, JsonHasEveryFieldAndNullForInfinity) {
  TensorReport r = SampleReport();
  auto j = ReportToJson(r);
  for (const char* key : {"tensor", "shape", "method", "objective", "device", "nmse", "sqnr_db",
                          "max_abs_err", "rtn_nmse", "nmse_vs_rtn", "iterations", "seconds"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_FALSE(j.contains("output_nmse"));
  EXPECT_EQ(j["shape"], nlohmann::json({128, 256}));
  r.output_nmse = 1e-3;
  r.sqnr_db = std::numeric_limits<double>::infinity();
  j = ReportToJson(r);
  EXPECT_DOUBLE_EQ(j["output_nmse"].get<double>(), 1e-3);
  EXPECT_TRUE(j["sqnr_db"].is_null());
  // Round-trips through text.
  EXPECT_EQ(nlohmann::json::parse(j.dump())["tensor"], "layer.weight");
}

TEST(CliLibTest, TableAlignsHeaderAndRows) {
  std::ostringstream out;
  MetricsTable table(out, 20);
  table.PrintHeader();
  table.PrintRow(SampleReport());
  std::istringstream lines(out.str());
  std::string header, row;
  std::getline(lines, header);
  std::getline(lines, row);
  EXPECT_EQ(header.size(), row.size());
  EXPECT_THAT(header, HasSubstr("nmse"));
  EXPECT_THAT(row, HasSubstr("6.500e-03"));
  EXPECT_THAT(row, HasSubstr("[128, 256]"));
  // The nmse column ends at the same position in both lines.
  EXPECT_EQ(header.find("nmse") + 4, row.find("6.500e-03") + 9);
}

TEST(CliLibTest, FormatShape) {
  EXPECT_EQ(FormatShape({}), "[]");
  EXPECT_EQ(FormatShape({4096, 14336}), "[4096, 14336]");
}

}  // namespace
}  // namespace nvfp4::cli
