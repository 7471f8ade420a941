"""The gRPC client of nvfp4d (service nvfp4.v1.Quantizer, proto/nvfp4/v1/quantizer.proto)."""
from __future__ import annotations

import hashlib
import os
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence,
                    Tuple, TypeVar, Union)

import grpc

from ._proto import quantizer_pb2 as pb
from ._proto import quantizer_pb2_grpc as pb_grpc

__all__ = ["Client", "QuantizedTensor", "Progress", "RetryPolicy", "DownloadedFile", "state_name",
           "CHUNK_BYTES", "TERMINAL_STATES", "pb", "pb_grpc"]

CHUNK_BYTES = 1 << 20
_METHODS: Dict[str, Any] = {"rtn": pb.METHOD_RTN, "4over6": pb.METHOD_FOUR_OVER_SIX,
            "scalesweep": pb.METHOD_SCALESWEEP, "soar": pb.METHOD_SOAR, "gptq": pb.METHOD_GPTQ}
_GPTQ_ORDERS: Dict[str, Any] = {"natural": pb.GPTQ_ORDER_NATURAL, "static": pb.GPTQ_ORDER_STATIC}
_GPTQ_GLOBAL_SCALES: Dict[str, Any] = {"amax": pb.GPTQ_GLOBAL_SCALE_AMAX, "cjso": pb.GPTQ_GLOBAL_SCALE_CJSO}
_GPTQ_KEYS = {"block_scales", "dampening", "block_size", "order", "global_scale"}
_OBJECTIVES: Dict[str, Any] = {"mse": pb.OBJECTIVE_MSE, "wmse": pb.OBJECTIVE_WMSE, "hessian": pb.OBJECTIVE_HESSIAN}
_ERROR_RULES: Dict[str, Any] = {"mse": pb.ERROR_RULE_MSE, "mae": pb.ERROR_RULE_MAE, "absmax": pb.ERROR_RULE_ABSMAX}
_LAYOUTS: Dict[str, Any] = {"modelopt": pb.LAYOUT_MODELOPT, "compressed-tensors": pb.LAYOUT_COMPRESSED_TENSORS}
_DTYPES: Dict[str, Any] = {"f32": pb.DTYPE_F32, "f16": pb.DTYPE_F16, "bf16": pb.DTYPE_BF16}
TERMINAL_STATES = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)

GptqOptions = Mapping[str, Union[str, int, float]]


def state_name(state: int) -> str:
    """"SUCCEEDED" for pb.JOB_STATE_SUCCEEDED, and so on."""
    return pb.JobState.Name(state).replace("JOB_STATE_", "")


_T = TypeVar("_T")


def _pick(table: Mapping[str, _T], value: str, what: str) -> _T:
    try:
        return table[value]
    except KeyError:
        raise ValueError(f"unknown {what} {value!r} (one of {', '.join(table)})") from None


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
    metrics: Dict[str, float] = field(default_factory=dict)
    device: str = ""
    quantize_seconds: float = 0.0


@dataclass
class Progress:
    """A job's progress, passed to `on_progress` callbacks (see ProgressBar)."""
    job_id: str
    state: str                      # QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED
    tensors_done: int
    tensors_total: int              # 0 until known
    bytes_in: int
    bytes_in_total: int             # 0 until known
    bytes_out: int
    current_tensor: str
    eta_seconds: Optional[float]    # None while unknown
    bytes_per_second: float
    tensors_resumed: int
    reattaching: bool = False       # the watch stream broke; re-attaching
    job: Any = None                 # the pb.Job snapshot

    @property
    def fraction(self) -> float:
        """Done fraction in [0, 1], by source bytes when known, else by tensors."""
        if self.state == "SUCCEEDED":
            return 1.0
        if self.bytes_in_total > 0:
            return min(1.0, self.bytes_in / self.bytes_in_total)
        if self.tensors_total > 0:
            return min(1.0, self.tensors_done / self.tensors_total)
        return 0.0

    @property
    def finished(self) -> bool:
        return self.state in ("SUCCEEDED", "FAILED", "CANCELLED")

    @classmethod
    def of(cls, job: "pb.Job", reattaching: bool = False) -> "Progress":
        p = job.progress
        return cls(job.job_id, state_name(job.state), p.tensors_done, p.tensors_total, p.bytes_in,
                   p.bytes_in_total, p.bytes_out, p.current_tensor,
                   p.eta_seconds if p.eta_seconds >= 0 else None, p.bytes_per_second,
                   p.tensors_resumed, reattaching, job)


