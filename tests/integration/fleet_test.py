#!/usr/bin/env python3
"""A fleet: three nvfp4d replicas on loopback sharing one PostgreSQL job store (--job_store), the
way a Deployment behind a load balancer runs them (server/postgres_job_store.h, JobManager's
shared mode).

Checks, on the `small` demo model (soar on the CPU), with file:// outputs on the data root all
replicas share:
  * a job submitted through A is answered by B and C (get, list, watch): a client that reconnects
    to another replica never sees NOT_FOUND;
  * `kill -9` of A mid-job: another replica claims the job once A's lease expires, resumes it from
    the last unit A journaled in the database, and the watch through B (started before the kill)
    ends SUCCEEDED; the output is byte-identical to an uninterrupted `--local` run;
  * a drain (SIGTERM) of the replica running a job hands it back: the remaining replica resumes it
    and finishes it, byte-identically;
  * a cancel through a replica that does not run the job reaches the owner within about a second;
  * behind a round-robin TCP proxy (an L4 load balancer) with --max_connection_age, a client
    watching a long job is reconnected to the other replica and never sees NOT_FOUND, nor do
    one-shot clients landing on either replica;
  * an s3:// output (a real S3 API server, moto, verifying signatures) outlives a `kill -9` of its
    replica too: each finished output file was handed over to the bucket's staging prefix
    (`<output>/.nvfp4-staging-<job>/`), so another replica resumes the job from those files and
    the journaled units (kept, not recomputed), the uploaded objects are byte-identical to a
    `--local` run, the staging prefix is removed, and the killed replica's local scratch never
    held more than a few files.

Run by CTest through tests/testing/with_postgres.sh (NVFP4_TEST_PG_URI); fails without it.
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest

from harness import (NVFP4CTL, MotoS3, RoundRobinProxy, Server, ctl, digests, get_job,
                     progress)

LEASE_SECONDS = 3
BUCKET = "nvfp4-fleet"


def disk_usage(root):
    """Bytes allocated to the files below `root` (output files are created sparse at their final
    size and filled as tensors are written)."""
    n = 0
    for d, _, files in os.walk(root):
        for f in files:
            try:
                n += os.stat(os.path.join(d, f)).st_blocks * 512
            except FileNotFoundError:
                pass  # handed over meanwhile
    return n


class FleetTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.uri = os.environ.get("NVFP4_TEST_PG_URI", "")
        if not cls.uri:
            raise AssertionError("NVFP4_TEST_PG_URI is not set: run through "
                                 "tests/testing/with_postgres.sh (CTest does)")
        cls.root = tempfile.mkdtemp(prefix="nvfp4-it-fleet-")
        cls.inp = os.path.join(cls.root, "small")
        r = ctl("make-demo-model", "--preset", "small", "--output", cls.inp)
        if r.returncode != 0:
            raise AssertionError(r.stderr)
        cls.ref = os.path.join(cls.root, "ref")
        r = ctl("quantize-model", "--local", "--input", cls.inp, "--output", cls.ref, "--method",
                "soar", "--device", "cpu", timeout=900)
        if r.returncode != 0:
            raise AssertionError(r.stderr)
        cls.want = digests(cls.ref)
        cls.moto = MotoS3(BUCKET)

    @classmethod
    def tearDownClass(cls):
        cls.moto.stop()
        shutil.rmtree(cls.root, ignore_errors=True)

    def setUp(self):
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            s.kill()

    def start(self, name, *args):
        s = Server(self.root, [f"--job_store={self.uri}", f"--job_lease_seconds={LEASE_SECONDS}",
                               f"--replica_id={name}", "--drain_timeout=1",
                               f"--s3_endpoint={self.moto.endpoint}"] + list(args),
                   env=self.moto.server_env())
        s.name = name
        self.servers.append(s)
        return s

    def submit(self, server, out):
        uri = out if out.startswith("s3://") else "file://" + out
        r = ctl("quantize-model", "--server", server.address, "--input", "file://" + self.inp,
                "--output", uri, "--method", "soar", "--detach", "--json")
        self.assertEqual(r.returncode, 0, r.stderr + server.logs())
        return json.loads(r.stdout)["job_id"]

    def wait_for(self, server, job_id, at_least, margin=15, timeout=180):
        """Waits until at least `at_least` tensors are done and more than `margin` are left."""
        deadline = time.time() + timeout
        while True:
            job = get_job(server, job_id)
            done, total = progress(job, "tensors_done"), progress(job, "tensors_total")
            if job["state"] == "JOB_STATE_RUNNING" and total > 0 and at_least <= done < total - margin:
                return done
            self.assertNotIn(job["state"], ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED"),
                             json.dumps(job))
            self.assertLess(time.time(), deadline, "no progress:\n" + server.logs())
            time.sleep(0.1)

    def runner_of(self, job_id, servers):
        for s in servers:
            if re.search(rf"job {job_id} state QUEUED->RUNNING .*replica={s.name}", s.logs()):
                return s
        return None

    def assert_identical(self, out, job):
        got = digests(out) if isinstance(out, str) else out
        self.assertEqual(sorted(self.want), sorted(got))
        for name in self.want:
            self.assertEqual(self.want[name], got[name], f"{name} differs from an uninterrupted run")
        self.assertEqual({o["name"]: o["sha256"] for o in job["outputs"]}, got)

    def test_fleet(self):
        t0 = time.time()
        a = self.start("A")
        out1 = os.path.join(self.root, "out-kill")
        job1 = self.submit(a, out1)
        self.wait_for(a, job1, 1)
        b = self.start("B")
        c = self.start("C")
        self.assertIs(self.runner_of(job1, [a, b, c]), a)
        # Every replica answers for it.
        for s in (b, c):
            self.assertEqual(get_job(s, job1)["state"], "JOB_STATE_RUNNING")
            r = ctl("jobs", "list", "--server", s.address, "--json")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn(job1, r.stdout)
        # Watch through B from now on; kill -9 A once it journaled a few units.
        watch = subprocess.Popen([NVFP4CTL, "jobs", "watch", job1, "--server", b.address],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        done_at_kill = self.wait_for(b, job1, 8)
        a.kill()
        t_kill = time.time()
        self.assertFalse(os.path.exists(out1), "output published before the job finished")
        try:
            watched, _ = watch.communicate(timeout=600)
        finally:
            if watch.poll() is None:
                watch.kill()
        self.assertEqual(watch.returncode, 0, watched + b.logs() + c.logs())
        self.assertIn("SUCCEEDED", watched)
        # Progress never fell back once the kill was reached: the claim by the next owner
        # reports the units A journaled (at least the tensors A had reported), not 0.
        running = [int(n) for n in re.findall(r"RUNNING\s+tensors (\d+)/", watched)]
        reached = next((i for i, n in enumerate(running) if n >= done_at_kill), None)
        self.assertIsNotNone(reached, watched)
        self.assertGreaterEqual(min(running[reached:]), done_at_kill, watched)
        job = get_job(c, job1)
        self.assertEqual(job["state"], "JOB_STATE_SUCCEEDED")
        heir = self.runner_of(job1, [b, c])
        self.assertIsNotNone(heir, b.logs() + c.logs())
        m = re.search(rf"job {job1} resumed at unit (\d+)/(\d+)", heir.logs())
        self.assertIsNotNone(m, heir.logs())
        self.assertGreater(int(m.group(1)), 0)
        self.assertGreater(progress(job, "tensors_resumed"), 0)
        self.assertGreaterEqual(progress(job, "tensors_resumed"), done_at_kill - 3)
        self.assert_identical(out1, job)
        print(f"\nkill -9: A killed at {done_at_kill} tensors; {heir.name} {m.group(0)}; "
              f"finished {time.time() - t_kill:.1f}s after the kill (lease {LEASE_SECONDS}s)")

        # Drain hands a running job to the other replica.
        out2 = os.path.join(self.root, "out-drain")
        job2 = self.submit(b, out2)
        self.wait_for(c, job2, 1)
        owner = self.runner_of(job2, [b, c])
        self.assertIsNotNone(owner)
        other = c if owner is b else b
        self.wait_for(other, job2, 6)
        owner.proc.send_signal(15)  # SIGTERM: the drain times out after 1 s and hands the job back
        r = ctl("jobs", "watch", job2, "--server", other.address)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr + other.logs())
        self.assertEqual(owner.proc.wait(timeout=120), 0)
        job = get_job(other, job2)
        self.assertEqual(job["state"], "JOB_STATE_SUCCEEDED", json.dumps(job))
        self.assertRegex(other.logs(), rf"job {job2} state QUEUED->RUNNING .*replica={other.name}")
        self.assertRegex(other.logs(), rf"job {job2} resumed at unit [1-9]")
        self.assert_identical(out2, job)

        # Cancel through a replica that does not run the job.
        d = self.start("D")
        job3 = self.submit(other, os.path.join(self.root, "out-cancel"))
        self.wait_for(d, job3, 1)
        runner = self.runner_of(job3, [other, d])
        bystander = d if runner is other else other
        t_cancel = time.time()
        r = ctl("jobs", "cancel", job3, "--server", bystander.address)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        while get_job(bystander, job3)["state"] != "JOB_STATE_CANCELLED":
            self.assertLess(time.time() - t_cancel, 10, runner.logs())
            time.sleep(0.05)
        took = time.time() - t_cancel
        self.assertIn(f"job {job3} cancel requested through another replica", runner.logs())
        self.assertLess(took, 3.0)
        print(f"cancel through {bystander.name} of a job run by {runner.name}: CANCELLED after "
              f"{took:.2f}s; fleet test {time.time() - t0:.1f}s")

    def test_clients_reconnecting_through_a_load_balancer_never_see_not_found(self):
        # Two replicas that ask every client to reconnect after 1 s (GOAWAY; a stream in flight
        # gets 2 s of grace, then its connection closes) behind a round-robin TCP proxy, as behind
        # an L4 load balancer: every new connection goes to the other replica.
        a = self.start("LBA", "--max_connection_age=1", "--max_connection_age_grace=2s")
        b = self.start("LBB", "--max_connection_age=1", "--max_connection_age_grace=2s")
        proxy = RoundRobinProxy([a.address, b.address])
        self.addCleanup(proxy.close)
        # Three jobs on two replicas: the third waits for a free worker, so its watcher follows it
        # for about two job lengths, long enough for its stream's connection to be closed.
        outs = [os.path.join(self.root, f"out-lb-{i}") for i in range(3)]
        jobs = []
        for out in outs:
            r = ctl("quantize-model", "--server", proxy.address, "--input", "file://" + self.inp,
                    "--output", "file://" + out, "--method", "soar", "--detach", "--json")
            self.assertEqual(r.returncode, 0, r.stderr)
            jobs.append(json.loads(r.stdout)["job_id"])
        t0 = time.time()
        watch = subprocess.Popen([NVFP4CTL, "jobs", "watch", jobs[2], "--server", proxy.address],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # Meanwhile, one-shot clients (a new connection each: alternating replicas) ask for every
        # job; none may get NOT_FOUND.
        gets = 0
        while watch.poll() is None:
            for job_id in jobs:
                r = ctl("jobs", "get", job_id, "--server", proxy.address, "--json")
                self.assertEqual(r.returncode, 0, f"jobs get {job_id}: {r.stdout}{r.stderr}")
                self.assertNotIn("not found", (r.stdout + r.stderr).lower())
                gets += 1
            self.assertLess(time.time() - t0, 900, "the watched job did not finish")
            time.sleep(0.2)
        watched, _ = watch.communicate()
        took = time.time() - t0
        self.assertEqual(watch.returncode, 0, watched + a.logs() + b.logs())
        self.assertIn("SUCCEEDED", watched)
        self.assertNotIn("not found", watched.lower())
        self.assertEqual(set(proxy.connections), {a.address, b.address})
        for job_id, out in zip(jobs, outs):
            job = get_job(a, job_id)
            self.assertEqual(job["state"], "JOB_STATE_SUCCEEDED", json.dumps(job))
            self.assert_identical(out, job)
        # The watch lost its connection (1 s of age + 2 s of grace) and was re-attached through
        # the proxy, to either replica; the CLI says so on stderr.
        reattached = watched.count(f"watch of {jobs[2]} interrupted")
        self.assertGreater(reattached, 0, "the watch never crossed a connection close: " + watched)
        print(f"\nload balancer: watch of {jobs[2]} lasted {took:.1f}s, re-attached {reattached} "
              f"times across {len(proxy.connections)} proxied connections; {gets} one-shot gets, "
              "none NOT_FOUND")

    def s3_objects(self, prefix):
        """key (relative to `prefix`) -> size of the objects under `prefix`. Lists the whole bucket
        (moto's signature check rejects some Prefix parameters) and filters here."""
        out = {}
        token = None
        while True:
            kw = {"Bucket": BUCKET}
            if token:
                kw["ContinuationToken"] = token
            listing = self.moto.s3.list_objects_v2(**kw)
            for obj in listing.get("Contents", []):
                if obj["Key"].startswith(prefix):
                    out[obj["Key"][len(prefix):]] = obj["Size"]
            token = listing.get("NextContinuationToken")
            if not listing.get("IsTruncated") or not token:
                return out

    def test_s3_output_outlives_kill_9(self):
        # Small shards, so that the output is several files and some are finished (and handed over
        # to the bucket) well before the end.
        shard = 8_000_000
        ref = os.path.join(self.root, "ref-s3")
        r = ctl("quantize-model", "--local", "--input", self.inp, "--output", ref, "--method",
                "soar", "--device", "cpu", "--max-shard-size", str(shard), timeout=900)
        self.assertEqual(r.returncode, 0, r.stderr)
        want = digests(ref)
        total_bytes = sum(os.path.getsize(os.path.join(ref, n)) for n in want)
        self.assertGreater(len(want), 5, "expected several output files")

        out = "out/small-nvfp4/"
        a = self.start("S3A", f"--max_shard_bytes={shard}")
        job_id = self.submit(a, f"s3://{BUCKET}/{out.rstrip('/')}")
        staging = f"{out}.nvfp4-staging-{job_id}/"
        scratch = os.path.join(a.dir, "state", "work", job_id)
        self.wait_for(a, job_id, 1)
        self.assertIs(self.runner_of(job_id, [a]), a)
        b = self.start("S3B", f"--max_shard_bytes={shard}")
        # Kill -9 A once five finished files are in the bucket's staging prefix (and the job is
        # far from done); sample A's local scratch meanwhile.
        peak = 0
        deadline = time.time() + 300
        while True:
            peak = max(peak, disk_usage(scratch))
            handed = [k for k in self.s3_objects(staging) if k.endswith(".sha256")]
            job = get_job(b, job_id)
            done, total = progress(job, "tensors_done"), progress(job, "tensors_total")
            self.assertEqual(job["state"], "JOB_STATE_RUNNING", json.dumps(job) + a.logs())
            if len(handed) >= 5:
                break
            self.assertLess(time.time(), deadline, "no file handed over:\n" + a.logs())
            time.sleep(0.05)
        self.assertLess(done, total - 10, "the job was nearly done before the kill")
        a.kill()
        self.assertEqual([k for k in self.s3_objects(out) if not k.startswith(".nvfp4-staging-")],
                         [], "output published before the job finished")
        r = ctl("jobs", "watch", job_id, "--server", b.address)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr + b.logs())
        job = get_job(b, job_id)
        self.assertEqual(job["state"], "JOB_STATE_SUCCEEDED", json.dumps(job))
        self.assertRegex(b.logs(), rf"job {job_id} state QUEUED->RUNNING .*replica=S3B")
        # B resumed from A's handed-over files and journaled units: kept, not recomputed.
        m = re.search(rf"job {job_id} resumed at unit (\d+)/(\d+): kept (\d+)", b.logs())
        self.assertIsNotNone(m, b.logs())
        self.assertGreaterEqual(int(m.group(3)), len(handed))  # at least a unit per file
        self.assertGreaterEqual(progress(job, "tensors_resumed"), len(handed), json.dumps(job))
        # The published objects are byte-identical to a --local run; the staging prefix is gone.
        got = {}
        for key in self.s3_objects(out):
            body = self.moto.s3.get_object(Bucket=BUCKET, Key=out + key)["Body"].read()
            got[key] = hashlib.sha256(body).hexdigest()
        self.assertEqual(sorted(want), sorted(got))
        for name in want:
            self.assertEqual(want[name], got[name], f"{name} differs from an uninterrupted run")
        self.assertEqual({o["name"]: o["sha256"] for o in job["outputs"]}, got)
        # A's local scratch held a few files at a time (the ones being written, one being uploaded
        # and at most two finished ones waiting: here the embedding and lm_head files, 49 MB each,
        # are most of the output), never the whole output.
        largest = max(os.path.getsize(os.path.join(ref, n)) for n in want)
        self.assertLessEqual(peak, 3 * largest + 1_000_000, f"peak local scratch {peak}")
        self.assertLess(peak, total_bytes, f"peak local scratch {peak} of {total_bytes} bytes")
        print(f"\ns3:// kill -9: {len(handed)} files handed over at the kill ({done}/{total} "
              f"tensors); {m.group(0)}; tensors_resumed={progress(job, 'tensors_resumed')}; "
              f"A's peak local scratch {peak} bytes of a {total_bytes}-byte output")

if __name__ == "__main__":
    unittest.main()
