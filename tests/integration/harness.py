"""Helpers for the integration tests: start real nvfp4d processes, run nvfp4ctl, write checkpoints.

Binaries come from the environment (NVFP4D, NVFP4CTL), set by CTest.
"""
import hashlib
import json
import os
import random
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request

NVFP4D = os.environ.get("NVFP4D", "nvfp4d")
NVFP4CTL = os.environ.get("NVFP4CTL", "nvfp4ctl")


def bf16_bytes(n, seed, scale=0.02):
    rng = random.Random(seed)
    out = bytearray(2 * n)
    for i in range(n):
        f = struct.pack("<f", rng.gauss(0.0, scale))
        out[2 * i:2 * i + 2] = f[2:4]
    return bytes(out)


def fast_bf16(n, seed):
    """n finite bf16 values in +-[2^-7, 2^-3), random signs and mantissas."""
    data = bytearray(random.Random(seed).randbytes(2 * n))
    # High byte: sign | 0x3C | one random exponent bit: biased exponents 120..123.
    data[1::2] = bytes(data[1::2]).translate(bytes((b & 0x81) | 0x3C for b in range(256)))
    return bytes(data)


def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, dtype, shape, bytes)."""
    header = {}
    offset = 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _, _, _, data in tensors:
            f.write(data)


def write_llama_checkpoint(directory, layers=2, hidden=256, inter=512, seed=0):
    """A tiny Llama-shaped checkpoint (bf16) with config.json and a tokenizer file."""
    os.makedirs(directory, exist_ok=True)
    t = []
    s = seed
    t.append(("model.embed_tokens.weight", "BF16", [64, hidden], bf16_bytes(64 * hidden, s)))
    for l in range(layers):
        p = f"model.layers.{l}."
        for name, shape in [("self_attn.q_proj", [hidden, hidden]), ("self_attn.k_proj", [hidden // 4, hidden]),
                            ("self_attn.v_proj", [hidden // 4, hidden]), ("self_attn.o_proj", [hidden, hidden]),
                            ("mlp.gate_proj", [inter, hidden]), ("mlp.up_proj", [inter, hidden]),
                            ("mlp.down_proj", [hidden, inter])]:
            s += 1
            t.append((p + name + ".weight", "BF16", shape, bf16_bytes(shape[0] * shape[1], s)))
        t.append((p + "input_layernorm.weight", "BF16", [hidden], bf16_bytes(hidden, s + 100)))
    t.append(("lm_head.weight", "BF16", [64, hidden], bf16_bytes(64 * hidden, s + 7)))
    write_safetensors(os.path.join(directory, "model.safetensors"), t, {"format": "pt"})
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump({"architectures": ["LlamaForCausalLM"], "hidden_size": hidden, "num_hidden_layers": layers}, f)
    with open(os.path.join(directory, "tokenizer.json"), "w") as f:
        f.write('{"version": "1.0"}\n')
    return [name for name, _, _, _ in t]


class RoundRobinProxy:
    """A TCP proxy on 127.0.0.1:0 that sends each new connection to the next backend in turn, as an
    L4 load balancer does: a client that reconnects (e.g. after a GOAWAY) lands on another replica.
    `connections` lists the backend chosen for each accepted connection."""

    def __init__(self, backends, upload_rate=None, latency=0.0):
        self.backends = list(backends)  # "host:port"
        self.connections = []
        # Optional link model (bench/s3_upload_bench.py): each connection's client-to-backend
        # bytes wait `latency` seconds before the first one and then flow at most `upload_rate`
        # bytes/s.
        self.upload_rate, self.latency = upload_rate, latency
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.address = f"127.0.0.1:{self._sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return  # closed
            backend = self.backends[len(self.connections) % len(self.backends)]
            self.connections.append(backend)
            host, port = backend.rsplit(":", 1)
            try:
                upstream = socket.create_connection((host, int(port)), timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for src, dst, up in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pipe, args=(src, dst, up), daemon=True).start()

    def _pipe(self, src, dst, up):
        throttle = up and (self.upload_rate or self.latency)
        start, sent = None, 0
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                if throttle:
                    if start is None:
                        time.sleep(self.latency)
                        start = time.time()
                    sent += len(data)
                    ahead = sent / self.upload_rate - (time.time() - start) if self.upload_rate else 0
                    if ahead > 0:
                        time.sleep(ahead)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            src.close()

    def close(self):
        self._sock.close()


class Server:
    """A real nvfp4d process on port 0."""

    def __init__(self, data_root, extra_args=(), env=None):
        self.dir = tempfile.mkdtemp(prefix="nvfp4d-it-")
        self.ready = os.path.join(self.dir, "ready.json")
        self.log_path = os.path.join(self.dir, "nvfp4d.log")
        args = [NVFP4D, "--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0",
                f"--data_root={data_root}", f"--ready_file={self.ready}", "--devices=cpu",
                "--heartbeat_seconds=1", f"--state_dir={os.path.join(self.dir, 'state')}"] + list(extra_args)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, **(env or {})))
        deadline = time.time() + 30
        while not os.path.exists(self.ready):
            if self.proc.poll() is not None:
                raise RuntimeError("nvfp4d exited early:\n" + self.logs())
            if time.time() > deadline:
                raise RuntimeError("nvfp4d did not become ready:\n" + self.logs())
            time.sleep(0.05)
        with open(self.ready) as f:
            ports = json.load(f)
        self.port = ports["grpc_port"]
        self.metrics_port = ports["metrics_port"]
        self.health_port = ports.get("health_port", 0)
        self.address = f"127.0.0.1:{self.port}"

    def logs(self):
        self.log.flush()
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            return r.read().decode()

    def metric_value(self, name_with_labels):
        for line in self.metrics().splitlines():
            if line.startswith(name_with_labels + " "):
                return float(line.split()[-1])
        return 0.0

    def terminate(self, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.log.close()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def ctl(*args, timeout=300):
    """Runs nvfp4ctl; returns CompletedProcess with text output."""
    return subprocess.run([NVFP4CTL] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout)


def get_job(server, job_id):
    """`nvfp4ctl jobs get --json` through `server` (anything with .address), as a dict."""
    r = ctl("jobs", "get", job_id, "--server", server.address, "--json")
    if r.returncode != 0:
        raise AssertionError(f"jobs get {job_id} through {server.address}: {r.returncode}\n"
                             f"{r.stderr}")
    return json.loads(r.stdout)


def progress(job, key):
    """An integer field of a job's progress (0 when absent, as proto3 JSON omits it)."""
    return int(job.get("progress", {}).get(key, 0))


