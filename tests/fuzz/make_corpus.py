#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets: tests/fuzz/corpus/<target>/ (docs/FUZZING.md).

Small valid inputs plus interesting invalid ones, written by hand (no third-party packages: the
safetensors files, JSON and protobuf messages are encoded here). Deterministic; rerun after
changing it and commit the files:

    python3 tests/fuzz/make_corpus.py            # rewrites tests/fuzz/corpus/{safetensors,...}
"""
import json
import os
import shutil
import struct
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
SIZES = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
         "I16": 2, "U16": 2, "I32": 4, "U32": 4, "I64": 8, "U64": 8, "BOOL": 1}


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def safetensors(tensors, metadata=None, pad=True, raw_header=None, data=None):
    """tensors: list of (name, dtype, shape[, bytes]). Returns the file bytes."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    buf = b""
    for t in tensors:
        name, dtype, shape = t[:3]
        size = numel(shape) * SIZES[dtype]
        payload = t[3] if len(t) > 3 else bytes((i * 37 + 11) % 251 for i in range(size))
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(buf), len(buf) + size]}
        buf += payload
    text = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":"))
    hb = text.encode() if isinstance(text, str) else text
    if pad:
        hb += b" " * ((8 - len(hb) % 8) % 8)
    return struct.pack("<Q", len(hb)) + hb + (buf if data is None else data)


def bundle(files):
    out = b""
    for name, content in files:
        if isinstance(content, (dict, list)):
            content = json.dumps(content, indent=1).encode()
        elif isinstance(content, str):
            content = content.encode()
        out += b"--- " + name.encode() + b"\n" + content + b"\n"
    return out


# ---- protobuf wire encoding (nvfp4.v1.QuantizeTensorRequest) ----
def varint(v):
    v &= (1 << 64) - 1
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field_varint(num, v):
    return varint(num << 3) + varint(v)


def field_len(num, payload):
    return varint((num << 3) | 2) + varint(len(payload)) + payload


def options(method=0, objective=0, rule=0, iters=0, tol=None, skip=False):
    out = b""
    if method: out += field_varint(1, method)
    if objective: out += field_varint(2, objective)
    if rule: out += field_varint(3, rule)
    if iters: out += field_varint(4, iters)
    if tol is not None: out += varint((5 << 3) | 1) + struct.pack("<d", tol)
    if skip: out += field_varint(6, 1)
    return out


def header(name="w", dtype=1, shape=(1, 16), opts=b"", importance=None, chunk_bytes=0):
    out = field_len(1, name.encode()) + field_varint(2, dtype)
    out += field_len(3, b"".join(varint(d) for d in shape))
    if opts: out += field_len(4, opts)
    if importance is not None:
        out += field_len(5, b"".join(struct.pack("<f", x) for x in importance))
    if chunk_bytes: out += field_varint(6, chunk_bytes)
    return field_len(1, out)  # QuantizeTensorRequest.header


def chunk(offset, data, part=1):
    out = b""
    if part: out += field_varint(1, part)
    if offset: out += field_varint(2, offset)
    out += field_len(3, data)
    return field_len(2, out)  # QuantizeTensorRequest.chunk


def stream(*msgs):
    return b"".join(struct.pack("<H", len(m)) + m for m in msgs)


def f32(values):
    return b"".join(struct.pack("<f", v) for v in values)


def bf16(values):
    return b"".join(struct.pack("<f", v)[2:] for v in values)


def f16(values):
    return b"".join(struct.pack("<e", v) for v in values)


