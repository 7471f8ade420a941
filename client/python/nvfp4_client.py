"""A thin Python client of nvfp4d (nvfp4.v1.Quantizer), for training pipelines.

    from nvfp4_client import Client

    with Client("nvfp4d.internal:50051", tls_ca="ca.crt", token=os.environ["NVFP4_TOKEN"]) as c:
        r = c.quantize_tensor(weight_bf16_numpy_or_bytes, method="soar", shape=[4096, 4096])
        r.packed, r.scales, r.global_scale, r.metrics        # bytes, bytes, float, dict

        job = c.quantize_model("s3://ckpt/run-42/step-1000", "s3://ckpt/run-42/step-1000-nvfp4",
                               request_id="run-42-step-1000")
        job = c.watch(job.job_id, on_event=lambda e: print(e.job.progress.tensors_done))
        c.cancel(job.job_id)

Stubs are generated from proto/ on first use (generate_stubs.py) into $NVFP4_PY_STUBS (default
~/.cache/nvfp4-py-stubs). Errors are grpc.RpcError with the server's status code and message.
Tensors stream in 1 MiB chunks, as the service expects; a numpy float32/float16 array is sent
as F32/F16, bfloat16 data as raw bytes with dtype="bf16" (numpy has no bfloat16).
"""
import os
import sys
import time
import uuid
from dataclasses import dataclass, field

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import generate_stubs  # noqa: E402

_STUBS = generate_stubs.generate(
    os.environ.get("NVFP4_PY_STUBS", os.path.expanduser("~/.cache/nvfp4-py-stubs")))
if _STUBS not in sys.path:
    sys.path.insert(0, _STUBS)
from nvfp4.v1 import quantizer_pb2 as pb  # noqa: E402
from nvfp4.v1 import quantizer_pb2_grpc as pb_grpc  # noqa: E402

CHUNK_BYTES = 1 << 20
_METHODS = {"rtn": pb.METHOD_RTN, "4over6": pb.METHOD_FOUR_OVER_SIX,
            "scalesweep": pb.METHOD_SCALESWEEP, "soar": pb.METHOD_SOAR, "gptq": pb.METHOD_GPTQ}
_GPTQ_ORDERS = {"natural": pb.GPTQ_ORDER_NATURAL, "static": pb.GPTQ_ORDER_STATIC}
_GPTQ_GLOBAL_SCALES = {"amax": pb.GPTQ_GLOBAL_SCALE_AMAX, "cjso": pb.GPTQ_GLOBAL_SCALE_CJSO}
_OBJECTIVES = {"mse": pb.OBJECTIVE_MSE, "wmse": pb.OBJECTIVE_WMSE, "hessian": pb.OBJECTIVE_HESSIAN}
_ERROR_RULES = {"mse": pb.ERROR_RULE_MSE, "mae": pb.ERROR_RULE_MAE, "absmax": pb.ERROR_RULE_ABSMAX}
_DTYPES = {"f32": (pb.DTYPE_F32, 4), "f16": (pb.DTYPE_F16, 2), "bf16": (pb.DTYPE_BF16, 2)}
TERMINAL_STATES = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)


@dataclass
class QuantizedTensor:
    """NVFP4 result: packed E2M1 codes [rows, cols/2] (low nibble = even column), E4M3 block
    scales [rows, cols/16], the fp32 global scale g (decode: code * scale * g) and metrics."""
    name: str
    rows: int
    cols: int
    packed: bytes
    scales: bytes
    global_scale: float
    metrics: dict = field(default_factory=dict)
    device: str = ""
    quantize_seconds: float = 0.0


