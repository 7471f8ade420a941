#!/usr/bin/env python3
"""Durable jobs: `kill -9` nvfp4d in the middle of a model job, restart it on the same --state_dir,
and the job resumes from its last journaled unit and publishes the same bytes as an uninterrupted
run (server/job_journal.h, pipeline/resume.h).

Checks, on the `small` demo model (~200 MB bf16, soar on the CPU):
  * after the restart the interrupted job resumes; a SIGTERM whose drain timeout interrupts it
    again keeps what it staged too, and the third server finishes it: SUCCEEDED; progress.tensors_resumed > 0 and the
    log says where it resumed; the finished job submitted before the crash is still listed with
    its outputs; a job queued behind the interrupted one runs too;
  * the sha256 of every output file equals an uninterrupted `nvfp4ctl quantize-model --local` run
    (and the sizes/sha256 the job reports);
  * nothing appeared at the output location before the job finished, and no staging directory is
    left behind.

Needs NVFP4D and NVFP4CTL (set by CTest).
"""
import json
import os
import re
import shutil
import tempfile
import time
import unittest

from harness import Server, ctl, digests, get_job, progress, write_llama_checkpoint


class ResumeTest(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="nvfp4-it-resume-")
        self.state = tempfile.mkdtemp(prefix="nvfp4-it-state-")
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            s.kill()
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.state, ignore_errors=True)

    def start(self, *args):
        s = Server(self.root, [f"--state_dir={self.state}"] + list(args))
        self.servers.append(s)
        return s

    def test_kill_9_mid_job_resumes_and_output_is_byte_identical(self):
        t_start = time.time()
        inp = os.path.join(self.root, "small")
        r = ctl("make-demo-model", "--preset", "small", "--output", inp)
        self.assertEqual(r.returncode, 0, r.stderr)
        tiny = os.path.join(self.root, "tiny")
        write_llama_checkpoint(tiny, layers=1, hidden=128, inter=256)
        out = os.path.join(self.root, "small-nvfp4")

        s1 = self.start()
        # A finished job before the crash: still listed with its outputs afterwards.
        r = ctl("quantize-model", "--server", s1.address, "--input", "file://" + tiny, "--output",
                "file://" + os.path.join(self.root, "tiny-out"), "--method", "rtn", "--detach",
                "--json")
        self.assertEqual(r.returncode, 0, r.stderr + s1.logs())
        done_id = json.loads(r.stdout)["job_id"]
        r = ctl("jobs", "watch", done_id, "--server", s1.address)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        # The long job, and one queued behind it (one worker).
        r = ctl("quantize-model", "--server", s1.address, "--input", "file://" + inp, "--output",
                "file://" + out, "--method", "soar", "--detach", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        job_id = json.loads(r.stdout)["job_id"]
        r = ctl("quantize-model", "--server", s1.address, "--input", "file://" + tiny, "--output",
                "file://" + os.path.join(self.root, "tiny-out2"), "--method", "rtn", "--detach",
                "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        queued_id = json.loads(r.stdout)["job_id"]

        def wait_for(server, at_least, margin):
            """Waits until at least `at_least` tensors are done and `margin` are left."""
            deadline = time.time() + 120
            while True:
                job = get_job(server, job_id)
                done, total = progress(job, "tensors_done"), progress(job, "tensors_total")
                if total > 0 and at_least <= done < total - margin:
                    return done
                self.assertNotEqual(job["state"], "JOB_STATE_SUCCEEDED", "finished too early")
                self.assertLess(time.time(), deadline, "no progress:\n" + server.logs())
                time.sleep(0.1)

        done_at_kill = wait_for(s1, 8, 20)
        s1.kill()  # SIGKILL: no drain, no destructors
        self.assertFalse(os.path.exists(out), "output published before the job finished")
        staging = os.path.join(self.root, f".small-nvfp4.resume-{job_id}")
        self.assertTrue(os.path.isdir(staging), os.listdir(self.root))
        self.assertTrue(os.path.exists(os.path.join(self.state, "jobs.journal")))

        # Restart; interrupt the resumed run again, this time by a drain that times out.
        s2 = self.start("--drain_timeout=1")
        done_at_term = wait_for(s2, done_at_kill + 8, 5)
        self.assertEqual(s2.terminate(), 0)
        with open(s2.log_path, errors="replace") as f:
            logs2 = f.read()
        self.assertRegex(logs2, rf"job {job_id} resumed at unit [1-9]")
        self.assertIn(f"job {job_id} state RUNNING->QUEUED (interrupted by shutdown)", logs2)
        self.assertFalse(os.path.exists(out), "output published before the job finished")
        self.assertTrue(os.path.isdir(staging), "staging dropped by the drain")

        s3 = self.start()
        r = ctl("jobs", "watch", job_id, "--server", s3.address)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr + s3.logs())
        self.assertIn("SUCCEEDED", r.stdout)
        s2 = s3
        job = get_job(s2, job_id)
        self.assertEqual(job["state"], "JOB_STATE_SUCCEEDED")
        resumed = progress(job, "tensors_resumed")
        self.assertGreater(resumed, 0, json.dumps(job, indent=1))
        # Everything written before the last interruption was kept (the journal lags the progress
        # by at most the unit being reported).
        self.assertGreaterEqual(resumed, done_at_term - 3)
        self.assertEqual(progress(job, "tensors_done"), progress(job, "tensors_total"))
        logs = s2.logs()
        m = re.search(rf"job {job_id} resumed at unit (\d+)/(\d+): kept (\d+) journaled units.*",
                      logs)
        self.assertIsNotNone(m, logs)
        print("\n" + m.group(0))
        self.assertGreater(int(m.group(1)), 0)
        self.assertIn(" 0 untrusted", logs)
        # The job queued behind it ran, and the one finished before the crash is still there.
        r = ctl("jobs", "watch", queued_id, "--server", s2.address)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(get_job(s2, done_id)["state"], "JOB_STATE_SUCCEEDED")
        self.assertTrue(get_job(s2, done_id)["outputs"])
        self.assertFalse(os.path.exists(staging), "staging directory left behind")
        self.assertEqual(os.listdir(os.path.join(self.state, "work")) if os.path.isdir(
            os.path.join(self.state, "work")) else [], [])
        t_resume = time.time() - t_start

        # An uninterrupted run of the same input and options.
        ref = os.path.join(self.root, "ref")
        r = ctl("quantize-model", "--local", "--input", inp, "--output", ref, "--method", "soar",
                "--device", "cpu")
        self.assertEqual(r.returncode, 0, r.stderr)
        want, got = digests(ref), digests(out)
        self.assertEqual(sorted(want), sorted(got))
        for name in want:
            self.assertEqual(want[name], got[name], f"{name} differs from an uninterrupted run")
        reported = {o["name"]: o["sha256"] for o in job["outputs"]}
        self.assertEqual(reported, got)
        print(f"resume test: killed at {done_at_kill}/{progress(job, 'tensors_total')} tensors, "
              f"drain-interrupted at {done_at_term}, finally kept {resumed}; servers part "
              f"{t_resume:.1f}s, total {time.time() - t_start:.1f}s")


if __name__ == "__main__":
    unittest.main()
