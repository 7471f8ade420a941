"""Where calibration files go: a local path / file:// URI (written atomically) or s3://bucket/key
(a streaming multipart upload through boto3, so a file of any size needs no local copy).

The service reads `calibration_uri` with the same schemes: file:// inside its --data_root, or
s3:// from its --s3_endpoint with its own credentials.
"""
from __future__ import annotations

import json
import os
import struct
import tempfile
from typing import Any, BinaryIO, Callable, Dict, List, Optional, Sequence, Tuple, Union

__all__ = ["open_output", "OutputFile", "write_safetensors", "SafetensorsEntry", "to_uri",
           "split_s3_uri"]

MIN_PART_BYTES = 5 << 20
DEFAULT_PART_BYTES = 64 << 20

_DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}


def split_s3_uri(uri: str) -> Tuple[str, str]:
    rest = uri[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not bucket or not key:
        raise ValueError(f"{uri}: expected s3://bucket/key")
    return bucket, key


def to_uri(path_or_uri: str) -> str:
    """`s3://...` and `file://...` unchanged; a path becomes file:// + its absolute path."""
    if path_or_uri.startswith(("s3://", "file://")):
        return path_or_uri
    return "file://" + os.path.abspath(path_or_uri)


class OutputFile:
    """A write-only byte sink: write() then commit(), or abort()."""

    uri: str

    def write(self, data: Union[bytes, bytearray, memoryview]) -> None:
        raise NotImplementedError

    def commit(self) -> str:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> "OutputFile":
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is not None:
            self.abort()


class _LocalFile(OutputFile):
    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.uri = "file://" + self.path
        d = os.path.dirname(self.path)
        os.makedirs(d, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=d)
        self.f: Optional[BinaryIO] = os.fdopen(fd, "wb")

    def write(self, data: Union[bytes, bytearray, memoryview]) -> None:
        assert self.f is not None
        self.f.write(data)

    def commit(self) -> str:
        assert self.f is not None
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        self.f = None
        os.chmod(self.tmp, 0o644)
        os.replace(self.tmp, self.path)
        return self.uri

    def abort(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


def s3_client(s3_endpoint: Optional[str] = None, s3_region: Optional[str] = None) -> Any:
    """A boto3 S3 client: credentials from the usual chain (AWS_ACCESS_KEY_ID, profiles,
    instance roles); `s3_endpoint` (as nvfp4d's --s3_endpoint; default $AWS_ENDPOINT_URL or AWS)
    uses path-style addressing."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError as e:
        raise ImportError("s3:// needs boto3: pip install 'nvfp4-client[s3]'") from e
    kwargs: Dict[str, Any] = {}
    if s3_endpoint:
        kwargs["endpoint_url"] = s3_endpoint
        kwargs["config"] = Config(s3={"addressing_style": "path"})
    region = s3_region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region_name"] = region
    return boto3.client("s3", **kwargs)


class _S3File(OutputFile):
    """Streams to S3: one PutObject when the whole file fits in a part, else a multipart upload
    (parts of `part_bytes`), completed on commit() and aborted on abort()."""

    def __init__(self, uri: str, client: Any, part_bytes: int):
        self.uri = uri
        self.bucket, self.key = split_s3_uri(uri)
        self.s3 = client
        self.part_bytes = max(MIN_PART_BYTES, part_bytes)
        self.buf = bytearray()
        self.upload_id: Optional[str] = None
        self.parts: List[Dict[str, Any]] = []

    def _flush_part(self) -> None:
        if self.upload_id is None:
            self.upload_id = self.s3.create_multipart_upload(Bucket=self.bucket,
                                                             Key=self.key)["UploadId"]
        n = len(self.parts) + 1
        r = self.s3.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                PartNumber=n, Body=bytes(self.buf[:self.part_bytes]))
        self.parts.append({"PartNumber": n, "ETag": r["ETag"]})
        del self.buf[:self.part_bytes]

    def write(self, data: Union[bytes, bytearray, memoryview]) -> None:
        self.buf += data
        while len(self.buf) >= self.part_bytes + MIN_PART_BYTES:
            self._flush_part()  # keep >= 5 MiB back so the last part is never too small

    def commit(self) -> str:
        try:
            if self.upload_id is None:
                self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=bytes(self.buf))
            else:
                while len(self.buf) > self.part_bytes:
                    self._flush_part()
                if self.buf:
                    self._flush_part()
                self.s3.complete_multipart_upload(
                    Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                    MultipartUpload={"Parts": self.parts})
        except BaseException:
            self.abort()
            raise
        self.buf = bytearray()
        return self.uri

    def abort(self) -> None:
        if self.upload_id is not None:
            try:
                self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key,
                                               UploadId=self.upload_id)
            finally:
                self.upload_id = None
        self.buf = bytearray()


def open_output(uri: str, s3_endpoint: Optional[str] = None, s3_region: Optional[str] = None,
                part_bytes: int = DEFAULT_PART_BYTES, s3: Any = None) -> OutputFile:
    """An OutputFile for a path, file:// URI or s3:// URI (`s3`: a boto3 client to use)."""
    if uri.startswith("s3://"):
        return _S3File(uri, s3 or s3_client(s3_endpoint, s3_region), part_bytes)
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    return _LocalFile(uri)


# (name, safetensors dtype, shape, producer of the bytes: a callable returning a buffer)
SafetensorsEntry = Tuple[str, str, Sequence[int], Callable[[], Any]]


def safetensors_header(entries: Sequence[SafetensorsEntry],
                       metadata: Optional[Dict[str, str]] = None) -> Tuple[bytes, int]:
    """The 8-byte length + JSON header (padded to 8 bytes) and the data size."""
    header: Dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, dtype, shape, _ in entries:
        n = _DTYPE_BYTES[dtype]
        for d in shape:
            n *= int(d)
        header[name] = {"dtype": dtype, "shape": [int(d) for d in shape],
                        "data_offsets": [offset, offset + n]}
        offset += n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h, offset


def write_safetensors(out: OutputFile, entries: Sequence[SafetensorsEntry],
                      metadata: Optional[Dict[str, str]] = None) -> int:
    """Writes a safetensors file entry by entry: only one tensor's bytes exist at a time.
    Returns the file size."""
    head, size = safetensors_header(entries, metadata)
    out.write(head)
    for name, dtype, shape, produce in entries:
        data = memoryview(produce()).cast("B")
        n = _DTYPE_BYTES[dtype]
        for d in shape:
            n *= int(d)
        if data.nbytes != n:
            raise ValueError(f"{name}: {data.nbytes} bytes, expected {n} for {dtype} {list(shape)}")
        out.write(data)
    return len(head) + size