@dataclass
class RetryPolicy:
    """Retries of calls that failed with UNAVAILABLE (server down or restarting, queue full,
    draining): exponential backoff from `initial_backoff` seconds, times `multiplier`, capped
    at `max_backoff`, each delay randomized by +-`jitter` (a fraction); at most `max_attempts`
    tries in all (1 = no retries). Every retried call is idempotent: QuantizeModel carries a
    request_id, QuantizeTensor is a pure function of its input."""
    max_attempts: int = 8
    initial_backoff: float = 0.25
    max_backoff: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.2
    codes: Tuple[grpc.StatusCode, ...] = (grpc.StatusCode.UNAVAILABLE,)

    def delays(self) -> Iterator[float]:
        """The sleeps between attempts (max_attempts - 1 of them)."""
        d = self.initial_backoff
        for _ in range(max(0, self.max_attempts - 1)):
            yield max(0.0, min(d, self.max_backoff) * (1 + self.jitter * (2 * random.random() - 1)))
            d *= self.multiplier


@dataclass
class DownloadedFile:
    name: str
    path: str
    size_bytes: int
    sha256: str


def _options(method: str, objective: str, error_rule: str, soar_max_iterations: int,
             gptq: Optional[GptqOptions] = None) -> "pb.QuantizeOptions":
    """QuantizeOptions; `gptq` (method "gptq") is a dict of block_scales ("soar"), dampening
    (0.01), block_size (128), order ("natural" | "static"), global_scale ("amax" | "cjso")."""
    o = pb.QuantizeOptions(method=_pick(_METHODS, method, "method"),
                           objective=_pick(_OBJECTIVES, objective, "objective"),
                           error_rule=_pick(_ERROR_RULES, error_rule, "error_rule"),
                           soar_max_iterations=soar_max_iterations)
    g = dict(gptq or {})
    unknown = set(g) - _GPTQ_KEYS
    if unknown:
        raise ValueError(f"unknown gptq option(s) {sorted(unknown)} (known: {sorted(_GPTQ_KEYS)})")
    if "block_scales" in g:
        o.gptq.block_scales = _pick(_METHODS, str(g["block_scales"]), "gptq block_scales")
    if "dampening" in g:
        o.gptq.dampening = float(g["dampening"])
    if "block_size" in g:
        o.gptq.block_size = int(g["block_size"])
    if "order" in g:
        o.gptq.order = _pick(_GPTQ_ORDERS, str(g["order"]), "gptq order")
    if "global_scale" in g:
        o.gptq.global_scale = _pick(_GPTQ_GLOBAL_SCALES, str(g["global_scale"]),
                                    "gptq global_scale")
    return o


