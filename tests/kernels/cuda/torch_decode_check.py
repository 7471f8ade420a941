#!/usr/bin/env python3
"""Decodes our packed NVFP4 output with PyTorch's own fp8/fp4 dtypes and checks it equals our
dequantization bit for bit.

Input: the .bin files written by cuda_backend_test (DumpForTorchDecodeCheck) when NVFP4_DUMP_DIR is
set: b"NVFP4DMP", int64 rows, int64 cols, float32 g, packed uint8 [rows*cols/2] (element 2j in the
low nibble of byte j), scales uint8 [rows*cols/16] (E4M3), our dequantization float32 [rows*cols].

Scales are decoded with torch.float8_e4m3fn. Codes are decoded with torch.float4_e2m1fn_x2 when this
torch can convert it to float32; torch 2.11 cannot ("copy_kernel" not implemented for
'Float4_e2m1fn_x2'), so they are then decoded with ml_dtypes.float4_e2m1fn (an independent
implementation of the OCP E2M1 format, installed beside torch), and the script says which it used.

Usage: python3 torch_decode_check.py DIR
"""
import glob
import os
import struct
import sys

import numpy as np
import torch


def decode_e2m1_torch(packed: torch.Tensor) -> torch.Tensor:
    """packed uint8 [n] -> float32 [2n] via torch.float4_e2m1fn_x2 (low nibble first)."""
    dt = torch.float4_e2m1fn_x2
    errors = []
    # CPU only: on torch 2.11 + CUDA the conversion returns one value per byte and then trips a
    # device-side assert that poisons the CUDA context (seen on an H100, 2026-11-22).
    for device in ["cpu"]:
        try:
            x = packed.to(device).view(dt)
            f = x.to(torch.float32)
            if f.numel() == 2 * packed.numel():
                return f.reshape(-1).cpu(), f"torch.float4_e2m1fn_x2 -> float32 on {device}"
            errors.append(f"{device}: conversion returned {f.numel()} values for {packed.numel()} bytes")
        except Exception as e:  # noqa: BLE001 - report why and fall back
            errors.append(f"{device}: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
    raise NotImplementedError("; ".join(errors))


def decode_e2m1_ml_dtypes(packed: np.ndarray) -> np.ndarray:
    import ml_dtypes

    nib = np.empty(packed.size * 2, dtype=np.uint8)
    nib[0::2] = packed & 0xF
    nib[1::2] = packed >> 4
    return nib.view(ml_dtypes.float4_e2m1fn).astype(np.float32)


def main() -> int:
    d = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("NVFP4_DUMP_DIR", ".")
    files = sorted(glob.glob(os.path.join(d, "*.bin")))
    if not files:
        print(f"no .bin files in {d}")
        return 1
    print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}")
    failures = 0
    for path in files:
        raw = open(path, "rb").read()
        assert raw[:8] == b"NVFP4DMP", path
        rows, cols = struct.unpack_from("<qq", raw, 8)
        (g,) = struct.unpack_from("<f", raw, 24)
        n = rows * cols
        off = 28
        packed = np.frombuffer(raw, dtype=np.uint8, count=n // 2, offset=off)
        off += n // 2
        scales = np.frombuffer(raw, dtype=np.uint8, count=n // 16, offset=off)
        off += n // 16
        ours = np.frombuffer(raw, dtype=np.float32, count=n, offset=off)

        s = torch.from_numpy(scales.copy()).view(torch.float8_e4m3fn).to(torch.float32)
        try:
            q, how = decode_e2m1_torch(torch.from_numpy(packed.copy()))
        except NotImplementedError as e:
            q = torch.from_numpy(decode_e2m1_ml_dtypes(packed))
            how = f"ml_dtypes.float4_e2m1fn (torch fp4 conversion unavailable: {e})"
        # Same expression and order as the loaders and our Dequantize: E2M1 * E4M3 * g, in fp32.
        w = (q.reshape(rows, cols // 16, 16) * s.reshape(rows, cols // 16, 1)) * torch.tensor(
            g, dtype=torch.float32)
        theirs = w.reshape(-1).numpy()
        same = np.array_equal(theirs.view(np.uint32), ours.view(np.uint32)) or np.array_equal(
            theirs, ours)
        bad = int(np.sum(theirs != ours))
        print(f"{os.path.basename(path)}: [{rows}, {cols}] g={g:.6g} codes via {how}: "
              f"{'OK' if same else f'MISMATCH ({bad} elements)'}")
        failures += 0 if same else 1
    print("torch decode check:", "PASS" if failures == 0 else f"FAIL ({failures} files)")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
