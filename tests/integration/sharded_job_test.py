#!/usr/bin/env python3
"""Sharded quantization as the Kubernetes Indexed Job runs it (deploy/jobs), with real processes.

N concurrent `nvfp4ctl quantize-model --local --shard i/N` processes write into one output
directory, then `nvfp4ctl finalize` writes the index and configs. Checks, on the tiny demo model
with a small --max-shard-size (several output files):
  * the result is byte-identical (sha256 of every file) to a single `quantize-model --local` run
    with the same flags, for both layouts;
  * finalize before every shard is present exits 2, names the missing files and writes nothing;
  * --shard validation (bad syntax, i >= N) exits 2 with a clear message;
  * a process with no file to write (N larger than the number of files) says so and exits 0;
  * the command lines of deploy/jobs/shards/job.yaml and deploy/jobs/finalize/job.yaml, with their
    $(VARS) substituted, run against local directories.

Needs NVFP4CTL (path of the nvfp4ctl binary). Run: NVFP4CTL=build/client/nvfp4ctl python3 this.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

from harness import digests

NVFP4CTL = os.environ.get("NVFP4CTL", "")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAX_SHARD = "300KB"
# Fast and deterministic: rtn on one CPU thread.
COMMON = ["--method", "rtn", "--max-shard-size", MAX_SHARD]
LOCAL = ["--device", "cpu", "--threads", "1"]


def run(args, check=None, env=None):
    p = subprocess.run([NVFP4CTL] + args, capture_output=True, text=True, timeout=600, env=env)
    if check is not None and p.returncode != check:
        raise AssertionError(
            f"nvfp4ctl {' '.join(args)}: exit {p.returncode}, want {check}\n"
            f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def quantize_shards(inp, out, n, extra, indices=None):
    """Runs `--shard i/n` for the given indices as concurrent processes; returns their results."""
    procs = []
    for i in (range(n) if indices is None else indices):
        procs.append(subprocess.Popen(
            [NVFP4CTL, "quantize-model", "--local", "--input", inp, "--output", out,
             "--shard", f"{i}/{n}"] + extra,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        results.append((p.returncode, stdout, stderr))
    return results


def manifest_args(path):
    """The container args of a Job manifest (the `args:` list of plain `- item` lines)."""
    args, inside = [], False
    with open(path) as fh:
        for line in fh:
            if re.match(r"^\s*args:\s*$", line):
                inside = True
                continue
            if inside:
                m = re.match(r"^\s*-\s+(.*?)\s*$", line)
                if not m:
                    break
                args.append(m.group(1).strip('"'))
    return args


class ShardedJobTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not NVFP4CTL or not os.access(NVFP4CTL, os.X_OK):
            raise unittest.SkipTest("NVFP4CTL is not set to the nvfp4ctl binary")
        cls.tmp = tempfile.mkdtemp(prefix="nvfp4_sharded_job_")
        cls.input = os.path.join(cls.tmp, "tiny")
        run(["make-demo-model", "--preset", "tiny", "--seed", "5", "--shards", "2",
             "--output", cls.input], check=0)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def out(self, name):
        return os.path.join(self.tmp, name)

    def single(self, layout):
        out = self.out(f"single-{layout}")
        if not os.path.exists(out):
            run(["quantize-model", "--local", "--input", self.input, "--output", out,
                 "--layout", layout] + COMMON + LOCAL, check=0)
        return out

    def test_three_processes_then_finalize_equal_a_single_run(self):
        for layout in ("modelopt", "compressed-tensors"):
            with self.subTest(layout=layout):
                single = self.single(layout)
                want = digests(single)
                shard_files = [f for f in want if f.endswith(".safetensors")]
                self.assertGreaterEqual(len(shard_files), 3, want.keys())
                out = self.out(f"sharded-{layout}")
                flags = ["--layout", layout] + COMMON
                results = quantize_shards(self.input, out, 3, flags + LOCAL)
                written = []
                for i, (rc, stdout, stderr) in enumerate(results):
                    self.assertEqual(rc, 0, f"shard {i}/3:\n{stdout}\n{stderr}")
                    self.assertIn(f"shard {i}/3: writing", stderr)
                    written += re.findall(r"model-\d+-of-\d+\.safetensors", stdout)
                # Every file written by exactly one process; no configs before finalize.
                self.assertEqual(sorted(written), sorted(shard_files))
                self.assertEqual(sorted(os.listdir(out)), sorted(shard_files))
                p = run(["finalize", "--input", self.input, "--output", out] + flags, check=0)
                self.assertIn("finalized", p.stdout)
                got = digests(out)
                self.assertEqual(sorted(got), sorted(want))
                for name in want:
                    self.assertEqual(got[name], want[name], f"{layout}: {name} differs")
                # Nothing left beside the output (staging directories).
                self.assertFalse([e for e in os.listdir(self.tmp) if ".part-" in e])
                # Finalize is repeatable (same bytes).
                run(["finalize", "--input", self.input, "--output", out] + flags, check=0)
                self.assertEqual(digests(out), want)

    def test_finalize_with_missing_shards_fails_and_writes_nothing(self):
        want = digests(self.single("modelopt"))
        out = self.out("partial")
        results = quantize_shards(self.input, out, 3, COMMON + LOCAL, indices=[0])
        self.assertEqual(results[0][0], 0, results[0])
        before = digests(out)
        present = set(before)
        missing = sorted(f for f in want if f.endswith(".safetensors") and f not in present)
        self.assertTrue(missing)
        p = run(["finalize", "--input", self.input, "--output", out] + COMMON, check=2)
        self.assertIn("missing", p.stderr)
        for f in missing:
            self.assertIn(f, p.stderr)
        for f in present:
            self.assertNotIn(f, p.stderr)
        self.assertEqual(digests(out), before)
        # An output nobody wrote to: every file missing, nothing created.
        p = run(["finalize", "--input", self.input, "--output", self.out("never")] + COMMON,
                check=2)
        self.assertIn("missing", p.stderr)
        self.assertFalse(os.path.exists(self.out("never")))

    def test_shard_flag_validation(self):
        for bad, needle in [("abc", "expected i/N"), ("3/3", "out of range"),
                            ("5/3", "out of range"), ("1/0", "N must be >= 1"),
                            ("-1/3", "expected i/N"), ("1/3/4", "expected i/N"),
                            ("", None)]:
            with self.subTest(shard=bad):
                out = self.out("bad-shard")
                p = run(["quantize-model", "--local", "--input", self.input, "--output", out,
                         "--shard", bad] + COMMON + LOCAL, check=2)
                if needle:
                    self.assertIn("--shard", p.stderr)
                    self.assertIn(needle, p.stderr)
                self.assertFalse(os.path.exists(out))
        p = run(["quantize-model", "--local", "--input", self.input, "--output",
                 self.out("x"), "--shard", "0/2", "--overwrite"] + COMMON + LOCAL, check=2)
        self.assertIn("--overwrite", p.stderr)

    def test_more_processes_than_files(self):
        want = digests(self.single("modelopt"))
        files = len([f for f in want if f.endswith(".safetensors")])
        out = self.out("many")
        n = files + 2
        results = quantize_shards(self.input, out, n, COMMON + LOCAL)
        idle = 0
        for i, (rc, stdout, stderr) in enumerate(results):
            self.assertEqual(rc, 0, f"shard {i}/{n}: {stderr}")
            if "nothing to do" in stderr:
                idle += 1
        self.assertEqual(idle, n - files)
        run(["finalize", "--input", self.input, "--output", out] + COMMON, check=0)
        self.assertEqual(digests(out), want)

    def test_deploy_manifests_command_lines(self):
        """The Job manifests' args, with $(VARS) substituted, against local directories."""
        shards_args = manifest_args(os.path.join(REPO, "deploy/jobs/shards/job.yaml"))
        finalize_args = manifest_args(os.path.join(REPO, "deploy/jobs/finalize/job.yaml"))
        self.assertTrue(shards_args and finalize_args)
        n = 2
        out = self.out("deploy")
        env = {"NVFP4_INPUT": self.input, "NVFP4_OUTPUT": out, "NVFP4_NUM_SHARDS": str(n)}

        def subst(args, extra_env):
            e = dict(env, **extra_env)
            return [re.sub(r"\$\((\w+)\)", lambda m: e[m.group(1)], a) for a in args]

        # The manifests use the defaults (5 GB files): the tiny model is one file.
        procs = [subprocess.Popen([NVFP4CTL] + subst(shards_args, {"JOB_COMPLETION_INDEX": str(i)})
                                  + LOCAL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for i in range(n)]
        for i, p in enumerate(procs):
            stdout, stderr = p.communicate(timeout=600)
            self.assertEqual(p.returncode, 0, f"shard manifest args, index {i}: {stderr}")
        fin = subst(finalize_args, {})
        if "--input" not in fin:
            sys.stderr.write(
                "NOTE: deploy/jobs/finalize/job.yaml passes no --input; finalize needs it "
                "(add `- --input` and `- $(NVFP4_INPUT)` to its args). Adding it here.\n")
            fin += ["--input", self.input]
        run(fin, check=0)
        single = self.out("deploy-single")
        run(["quantize-model", "--local", "--input", self.input, "--output", single] + LOCAL,
            check=0)
        self.assertEqual(digests(out), digests(single))


if __name__ == "__main__":
    unittest.main(verbosity=2)
