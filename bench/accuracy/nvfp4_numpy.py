"""An independent numpy NVFP4 codec, checkpoint decoder, and rtn and GPTQ references.

Nothing here shares code with the C++ project: the format is implemented from its definition
(docs/NUMERICS.md section 1-2, docs/CHECKPOINTS.md ModelOpt layout) so that decoding our CLI's
output checks it, and the GPTQ reference (Frantar et al., arXiv 2210.17323, Algorithm 1) checks
the C++ `--method gptq`.
"""

import glob
import json
import os
import struct

import numpy as np

E2M1_VALUES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                        -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0], dtype=np.float32)
E2M1_MAX = 6.0
E4M3_MAX = 448.0
E4M3_MIN = 2.0 ** -9


def _e4m3_table():
    """Values of the 256 E4M3 (fn) bytes; NaN for 0x7F and 0xFF."""
    b = np.arange(256)
    sign = np.where(b & 0x80, -1.0, 1.0)
    exp, man = (b >> 3) & 0xF, b & 0x7
    value = np.where(exp == 0, 2.0 ** -6 * man / 8.0, 2.0 ** (exp - 7.0) * (1.0 + man / 8.0))
    value = sign * value
    value[(exp == 15) & (man == 7)] = np.nan
    return value


E4M3_VALUES = _e4m3_table()
_E4M3_POSITIVE = E4M3_VALUES[1:127]  # bytes 1..126, increasing


def e4m3_decode(codes):
    """float64 values of E4M3 bytes; a NaN scale is a corrupt file."""
    values = E4M3_VALUES[codes]
    if np.isnan(values).any():
        raise ValueError("NaN E4M3 block scale")
    return values


def e4m3_encode(x):
    """E4M3 bytes of positive scales: clamp to [2^-9, 448], round to nearest, ties to even."""
    x = np.clip(np.asarray(x, dtype=np.float64), E4M3_MIN, E4M3_MAX)
    hi = np.clip(np.searchsorted(_E4M3_POSITIVE, x), 1, len(_E4M3_POSITIVE) - 1)
    lo = hi - 1
    d_lo, d_hi = x - _E4M3_POSITIVE[lo], _E4M3_POSITIVE[hi] - x
    # Byte = index + 1; the even byte of a tie is the one with an odd index.
    pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (hi % 2 == 1))
    return (np.where(pick_hi, hi, lo) + 1).astype(np.uint8)


_E2M1_GRID = E2M1_VALUES[:8].astype(np.float64)


def e2m1_round(y):
    """Nearest E2M1 value of each element (ties to the even code, saturating at +-6)."""
    a = np.minimum(np.abs(y), E2M1_MAX)
    hi = np.clip(np.searchsorted(_E2M1_GRID, a), 1, 7)
    lo = hi - 1
    d_lo, d_hi = a - _E2M1_GRID[lo], _E2M1_GRID[hi] - a
    pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (hi % 2 == 0))
    return np.copysign(_E2M1_GRID[np.where(pick_hi, hi, lo)], y)


# ---------------------------------------------------------------------------------------------
# Reading checkpoints

_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "U8": np.uint8, "F8_E4M3": np.uint8,
              "I64": np.int64, "BF16": np.uint16}


