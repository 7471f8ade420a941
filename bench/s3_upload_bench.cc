// Multipart upload rate of the S3 object store (storage/s3_store.h) against an S3 endpoint, for
// several values of S3Config::upload_concurrency (docs/BENCHMARKS.md "S3 uploads"; driven by
// bench/s3_upload_bench.py, which puts moto behind a per-connection bandwidth cap).
//
//   nvfp4_s3_upload_bench --endpoint URL --bucket B [--mib 256] [--part_mib 16]
//                         [--concurrency 1,2,4,8]
// Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. Prints one line per concurrency.
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "storage/s3_store.h"

ABSL_FLAG(std::string, endpoint, "", "S3 endpoint URL");
ABSL_FLAG(std::string, bucket, "", "bucket to write bench objects into");
ABSL_FLAG(int, mib, 256, "object size in MiB");
ABSL_FLAG(int, part_mib, 16, "multipart part size in MiB (>= 5)");
ABSL_FLAG(std::string, concurrency, "1,2,4,8", "comma-separated upload concurrencies");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string bucket = absl::GetFlag(FLAGS_bucket);
  const int64_t total = int64_t{absl::GetFlag(FLAGS_mib)} << 20;
  std::string chunk(1 << 20, '\0');
  for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<char>((i * 2654435761u) >> 13);
  for (absl::string_view c : absl::StrSplit(absl::GetFlag(FLAGS_concurrency), ',')) {
    int concurrency = 0;
    if (!absl::SimpleAtoi(c, &concurrency)) {
      std::fprintf(stderr, "bad --concurrency entry '%s'\n", std::string(c).c_str());
      return 2;
    }
    nvfp4::storage::S3Config config =
        nvfp4::storage::S3ConfigFromEnv(absl::GetFlag(FLAGS_endpoint), "");
    config.part_size = int64_t{absl::GetFlag(FLAGS_part_mib)} << 20;
    config.upload_concurrency = concurrency;
    auto store = nvfp4::storage::S3ObjectStore::Create(config);
    if (!store.ok()) {
      std::fprintf(stderr, "%s\n", store.status().ToString().c_str());
      return 2;
    }
    const std::string uri = absl::StrCat("s3://", bucket, "/bench/upload-", concurrency);
    const auto t0 = std::chrono::steady_clock::now();
    auto writer = (*store)->OpenWrite(uri);
    absl::Status s = writer.status();
    for (int64_t done = 0; s.ok() && done < total; done += static_cast<int64_t>(chunk.size())) {
      s = (*writer)->Append(chunk);
    }
    if (s.ok()) s = (*writer)->Commit();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!s.ok()) {
      std::fprintf(stderr, "concurrency %d: %s\n", concurrency, s.ToString().c_str());
      return 1;
    }
    std::printf("upload_concurrency=%d  %d MiB in %.2f s  %.1f MB/s\n", concurrency,
                absl::GetFlag(FLAGS_mib), seconds, static_cast<double>(total) / seconds / 1e6);
    std::fflush(stdout);
    (void)(*store)->Delete(uri);
  }
  return 0;
}
