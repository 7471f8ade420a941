"""Hardening (issue 12), with the real nvfp4d and nvfp4ctl over loopback:
item 1: request fields over their limits and locations that cannot work are refused at submit
        (INVALID_ARGUMENT / PERMISSION_DENIED naming the field) and never become jobs;
item 2: a tensor name that is not UTF-8 fails its job with INVALID_ARGUMENT naming it escaped, a
        file name that is not UTF-8 is copied and recorded escaped; GetJob/ListJobs keep working,
        before and after a restart, and neither job runs again;
item 3: QuantizeTensor streams that send only a header are closed with DEADLINE_EXCEEDED after
        --tensor_stream_idle_timeout (a trickling one after --tensor_stream_deadline) and their
        slots serve others; WatchJob streams beyond --max_watch_streams get RESOURCE_EXHAUSTED,
        and keepalive reaps the watch stream of a frozen client;
item 4: `nvfp4ctl jobs watch` re-attaches across a SIGTERM drain and a restart that comes later
        than the old client waited (about 13 s) and ends with the job's SUCCEEDED;
item 5: a tensor name with a newline and a NUL byte neither forges nor breaks log lines, in the
        text format (the default) and in --log_format=json (one object per line);
item 6: the --health_listen port serves no reflection; a NaN/Inf in a copied tensor is a warning
        in the job (and the CLI), or fails the job with --strict.

The gRPC-level clients (item 3, the reflection call) run in the Python client venv of
scripts/test_extra.d/20-python-client.sh (grpcio + grpcio-tools; FAILS without it)."""
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

from harness import (NVFP4CTL, Server, bf16_bytes, ctl, fast_bf16, get_job,
                     write_llama_checkpoint, write_safetensors)

HERE = os.path.dirname(os.path.abspath(__file__))
PY_CLIENT = os.path.normpath(os.path.join(HERE, "..", "..", "client", "python"))
VENV = os.environ.get("NVFP4_PY_CLIENT_VENV", os.path.expanduser("~/.cache/nvfp4-py-client-venv"))
VENV_PY = os.path.join(VENV, "bin", "python")

FORGED = "1970-01-01T00:00:00.000Z nvfp4d job job-0 state RUNNING->SUCCEEDED"


def submit(server, inp, out):
    return ctl("quantize-model", "--server", server.address, "--input", inp, "--output", out,
               "--method", "rtn", "--detach", "--json")


def list_jobs(server):
    r = ctl("jobs", "list", "--server", server.address, "--json")
    if r.returncode != 0:
        raise AssertionError(f"jobs list failed: {r.stderr}")
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def wait_finished(server, job_id, timeout=60):
    deadline = time.time() + timeout
    while True:
        r = ctl("jobs", "get", job_id, "--server", server.address, "--json")
        job = json.loads(r.stdout)
        if job["state"] in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"):
            return job
        if time.time() > deadline:
            raise AssertionError(f"{job_id} not finished: {job}")
        time.sleep(0.1)


