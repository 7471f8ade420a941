#!/usr/bin/env python3
"""Writes a calibration file (docs/CALIBRATION.md) with a synthetic input Gram for every Linear
weight of a checkpoint, for benchmarks of method gptq (bench/e2e_quantize_model.sh --gptq).

Modules that read one input (q/k/v, gate/up of a layer) get the same Gram; Grams of the same K are
the same matrix (log-normal channel scales on a 0.8^|i-j| correlation), so the file costs one
K*K*4 write per module. Needs numpy.

  bench/make_demo_calibration.py CHECKPOINT_DIR OUT.safetensors
"""
import json
import os
import struct
import sys

import numpy as np


def weights(ckpt):
    """(module name, [N, K]) of every 2-D *.weight of the checkpoint (single or sharded)."""
    files = sorted(f for f in os.listdir(ckpt) if f.endswith(".safetensors"))
    for f in files:
        with open(os.path.join(ckpt, f), "rb") as fh:
            header = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
        for name, info in header.items():
            if name.endswith(".weight") and len(info.get("shape", [])) == 2 and \
                    ".layers." in name:
                yield name[:-len(".weight")], tuple(info["shape"])


def gram(k, seed):
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.normal(0.0, 0.5, k))
    i = np.arange(k)
    corr = 0.8 ** np.abs(i[:, None] - i[None, :])
    return (corr * scale[:, None] * scale[None, :]).astype("<f4")


def main():
    ckpt, out = sys.argv[1], sys.argv[2]
    mods = sorted(set(weights(ckpt)))
    cache = {}
    entries = []
    for name, (n, k) in mods:
        if k % 16 or name.endswith(("embed_tokens", "lm_head")):
            continue
        if k not in cache:
            cache[k] = gram(k, k)
        entries.append((name + ".input_gram", k))
    header, offset = {}, 0
    for key, k in entries:
        size = k * k * 4
        header[key] = {"dtype": "F32", "shape": [k, k], "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(out, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        for _, k in entries:
            fh.write(cache[k].tobytes())
    print(f"{out}: {len(entries)} Grams, {offset / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
