"""The Python client package (client/python, nvfp4-client) against a real nvfp4d on port 0, run
from the wheel installed in a clean venv (scripts/test_extra.d/20-python-client.sh; FAILS, never
skips, without it):
  * the package comes from the wheel, stubs and py.typed included, without grpcio-tools;
  * one tensor quantized through it is byte-identical to nvfp4ctl quantize-tensor --local (rtn,
    soar, and gptq with the Gram streamed as PART_GRAM chunks);
  * model jobs: submitted (idempotent request_id), watched with on_event / on_progress and a
    ProgressBar, listed by state, downloaded through the service (sha256-checked), cancelled;
    gptq jobs read their Grams from calibration_uri and fail naming a module without one;
  * UNAVAILABLE is retried with backoff (a server that comes up late), or not (retry=1);
  * watch re-attaches after the server is killed and restarted on the same state: the job
    resumes and the watch returns SUCCEEDED;
  * TLS, mutual TLS and bearer tokens (token=, token_file=, $NVFP4_TOKEN) as nvfp4ctl has them.
The calibration collector and examples/after_training.py: python_calibration_test.py."""
import os
import struct
import subprocess
import sys

VENV = os.environ.get("NVFP4_PY_CLIENT_TEST_VENV",
                      os.path.expanduser("~/.cache/nvfp4-py-client-test-venv"))
VENV_PY = os.path.join(VENV, "bin", "python")
if os.path.realpath(sys.prefix) != os.path.realpath(VENV):
    if not os.path.exists(VENV_PY):
        sys.exit(f"FAIL: {VENV_PY} missing: run scripts/test_extra.d/20-python-client.sh "
                 "(builds the nvfp4-client wheel and installs it into a clean venv)")
    os.execv(VENV_PY, [VENV_PY] + sys.argv)

import importlib.util  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402

import grpc  # noqa: E402
import numpy as np  # noqa: E402

