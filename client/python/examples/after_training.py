"""What a training pipeline runs after a run: submit the checkpoint to nvfp4d, watch the job,
print the result.

    python client/python/examples/after_training.py --server nvfp4d.internal:50051 \
        --tls-ca /etc/nvfp4/ca.crt --input s3://ckpt/run-42/final --output s3://ckpt/run-42/final-nvfp4

The token comes from $NVFP4_TOKEN. The request id is derived from the input and output, so a
retried pipeline step attaches to the job it already submitted instead of starting another.
Exit codes: 0 succeeded, 1 server/network error, 3 job failed or cancelled.
"""
import argparse
import hashlib
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import grpc  # noqa: E402
from nvfp4_client import Client, state_name, pb  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", default="localhost:50051")
    ap.add_argument("--input", required=True, help="checkpoint: s3://bucket/prefix or file:///path")
    ap.add_argument("--output", required=True)
    ap.add_argument("--layout", default="modelopt", choices=["modelopt", "compressed-tensors"])
    ap.add_argument("--method", default="soar", choices=["rtn", "4over6", "scalesweep", "soar"])
    ap.add_argument("--calibration", default="", help="calibration statistics URI (optional)")
    ap.add_argument("--tls-ca")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    args = ap.parse_args()

    request_id = hashlib.sha256(f"{args.input}\n{args.output}".encode()).hexdigest()[:32]
    try:
        with Client(args.server, tls_ca=args.tls_ca, tls_cert=args.tls_cert,
                    tls_key=args.tls_key) as c:
            job = c.quantize_model(args.input, args.output, layout=args.layout,
                                   method=args.method, calibration_uri=args.calibration,
                                   request_id=request_id)
            print(f"submitted {job.job_id}", flush=True)

            def on_event(e):
                p = e.job.progress
                if e.type == pb.EVENT_TYPE_HEARTBEAT:
                    return
                for t in e.tensors:
                    if t.quantized:
                        print(f"  {t.name}: nmse {t.metrics.nmse:.3e} on {t.device}", flush=True)
                eta = f"{p.eta_seconds:.0f}s" if p.eta_seconds >= 0 else "?"
                print(f"{state_name(e.job.state)} {p.tensors_done}/{p.tensors_total} tensors, "
                      f"{p.bytes_in / 1e6:.1f}/{p.bytes_in_total / 1e6:.1f} MB, ETA {eta}",
                      flush=True)

            job = c.watch(job.job_id, on_event)
    except grpc.RpcError as e:
        print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    print(f"{job.job_id}: {state_name(job.state)}")
    if job.state != pb.JOB_STATE_SUCCEEDED:
        print(f"error: {job.error.message}", file=sys.stderr)
        return 3
    for f in job.outputs:
        print(f"  {f.uri}  {f.size_bytes} bytes  sha256 {f.sha256}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