def _tensor_bytes(tensor: Any, dtype: Optional[str], shape: Optional[Sequence[int]]
                  ) -> Tuple[bytes, str, List[int]]:
    """(bytes, dtype name, shape) of a numpy array, a torch tensor or raw bytes."""
    if isinstance(tensor, (bytes, bytearray, memoryview)):
        if dtype is None or shape is None:
            raise ValueError("raw bytes need dtype= ('bf16', 'f16', 'f32') and shape=")
        return bytes(tensor), dtype, list(shape)
    if type(tensor).__module__.startswith("torch"):
        import torch  # only when given a torch tensor
        names = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}
        if tensor.dtype not in names:
            raise ValueError(f"unsupported torch dtype {tensor.dtype}: use float32/float16/bfloat16")
        t = tensor.detach().contiguous().cpu()
        raw = t.view(torch.int16).numpy().tobytes() if t.dtype == torch.bfloat16 else \
            t.numpy().tobytes()
        return raw, dtype or names[tensor.dtype], list(shape if shape is not None else t.shape)
    import numpy as np
    a = np.ascontiguousarray(tensor)
    names_np = {np.dtype("float32"): "f32", np.dtype("float16"): "f16"}
    if dtype is None:
        if a.dtype not in names_np:
            raise ValueError(f"unsupported numpy dtype {a.dtype}: use float32/float16, or pass "
                             "bfloat16 data as bytes with dtype='bf16'")
        dtype = names_np[a.dtype]
    return a.tobytes(), dtype, list(shape if shape is not None else a.shape)


def _gram_bytes(gram: Any) -> bytes:
    if isinstance(gram, (bytes, bytearray, memoryview)):
        return bytes(gram)
    if type(gram).__module__.startswith("torch"):
        import torch
        return gram.detach().to(torch.float32).contiguous().cpu().numpy().tobytes()
    import numpy as np
    return np.ascontiguousarray(gram, dtype="<f4").tobytes()


def _read_token_file(path: str) -> str:
    with open(path) as f:
        token = f.read().strip()
    if not token:
        raise ValueError(f"token_file {path}: the file is empty")
    return token