def read_safetensors(path):
    """name -> (dtype string, numpy array) of a safetensors file. BF16 comes back as uint16 bit
    patterns and F8_E4M3 as raw bytes; offsets and sizes are checked against the header."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    buffer = memoryview(data)[8 + n:]
    out = {}
    for name, entry in header.items():
        dtype = np.dtype(_ST_DTYPES[entry["dtype"]])
        begin, end = entry["data_offsets"]
        count = int(np.prod(entry["shape"], dtype=np.int64))
        if end - begin != count * dtype.itemsize or end > len(buffer):
            raise ValueError(f"{path}: tensor {name}: bad data_offsets {begin, end}")
        array = np.frombuffer(buffer[begin:end], dtype=dtype).reshape(entry["shape"])
        out[name] = (entry["dtype"], array)
    return out


def dequantize(packed, scales, global_scale):
    """fp32 [N, K] weights of a ModelOpt NVFP4 tensor: U8 [N, K/2] codes (low nibble = even
    element), E4M3 bytes [N, K/16], fp32 decode-form global scale."""
    n, half_k = packed.shape
    if 2 * half_k != 16 * scales.shape[1] or scales.shape[0] != n:
        raise ValueError(f"packed {packed.shape} and scales {scales.shape} do not match")
    codes = np.empty((n, 2 * half_k), dtype=np.uint8)
    codes[:, 0::2] = packed & 0x0F
    codes[:, 1::2] = packed >> 4
    block_scale = np.repeat(e4m3_decode(scales), 16, axis=1)
    return (E2M1_VALUES[codes] * block_scale * float(global_scale)).astype(np.float32)


def load_nvfp4_checkpoint(directory):
    """module -> dequantized fp32 weight for every NVFP4 Linear of a ModelOpt-layout checkpoint
    (single or sharded safetensors)."""
    tensors = {}
    for path in sorted(glob.glob(os.path.join(directory, "*.safetensors"))):
        tensors.update(read_safetensors(path))
    weights = {}
    for name, (dtype, scales) in tensors.items():
        if not name.endswith(".weight_scale") or dtype != "F8_E4M3":
            continue
        module = name[:-len(".weight_scale")]
        packed_dtype, packed = tensors[module + ".weight"]
        g_dtype, g = tensors[module + ".weight_scale_2"]
        if packed_dtype != "U8" or g_dtype != "F32" or g.size != 1:
            raise ValueError(f"{module}: not a ModelOpt NVFP4 tensor ({packed_dtype}, {g_dtype})")
        weights[module] = dequantize(packed, scales, g.reshape(()))
    return weights


# ---------------------------------------------------------------------------------------------
# Reference quantizers


def rtn_reference(weight):
    """Dequantized NVFP4 absmax (`rtn`) weights, computed as docs/NUMERICS.md 3.1 prescribes:
    g = A / 2688, s_b = E4M3(A_b / (6 g)) (1.0 for an all-zero block), codes of x / (s_b g) with
    an fp32 division. The CLI's `--method rtn` output must decode to exactly these values."""
    w = np.asarray(weight, dtype=np.float32)
    g = np.float32(np.abs(w).max() / np.float32(E2M1_MAX * E4M3_MAX))
    blocks = w.reshape(w.shape[0], -1, 16)
    amax = np.abs(blocks).max(axis=2)
    scale = np.where(amax > 0, E4M3_VALUES[e4m3_encode(amax / (np.float32(E2M1_MAX) * g))], 1.0)
    values = e2m1_round(blocks / (scale.astype(np.float32) * g)[..., None])
    return (values * scale[..., None] * float(g)).reshape(w.shape).astype(np.float32)


def _quantize_column(w, scale, g):
    """NVFP4 round trip of one column given each row's block scale value and the global scale."""
    return e2m1_round(w / (scale * g)) * scale * g


def gptq_reference(weight, gram, block_size=128, dampening=0.01):
    """Dequantized GPTQ weights (Frantar et al. 2022, Algorithm 1) with NVFP4 absmax scales.

    H = gram + dampening * mean(diag) * I (dead inputs: H_ii = 1, W[:, i] = 0); U = the upper
    Cholesky factor of H^-1; columns are quantized left to right, each error (w - q) / U_ii
    propagated to the remaining columns of the lazy batch through row i of U, and each batch's
    errors to the later columns at the end of the batch. Global scale g = amax(W) / (6 * 448) in
    fp32 (the value a checkpoint stores);
    each 16-column block's E4M3 scales are the absmax of the block's error-updated values at its
    first column. Computed in float64."""
    w = np.array(weight, dtype=np.float64)
    h = np.array(gram, dtype=np.float64)
    n, k = w.shape
    if k % 16 or block_size % 16:
        raise ValueError("K and the block size must be multiples of 16")
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h[np.diag_indices(k)] += dampening * np.mean(np.diag(h))
    g = float(np.float32(np.abs(weight).max()) / np.float32(E2M1_MAX * E4M3_MAX))  # stored fp32
    if g == 0:
        return w.astype(np.float32)
    h_inv = np.linalg.inv(np.linalg.cholesky(h))
    h_inv = h_inv.T @ h_inv                       # H^-1 from its Cholesky factor
    u = np.linalg.cholesky(h_inv).T               # upper: H^-1 = U^T U
    q = np.zeros_like(w)
    for i1 in range(0, k, block_size):
        i2 = min(i1 + block_size, k)
        w1 = w[:, i1:i2].copy()
        err = np.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        for i in range(i2 - i1):
            if i % 16 == 0:
                amax = np.abs(w1[:, i:i + 16]).max(axis=1)
                scale = np.where(amax > 0, E4M3_VALUES[e4m3_encode(amax / (E2M1_MAX * g))], 1.0)
            q[:, i1 + i] = _quantize_column(w1[:, i], scale, g)
            err[:, i] = (w1[:, i] - q[:, i1 + i]) / u1[i, i]
            w1[:, i:] -= np.outer(err[:, i], u1[i, i:])
        w[:, i2:] -= err @ u[i1:i2, i2:]
    return q.astype(np.float32)


def output_nmse(weight, approx, gram):
    """||X W^T - X W_hat^T||^2 / ||X W^T||^2 from the Gram X^T X (float64)."""
    w = np.asarray(weight, dtype=np.float64)
    e = w - approx
    h = np.asarray(gram, dtype=np.float64)
    return float(np.sum((e @ h) * e) / np.sum((w @ h) * w))


def weight_nmse(weight, approx):
    """||W - W_hat||^2 / ||W||^2 (float64)."""
    w = np.asarray(weight, dtype=np.float64)
    return float(np.sum((w - approx) ** 2) / np.sum(w * w))