def digests(root):
    """Relative path -> sha256 of every file below `root`."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            out[os.path.relpath(p, root)] = h.hexdigest()
    return out


def start_moto(workdir, setup_actions):
    """Starts moto_server on a free 127.0.0.1 port, serving `setup_actions` requests
    unauthenticated before it verifies every signature; logs to workdir/moto.log. Returns (process,
    endpoint URL, open log file). Raises (never skips) without moto_server or boto3."""
    import shutil
    import socket
    moto = shutil.which("moto_server")
    if moto is None:
        raise AssertionError("moto_server not found: install moto[server] (CI installs it)")
    import boto3  # noqa: F401  (required, like moto)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    log = open(os.path.join(workdir, "moto.log"), "wb")
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(setup_actions))
    proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
            return proc, endpoint, log
        except Exception:
            if time.time() > deadline or proc.poll() is not None:
                raise AssertionError("moto_server did not start")
            time.sleep(0.2)


class MotoS3:
    """A real S3 API server (moto_server on 127.0.0.1) that verifies SigV4 signatures, with an IAM
    user allowed s3:* and one bucket. Raises (never skips) without moto."""

    SETUP_ACTIONS = 4  # served unauthenticated before moto verifies every request (the IAM setup)

    def __init__(self, bucket):
        import boto3
        self.bucket = bucket
        self.dir = tempfile.mkdtemp(prefix="nvfp4-moto-")
        self.proc, self.endpoint, self.log = start_moto(self.dir, self.SETUP_ACTIONS)
        iam = boto3.client("iam", endpoint_url=self.endpoint, region_name="us-east-1",
                           aws_access_key_id="setup", aws_secret_access_key="setup")
        iam.create_user(UserName="nvfp4")
        iam.put_user_policy(UserName="nvfp4", PolicyName="s3-all", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="nvfp4")["AccessKey"]
        self.key_id, self.secret = key["AccessKeyId"], key["SecretAccessKey"]
        self.s3 = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                               aws_access_key_id=self.key_id, aws_secret_access_key=self.secret)
        self.s3.create_bucket(Bucket=bucket)

    def server_env(self):
        return {"AWS_ACCESS_KEY_ID": self.key_id, "AWS_SECRET_ACCESS_KEY": self.secret,
                "AWS_REGION": "us-east-1"}

    def stop(self):
        import shutil
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
