"""Helpers shared by the interoperability tests (tests/interop/test_*.py)."""

import glob
import json
import os
import subprocess
import sys

from safetensors.torch import load_file


def run(*cmd):
    """Runs a command; AssertionError with its output when it fails."""
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(f"{cmd} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.stdout


def read_json(path):
    with open(path) as f:
        return json.load(f)


def load_dir(d):
    """All tensors of a checkpoint directory, through safetensors' own loader (each name once)."""
    out = {}
    for f in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        t = load_file(f)
        for k in t:
            assert k not in out, f"{k} in two files"
        out.update(t)
    return out


def modelopt_dequantize(packed, scale, scale_2):
    """A ModelOpt NVFP4 weight decoded in torch, fp32: E2M1 codes (compressed-tensors' unpacker)
    times the E4M3 block scale of each 16 elements times weight_scale_2."""
    import torch
    from compressed_tensors.compressors.nvfp4.helpers import unpack_fp4_from_uint8

    rows, half = packed.shape
    codes = unpack_fp4_from_uint8(packed, rows, half * 2, dtype=torch.float32)
    return codes * scale.to(torch.float32).repeat_interleave(16, dim=1) * scale_2.float()


def decode_modelopt(d):
    """Every quantized module of a ModelOpt NVFP4 checkpoint directory, decoded in torch
    (modelopt_dequantize): {module: fp32 weight}."""
    t = load_dir(d)
    return {k[: -len(".weight_scale_2")]: modelopt_dequantize(
                t[k[: -len("_scale_2")]], t[k[: -len("_2")]], t[k])
            for k in t if k.endswith(".weight_scale_2")}


def assert_close_to_control(test, name, rel):
    """Logits of the dequantized weights against a control (the original weights plus random
    noise of the same size per tensor): `rel` holds the logits' relative errors "dequantized" and
    "control". A random model amplifies any weight error; a misplaced expert, a transposed or
    swapped gate/up gives an error of order 1."""
    print(f"{name}: logits relative error {rel['dequantized']:.4f} "
          f"(same-size noise: {rel['control']:.4f})", file=sys.stderr)
    test.assertGreater(rel["dequantized"], 0.0, name)  # the weights were replaced
    test.assertLess(rel["dequantized"], 2 * rel["control"], name)
    test.assertLess(rel["dequantized"], 0.5, name)


def run_tests(rest, packages):
    """Runs the calling script's unittest cases (argv `rest`), printing the versions of
    `packages` first; exits 0 only when at least one test ran and all passed."""
    import importlib.metadata
    import sys
    import unittest

    print("interop: " + ", ".join(f"{p} {importlib.metadata.version(p)}" for p in packages))
    result = unittest.main(module="__main__", argv=[sys.argv[0]] + rest, exit=False,
                           verbosity=2).result
    n, f = result.testsRun, len(result.failures) + len(result.errors)
    print(f"{n - f} passed, {f} failed")
    sys.exit(0 if result.wasSuccessful() and n > 0 else 1)
