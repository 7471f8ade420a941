"""The Python client (client/python/nvfp4_client.py) against a real nvfp4d on port 0: one tensor
quantized through it is byte-identical to nvfp4ctl quantize-tensor --local; a model job is
submitted, watched with a callback, and cancelled; examples/after_training.py runs end to end.
Runs in the venv of scripts/test_extra.d/20-python-client.sh; FAILS (never skips) without it."""
import os
import struct
import subprocess
import sys

VENV = os.environ.get("NVFP4_PY_CLIENT_VENV",
                      os.path.expanduser("~/.cache/nvfp4-py-client-venv"))
VENV_PY = os.path.join(VENV, "bin", "python")
if os.path.realpath(sys.prefix) != os.path.realpath(VENV):
    if not os.path.exists(VENV_PY):
        sys.exit(f"FAIL: {VENV_PY} missing: run scripts/test_extra.d/20-python-client.sh "
                 "(grpcio, grpcio-tools, protobuf, numpy)")
    os.execv(VENV_PY, [VENV_PY] + sys.argv)

import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import unittest  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PY_CLIENT = os.path.normpath(os.path.join(HERE, "..", "..", "client", "python"))
sys.path.insert(0, PY_CLIENT)
from harness import Server, bf16_bytes, ctl, write_llama_checkpoint, write_safetensors  # noqa: E402


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    return {k: data[v["data_offsets"][0]:v["data_offsets"][1]]
            for k, v in header.items() if k != "__metadata__"}


class PythonClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stubs = tempfile.mkdtemp(prefix="nvfp4-py-stubs-")
        os.environ["NVFP4_PY_STUBS"] = cls.stubs
        global nvfp4_client
        import nvfp4_client  # generates the stubs from proto/

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.stubs, ignore_errors=True)

    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="nvfp4-py-root-")
        self.server = Server(self.root)

    def tearDown(self):
        self.server.kill()
        shutil.rmtree(self.root, ignore_errors=True)

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
            with nvfp4_client.Client(self.server.address, chunk_bytes=256 << 10) as c:
                q = c.quantize_tensor(data, name="w", dtype="bf16", shape=[256, 512],
                                      method=method, soar_max_iterations=15)
            self.assertEqual(q.packed, local["w"], method)
            self.assertEqual(q.scales, local["w_scale"], method)
            self.assertEqual(struct.pack("<f", q.global_scale), local["w_scale_2"], method)
            self.assertGreater(q.metrics["sqnr_db"], 0)
            self.assertEqual(q.device, "cpu")
        # numpy input too.
        import numpy as np
        with nvfp4_client.Client(self.server.address) as c:
            q = c.quantize_tensor(np.random.default_rng(0).standard_normal((32, 64), np.float32),
                                  method="rtn")
            self.assertEqual((q.rows, q.cols, len(q.packed), len(q.scales)), (32, 64, 1024, 128))

    def test_gptq_tensor_and_model_job(self):
        """gptq with the input Gram: a tensor over gRPC (PART_GRAM chunks) is byte-identical to
        nvfp4ctl quantize-tensor --local; a QuantizeModel job reads the Grams from its
        calibration_uri; a job whose calibration lacks a Gram fails naming the module."""
        import numpy as np
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
        with nvfp4_client.Client(self.server.address, chunk_bytes=64 << 10) as c:
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
        with nvfp4_client.Client(self.server.address) as c:
            job = c.quantize_model("file://" + inp, "file://" + os.path.join(self.root, "gq"),
                                   method="gptq", calibration_uri="file://" + model_cal,
                                   gptq={"block_scales": "scalesweep", "global_scale": "amax"})
            final = c.watch(job.job_id)
            self.assertEqual(nvfp4_client.state_name(final.state), "SUCCEEDED",
                             final.error.message)
            bad = c.quantize_model("file://" + inp, "file://" + os.path.join(self.root, "gq2"),
                                   method="gptq", calibration_uri="file://" + partial_cal)
            final = c.watch(bad.job_id)
            self.assertEqual(nvfp4_client.state_name(final.state), "FAILED")
            self.assertIn("model.layers.0.mlp.down_proj", final.error.message)
            self.assertIn("input_gram", final.error.message)

    def test_model_job_watch_and_cancel(self):
        inp = os.path.join(self.root, "llama")
        write_llama_checkpoint(inp, layers=2, hidden=256, inter=512)
        events = []
        with nvfp4_client.Client(self.server.address) as c:
            job = c.quantize_model("file://" + inp, "file://" + os.path.join(self.root, "out"),
                                   method="rtn", request_id="py-1")
            final = c.watch(job.job_id, events.append)
            self.assertEqual(nvfp4_client.state_name(final.state), "SUCCEEDED")
            self.assertIn("model.safetensors", [f.name for f in final.outputs])
            self.assertEqual(final.progress.tensors_done, final.progress.tensors_total)
            quantized = [t for e in events for t in e.tensors if t.quantized]
            self.assertTrue(any(t.name.endswith("q_proj.weight") for t in quantized))
            self.assertEqual(c.quantize_model("file://" + inp,
                                              "file://" + os.path.join(self.root, "out"),
                                              method="rtn", request_id="py-1").job_id, job.job_id)
            # Cancel (idempotent) a bigger job.
            big = os.path.join(self.root, "big")
            write_llama_checkpoint(big, layers=6, hidden=512, inter=1024)
            job = c.quantize_model("file://" + big, "file://" + os.path.join(self.root, "big-out"),
                                   method="soar")
            c.cancel(job.job_id)
            c.cancel(job.job_id)
            final = c.watch(job.job_id)
            self.assertEqual(nvfp4_client.state_name(final.state), "CANCELLED")

    def test_after_training_example(self):
        inp = os.path.join(self.root, "run")
        write_llama_checkpoint(inp, layers=1, hidden=256, inter=512)
        r = subprocess.run([sys.executable, os.path.join(PY_CLIENT, "examples", "after_training.py"),
                            "--server", self.server.address, "--input", "file://" + inp,
                            "--output", "file://" + os.path.join(self.root, "run-nvfp4"),
                            "--method", "rtn"], capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("SUCCEEDED", r.stdout)
        self.assertIn("model.safetensors", r.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
