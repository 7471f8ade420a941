"""Interoperability of nvfp4ctl's checkpoints with the real Python libraries.

* `safetensors` loads every file we write (demo model, both NVFP4 layouts, sharded output).
* compressed-tensors validates our `quantization_config`, and its own NVFP4 decompression
  (NVFP4PackedCompressor.decompress, unpack_fp4_from_uint8 + dequantize) of our
  nvfp4-pack-quantized output equals our dequantization exactly.
* torch's float8_e4m3fn decoding of our block scales equals ours (all 256 codes too).
* The ModelOpt output holds the same codes and scale bytes; torch's dequantization with
  weight_scale_2 equals ours exactly.
* A calibration file written by PyTorch (docs/CALIBRATION.md) drives a W4A4 export.

Run by CTest through run_interop.sh (the venv from scripts/test_extra.d/10-interop-venv.sh):
  test_checkpoints.py --nvfp4ctl PATH --dequantize-tool PATH
"""

import argparse
import glob
import shutil
import sys
import tempfile
import unittest

import torch
import safetensors
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from compressed_tensors.compressors.nvfp4 import NVFP4PackedCompressor
from compressed_tensors.compressors.nvfp4.helpers import unpack_fp4_from_uint8
from compressed_tensors.quantization import QuantizationConfig
from compressed_tensors.quantization.lifecycle.forward import dequantize

from interop_util import load_dir, read_json, run, run_tests

ARGS = None
WORK = None


def modules_of(tensors, suffix):
    return sorted(k[: -len(suffix)] for k in tensors if k.endswith(suffix))


def setUpModule():
    global WORK
    WORK = tempfile.mkdtemp(prefix="nvfp4_interop_")
    ctl = ARGS.nvfp4ctl
    run(ctl, "make-demo-model", "--output", f"{WORK}/demo", "--preset", "tiny", "--shards", "2",
        "--seed", "3")
    for layout in ("modelopt", "compressed-tensors"):
        run(ctl, "quantize-model", "--local", "--input", f"{WORK}/demo",
            "--output", f"{WORK}/{layout}", "--layout", layout, "--method", "soar",
            "--max-shard-size", "1MB", "--device", "cpu", "--json")
        run(ARGS.dequantize_tool, f"{WORK}/{layout}", f"{WORK}/{layout}.ours.safetensors")
    # W4A4: a calibration file written by PyTorch, keyed by module (docs/CALIBRATION.md).
    weights = load_dir(f"{WORK}/demo")
    cal = {}
    g = torch.Generator().manual_seed(0)
    for name, w in weights.items():
        if name.endswith("_proj.weight"):
            m = name[: -len(".weight")]
            x = torch.randn(64, w.shape[1], generator=g)
            cal[f"{m}.input_sq"] = (x * x).sum(0)
            cal[f"{m}.input_gram"] = x.T @ x
            cal[f"{m}.input_amax"] = x.abs().max()
    save_file(cal, f"{WORK}/calib.safetensors")
    for layout in ("modelopt", "compressed-tensors"):
        run(ctl, "quantize-model", "--local", "--input", f"{WORK}/demo",
            "--output", f"{WORK}/{layout}-w4a4", "--layout", layout, "--method", "scalesweep",
            "--objective", "hessian", "--calibration", f"{WORK}/calib.safetensors",
            "--device", "cpu", "--json")
        run(ARGS.dequantize_tool, f"{WORK}/{layout}-w4a4", f"{WORK}/{layout}-w4a4.ours.safetensors")


def tearDownModule():
    shutil.rmtree(WORK, ignore_errors=True)


