"""Hardening (issue 12), with the real nvfp4d and nvfp4ctl over loopback:
item 1: request fields over their limits and locations that cannot work are refused at submit
        (INVALID_ARGUMENT / PERMISSION_DENIED naming the field) and never become jobs;
item 5: a tensor name with a newline and a NUL byte neither forges nor breaks log lines, in the
        text format (the default) and in --log_format=json (one object per line)."""
import json
import os
import shutil
import tempfile
import time
import unittest

from harness import Server, bf16_bytes, ctl, write_llama_checkpoint, write_safetensors

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


if __name__ == "__main__":
    unittest.main()