def ramp(n, scale=0.01):
    return [((i * 7919) % 97 - 48) * scale for i in range(n)]


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def safetensors_corpus():
    t = "safetensors"
    write(t, "valid_two_tensors", safetensors(
        [("model.layers.0.mlp.down_proj.weight", "BF16", [2, 16]), ("model.norm.weight", "F32", [16])],
        metadata={"format": "pt"}))
    write(t, "valid_all_dtypes", safetensors(
        [(f"t_{d.lower()}", d, [2, 3]) for d in SIZES]))
    write(t, "valid_empty", safetensors([]))
    write(t, "valid_empty_unpadded", safetensors([], pad=False))
    write(t, "valid_scalar", safetensors([("s", "F32", [])]))
    write(t, "valid_zero_size", safetensors([("z", "F32", [0, 16]), ("u", "U8", [4])]))
    write(t, "valid_nvfp4_module", safetensors(
        [("l.weight_scale_2", "F32", []), ("l.weight_scale", "F8_E4M3", [2, 2]), ("l.weight", "U8", [2, 16])]))
    write(t, "valid_unicode_names", safetensors(
        [("caf\u00e9.\u6743\u91cd", "F16", [1, 2]), ("esc\"aped\\n", "U8", [1])],
        metadata={"k\u00e9y": "v\u00e0lue", "format": "pt"}))
    write(t, "valid_rank4", safetensors([("conv.weight", "F32", [2, 1, 2, 2])]))
    # Invalid.
    good = safetensors([("a", "F32", [2])])
    write(t, "bad_truncated", good[:-3])
    write(t, "bad_trailing", good + b"\x00\x00")
    write(t, "bad_short", b"\x02\x00\x00\x00")
    write(t, "bad_header_len_huge", struct.pack("<Q", 2**63) + b"{}")
    write(t, "bad_header_len_past_end", struct.pack("<Q", 64) + b"{}      ")
    write(t, "bad_not_object", safetensors([], raw_header="[1, 2, 3]"))
    write(t, "bad_json", safetensors([], raw_header='{"a": {"dtype": "F32", '))
    write(t, "bad_duplicate", safetensors([], raw_header=
        '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}',
        data=b"xy"))
    write(t, "bad_overlap", safetensors([], raw_header=
        '{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}',
        data=b"xyz"))
    write(t, "bad_gap", safetensors([], raw_header=
        '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}}',
        data=b"xyz"))
    write(t, "bad_dtype", safetensors([], raw_header='{"a":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}}', data=b"x"))
    write(t, "bad_negative_dim", safetensors([], raw_header='{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}}'))
    write(t, "bad_float_dim", safetensors([], raw_header='{"a":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}}', data=b"x"))
    write(t, "bad_overflow", safetensors([], raw_header=
        '{"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,0]}}'))
    write(t, "bad_huge_zero_dim", safetensors([], raw_header=
        '{"a":{"dtype":"U8","shape":[4611686018427387904,2,0],"data_offsets":[0,0]}}'))
    write(t, "bad_offsets_reversed", safetensors([], raw_header='{"a":{"dtype":"U8","shape":[1],"data_offsets":[1,0]}}', data=b"x"))
    write(t, "bad_extra_key", safetensors([], raw_header='{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":1}}', data=b"x"))
    write(t, "bad_metadata_nested", safetensors([], raw_header='{"__metadata__":{"a":{"b":"c"}}}'))
    write(t, "bad_metadata_not_object", safetensors([], raw_header='{"__metadata__":"pt"}'))
    write(t, "bad_big_offsets", safetensors([], raw_header=
        '{"a":{"dtype":"U8","shape":[1],"data_offsets":[18446744073709551615,18446744073709551615]}}'))


LLAMA_CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 32,
                "num_hidden_layers": 1, "torch_dtype": "bfloat16"}


def llama_tensors(layers=1, k=32, mtp=False):
    ts = [("model.embed_tokens.weight", "BF16", [8, k]), ("lm_head.weight", "BF16", [8, k]),
          ("model.norm.weight", "BF16", [k])]
    for i in range(layers + (1 if mtp else 0)):
        p = f"model.layers.{i}."
        for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                  "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
            ts.append((p + m + ".weight", "BF16", [16, k]))
        ts.append((p + "input_layernorm.weight", "BF16", [k]))
        ts.append((p + "mlp.gate.weight", "BF16", [4, k]))
        ts.append((p + "mlp.experts.0.w1.weight", "BF16", [16, k]))
        ts.append((p + "mlp.experts.0.w3.weight", "BF16", [16, k]))
    return ts


