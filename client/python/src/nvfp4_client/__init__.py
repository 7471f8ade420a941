"""nvfp4-client: the Python client of nvfp4d, the NVFP4 quantization service.

    from nvfp4_client import Client, ProgressBar

    with Client("nvfp4d.internal:50051", tls_ca="ca.crt", token_file="/run/secrets/nvfp4") as c:
        r = c.quantize_tensor(weight, method="soar")          # numpy / torch / raw bytes
        r.packed, r.scales, r.global_scale, r.metrics          # bytes, bytes, float, dict

        job = c.quantize_model("s3://ckpt/run-42/final", "s3://ckpt/run-42/final-nvfp4",
                               calibration_uri="s3://ckpt/run-42/calib.safetensors",
                               objective="hessian", request_id="run-42-final")
        job = c.watch(job.job_id, on_progress=ProgressBar())   # re-attaches across restarts
        c.cancel(job.job_id); c.get(job.job_id); c.list()

Calibration statistics of a PyTorch model: nvfp4_client.calibration.Collector (needs torch).
The gRPC stubs (generated from proto/ when the package was built) are `nvfp4_client.pb` and
`nvfp4_client.pb_grpc`. Errors are grpc.RpcError with the server's status code and message;
UNAVAILABLE is retried with backoff first (RetryPolicy).
"""
from .client import (CHUNK_BYTES, TERMINAL_STATES, Client, DownloadedFile, Progress,
                     QuantizedTensor, RetryPolicy, pb, pb_grpc, state_name)
from .progress import ProgressBar, format_progress

try:
    from importlib.metadata import version as _version
    __version__ = _version("nvfp4-client")
except Exception:  # not installed (source tree on sys.path)
    __version__ = "0+unknown"

__all__ = ["Client", "QuantizedTensor", "Progress", "ProgressBar", "RetryPolicy", "DownloadedFile",
           "state_name", "format_progress", "pb", "pb_grpc", "CHUNK_BYTES", "TERMINAL_STATES",
           "__version__"]