import nvfp4_client  # noqa: E402  (from the wheel, never the source tree)
from nvfp4_client import Client, ProgressBar, RetryPolicy, state_name  # noqa: E402
from harness import Server, bf16_bytes, ctl, write_llama_checkpoint, write_safetensors  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    return {k: data[v["data_offsets"][0]:v["data_offsets"][1]]
            for k, v in header.items() if k != "__metadata__"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def openssl(*args, cwd):
    r = subprocess.run(["openssl"] + list(args), cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError("openssl " + " ".join(args) + " failed:\n" + r.stderr)


class PythonClientTest(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="nvfp4-py-root-")
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            s.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def start(self, *args, **kw):
        s = Server(self.root, list(args), **kw)
        self.servers.append(s)
        return s

    @property
    def server(self):
        if not self.servers:
            self.start()
        return self.servers[0]

    def test_installed_from_the_wheel(self):
        self.assertTrue(nvfp4_client.__file__.startswith(os.path.realpath(sys.prefix)) or
                        nvfp4_client.__file__.startswith(sys.prefix), nvfp4_client.__file__)
        pkg = os.path.dirname(nvfp4_client.__file__)
        for f in ("py.typed", "_proto/quantizer_pb2.py", "_proto/quantizer_pb2.pyi",
                  "_proto/quantizer_pb2_grpc.py"):
            self.assertTrue(os.path.exists(os.path.join(pkg, f)), f)
        self.assertIsNone(importlib.util.find_spec("grpc_tools"), "grpcio-tools at run time")
        self.assertEqual(nvfp4_client.pb.METHOD_GPTQ, 5)
        self.assertNotEqual(nvfp4_client.__version__, "0+unknown")
        with self.assertRaisesRegex(ValueError, "unknown gptq option"):
            nvfp4_client.client._options("gptq", "mse", "mse", 0, {"damping": 0.1})
        with self.assertRaisesRegex(ValueError, "unknown method 'gtpq'"):
            nvfp4_client.client._options("gtpq", "mse", "mse", 0)
        with self.assertRaisesRegex(ValueError, "go together"):
            Client("127.0.0.1:1", tls_cert="c.pem")

    def test_quantize_tensor_is_byte_identical_to_local_cli(self):
        src = os.path.join(self.root, "in.safetensors")
        data = bf16_bytes(256 * 512, 7)  # 256 KiB: several 64 KiB chunks each way
        write_safetensors(src, [("w", "BF16", [256, 512], data)])
        for method in ["rtn", "soar"]:
            out = os.path.join(self.root, f"local-{method}.safetensors")
            r = ctl("quantize-tensor", "--local", "--device", "cpu", "--input", src, "--output",
                    out, "--method", method)
            self.assertEqual(r.returncode, 0, r.stderr)
            local = read_safetensors(out)
            with Client(self.server.address, chunk_bytes=256 << 10) as c:
                q = c.quantize_tensor(data, name="w", dtype="bf16", shape=[256, 512],
                                      method=method, soar_max_iterations=15)
            self.assertEqual(q.packed, local["w"], method)
            self.assertEqual(q.scales, local["w_scale"], method)
            self.assertEqual(struct.pack("<f", q.global_scale), local["w_scale_2"], method)
            self.assertGreater(q.metrics["sqnr_db"], 0)
            self.assertEqual(q.device, "cpu")
        with Client(self.server.address) as c:
            q = c.quantize_tensor(np.random.default_rng(0).standard_normal((32, 64), np.float32),
                                  method="rtn")
            self.assertEqual((q.rows, q.cols, len(q.packed), len(q.scales)), (32, 64, 1024, 128))
            # A bad tensor is the server's INVALID_ARGUMENT, not retried.
            with self.assertRaises(grpc.RpcError) as e:
                c.quantize_tensor(np.zeros((4, 24), np.float32), method="rtn")
            self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

    def test_gptq_tensor_and_model_job(self):
        """gptq with the input Gram: a tensor over gRPC (PART_GRAM chunks) is byte-identical to
        nvfp4ctl quantize-tensor --local; a QuantizeModel job reads the Grams from its
        calibration_uri; a job whose calibration lacks a Gram fails naming the module."""
        rng = np.random.default_rng(3)

        def gram(k):
            z = rng.standard_normal((4 * k, k)).astype(np.float32)
            x = z + 0.7 * np.roll(z, -1, axis=1)
            return (x.T @ x).astype(np.float32)

        src = os.path.join(self.root, "in.safetensors")
        data = bf16_bytes(128 * 256, 5)
        write_safetensors(src, [("w", "BF16", [128, 256], data)])
        g = gram(256)
        cal = os.path.join(self.root, "cal.safetensors")
        write_safetensors(cal, [("w.input_gram", "F32", [256, 256], g.tobytes())])
        out = os.path.join(self.root, "local-gptq.safetensors")
        r = ctl("quantize-tensor", "--local", "--device", "cpu", "--input", src, "--output", out,
                "--method", "gptq", "--objective", "hessian", "--gptq-global-scale", "amax",
                "--calibration", cal, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        report = json.loads(r.stdout.splitlines()[0])
        self.assertEqual(report["method"], "gptq")
        self.assertEqual(report["gptq_dampening"], 0.01)
        local = read_safetensors(out)
        with Client(self.server.address, chunk_bytes=64 << 10) as c:
            q = c.quantize_tensor(data, name="w", dtype="bf16", shape=[128, 256], method="gptq",
                                  objective="hessian", gram=g, gptq={"global_scale": "amax"})
        self.assertEqual(q.packed, local["w"])
        self.assertEqual(q.scales, local["w_scale"])
        self.assertAlmostEqual(q.metrics["output_nmse"], report["output_nmse"], places=12)

        inp = os.path.join(self.root, "llama")
        write_llama_checkpoint(inp, layers=1, hidden=256, inter=512)
        p = "model.layers.0."
        grams = {"self_attn.q_proj": gram(256), "self_attn.o_proj": gram(256),
                 "mlp.gate_proj": gram(256), "mlp.down_proj": gram(512)}
        grams["self_attn.k_proj"] = grams["self_attn.v_proj"] = grams["self_attn.q_proj"]
        grams["mlp.up_proj"] = grams["mlp.gate_proj"]
        entries = [(p + m + ".input_gram", "F32", list(v.shape), v.tobytes())
                   for m, v in sorted(grams.items())]
        model_cal = os.path.join(self.root, "model-cal.safetensors")
        write_safetensors(model_cal, entries)
        partial_cal = os.path.join(self.root, "partial-cal.safetensors")
        write_safetensors(partial_cal, [e for e in entries if "down_proj" not in e[0]])
        with Client(self.server.address) as c:
            final = c.quantize_model("file://" + inp, "file://" + os.path.join(self.root, "gq"),
                                     method="gptq", calibration_uri="file://" + model_cal,
                                     gptq={"block_scales": "scalesweep", "global_scale": "amax"},
                                     wait=True)
            self.assertEqual(state_name(final.state), "SUCCEEDED", final.error.message)
            self.assertEqual(final.request.options.method, nvfp4_client.pb.METHOD_GPTQ)
            bad = c.quantize_model("file://" + inp, "file://" + os.path.join(self.root, "gq2"),
                                   method="gptq", calibration_uri="file://" + partial_cal)
            final = c.watch(bad.job_id)
            self.assertEqual(state_name(final.state), "FAILED")
            self.assertIn("model.layers.0.mlp.down_proj", final.error.message)
            self.assertIn("input_gram", final.error.message)

    def test_model_job_progress_download_list_and_cancel(self):
        inp = os.path.join(self.root, "llama")
        write_llama_checkpoint(inp, layers=2, hidden=256, inter=512)
        events, progress = [], []
        bar_out = io.StringIO()
        bar = ProgressBar(label="job", stream=bar_out, min_interval=0)
        with Client(self.server.address) as c:
            job = c.quantize_model("file://" + inp, "file://" + os.path.join(self.root, "out"),
                                   method="rtn", layout="compressed-tensors", request_id="py-1")
            final = c.watch(job.job_id, events.append,
                            on_progress=lambda p: (progress.append(p), bar(p)))
            bar.close()
            self.assertEqual(state_name(final.state), "SUCCEEDED")
            self.assertIn("model.safetensors", [f.name for f in final.outputs])
            self.assertEqual(final.progress.tensors_done, final.progress.tensors_total)
            quantized = [t for e in events for t in e.tensors if t.quantized]
            self.assertTrue(any(t.name.endswith("q_proj.weight") for t in quantized))
            # on_progress: one per event, monotone, ending SUCCEEDED at 100%.
            self.assertEqual(len(progress), len(events))
            done = [p.tensors_done for p in progress]
            self.assertEqual(done, sorted(done))
            self.assertEqual((progress[-1].state, progress[-1].fraction), ("SUCCEEDED", 1.0))
            self.assertIn("100%", bar_out.getvalue())
            self.assertIn("SUCCEEDED", bar_out.getvalue().splitlines()[-1])
            # Idempotent resubmission; the job is listed as SUCCEEDED.
            self.assertEqual(c.quantize_model("file://" + inp,
                                              "file://" + os.path.join(self.root, "out"),
                                              method="rtn", layout="compressed-tensors",
                                              request_id="py-1").job_id, job.job_id)
            self.assertIn(job.job_id, [j.job_id for j in c.list(states=["SUCCEEDED"])])
            self.assertNotIn(job.job_id, [j.job_id for j in c.list(states=["FAILED"])])
            # Download through the service (ReadResult): the bytes the job wrote.
            dl = os.path.join(self.root, "download")
            files = c.download(final, dl)
            self.assertEqual(sorted(f.name for f in files), sorted(o.name for o in final.outputs))
            for f in files:
                with open(f.path, "rb") as a, \
                        open(os.path.join(self.root, "out", f.name), "rb") as b:
                    self.assertEqual(a.read(), b.read(), f.name)
            # Cancel (idempotent) a bigger job.
            big = os.path.join(self.root, "big")
            write_llama_checkpoint(big, layers=6, hidden=512, inter=1024)
            job = c.quantize_model("file://" + big, "file://" + os.path.join(self.root, "big-out"),
                                   method="soar")
            c.cancel(job.job_id)
            c.cancel(job.job_id)
            final = c.watch(job.job_id)
            self.assertEqual(state_name(final.state), "CANCELLED")
            with self.assertRaisesRegex(ValueError, "CANCELLED"):
                c.download(final, dl)

    def test_unavailable_is_retried_with_backoff(self):
        port = free_port()
        # No retries: UNAVAILABLE at once.
        with Client(f"127.0.0.1:{port}", retry=1, timeout=5) as c:
            t0 = time.time()
            with self.assertRaises(grpc.RpcError) as e:
                c.list()
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
            self.assertLess(time.time() - t0, 5)
        # The server comes up 1.5 s late: the call succeeds after a few backoffs.
        started = []

        def late():
            time.sleep(1.5)
            started.append(self.start(f"--listen=127.0.0.1:{port}"))

        t = threading.Thread(target=late)
        t.start()
        try:
            with Client(f"127.0.0.1:{port}", retry=RetryPolicy(max_attempts=12,
                                                               initial_backoff=0.1,
                                                               max_backoff=1.0)) as c:
                t0 = time.time()
                self.assertEqual(c.list(), [])
                self.assertGreater(time.time() - t0, 1.0)
                inp = os.path.join(self.root, "llama")
                write_llama_checkpoint(inp, layers=1, hidden=128, inter=256)
                final = c.quantize_model("file://" + inp, "file://" + self.root + "/o",
                                         method="rtn", wait=True)
                self.assertEqual(state_name(final.state), "SUCCEEDED")
        finally:
            t.join()
        self.assertEqual(len(started), 1)

    def watch_until(self, client, job_id, tensors, server):
        """Watches `job_id` on a thread (Client.watch) until `tensors` tensors are done; returns
        the thread and the lists it fills: progress (every Progress), result (the final Job),
        errors (what watch raised)."""
        progress, result, errors = [], [], []

        def watch():
            try:
                result.append(client.watch(job_id, on_progress=progress.append))
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        t = threading.Thread(target=watch)
        t.start()
        deadline = time.time() + 120
        while not any(p.tensors_done >= tensors for p in progress):
            self.assertLess(time.time(), deadline, "no progress:\n" + server.logs())
            self.assertFalse(result, "the job finished too early")
            time.sleep(0.02)
        return t, progress, result, errors

    def assert_watch_succeeded(self, t, result, errors, server):
        """The watch thread of watch_until ends without an error, the job SUCCEEDED."""
        t.join(300)
        self.assertFalse(t.is_alive())
        self.assertEqual(errors, [])
        self.assertEqual(state_name(result[0].state), "SUCCEEDED",
                         result[0].error.message + server.logs())

    def test_watch_reattaches_after_a_server_restart(self):
        port = free_port()
        state = os.path.join(self.root, "state")
        args = [f"--listen=127.0.0.1:{port}", f"--state_dir={state}"]
        s1 = self.start(*args)
        inp = os.path.join(self.root, "llama")
        write_llama_checkpoint(inp, layers=4, hidden=512, inter=1024)
        out = os.path.join(self.root, "restart-out")
        with Client(s1.address, retry=RetryPolicy(max_attempts=20, initial_backoff=0.1,
                                                  max_backoff=1.0)) as c:
            job = c.quantize_model("file://" + inp, "file://" + out, method="soar")
            t, progress, result, errors = self.watch_until(c, job.job_id, 5, s1)
            s1.kill()  # SIGKILL: the watch stream breaks
            time.sleep(0.5)
            s2 = self.start(*args)
            self.assert_watch_succeeded(t, result, errors, s2)
            self.assertTrue(any(p.reattaching for p in progress), "no re-attach seen")
            self.assertGreater(result[0].progress.tensors_resumed, 0)
            self.assertEqual(result[0].job_id, job.job_id)
        self.assertTrue(os.path.exists(os.path.join(out, "model.safetensors")))

    def test_watch_reattaches_through_a_drain_with_the_default_policy(self):
        # SIGTERM: the drain (--drain_timeout=1) interrupts the job and ends the watch stream
        # ("server is draining"); the server comes back 8 s later on the same port. The default
        # retry policy re-attaches, and the restarted server reports the journaled progress.
        port = free_port()
        state = os.path.join(self.root, "state")
        args = [f"--listen=127.0.0.1:{port}", f"--state_dir={state}", "--drain_timeout=1"]
        s1 = self.start(*args)
        inp = os.path.join(self.root, "llama-drain")
        write_llama_checkpoint(inp, layers=6, hidden=512, inter=1024)
        with Client(s1.address) as c:
            job = c.quantize_model("file://" + inp, "file://" + inp + "-q", method="soar")
            t, progress, result, errors = self.watch_until(c, job.job_id, 3, s1)
            self.assertEqual(s1.terminate(), 0)
            time.sleep(8)
            self.assertTrue(t.is_alive(), f"the watcher gave up: {errors}")
            s2 = self.start(*args)
            self.assert_watch_succeeded(t, result, errors, s2)
            marks = [i for i, p in enumerate(progress) if p.reattaching]
            self.assertTrue(marks, "no re-attach seen")
            # The first event after re-attaching comes from the restarted server: the journaled
            # progress, not 0.
            after = [p for p in progress[marks[-1] + 1:] if not p.reattaching]
            self.assertTrue(after)
            self.assertGreaterEqual(after[0].tensors_done, 3, after[0])
            self.assertGreater(result[0].progress.tensors_resumed, 0)

    def test_tls_mutual_tls_and_tokens(self):
        if shutil.which("openssl") is None:
            raise AssertionError("the openssl CLI is required")
        pki = os.path.join(self.root, "pki")
        os.makedirs(pki)
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=ca",
                "-keyout", "ca.key", "-out", "ca.crt", cwd=pki)
        for name, ext in (("server", "subjectAltName=DNS:nvfp4d.test,IP:127.0.0.1\n"
                                     "extendedKeyUsage=serverAuth\n"),
                          ("client", "extendedKeyUsage=clientAuth\n")):
            with open(os.path.join(pki, name + ".ext"), "w") as f:
                f.write(ext)
            openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout",
                    f"{name}.key", "-out", f"{name}.csr", cwd=pki)
            openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                    "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out",
                    f"{name}.crt", cwd=pki)
        p = lambda n: os.path.join(pki, n)  # noqa: E731
        tokens = os.path.join(self.root, "tokens")
        with open(tokens, "w") as f:
            f.write("secret-one\nsecret-two\n")
        token_file = os.path.join(self.root, "my-token")
        with open(token_file, "w") as f:
            f.write("  secret-two\n")
        s = self.start(f"--tls_cert={p('server.crt')}", f"--tls_key={p('server.key')}",
                       f"--tls_ca={p('ca.crt')}", f"--auth_tokens_file={tokens}")
        mtls = dict(tls_ca=p("ca.crt"), tls_cert=p("client.crt"), tls_key=p("client.key"))
        os.environ.pop("NVFP4_TOKEN", None)
        with Client(s.address, token="secret-one", **mtls) as c:
            self.assertEqual(c.list(), [])
            q = c.quantize_tensor(np.ones((16, 32), np.float32), method="rtn")
            self.assertEqual(q.rows, 16)
        with Client(s.address, token_file=token_file, **mtls) as c:
            self.assertEqual(c.list(), [])
        os.environ["NVFP4_TOKEN"] = "secret-one"
        try:
            with Client(s.address, **mtls) as c:
                self.assertEqual(c.list(), [])
        finally:
            del os.environ["NVFP4_TOKEN"]
        # The certificate names nvfp4d.test, not localhost: tls_server_name makes it match.
        with Client(f"localhost:{s.port}", token="secret-one", tls_server_name="nvfp4d.test",
                    **mtls) as c:
            self.assertEqual(c.list(), [])
        # A wrong token, no token: UNAUTHENTICATED, not retried.
        for token in ("wrong", ""):
            with Client(s.address, token=token, **mtls) as c:
                with self.assertRaises(grpc.RpcError) as e:
                    c.list()
                self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED, token)
        # Without a client certificate, or without TLS: refused.
        for kw in ({"tls_ca": p("ca.crt")}, {}):
            with Client(s.address, token="secret-one", retry=2, timeout=5, **kw) as c:
                with self.assertRaises(grpc.RpcError):
                    c.list()
        with self.assertRaisesRegex(ValueError, "empty"):
            empty = os.path.join(self.root, "empty")
            open(empty, "w").close()
            Client(s.address, token_file=empty)


if __name__ == "__main__":
    unittest.main(verbosity=2)