def nvfp4_tensors(layout, modules=("model.layers.0.mlp.down_proj", "model.layers.0.self_attn.q_proj"),
                  k=32, w4a4=True):
    ts = [("lm_head.weight", "BF16", [8, k])]
    for m in modules:
        if layout == "modelopt":
            ts += [(m + ".weight", "U8", [16, k // 2]), (m + ".weight_scale", "F8_E4M3", [16, k // 16]),
                   (m + ".weight_scale_2", "F32", [], f32([0.01]))]
            if w4a4:
                ts.append((m + ".input_scale", "F32", [], f32([0.5])))
        else:
            ts += [(m + ".weight_packed", "U8", [16, k // 2]), (m + ".weight_scale", "F8_E4M3", [16, k // 16]),
                   (m + ".weight_global_scale", "F32", [], f32([100.0]))]
            if w4a4:
                ts.append((m + ".input_global_scale", "F32", [], f32([2.0])))
    return ts


def checkpoint_corpus():
    t = "checkpoint"
    write(t, "config_plain", json.dumps(LLAMA_CONFIG).encode())
    write(t, "index_plain", json.dumps({"metadata": {"total_size": 1024},
                                        "weight_map": {"a.weight": "model-00001-of-00002.safetensors",
                                                       "b.weight": "model-00002-of-00002.safetensors"}}).encode())
    write(t, "index_float_total", b'{"metadata":{"total_size":1.2e10},"weight_map":{"a":"m.safetensors"}}')
    write(t, "index_bad_shard_path", b'{"weight_map":{"a":"../etc/passwd","b":"x\\\\y"}}')
    write(t, "index_duplicate_tensor", b'{"weight_map":{"a":"s1","a":"s2"}}')
    write(t, "index_empty_map", b'{"weight_map":{}}')
    write(t, "json_nested_duplicate", b'{"a":{"b":1,"b":2},"c":[{"d":1,"d":1}]}')
    write(t, "json_deep", b"[" * 64 + b"]" * 64)
    write(t, "bundle_single", bundle([("config.json", LLAMA_CONFIG),
                                      ("model.safetensors", safetensors(llama_tensors()))]))
    mtp_cfg = dict(LLAMA_CONFIG, num_nextn_predict_layers=1)
    write(t, "bundle_mtp", bundle([("config.json", mtp_cfg),
                                   ("model.safetensors", safetensors(llama_tensors(mtp=True)))]))
    write(t, "bundle_text_config", bundle([
        ("config.json", {"model_type": "mm", "text_config": dict(mtp_cfg)}),
        ("model.safetensors", safetensors(llama_tensors()))]))
    ts = llama_tensors()
    half = len(ts) // 2
    s1, s2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    wm = {n: (s1 if i < half else s2) for i, (n, _, _) in enumerate(ts)}
    write(t, "bundle_sharded", bundle([
        ("config.json", LLAMA_CONFIG),
        ("model.safetensors.index.json", {"metadata": {"total_size": 0}, "weight_map": wm}),
        (s1, safetensors(ts[:half])), (s2, safetensors(ts[half:]))]))
    wm_bad = dict(wm)
    wm_bad[ts[0][0]] = s2
    write(t, "bundle_sharded_mismatch", bundle([
        ("model.safetensors.index.json", {"weight_map": wm_bad}),
        (s1, safetensors(ts[:half])), (s2, safetensors(ts[half:]))]))
    write(t, "bundle_sharded_missing_shard", bundle([
        ("model.safetensors.index.json", {"weight_map": wm}), (s1, safetensors(ts[:half]))]))
    write(t, "bundle_other_name", bundle([("weights.safetensors", safetensors(llama_tensors()))]))
    mo_qc = {"quant_method": "modelopt", "quant_algo": "NVFP4", "group_size": 16, "ignore": ["lm_head"]}
    write(t, "bundle_modelopt", bundle([
        ("config.json", dict(LLAMA_CONFIG, quantization_config=mo_qc)),
        ("hf_quant_config.json", {"producer": {"name": "modelopt"},
                                  "quantization": {"quant_algo": "NVFP4", "exclude_modules": ["lm_head"]}}),
        ("model.safetensors", safetensors(nvfp4_tensors("modelopt")))]))
    write(t, "bundle_modelopt_w4a16_hf_only", bundle([
        ("hf_quant_config.json", {"quantization": {"quant_algo": "W4A16_NVFP4"}}),
        ("model.safetensors", safetensors(nvfp4_tensors("modelopt", w4a4=False)))]))
    ct_qc = {"quant_method": "compressed-tensors", "format": "nvfp4-pack-quantized",
             "ignore": ["lm_head"],
             "config_groups": {"group_0": {"format": "nvfp4-pack-quantized", "targets": ["Linear"],
                                           "weights": {"num_bits": 4, "type": "float", "group_size": 16}}}}
    write(t, "bundle_compressed_tensors", bundle([
        ("config.json", dict(LLAMA_CONFIG, quantization_config=ct_qc)),
        ("model.safetensors", safetensors(nvfp4_tensors("ct")))]))
    ct_groups_only = dict(ct_qc)
    del ct_groups_only["format"]
    write(t, "bundle_ct_format_in_group", bundle([
        ("config.json", {"quantization_config": ct_groups_only}),
        ("model.safetensors", safetensors(nvfp4_tensors("ct", w4a4=False)))]))
    write(t, "bundle_qc_wrong_types", bundle([
        ("config.json", {"quantization_config": {"quant_method": "compressed-tensors", "format": 4,
                                                 "config_groups": [{"format": 1}]}}),
        ("model.safetensors", safetensors(nvfp4_tensors("ct")))]))
    write(t, "bundle_qc_not_object", bundle([("config.json", {"quantization_config": ["modelopt"]}),
                                             ("model.safetensors", safetensors([]))]))
    write(t, "bundle_nan_scale", bundle([
        ("config.json", {"quantization_config": mo_qc}),
        ("model.safetensors", safetensors([("m.weight", "U8", [1, 8]), ("m.weight_scale", "F8_E4M3", [1, 1], b"\x7f"),
                                           ("m.weight_scale_2", "F32", [], f32([1.0]))]))]))
    write(t, "bundle_shape_mismatch", bundle([
        ("config.json", {"quantization_config": mo_qc}),
        ("model.safetensors", safetensors([("m.weight", "U8", [2, 8]), ("m.weight_scale", "F8_E4M3", [1, 1]),
                                           ("m.weight_scale_2", "F32", [], f32([0.0]))]))]))
    write(t, "bundle_config_not_object", bundle([("config.json", "[1,2]"),
                                                 ("model.safetensors", safetensors(llama_tensors()))]))


def tensor_request_corpus():
    t = "tensor_request"
    v = ramp(16)
    write(t, "f32_1x16_one_chunk", stream(header("w", 1, (1, 16)), chunk(0, f32(v))))
    v = ramp(64)
    d = bf16(v)
    write(t, "bf16_2x32_three_chunks", stream(
        header("model.layers.0.mlp.down_proj.weight", 3, (2, 32), options(method=1)),
        chunk(0, d[:40]), chunk(40, d[40:100], part=0), chunk(100, d[100:])))
    d = f16(ramp(32))
    write(t, "f16_rank1_wmse", stream(
        header("v", 2, (32,), options(method=3, objective=2), importance=[1.0 + i for i in range(32)]),
        chunk(0, d)))
    write(t, "f32_rank3_four_over_six", stream(
        header("r3", 1, (2, 1, 16), options(method=2, rule=3, skip=True), chunk_bytes=1 << 20),
        chunk(0, f32(ramp(32)))))
    write(t, "f32_soar_options", stream(
        header("s", 1, (1, 32), options(method=4, iters=3, tol=0.01)), chunk(0, f32(ramp(32)))))
    write(t, "f32_nan_inf", stream(
        header("n", 1, (1, 16)), chunk(0, f32([float("nan"), float("inf")] + [0.0] * 14))))
    write(t, "f32_all_zero", stream(header("z", 1, (1, 16)), chunk(0, f32([0.0] * 16))))
    write(t, "bad_gap", stream(header("w", 1, (1, 16)), chunk(0, f32(ramp(8))), chunk(40, f32(ramp(8)))))
    write(t, "bad_too_much", stream(header("w", 1, (1, 16)), chunk(0, f32(ramp(17)))))
    write(t, "bad_short", stream(header("w", 1, (1, 16)), chunk(0, f32(ramp(15)))))
    write(t, "bad_second_header", stream(header("w", 1, (1, 16)), header("w", 1, (1, 16))))
    write(t, "bad_part", stream(header("w", 1, (1, 16)), chunk(0, f32(ramp(16)), part=2)))
    write(t, "bad_chunk_first", stream(chunk(0, b"abc")))
    write(t, "bad_scalar", stream(header("w", 1, ())))
    write(t, "bad_k15", stream(header("w", 1, (1, 15))))
    write(t, "bad_negative_dim", stream(header("w", 1, (-1, 16))))
    write(t, "bad_huge", stream(header("w", 1, (2**40, 2**40, 16))))
    write(t, "bad_over_limit", stream(header("w", 1, (1024, 1024))))
    write(t, "bad_dtype", stream(header("w", 7, (1, 16))))
    write(t, "bad_importance_len", stream(header("w", 1, (1, 16), importance=[1.0] * 3)))
    write(t, "bad_options", stream(header("w", 1, (1, 16), options(method=9, iters=5000, tol=-1.0))))
    write(t, "bad_offset_huge", stream(header("w", 1, (1, 16)), chunk(2**64 - 1, b"x")))


def main():
    targets = {"safetensors": safetensors_corpus, "checkpoint": checkpoint_corpus,
               "tensor_request": tensor_request_corpus}
    for name, fn in targets.items():
        shutil.rmtree(os.path.join(ROOT, name), ignore_errors=True)
        fn()
        print(f"{name}: {len(os.listdir(os.path.join(ROOT, name)))} files", file=sys.stderr)


if __name__ == "__main__":
    main()