def _options(method, objective, error_rule, soar_max_iterations, gptq=None):
    """QuantizeOptions; `gptq` (method "gptq") is a dict of block_scales ("soar"), dampening
    (0.01), block_size (128), order ("natural" | "static"), global_scale ("amax" | "cjso")."""
    o = pb.QuantizeOptions(method=_METHODS[method], objective=_OBJECTIVES[objective],
                           error_rule=_ERROR_RULES[error_rule],
                           soar_max_iterations=soar_max_iterations)
    g = dict(gptq or {})
    unknown = set(g) - {"block_scales", "dampening", "block_size", "order", "global_scale"}
    if unknown:
        raise ValueError(f"unknown gptq option(s) {sorted(unknown)}")
    if "block_scales" in g:
        o.gptq.block_scales = _METHODS[g["block_scales"]]
    if "dampening" in g:
        o.gptq.dampening = float(g["dampening"])
    if "block_size" in g:
        o.gptq.block_size = int(g["block_size"])
    if "order" in g:
        o.gptq.order = _GPTQ_ORDERS[g["order"]]
    if "global_scale" in g:
        o.gptq.global_scale = _GPTQ_GLOBAL_SCALES[g["global_scale"]]
    return o


def _tensor_bytes(tensor, dtype, shape):
    """(bytes, dtype name, shape) of a numpy array or raw bytes."""
    if isinstance(tensor, (bytes, bytearray, memoryview)):
        if dtype is None or shape is None:
            raise ValueError("raw bytes need dtype= ('bf16', 'f16', 'f32') and shape=")
        return bytes(tensor), dtype, list(shape)
    import numpy as np
    a = np.ascontiguousarray(tensor)
    names = {np.dtype("float32"): "f32", np.dtype("float16"): "f16"}
    if dtype is None:
        if a.dtype not in names:
            raise ValueError(f"unsupported numpy dtype {a.dtype}: use float32/float16, or pass "
                             "bfloat16 data as bytes with dtype='bf16'")
        dtype = names[a.dtype]
    return a.tobytes(), dtype, list(shape if shape is not None else a.shape)