class SafetensorsLoadsEverything(unittest.TestCase):
    def test_every_file(self):
        # Every file written by nvfp4ctl (calib.safetensors is PyTorch's).
        files = sorted(f for f in glob.glob(f"{WORK}/**/*.safetensors", recursive=True)
                       if not f.endswith("calib.safetensors"))
        self.assertGreater(len(files), 8)
        dtypes = set()
        for f in files:
            with safe_open(f, framework="pt") as st:
                self.assertEqual(st.metadata().get("format"), "pt", f)
                for k in st.keys():
                    t = st.get_tensor(k)
                    dtypes.add(t.dtype)
            load_file(f)  # the one-shot loader too
        self.assertTrue({torch.uint8, torch.float8_e4m3fn, torch.float32, torch.bfloat16} <= dtypes)

    def test_index_matches_shards(self):
        for d in ("demo", "modelopt", "compressed-tensors"):
            index = read_json(f"{WORK}/{d}/model.safetensors.index.json")
            seen = {}
            total = 0
            for f in sorted(set(index["weight_map"].values())):
                with safe_open(f"{WORK}/{d}/{f}", framework="pt") as st:
                    for k in st.keys():
                        seen[k] = f
                        t = st.get_tensor(k)
                        total += t.numel() * t.element_size()
            self.assertEqual(seen, index["weight_map"], d)
            self.assertEqual(index["metadata"]["total_size"], total, d)


class CompressedTensors(unittest.TestCase):
    def check_layout(self, name, w4a4):
        d = f"{WORK}/{name}"
        cfg = read_json(f"{d}/config.json")["quantization_config"]
        qc = QuantizationConfig.model_validate(cfg)  # rejects unknown keys
        self.assertEqual(qc.format, "nvfp4-pack-quantized")
        scheme = qc.config_groups["group_0"]
        self.assertEqual(scheme.weights.strategy, "tensor_group")
        self.assertEqual(scheme.input_activations is not None, w4a4)
        self.assertTrue(NVFP4PackedCompressor.can_compress(torch.nn.Linear, scheme))
        t = load_dir(d)
        ours = load_file(f"{d}.ours.safetensors")
        mods = modules_of(t, ".weight_packed")
        self.assertEqual(len(mods), 14)
        for m in mods:
            packed, scale = t[f"{m}.weight_packed"], t[f"{m}.weight_scale"]
            gs = t[f"{m}.weight_global_scale"]
            self.assertEqual(packed.dtype, torch.uint8)
            self.assertEqual(scale.dtype, torch.float8_e4m3fn)
            self.assertEqual(tuple(gs.shape), (1,))
            if w4a4:
                self.assertEqual(tuple(t[f"{m}.input_global_scale"].shape), (1,))
            rows, half = packed.shape
            mine = ours[f"{m}.dequantized"]
            # compressed-tensors' own decompression (bf16 output, as it loads models).
            sd = {"weight_packed": packed, "weight_scale": scale, "weight_global_scale": gs}
            theirs = NVFP4PackedCompressor.decompress(sd, scheme)["weight"]
            self.assertTrue(torch.equal(theirs, mine.to(theirs.dtype)), m)
            # And in fp32, with its unpacker and dequantize(): bit-identical to ours.
            codes = unpack_fp4_from_uint8(packed, rows, half * 2, dtype=torch.float32)
            theirs32 = dequantize(x_q=codes, scale=scale.to(torch.float32), args=scheme.weights,
                                  global_scale=gs, dtype=torch.float32)
            self.assertTrue(torch.equal(theirs32, mine), m)
            # torch's float8_e4m3fn decoding of our scale bytes equals ours.
            self.assertTrue(torch.equal(scale.to(torch.float32), ours[f"{m}.scales_f32"]), m)

    def test_weight_only(self):
        self.check_layout("compressed-tensors", w4a4=False)

    def test_w4a4(self):
        self.check_layout("compressed-tensors-w4a4", w4a4=True)

    def test_e4m3_and_e2m1_tables(self):
        ours = load_file(f"{WORK}/compressed-tensors.ours.safetensors")
        theirs = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).to(torch.float32)
        mine = ours["e4m3_table"]
        nan = torch.isnan(theirs)
        self.assertTrue(torch.equal(nan, torch.isnan(mine)))
        self.assertEqual(int(nan.sum()), 2)  # 0x7F and 0xFF
        self.assertTrue(torch.equal(theirs[~nan], mine[~nan]))
        nibbles = torch.tensor([[i | (i << 4)] for i in range(16)], dtype=torch.uint8)
        e2m1 = unpack_fp4_from_uint8(nibbles, 16, 2, dtype=torch.float32)[:, 0]
        self.assertTrue(torch.equal(e2m1, ours["e2m1_table"]))


