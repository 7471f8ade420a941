"""Integration tests: the real nvfp4d and nvfp4ctl binaries as subprocesses, real sockets (port 0)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from harness import Server, bf16_bytes, ctl, write_llama_checkpoint, write_safetensors


class ServiceIntegrationTest(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="nvfp4-it-root-")
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            s.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def start(self, *args, **kw):
        s = Server(self.root, args, **kw)
        self.servers.append(s)
        return s

    def test_health(self):
        s = self.start()
        r = ctl("health", "--server", s.address)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("SERVING", r.stdout)
        r = ctl("health", "--server", s.address, "--service", "nvfp4.v1.Quantizer", "--json")
        self.assertEqual(json.loads(r.stdout)["status"], "SERVING")

    def test_remote_quantize_tensor_is_byte_identical_to_local(self):
        s = self.start("--chunk_bytes=262144")
        src = os.path.join(self.root, "in.safetensors")
        # 1 MiB + 512 KiB tensors, so both directions span several 256 KiB chunks.
        write_safetensors(src, [("a.weight", "BF16", [512, 1024], bf16_bytes(512 * 1024, 1)),
                                ("b.weight", "BF16", [256, 512], bf16_bytes(256 * 512, 2)),
                                ("norm", "BF16", [512], bf16_bytes(512, 3))])
        for method in ["rtn", "soar"]:
            local = os.path.join(self.root, f"local-{method}.safetensors")
            remote = os.path.join(self.root, f"remote-{method}.safetensors")
            r1 = ctl("quantize-tensor", "--local", "--device", "cpu", "--input", src, "--output", local,
                     "--method", method)
            self.assertEqual(r1.returncode, 0, r1.stderr)
            r2 = ctl("quantize-tensor", "--server", s.address, "--input", src, "--output", remote,
                     "--method", method, "--json")
            self.assertEqual(r2.returncode, 0, r2.stderr)
            with open(local, "rb") as a, open(remote, "rb") as b:
                self.assertEqual(a.read(), b.read(), f"{method}: remote output differs from local")
            reports = [json.loads(l) for l in r2.stdout.splitlines()]
            self.assertEqual([x["tensor"] for x in reports], ["a.weight", "b.weight"])

    def test_bad_tensor_is_invalid_argument_with_reason(self):
        s = self.start()
        src = os.path.join(self.root, "bad.safetensors")
        write_safetensors(src, [("odd.weight", "BF16", [8, 100], bf16_bytes(800, 1))])
        r = ctl("quantize-tensor", "--server", s.address, "--input", src, "--output",
                os.path.join(self.root, "o.safetensors"), "--tensor", "odd.weight")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("INVALID_ARGUMENT", r.stderr)
        self.assertIn("odd.weight", r.stderr)
        self.assertIn("multiple of 16", r.stderr)

    def test_unknown_job_is_not_found(self):
        s = self.start()
        for sub in ["get", "watch", "cancel"]:
            r = ctl("jobs", sub, "job-doesnotexist", "--server", s.address)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn("NOT_FOUND", r.stderr)

    def test_model_job_watch_list_get_and_outputs(self):
        s = self.start()
        inp = os.path.join(self.root, "llama")
        write_llama_checkpoint(inp, layers=2, hidden=256, inter=512)
        out = os.path.join(self.root, "llama-nvfp4")
        r = ctl("quantize-model", "--server", s.address, "--input", "file://" + inp, "--output",
                "file://" + out, "--method", "rtn", "--detach", "--json", "--request-id", "rid-1")
        self.assertEqual(r.returncode, 0, r.stderr)
        job = json.loads(r.stdout)
        job_id = job["job_id"]
        # Same request id + same params: same job.
        r = ctl("quantize-model", "--server", s.address, "--input", "file://" + inp, "--output",
                "file://" + out, "--method", "rtn", "--detach", "--json", "--request-id", "rid-1")
        self.assertEqual(json.loads(r.stdout)["job_id"], job_id)
        # Same id, different params: ALREADY_EXISTS (user error).
        r = ctl("quantize-model", "--server", s.address, "--input", "file://" + inp, "--output",
                "file://" + out, "--method", "soar", "--detach", "--request-id", "rid-1")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("ALREADY_EXISTS", r.stderr)
        # Watch (plain lines, not a TTY) to the end.
        r = ctl("jobs", "watch", job_id, "--server", s.address)
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        self.assertIn("SUCCEEDED", r.stdout)
        # Re-attach after the end (JSON events: snapshot then terminal).
        r = ctl("jobs", "watch", job_id, "--server", s.address, "--json")
        events = [json.loads(l) for l in r.stdout.splitlines()]
        self.assertEqual(events[0]["type"], "EVENT_TYPE_SNAPSHOT")
        self.assertEqual(events[-1]["type"], "EVENT_TYPE_TERMINAL")
        r = ctl("jobs", "list", "--server", s.address, "--state", "succeeded", "--json")
        self.assertIn(job_id, [json.loads(l)["job_id"] for l in r.stdout.splitlines()])
        r = ctl("jobs", "get", job_id, "--server", s.address, "--json")
        final = json.loads(r.stdout)
        names = sorted(o["name"] for o in final["outputs"])
        self.assertEqual(names, ["config.json", "hf_quant_config.json", "model.safetensors",
                                 "tokenizer.json"])
        for o in final["outputs"]:
            self.assertEqual(os.path.getsize(os.path.join(out, o["name"])), int(o["size_bytes"]))
        with open(os.path.join(out, "hf_quant_config.json")) as f:
            hf = json.load(f)
        # Weight-only (no calibration with input_amax): the pipeline writes W4A16_NVFP4.
        self.assertEqual(hf["quantization"]["quant_algo"], "W4A16_NVFP4")
        self.assertIn("lm_head", hf["quantization"]["exclude_modules"])
        with open(os.path.join(out, "config.json")) as f:
            self.assertEqual(json.load(f)["quantization_config"]["quant_method"], "modelopt")
        r = ctl("inspect", "--input", os.path.join(out, "model.safetensors"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("model.layers.0.self_attn.q_proj.weight_scale_2", r.stdout)
        self.assertIn("model.embed_tokens.weight", r.stdout)
        # Fused q/k/v share one global scale (weight_scale_2).
        m = s.metrics()
        self.assertIn('nvfp4_jobs_finished_total{kind="model",outcome="succeeded"} 1', m)

    def test_cancel_running_job_exits_3(self):
        s = self.start()
        inp = os.path.join(self.root, "big")
        write_llama_checkpoint(inp, layers=6, hidden=512, inter=1024)
        r = ctl("quantize-model", "--server", s.address, "--input", "file://" + inp, "--output",
                "file://" + os.path.join(self.root, "big-out"), "--method", "soar", "--detach", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        job_id = json.loads(r.stdout)["job_id"]
        result = {}
        t = threading.Thread(target=lambda: result.update(r=ctl("jobs", "watch", job_id, "--server", s.address)))
        t.start()
        time.sleep(1.0)
        t0 = time.time()
        r = ctl("jobs", "cancel", job_id, "--server", s.address)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = ctl("jobs", "cancel", job_id, "--server", s.address)  # idempotent
        self.assertEqual(r.returncode, 0, r.stderr)
        t.join(60)
        self.assertEqual(result["r"].returncode, 3, result["r"].stderr)
        self.assertIn("CANCELLED", result["r"].stdout)
        self.assertLess(time.time() - t0, 10)
        self.assertFalse(os.path.exists(os.path.join(self.root, "big-out", "model.safetensors")))

    def test_queue_full_is_unavailable(self):
        s = self.start("--queue_capacity=1")
        inp = os.path.join(self.root, "big")
        write_llama_checkpoint(inp, layers=6, hidden=512, inter=1024)
        codes = []
        for i in range(3):
            r = ctl("quantize-model", "--server", s.address, "--input", "file://" + inp, "--output",
                    "file://" + os.path.join(self.root, f"o{i}"), "--method", "soar", "--detach")
            codes.append((r.returncode, r.stderr))
            if i == 0:
                time.sleep(0.5)  # let the worker take the first job
        self.assertEqual(codes[0][0], 0, codes[0][1])
        self.assertEqual(codes[1][0], 0, codes[1][1])
        self.assertEqual(codes[2][0], 1, codes[2][1])
        self.assertIn("UNAVAILABLE", codes[2][1])

    def test_sigterm_drains_cleanly(self):
        s = self.start("--drain_timeout=60")
        inp = os.path.join(self.root, "llama")
        write_llama_checkpoint(inp, layers=2, hidden=256, inter=512)
        out = os.path.join(self.root, "out")
        r = ctl("quantize-model", "--server", s.address, "--input", "file://" + inp, "--output",
                "file://" + out, "--method", "scalesweep", "--detach", "--json")
        job_id = json.loads(r.stdout)["job_id"]
        time.sleep(0.2)
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        r = ctl("quantize-model", "--server", s.address, "--input", "file://" + inp, "--output",
                "file://" + out + "2", "--detach", "--timeout", "5")
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(s.proc.wait(timeout=90), 0, s.logs())
        logs = s.logs()
        self.assertIn("draining", logs)
        self.assertIn(f"job {job_id} state RUNNING->SUCCEEDED", logs)
        self.assertTrue(os.path.exists(os.path.join(out, "model.safetensors")))

    def test_sigterm_sends_goaway_at_once_while_the_running_job_finishes(self):
        # Clients must not be held on a draining pod: at SIGTERM the listener closes and open
        # connections get GOAWAY, while a job that is running (and its watch stream) carries on.
        s = self.start("--drain_timeout=120", "--health_listen=127.0.0.1:0")
        inp = os.path.join(self.root, "big")
        write_llama_checkpoint(inp, layers=6, hidden=512, inter=1024)
        out = os.path.join(self.root, "out")
        watcher = subprocess.Popen(
            [os.environ.get("NVFP4CTL", "nvfp4ctl"), "quantize-model", "--server", s.address,
             "--input", "file://" + inp, "--output", "file://" + out, "--method", "soar", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 30
        while "state QUEUED->RUNNING" not in s.logs():
            self.assertLess(time.time(), deadline, s.logs())
            time.sleep(0.05)
        s.proc.send_signal(signal.SIGTERM)
        deadline = time.time() + 10
        while "GOAWAY sent" not in s.logs():
            self.assertLess(time.time(), deadline, s.logs())
            time.sleep(0.05)
        # A new connection to the main port is refused at once (the listener is closed): no
        # NOT_SERVING answer from the draining pod, which the old order gave for up to
        # --drain_timeout.
        # (Shutdown() closes it on the drain's own thread, right as the log line is written: a
        # connection may still be accepted for a moment on a loaded machine.)
        t = time.time()
        refused = False
        while not refused and time.time() - t < 1:
            try:
                socket.create_connection(("127.0.0.1", s.port), timeout=5).close()
                time.sleep(0.02)
            except ConnectionRefusedError:
                refused = True
        self.assertTrue(refused, "the listener still accepted connections 1 s after GOAWAY")
        # The probe port stays up and says NOT_SERVING (readiness fails), and the job still runs.
        r = ctl("health", "--server", f"127.0.0.1:{s.health_port}", "--json", "--timeout", "3")
        self.assertEqual(json.loads(r.stdout)["status"], "NOT_SERVING", r.stderr)
        self.assertIsNone(watcher.poll(), "the job ended before the checks: make it bigger")
        # Clients see UNAVAILABLE (retry elsewhere), not an answer from this pod.
        r = ctl("health", "--server", s.address, "--json", "--timeout", "3")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertNotIn("NOT_SERVING", r.stdout)
        self.assertIn("UNAVAILABLE", r.stderr)
        # The in-flight watch stream carried on through the GOAWAY to the job's end.
        stdout, stderr = watcher.communicate(timeout=150)
        self.assertEqual(watcher.returncode, 0, stderr + s.logs())
        self.assertEqual(json.loads(stdout.splitlines()[-1])["job"]["state"], "JOB_STATE_SUCCEEDED")
        self.assertEqual(s.proc.wait(timeout=60), 0, s.logs())
        logs = s.logs()
        self.assertLess(logs.index("GOAWAY sent"), logs.index("state RUNNING->SUCCEEDED"))
        self.assertTrue(os.path.exists(os.path.join(out, "model.safetensors")))

    def test_metrics_counters_move(self):
        s = self.start()
        before = s.metric_value('nvfp4_jobs_submitted_total{kind="tensor"}')
        src = os.path.join(self.root, "in.safetensors")
        write_safetensors(src, [("w", "BF16", [64, 256], bf16_bytes(64 * 256, 1))])
        r = ctl("quantize-tensor", "--server", s.address, "--input", src, "--output",
                os.path.join(self.root, "o.safetensors"), "--method", "rtn")
        self.assertEqual(r.returncode, 0, r.stderr)
        m = s.metrics()
        self.assertEqual(s.metric_value('nvfp4_jobs_submitted_total{kind="tensor"}'), before + 1)
        self.assertGreater(s.metric_value("nvfp4_input_bytes_total"), 0)
        self.assertIn('nvfp4_tensor_quantize_seconds_count{device="cpu",method="rtn"} 1', m)
        self.assertIn("nvfp4_build_info{", m)
        self.assertIn('nvfp4_devices{kind="cpu"} 1', m)


if __name__ == "__main__":
    unittest.main(verbosity=2)