class Client:
    def __init__(self, target, tls=False, tls_ca=None, tls_cert=None, tls_key=None, token=None,
                 timeout=30.0, chunk_bytes=CHUNK_BYTES):
        """`tls_ca`/`tls_cert`/`tls_key` are PEM file paths (any of them turns TLS on; a cert
        and key make it mutual TLS). `token`: bearer token (default $NVFP4_TOKEN)."""
        options = [("grpc.max_receive_message_length", 8 << 20),
                   ("grpc.max_send_message_length", 8 << 20)]
        if tls or tls_ca or tls_cert or tls_key:
            read = lambda p: open(p, "rb").read() if p else None  # noqa: E731
            creds = grpc.ssl_channel_credentials(read(tls_ca), read(tls_key), read(tls_cert))
            self._channel = grpc.secure_channel(target, creds, options)
        else:
            self._channel = grpc.insecure_channel(target, options)
        self._stub = pb_grpc.QuantizerStub(self._channel)
        token = token if token is not None else os.environ.get("NVFP4_TOKEN", "")
        self._metadata = [("authorization", f"Bearer {token}")] if token else []
        self._timeout = timeout
        self._chunk = chunk_bytes

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- tensors ----
    def quantize_tensor(self, tensor, name="tensor", dtype=None, shape=None, method="soar",
                        objective="mse", error_rule="mse", soar_max_iterations=0,
                        importance=None, gram=None, gptq=None):
        """Quantizes one tensor ([N, K], K % 16 == 0; leading dims are folded into N).
        `gram`: the input Gram X^T X ([K, K] float32 numpy array or K*K*4 little-endian bytes)
        for objective "hessian", method "gptq" (which needs it) and output_nmse; `gptq`: see
        _options."""
        data, dtype, shape = _tensor_bytes(tensor, dtype, shape)
        header = pb.TensorHeader(name=name, dtype=_DTYPES[dtype][0], shape=shape,
                                 options=_options(method, objective, error_rule,
                                                  soar_max_iterations, gptq),
                                 response_chunk_bytes=self._chunk)
        if importance is not None:
            header.importance.extend(float(x) for x in importance)
        gram_bytes = b""
        if gram is not None:
            gram_bytes = gram if isinstance(gram, (bytes, bytearray)) else \
                gram.astype("<f4", copy=False).tobytes()
            header.has_gram = True

        def requests():
            yield pb.QuantizeTensorRequest(header=header)
            for part, buf in ((pb.PART_SOURCE, data), (pb.PART_GRAM, gram_bytes)):
                for off in range(0, len(buf), self._chunk):
                    yield pb.QuantizeTensorRequest(chunk=pb.DataChunk(
                        part=part, offset=off, data=buf[off:off + self._chunk]))

        h, packed, scales = None, bytearray(), bytearray()
        for resp in self._stub.QuantizeTensor(requests(), metadata=self._metadata):
            if resp.HasField("header"):
                h = resp.header
                packed = bytearray(h.packed_bytes)
                scales = bytearray(h.scales_bytes)
            else:
                c = resp.chunk
                dst = packed if c.part == pb.PART_PACKED else scales
                dst[c.offset:c.offset + len(c.data)] = c.data
        if h is None:
            raise RuntimeError("nvfp4d sent no result header")
        m = h.metrics
        metrics = {"nmse": m.nmse, "sqnr_db": m.sqnr_db, "max_abs_err": m.max_abs_err,
                   "rtn_nmse": m.rtn_nmse, "nmse_vs_rtn": m.nmse_vs_rtn,
                   "iterations": m.iterations, "gptq_dampening": m.gptq_dampening}
        if m.HasField("output_nmse"):
            metrics["output_nmse"] = m.output_nmse
        return QuantizedTensor(h.name, h.rows, h.cols, bytes(packed), bytes(scales),
                               h.global_scale, metrics, h.device, h.quantize_seconds)

    # ---- model jobs ----
    def quantize_model(self, input_uri, output_uri, layout="modelopt", method="soar",
                       objective="mse", error_rule="mse", include=(), exclude=(),
                       calibration_uri="", request_id=None, gptq=None):
        """Submits a QuantizeModel job and returns it at once (a Job message). `request_id`
        makes the submission idempotent (default: a fresh UUID, so retries of this call are
        safe). Patterns: globs on module names, or 're:' + a regular expression."""
        req = pb.QuantizeModelRequest(
            input_uri=input_uri, output_uri=output_uri,
            layout=pb.LAYOUT_COMPRESSED_TENSORS if layout == "compressed-tensors"
            else pb.LAYOUT_MODELOPT,
            options=_options(method, objective, error_rule, 0, gptq),
            include_patterns=list(include), exclude_patterns=list(exclude),
            calibration_uri=calibration_uri, request_id=request_id or str(uuid.uuid4()))
        return self._unary(self._stub.QuantizeModel, req)

    def get(self, job_id):
        return self._unary(self._stub.GetJob, pb.GetJobRequest(job_id=job_id))

    def cancel(self, job_id):
        """Idempotent; the job ends CANCELLED within about a second."""
        return self._unary(self._stub.CancelJob, pb.CancelJobRequest(job_id=job_id))

    def list(self, page_size=100):
        return self._unary(self._stub.ListJobs, pb.ListJobsRequest(page_size=page_size)).jobs

    def watch(self, job_id, on_event=None, reattach_attempts=5):
        """Streams the job's events (snapshot, progress, heartbeats, terminal) to
        `on_event(event)` and returns the final Job. A broken stream is re-attached."""
        attempts = 0
        while True:
            try:
                for event in self._stub.WatchJob(pb.WatchJobRequest(job_id=job_id),
                                                 metadata=self._metadata):
                    if on_event is not None:
                        on_event(event)
                    if event.job.state in TERMINAL_STATES:
                        return event.job
                job = self.get(job_id)
                if job.state in TERMINAL_STATES:
                    return job
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE or attempts >= reattach_attempts:
                    raise
            attempts += 1
            time.sleep(min(2 ** attempts * 0.1, 5))

    def _unary(self, method, request):
        return method(request, timeout=self._timeout, metadata=self._metadata)


def state_name(state):
    return pb.JobState.Name(state).replace("JOB_STATE_", "")
