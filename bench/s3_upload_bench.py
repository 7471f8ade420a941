#!/usr/bin/env python3
"""S3 multipart upload rate by upload concurrency (docs/BENCHMARKS.md "S3 uploads").

Starts moto_server (a real S3 API, SigV4 verified) behind a TCP proxy that caps every connection
at --mbps MB/s after --latency-ms of first-byte delay, as a single connection to S3 is capped in
practice, and runs bench/s3_upload_bench.cc (S3ObjectStore's writer) for each concurrency.

    python3 bench/s3_upload_bench.py [--build build] [--mib 128] [--mbps 16] [--latency-ms 30]
                                     [--concurrency 1,2,4,8]
"""
import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from harness import MotoS3, RoundRobinProxy  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--mib", type=int, default=128)
    ap.add_argument("--part-mib", type=int, default=16)
    ap.add_argument("--mbps", type=float, default=16.0, help="cap per connection, MB/s")
    ap.add_argument("--latency-ms", type=float, default=30.0)
    ap.add_argument("--concurrency", default="1,2,4,8")
    a = ap.parse_args()
    moto = MotoS3("bench")
    try:
        proxy = RoundRobinProxy([moto.endpoint.rsplit("//", 1)[1]], upload_rate=a.mbps * 1e6,
                                latency=a.latency_ms / 1000)
        env = dict(os.environ, **moto.server_env())
        cmd = [os.path.join(a.build, "bench", "nvfp4_s3_upload_bench"),
               f"--endpoint=http://{proxy.address}", "--bucket=bench", f"--mib={a.mib}",
               f"--part_mib={a.part_mib}", f"--concurrency={a.concurrency}"]
        print(f"moto behind a proxy: {a.mbps:g} MB/s per connection, {a.latency_ms:g} ms "
              f"first-byte latency; {a.mib} MiB objects in {a.part_mib} MiB parts", flush=True)
        sys.exit(subprocess.run(cmd, env=env).returncode)
    finally:
        moto.stop()


if __name__ == "__main__":
    main()