class ModelOpt(unittest.TestCase):
    def check_layout(self, name, ct_name, w4a4):
        d = f"{WORK}/{name}"
        hf = read_json(f"{d}/hf_quant_config.json")
        self.assertEqual(hf["quantization"]["quant_algo"], "NVFP4" if w4a4 else "W4A16_NVFP4")
        self.assertIn("lm_head", hf["quantization"]["exclude_modules"])
        t = load_dir(d)
        ct = load_dir(f"{WORK}/{ct_name}")
        ours = load_file(f"{d}.ours.safetensors")
        mods = modules_of(t, ".weight_scale_2")
        self.assertEqual(len(mods), 14)
        for m in mods:
            packed, scale, g = t[f"{m}.weight"], t[f"{m}.weight_scale"], t[f"{m}.weight_scale_2"]
            self.assertEqual(tuple(g.shape), ())
            self.assertEqual(packed.dtype, torch.uint8)
            if w4a4:
                self.assertEqual(tuple(t[f"{m}.input_scale"].shape), ())
            # The same codes and scale bytes as the compressed-tensors export; 1/g stored there.
            self.assertTrue(torch.equal(packed, ct[f"{m}.weight_packed"]), m)
            self.assertTrue(torch.equal(scale.view(torch.uint8), ct[f"{m}.weight_scale"].view(torch.uint8)), m)
            self.assertEqual(float(ct[f"{m}.weight_global_scale"][0]), float(torch.tensor(1.0) / g))
            rows, half = packed.shape
            codes = unpack_fp4_from_uint8(packed, rows, half * 2, dtype=torch.float32)
            s = scale.to(torch.float32).repeat_interleave(16, dim=1)
            theirs = (codes * s) * g
            self.assertTrue(torch.equal(theirs, ours[f"{m}.dequantized"]), m)
        # Full-precision tensors are byte-identical to the input.
        demo = load_dir(f"{WORK}/demo")
        for k in ("lm_head.weight", "model.embed_tokens.weight", "model.norm.weight"):
            self.assertTrue(torch.equal(t[k], demo[k]), k)
            self.assertEqual(t[k].dtype, torch.bfloat16)

    def test_weight_only(self):
        self.check_layout("modelopt", "compressed-tensors", w4a4=False)

    def test_w4a4(self):
        self.check_layout("modelopt-w4a4", "compressed-tensors-w4a4", w4a4=True)
        t = load_dir(f"{WORK}/modelopt-w4a4")
        ct = load_dir(f"{WORK}/compressed-tensors-w4a4")
        cal = load_file(f"{WORK}/calib.safetensors")
        for l in range(2):
            p = f"model.layers.{l}.self_attn."
            amax = max(float(cal[p + x + ".input_amax"]) for x in ("q_proj", "k_proj", "v_proj"))
            for x in ("q_proj", "k_proj", "v_proj"):
                self.assertAlmostEqual(float(t[p + x + ".input_scale"]), amax / 2688, delta=1e-7 * amax)
                self.assertAlmostEqual(float(ct[p + x + ".input_global_scale"][0]), 2688 / amax,
                                       delta=1e-4 * 2688 / amax)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--nvfp4ctl", required=True)
    parser.add_argument("--dequantize-tool", required=True)
    ARGS, rest = parser.parse_known_args()
    run_tests(rest, ("torch", "safetensors", "compressed-tensors"))