class Client:
    """A connection to nvfp4d. Errors are grpc.RpcError with the server's status code and
    message (after the retries of `retry` for UNAVAILABLE). Use as a context manager or call
    close()."""

    def __init__(self, target: str, tls: bool = False, tls_ca: Optional[str] = None,
                 tls_cert: Optional[str] = None, tls_key: Optional[str] = None,
                 tls_server_name: Optional[str] = None, token: Optional[str] = None,
                 token_file: Optional[str] = None, timeout: float = 30.0,
                 chunk_bytes: int = CHUNK_BYTES,
                 retry: Union[RetryPolicy, int, None] = None,
                 channel_options: Sequence[Tuple[str, Any]] = ()):
        """`target`: host:port of nvfp4d.

        TLS, as nvfp4ctl's flags: `tls=True` verifies the server with the system roots;
        `tls_ca` (PEM file) verifies it with that CA and implies TLS; `tls_cert` + `tls_key`
        (PEM files, together) add a client certificate (mutual TLS); `tls_server_name` is the
        name expected in the server certificate (default: the host of `target`).

        Bearer token (`authorization: Bearer <token>` on every call): `token`, else the contents
        of `token_file`, else $NVFP4_TOKEN; none when all are empty.

        `timeout`: seconds per unary call. `chunk_bytes`: tensor stream chunk size (the server
        accepts 256 KiB..4 MiB). `retry`: RetryPolicy for UNAVAILABLE (an int: max attempts;
        None: the default policy, 8 attempts over about 25 s; 1: no retries)."""
        if bool(tls_cert) != bool(tls_key):
            raise ValueError("tls_cert and tls_key go together")
        limit = max(8 << 20, 2 * chunk_bytes + (1 << 20))
        options: List[Tuple[str, Any]] = [("grpc.max_receive_message_length", limit),
                                          ("grpc.max_send_message_length", limit)]
        if tls_server_name:
            options.append(("grpc.ssl_target_name_override", tls_server_name))
        options += list(channel_options)
        if tls or tls_ca or tls_cert or tls_key:
            def read(p: Optional[str]) -> Optional[bytes]:
                if not p:
                    return None
                with open(p, "rb") as f:
                    return f.read()
            creds = grpc.ssl_channel_credentials(read(tls_ca), read(tls_key), read(tls_cert))
            self._channel = grpc.secure_channel(target, creds, options)
        else:
            self._channel = grpc.insecure_channel(target, options)
        self._stub = pb_grpc.QuantizerStub(self._channel)
        if token is None:
            token = _read_token_file(token_file) if token_file else \
                os.environ.get("NVFP4_TOKEN", "").strip()
        self._metadata = [("authorization", f"Bearer {token}")] if token else []
        self._timeout = timeout
        self._chunk = chunk_bytes
        if retry is None:
            retry = RetryPolicy()
        elif isinstance(retry, int):
            retry = RetryPolicy(max_attempts=retry)
        self.retry = retry
        self.target = target

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- retries ----
    def _call(self, fn: Callable[[], Any]) -> Any:
        delays = self.retry.delays()
        while True:
            try:
                return fn()
            except grpc.RpcError as e:
                if e.code() not in self.retry.codes:
                    raise
                d = next(delays, None)
                if d is None:
                    raise
                time.sleep(d)

    def _unary(self, method: Callable[..., Any], request: Any) -> Any:
        return self._call(lambda: method(request, timeout=self._timeout, metadata=self._metadata))

    # ---- tensors ----
    def quantize_tensor(self, tensor: Any, name: str = "tensor", dtype: Optional[str] = None,
                        shape: Optional[Sequence[int]] = None, method: str = "soar",
                        objective: str = "mse", error_rule: str = "mse",
                        soar_max_iterations: int = 0, importance: Optional[Iterable[float]] = None,
                        gram: Any = None, gptq: Optional[GptqOptions] = None) -> QuantizedTensor:
        """Quantizes one tensor ([N, K], K % 16 == 0; leading dims are folded into N).
        `tensor`: a numpy float32/float16 array, a torch float32/float16/bfloat16 tensor, or raw
        little-endian bytes with `dtype` ("f32", "f16", "bf16") and `shape`.
        `importance`: [K] per-input-channel weights (objective "wmse").
        `gram`: the input Gram X^T X ([K, K]: float32 numpy array, torch tensor, or K*K*4
        little-endian bytes) for objective "hessian", method "gptq" (which needs it) and the
        output_nmse metric. `gptq`: {"block_scales": "soar", "dampening": 0.01,
        "block_size": 128, "order": "natural"|"static", "global_scale": "amax"|"cjso"}."""
        data, dtype, shape = _tensor_bytes(tensor, dtype, shape)
        header = pb.TensorHeader(name=name, dtype=_pick(_DTYPES, dtype, "dtype"), shape=shape,
                                 options=_options(method, objective, error_rule,
                                                  soar_max_iterations, gptq),
                                 response_chunk_bytes=self._chunk)
        if importance is not None:
            header.importance.extend(float(x) for x in importance)
        gram_bytes = b""
        if gram is not None:
            gram_bytes = _gram_bytes(gram)
            header.has_gram = True

        def requests() -> Iterator["pb.QuantizeTensorRequest"]:
            yield pb.QuantizeTensorRequest(header=header)
            for part, buf in ((pb.PART_SOURCE, data), (pb.PART_GRAM, gram_bytes)):
                view = memoryview(buf)
                for off in range(0, len(buf), self._chunk):
                    yield pb.QuantizeTensorRequest(chunk=pb.DataChunk(
                        part=part, offset=off, data=bytes(view[off:off + self._chunk])))

        def attempt() -> QuantizedTensor:
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

        return self._call(attempt)

    # ---- model jobs ----
    def quantize_model(self, input_uri: str, output_uri: str, layout: str = "modelopt",
                       method: str = "soar", objective: str = "mse", error_rule: str = "mse",
                       include: Sequence[str] = (), exclude: Sequence[str] = (),
                       calibration_uri: str = "", request_id: Optional[str] = None,
                       gptq: Optional[GptqOptions] = None, soar_max_iterations: int = 0,
                       wait: bool = False,
                       on_progress: Optional[Callable[[Progress], None]] = None,
                       on_event: Optional[Callable[["pb.JobEvent"], None]] = None) -> "pb.Job":
        """Submits a QuantizeModel job and returns it at once (a pb.Job), or with `wait=True`
        watches it to the end (see watch) and returns the final Job.
        URIs: `file:///abs/path` (inside the server's --data_root) or `s3://bucket/prefix`.
        `layout`: "modelopt" or "compressed-tensors". `calibration_uri`: statistics file
        (docs/CALIBRATION.md; nvfp4_client.calibration.Collector writes one); objectives
        "wmse"/"hessian" and method "gptq" need it. `include`/`exclude`: globs on module names,
        or 're:' + a regular expression. `request_id` makes the submission idempotent (default: a
        fresh UUID, reused by this call's retries); a pipeline step that may be retried should
        derive it from its inputs."""
        req = pb.QuantizeModelRequest(
            input_uri=input_uri, output_uri=output_uri,
            layout=_pick(_LAYOUTS, layout, "layout"),
            options=_options(method, objective, error_rule, soar_max_iterations, gptq),
            include_patterns=list(include), exclude_patterns=list(exclude),
            calibration_uri=calibration_uri, request_id=request_id or str(uuid.uuid4()))
        job = self._unary(self._stub.QuantizeModel, req)
        if wait:
            return self.watch(job.job_id, on_event=on_event, on_progress=on_progress)
        return job

    def get(self, job_id: str) -> "pb.Job":
        return self._unary(self._stub.GetJob, pb.GetJobRequest(job_id=job_id))

    def cancel(self, job_id: str) -> "pb.Job":
        """Idempotent; the job ends CANCELLED within about a second."""
        return self._unary(self._stub.CancelJob, pb.CancelJobRequest(job_id=job_id))

    def list(self, page_size: int = 100, states: Sequence[Union[int, str]] = (),
             all_pages: bool = False) -> List["pb.Job"]:
        """Jobs, newest first: the first page, or every page with `all_pages`. `states`: only
        jobs in these states (pb.JOB_STATE_* or names such as "RUNNING")."""
        codes: List[Any] = [s if isinstance(s, int) else pb.JobState.Value("JOB_STATE_" + s.upper())
                 for s in states]
        jobs: List["pb.Job"] = []
        token = ""
        while True:
            resp = self._unary(self._stub.ListJobs, pb.ListJobsRequest(
                page_size=page_size, page_token=token, states=codes))
            jobs.extend(resp.jobs)
            token = resp.next_page_token
            if not all_pages or not token:
                return jobs

    def watch(self, job_id: str, on_event: Optional[Callable[["pb.JobEvent"], None]] = None,
              reattach_attempts: Optional[int] = None,
              on_progress: Optional[Callable[[Progress], None]] = None,
              heartbeat_seconds: int = 0) -> "pb.Job":
        """Streams the job's events (snapshot, progress, heartbeats, terminal) to
        `on_event(event)` and its progress to `on_progress(Progress)`, and returns the final
        Job. A stream that breaks (UNAVAILABLE: server draining or restarting, network;
        CANCELLED: the call was ended by the server or the transport) or ends before the job
        did is re-attached with the backoff of the retry policy: up to `reattach_attempts`
        (default: the policy's max_attempts - 1) times in a row; the count restarts whenever an
        event arrives, so a long job survives any number of server restarts. Jobs are durable:
        a restarted server resumes them, so re-attaching finds the same job."""
        budget = self.retry.max_attempts - 1 if reattach_attempts is None else reattach_attempts
        failures = 0
        delays = self.retry.delays()
        while True:
            try:
                for event in self._stub.WatchJob(
                        pb.WatchJobRequest(job_id=job_id, heartbeat_seconds=heartbeat_seconds),
                        metadata=self._metadata):
                    if failures and event.type != pb.EVENT_TYPE_SNAPSHOT:
                        failures, delays = 0, self.retry.delays()
                    if on_event is not None:
                        on_event(event)
                    if on_progress is not None:
                        on_progress(Progress.of(event.job))
                    if event.job.state in TERMINAL_STATES:
                        return event.job
                job = self.get(job_id)
                if job.state in TERMINAL_STATES:
                    if on_progress is not None:
                        on_progress(Progress.of(job))
                    return job
            except grpc.RpcError as e:
                # CANCELLED too: this client never cancels a watch, so the server or the
                # transport ended it (e.g. the calls cancelled at the end of a drain).
                reattach = e.code() in self.retry.codes or e.code() == grpc.StatusCode.CANCELLED
                if not reattach or failures >= budget:
                    raise
            failures += 1
            if on_progress is not None:
                on_progress(Progress(job_id, "", 0, 0, 0, 0, 0, "", None, 0.0, 0, True, None))
            d = next(delays, None)
            time.sleep(d if d is not None else self.retry.max_backoff)

    def download(self, job: Union[str, "pb.Job"], dest_dir: str,
                 names: Optional[Sequence[str]] = None,
                 on_bytes: Optional[Callable[[str, int, int], None]] = None
                 ) -> List[DownloadedFile]:
        """Downloads the outputs of a SUCCEEDED job (all, or `names`) into `dest_dir` through the
        service (ReadResult), wherever the job wrote them (file:// or s3://). Resumes a partial
        file, verifies each file's size and sha256 against the job's record, and writes
        atomically. `on_bytes(name, done, total)` reports progress."""
        if isinstance(job, str):
            job = self.get(job)
        if job.state != pb.JOB_STATE_SUCCEEDED:
            raise ValueError(f"job {job.job_id} is {state_name(job.state)}, not SUCCEEDED")
        wanted = list(job.outputs) if names is None else [o for o in job.outputs
                                                          if o.name in set(names)]
        if names is not None and len(wanted) != len(set(names)):
            missing = set(names) - {o.name for o in wanted}
            raise ValueError(f"job {job.job_id} has no output(s) {sorted(missing)}")
        out = []
        for o in wanted:
            parts = o.name.split("/")
            if not o.name or o.name.startswith("/") or any(p in ("", ".", "..") for p in parts):
                raise ValueError(f"job {job.job_id}: refusing output name {o.name!r}")
            path = os.path.join(dest_dir, *parts)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            part = path + ".part"
            delays = self.retry.delays()
            while True:
                offset = os.path.getsize(part) if os.path.exists(part) else 0
                if offset > o.size_bytes:
                    os.remove(part)
                    offset = 0
                try:
                    with open(part, "ab") as f:
                        if offset < o.size_bytes:
                            for r in self._stub.ReadResult(pb.ReadResultRequest(
                                    job_id=job.job_id, name=o.name, offset=offset,
                                    chunk_bytes=self._chunk), metadata=self._metadata):
                                if r.offset != offset:
                                    raise RuntimeError(f"{o.name}: chunk at {r.offset}, "
                                                       f"expected {offset}")
                                f.write(r.data)
                                offset += len(r.data)
                                if on_bytes is not None:
                                    on_bytes(o.name, offset, o.size_bytes)
                    break
                except grpc.RpcError as e:
                    d = next(delays, None)
                    if e.code() not in self.retry.codes or d is None:
                        raise
                    time.sleep(d)
            h = hashlib.sha256()
            with open(part, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            size = os.path.getsize(part)
            if size != o.size_bytes or (o.sha256 and h.hexdigest() != o.sha256):
                os.remove(part)
                raise RuntimeError(f"{o.name}: downloaded {size} bytes sha256 {h.hexdigest()}, "
                                   f"the job recorded {o.size_bytes} bytes sha256 {o.sha256}")
            os.replace(part, path)
            out.append(DownloadedFile(o.name, path, size, h.hexdigest()))
        return out