class HardeningTest(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="nvfp4-hard-root-")
        self.outside = tempfile.mkdtemp(prefix="nvfp4-hard-outside-")
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            s.kill()
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.outside, ignore_errors=True)

    def start(self, *args):
        s = Server(self.root, args)
        self.servers.append(s)
        return s

    def test_bad_requests_are_refused_at_submit(self):
        s = self.start()
        model = os.path.join(self.root, "llama")
        write_llama_checkpoint(model, layers=1, hidden=64, inter=128)
        m = "file://" + model
        cases = [
            # (input, output, expected code, texts in the message)
            (m + "/" + "a" * 100000, m + "-q", "INVALID_ARGUMENT", ["input_uri", "4096",
                                                                 "--max_uri_bytes"]),
            (m, "file://" + os.path.join(self.outside, "q"), "PERMISSION_DENIED",
             ["output_uri", "outside the allowed data roots"]),
            ("file://" + self.outside, m + "-q", "PERMISSION_DENIED", ["input_uri"]),
            (m, m + "/q", "INVALID_ARGUMENT", ["output_uri must not be inside input_uri"]),
            (m, m + "/", "INVALID_ARGUMENT", ["output_uri must differ from input_uri"]),
            ("s3://bucket/llama", m + "-q", "FAILED_PRECONDITION", ["input_uri", "--s3_endpoint"]),
            (m + "\nforged", m + "-q", "INVALID_ARGUMENT", ["control byte 0x0a"]),
        ]
        for inp, out, code, texts in cases:
            r = submit(s, inp, out)
            self.assertNotEqual(r.returncode, 0, f"{inp[:80]!r} -> {out!r} was accepted: {r.stdout[:300]}")
            self.assertIn(code, r.stderr, r.stderr[:500])
            for t in texts:
                self.assertIn(t, r.stderr, r.stderr[:500])
            self.assertLess(len(r.stderr), 2000, "the error echoes the oversized field")
        self.assertEqual(list_jobs(s), [], "a refused request became a job")
        r = ctl("quantize-model", "--server", s.address, "--input", m, "--output", m + "-q",
                "--method", "rtn", "--detach", "--json", "--exclude", "x" * 2000)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("exclude_patterns[0] is 2000 bytes", r.stderr)
        r = submit(s, m, m + "-q")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(list_jobs(s)), 1)
        # Limits follow their flags.
        s2 = self.start("--max_uri_bytes=64")
        r = submit(s2, m, m + "-" + "q" * 64)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("over the limit of 64 (--max_uri_bytes)", r.stderr)

    def failing_job_with_hostile_name(self, server):
        """A checkpoint whose tensor name holds a newline, a forged log line and a NUL byte, and
        whose data does not match its shape: the job fails naming the tensor."""
        model = os.path.join(self.root, "evil")
        os.makedirs(model)
        name = "model.norm\n" + FORGED + "\x00tail.weight"
        write_safetensors(os.path.join(model, "model.safetensors"),
                          [("model.embed_tokens.weight", "BF16", [64, 64], bf16_bytes(64 * 64, 1)),
                           (name, "BF16", [4, 16], bf16_bytes(5, 2))], {"format": "pt"})
        with open(os.path.join(model, "config.json"), "w") as f:
            json.dump({"architectures": ["LlamaForCausalLM"]}, f)
        r = submit(server, "file://" + model, "file://" + model + "-q")
        self.assertEqual(r.returncode, 0, r.stderr)
        job = wait_finished(server, json.loads(r.stdout)["job_id"])
        self.assertEqual(job["state"], "JOB_STATE_FAILED", job)
        self.assertIn("\n", job["error"]["message"], "the error should name the raw tensor")
        return job["job_id"]

    def test_text_log_escapes_control_bytes(self):
        s = self.start()
        job_id = self.failing_job_with_hostile_name(s)
        s.terminate()
        with open(s.log_path, "rb") as f:
            raw = f.read()
        self.assertNotIn(b"\x00", raw, "a NUL byte reached the log")
        lines = raw.decode("utf-8").splitlines()
        for line in lines:
            self.assertRegex(line, r"^\d{4}-\d\d-\d\dT\S+Z nvfp4d ", f"not a log line: {line!r}")
        self.assertFalse([l for l in lines if l.startswith(FORGED)], "a log line was forged")
        failed = [l for l in lines if job_id in l and "RUNNING->FAILED" in l]
        self.assertEqual(len(failed), 1, lines)
        self.assertIn("model.norm\\n" + FORGED + "\\x00tail.weight", failed[0])

    def test_json_log_is_one_object_per_line(self):
        s = self.start("--log_format=json")
        job_id = self.failing_job_with_hostile_name(s)
        s.terminate()
        with open(s.log_path, "rb") as f:
            raw = f.read()
        self.assertNotIn(b"\x00", raw)
        records = [json.loads(line) for line in raw.decode("utf-8").splitlines()]
        for rec in records:
            for key in ("time", "level", "event", "job_id", "message", "fields"):
                self.assertIn(key, rec, rec)
            self.assertRegex(rec["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        events = [r["event"] for r in records]
        self.assertIn("serving", events)
        mine = [r for r in records if r["job_id"] == job_id]
        self.assertEqual([(r["fields"]["from"], r["fields"]["to"]) for r in mine
                          if r["event"] == "job.state"],
                         [("NEW", "QUEUED"), ("QUEUED", "RUNNING"), ("RUNNING", "FAILED")])
        failed = mine[-1]
        self.assertEqual(failed["level"], "error")
        self.assertIn("model.norm\\n" + FORGED + "\\x00tail.weight", failed["fields"]["error"])

    def test_bad_log_format_is_a_usage_error(self):
        with self.assertRaises(RuntimeError) as e:
            self.start("--log_format=xml")
        self.assertIn("--log_format must be text or json", str(e.exception))


# ---------------------------------------------------------------------------------------------
# Item 2: names that are not UTF-8

def raw_safetensors(path, tensors):
    """Like write_safetensors, but names are bytes written into the header as they are (a JSON
    writer would escape them)."""
    header, offset, blobs = [], 0, []
    for name, dtype, shape, data in tensors:
        entry = json.dumps({"dtype": dtype, "shape": shape,
                            "data_offsets": [offset, offset + len(data)]}).encode()
        header.append(b'"' + name + b'":' + entry)
        offset += len(data)
        blobs.append(data)
    h = b"{" + b",".join(header) + b"}"
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


class ServerTestCase(unittest.TestCase):
    """A data root with servers and client processes that are all stopped afterwards."""

    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="nvfp4-hard-root-")
        self.state = os.path.join(self.root, "state")
        self.servers, self.procs = [], []

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
        for s in self.servers:
            s.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def start(self, *args):
        s = Server(self.root, list(args))
        self.servers.append(s)
        return s

    def spawn(self, argv):
        p = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p


class NonUtf8NamesTest(ServerTestCase):

    def test_names_that_are_not_utf8(self):
        s = self.start(f"--state_dir={self.state}")
        # A tensor name with the bytes ff fe: the job fails naming it (escaped) and the file.
        bad = os.path.join(self.root, "bad-tensor")
        os.makedirs(bad)
        raw_safetensors(os.path.join(bad, "model.safetensors"),
                        [(b"model.embed_tokens.weight", "BF16", [64, 64], fast_bf16(64 * 64, 1)),
                         (b"model.layers.0.mlp.w\xff\xfe.weight", "BF16", [64, 64],
                          fast_bf16(64 * 64, 2))])
        with open(os.path.join(bad, "config.json"), "w") as f:
            json.dump({"architectures": ["LlamaForCausalLM"]}, f)
        r = submit(s, "file://" + bad, "file://" + bad + "-q")
        self.assertEqual(r.returncode, 0, r.stderr)
        failed_id = json.loads(r.stdout)["job_id"]
        job = wait_finished(s, failed_id)
        self.assertEqual(job["state"], "JOB_STATE_FAILED", job)
        self.assertEqual(job["error"]["code"], 3, job)  # INVALID_ARGUMENT
        msg = job["error"]["message"]
        self.assertIn("model.safetensors", msg)
        self.assertIn("not valid UTF-8", msg)
        self.assertIn("model.layers.0.mlp.w\\xff\\xfe.weight", msg)

        # A file name with the byte ff next to a good checkpoint: copied as it is, recorded
        # escaped.
        good = os.path.join(self.root, "good")
        write_llama_checkpoint(good, layers=1, hidden=64, inter=128)
        odd = os.path.join(good.encode(), b"notes-\xff.txt")
        with open(odd, "wb") as f:
            f.write(b"not utf-8 name\n")
        r = submit(s, "file://" + good, "file://" + good + "-q")
        self.assertEqual(r.returncode, 0, r.stderr)
        ok_id = json.loads(r.stdout)["job_id"]
        job = wait_finished(s, ok_id)
        self.assertEqual(job["state"], "JOB_STATE_SUCCEEDED", job)
        names = [o["name"] for o in job["outputs"]]
        self.assertIn("notes-\\xff.txt", names)
        copied = os.path.join((good + "-q").encode(), b"notes-\xff.txt")
        with open(copied, "rb") as f:
            self.assertEqual(f.read(), b"not utf-8 name\n")

        # Every client can still read every job, and ListJobs pages include both.
        def check_readable(server):
            listed = {j["job_id"]: j["state"] for j in list_jobs(server)}
            self.assertEqual(listed, {failed_id: "JOB_STATE_FAILED", ok_id: "JOB_STATE_SUCCEEDED"})
            for job_id in (failed_id, ok_id):
                r = ctl("jobs", "get", job_id, "--server", server.address)
                self.assertEqual(r.returncode in (0, 3), True, r.stderr)
        check_readable(s)
        before = os.stat(os.path.join(good + "-q", "model.safetensors")).st_mtime_ns

        # After a restart on the same state: same records, and neither job runs again.
        self.assertEqual(s.terminate(), 0)
        s2 = self.start(f"--state_dir={self.state}")
        check_readable(s2)
        self.assertEqual(get_job(s2, failed_id)["error"]["message"], msg)
        time.sleep(1)
        logs = s2.logs()
        self.assertNotIn("restored QUEUED", logs)
        self.assertNotIn("QUEUED->RUNNING", logs)
        self.assertNotIn("skipping", logs)
        self.assertEqual(os.stat(os.path.join(good + "-q", "model.safetensors")).st_mtime_ns,
                         before)


# ---------------------------------------------------------------------------------------------
# Items 3 and 6: gRPC-level clients in the Python client venv

GRPC_CLIENT = r"""
import sys, threading, time
sys.path.insert(0, sys.argv[1])
import generate_stubs
sys.path.insert(0, generate_stubs.generate(sys.argv[2]))
import grpc
from nvfp4.v1 import quantizer_pb2 as pb, quantizer_pb2_grpc as pb_grpc
address, mode, args = sys.argv[3], sys.argv[4], sys.argv[5:]
channel = grpc.insecure_channel(address)
stub = pb_grpc.QuantizerStub(channel)
print_lock = threading.Lock()


def tensor_stream(i, trickle):
    stop = threading.Event()

    def requests():
        yield pb.QuantizeTensorRequest(header=pb.TensorHeader(
            name="idle.weight", dtype=pb.DTYPE_BF16, shape=[16, 64],
            options=pb.QuantizeOptions(method=pb.METHOD_RTN)))
        for n in range(31):  # 31 of the 32 chunks of 64 bytes: never complete
            if stop.wait(0.5 if trickle else 3600):
                return
            yield pb.QuantizeTensorRequest(chunk=pb.DataChunk(
                part=pb.PART_SOURCE, offset=64 * n, data=bytes(64)))
        stop.wait(3600)

    t0 = time.time()
    try:
        for _ in stub.QuantizeTensor(requests()):
            pass
        line = f"END {i} OK {time.time() - t0:.1f} -"
    except grpc.RpcError as e:
        line = f"END {i} {e.code().name} {time.time() - t0:.1f} {e.details()}"
    finally:
        stop.set()
    with print_lock:  # one whole line per stream: print() writes the text and its newline apart
        print(line, flush=True)


if mode in ("idle", "trickle"):
    threads = [threading.Thread(target=tensor_stream, args=(i, mode == "trickle"))
               for i in range(int(args[0]))]
    for t in threads:
        t.start()
    print("OPEN", flush=True)
    for t in threads:
        t.join()
elif mode == "reflection":
    call = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        replies = list(call(iter([b"\x3a\x00"]), timeout=10))  # list_services: ""
        print("REFLECTION OK", len(replies), flush=True)
    except grpc.RpcError as e:
        print("REFLECTION", e.code().name, flush=True)
elif mode == "watch":
    try:
        for ev in stub.WatchJob(pb.WatchJobRequest(job_id=args[0], heartbeat_seconds=1)):
            print("EVENT", pb.EventType.Name(ev.type), flush=True)
        print("END OK", flush=True)
    except grpc.RpcError as e:
        print("END", e.code().name, e.details(), flush=True)
"""


def venv_ready():
    if not os.path.exists(VENV_PY):
        return False
    return subprocess.run([VENV_PY, "-c", "import grpc, grpc_tools.protoc"],
                          capture_output=True).returncode == 0


class GrpcClientTest(ServerTestCase):
    """Tests that need a raw gRPC client."""

    @classmethod
    def setUpClass(cls):
        if not venv_ready():
            raise AssertionError(f"FAIL: {VENV_PY} with grpcio and grpcio-tools is missing: run "
                                 "scripts/test_extra.d/20-python-client.sh")

    def client(self, address, mode, *args):
        stubs = os.path.join(self.root, "stubs")
        return self.spawn([VENV_PY, "-c", GRPC_CLIENT, PY_CLIENT, stubs, address, mode, *args])

    def quantize_small_tensor(self, server):
        src = os.path.join(self.root, "small.safetensors")
        if not os.path.exists(src):
            write_safetensors(src, [("w", "BF16", [64, 256], fast_bf16(64 * 256, 5))])
        return ctl("quantize-tensor", "--server", server.address, "--input", src, "--output",
                   os.path.join(self.root, "small-out.safetensors"), "--method", "rtn",
                   timeout=60)

    def test_idle_tensor_streams_are_closed_and_free_their_slots(self):
        s = self.start("--queue_capacity=2", "--tensor_stream_idle_timeout=3s")
        p = self.client(s.address, "idle", 2)
        self.assertEqual(p.stdout.readline().strip(), "OPEN", p.stderr.read() if p.poll() else "")
        # Both slots taken: another caller is refused meanwhile.
        deadline = time.time() + 2.5
        refused = False
        while time.time() < deadline and not refused:
            r = self.quantize_small_tensor(s)
            refused = r.returncode != 0 and "too many tensors in flight (2)" in r.stderr
        self.assertTrue(refused, "the header-only streams held no slot")
        ends = [p.stdout.readline().split(" ", 4) for _ in range(2)]
        for end in ends:
            self.assertEqual(end[0], "END", ends)
            self.assertEqual(end[2], "DEADLINE_EXCEEDED", ends)
            self.assertLess(float(end[3]), 10.0, ends)
            self.assertIn("no QuantizeTensor message for 3s", end[4])
            self.assertIn("--tensor_stream_idle_timeout", end[4])
        r = self.quantize_small_tensor(s)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_tensor_stream_deadline(self):
        s = self.start("--queue_capacity=1", "--tensor_stream_idle_timeout=2s",
                       "--tensor_stream_deadline=4s")
        p = self.client(s.address, "trickle", 1)  # a chunk every 0.5 s: never idle
        self.assertEqual(p.stdout.readline().strip(), "OPEN")
        end = p.stdout.readline().split(" ", 4)
        self.assertEqual(end[2], "DEADLINE_EXCEEDED", end)
        self.assertGreaterEqual(float(end[3]), 3.5, end)
        self.assertIn("--tensor_stream_deadline", end[4])
        r = self.quantize_small_tensor(s)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_health_port_serves_no_reflection(self):
        port = free_port()
        s = self.start(f"--health_listen=127.0.0.1:{port}")
        main = self.client(s.address, "reflection")
        self.assertEqual(main.communicate(timeout=60)[0].split()[:2], ["REFLECTION", "OK"])
        health = self.client(f"127.0.0.1:{s.health_port}", "reflection")
        out, err = health.communicate(timeout=60)
        self.assertEqual(out.split(), ["REFLECTION", "UNIMPLEMENTED"], err)
        r = ctl("health", "--server", f"127.0.0.1:{s.health_port}")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("SERVING", r.stdout)

    def test_watch_stream_cap_and_keepalive(self):
        s = self.start("--max_watch_streams=1", "--keepalive_time_seconds=1",
                       "--keepalive_timeout_seconds=1")
        job_id = submit_slow_job(self, s)
        first = self.client(s.address, "watch", job_id)
        self.assertEqual(first.stdout.readline().split(), ["EVENT", "EVENT_TYPE_SNAPSHOT"])
        second = self.client(s.address, "watch", job_id)
        out = second.communicate(timeout=60)[0]
        self.assertIn("END RESOURCE_EXHAUSTED", out)
        self.assertIn("--max_watch_streams", out)
        # A frozen client answers no keepalive ping: its connection is dropped and its watch
        # stream ends, freeing the slot.
        os.kill(first.pid, signal.SIGSTOP)
        try:
            deadline = time.time() + 30
            while True:
                third = self.client(s.address, "watch", job_id)
                line = third.stdout.readline()
                if line.split() == ["EVENT", "EVENT_TYPE_SNAPSHOT"]:
                    break
                third.wait()
                self.assertLess(time.time(), deadline, f"the frozen client keeps its slot: {line}")
                time.sleep(0.5)
        finally:
            os.kill(first.pid, signal.SIGCONT)
        ctl("jobs", "cancel", job_id, "--server", s.address)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def submit_slow_job(test, server, name="slow"):
    """A model job that runs for a while on the CPU (bigger matrices, the default soar method)."""
    model = os.path.join(test.root, name)
    if not os.path.exists(model):
        write_big_llama(model)
    r = ctl("quantize-model", "--server", server.address, "--input", "file://" + model,
            "--output", "file://" + model + "-q", "--detach", "--json")
    test.assertEqual(r.returncode, 0, r.stderr)
    return json.loads(r.stdout)["job_id"]


def write_big_llama(directory, layers=4, hidden=1024, inter=2048):
    os.makedirs(directory)
    t = [("model.embed_tokens.weight", "BF16", [256, hidden], fast_bf16(256 * hidden, 0))]
    for l in range(layers):
        p = f"model.layers.{l}."
        for i, (n, shape) in enumerate([("self_attn.q_proj", [hidden, hidden]),
                                        ("self_attn.o_proj", [hidden, hidden]),
                                        ("mlp.gate_proj", [inter, hidden]),
                                        ("mlp.up_proj", [inter, hidden]),
                                        ("mlp.down_proj", [hidden, inter])]):
            t.append((p + n + ".weight", "BF16", shape, fast_bf16(shape[0] * shape[1], 10 * l + i)))
        t.append((p + "input_layernorm.weight", "BF16", [hidden], fast_bf16(hidden, 99)))
    write_safetensors(os.path.join(directory, "model.safetensors"), t, {"format": "pt"})
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump({"architectures": ["LlamaForCausalLM"], "num_hidden_layers": layers}, f)


# ---------------------------------------------------------------------------------------------
# Item 4: watchers through a drain and a restart

class WatchThroughDrainTest(ServerTestCase):
    def test_watch_reattaches_after_drain_and_late_restart(self):
        port = free_port()
        args = [f"--state_dir={self.state}", f"--listen=127.0.0.1:{port}", "--drain_timeout=1"]
        s = self.start(*args)
        job_id = submit_slow_job(self, s)
        watch = self.spawn([NVFP4CTL, "jobs", "watch", job_id, "--server", s.address])
        # Wait until the job made progress, then drain: it is interrupted (--drain_timeout=1).
        deadline = time.time() + 120
        while int(get_job(s, job_id)["progress"].get("tensors_done", 0)) < 2:
            self.assertLess(time.time(), deadline, "the job made no progress")
            time.sleep(0.1)
        self.assertEqual(s.terminate(), 0)
        # The old client gave up about 13 s after the stream ended; this restart comes later.
        time.sleep(20)
        if watch.poll() is not None:
            self.fail("the watcher gave up: " + watch.stderr.read())
        s2 = self.start(*args)
        # The journaled progress is reported at once, not 0 until the resumed run catches up.
        job = get_job(s2, job_id)
        self.assertGreaterEqual(int(job["progress"].get("tensors_done", 0)), 2, job)
        out, err = watch.communicate(timeout=300)
        self.assertEqual(watch.returncode, 0, f"{out}\n{err}\n{s2.logs()}")
        self.assertIn("SUCCEEDED", out)
        self.assertEqual(get_job(s2, job_id)["state"], "JOB_STATE_SUCCEEDED")


# ---------------------------------------------------------------------------------------------
# Item 6: NaN/Inf in a copied tensor

class NonFiniteCopiedTensorTest(ServerTestCase):
    def test_nan_in_a_norm_is_a_warning_or_fails_with_strict(self):
        self.server = self.start()
        model = os.path.join(self.root, "nan")
        write_llama_checkpoint(model, layers=1, hidden=64, inter=128)
        # model.layers.0.input_layernorm.weight: element 2 NaN (bf16 0x7fc0).
        path = os.path.join(model, "model.safetensors")
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
        begin = 8 + n + header["model.layers.0.input_layernorm.weight"]["data_offsets"][0]
        with open(path, "r+b") as f:
            f.seek(begin + 4)
            f.write(b"\xc0\x7f")
        m = "file://" + model
        r = ctl("quantize-model", "--server", self.server.address, "--input", m, "--output",
                m + "-q", "--method", "rtn")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("warning: tensor 'model.layers.0.input_layernorm.weight' (BF16, copied "
                      "unquantized) holds 1 NaN/Inf value", r.stdout)
        r = ctl("quantize-model", "--server", self.server.address, "--input", m, "--output",
                m + "-strict", "--method", "rtn", "--strict")
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)  # the job failed
        self.assertIn("error: tensor 'model.layers.0.input_layernorm.weight' (BF16, copied "
                      "unquantized) holds NaN/Inf values (strict", r.stdout)
        failed = list_jobs(self.server)[0]
        self.assertEqual(failed["state"], "JOB_STATE_FAILED")
        self.assertEqual(failed["error"]["code"], 3)  # INVALID_ARGUMENT
        self.assertTrue(failed["request"]["strict"])
        self.assertFalse(os.path.exists(model + "-strict"))
        # --local reports it too.
        r = ctl("quantize-model", "--local", "--input", model, "--output",
                os.path.join(self.root, "local-q"), "--method", "rtn", "--device", "cpu")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("holds 1 NaN/Inf value", r.stderr)


if __name__ == "__main__":
    unittest.main()
