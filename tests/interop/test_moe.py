"""Mixture-of-experts checkpoints through nvfp4ctl and back through the real Python loaders.

For Mixtral, Qwen2-MoE, Qwen3-MoE, DeepSeek-V3 (with an MTP layer past num_hidden_layers),
gpt-oss (fused 3-D experts: [E, H, 2I], gate/up interleaved), Qwen3-MoE saved with fused 3-D
experts ([E, 2I, H], as transformers >= 5 holds them) and Nemotron-H (hybrid Mamba-2 / attention /
MoE under `backbone.`, ungated relu2 experts: up_proj and down_proj only): a tiny model is built from its real
transformers config class (random weights, fixed seed), saved, and quantized with
`nvfp4ctl quantize-model --local` in both layouts. Then:

* compressed-tensors: compressed_tensors' ModelCompressor decompresses the output (the modules
  its apply_quantization_config selects from our config's targets and ignore list, loaded strictly
  from our tensors), and every weight is within NVFP4's error bound of the original;
* ModelOpt: the packed codes and scales decoded in torch are within the same bound, and hold the
  same bytes as the compressed-tensors output;
* routers, norms, biases and embeddings are copied bit for bit; routers are in the ignore list;
* vLLM's loader rules (docs/CHECKPOINTS.md "What vLLM's MoE loaders require"): every expert of a
  block has all its scales, w1/w3 (gate/up) global scales are equal per expert, no ignore entry
  is a substring of a quantized module (vLLM's ModelOpt matcher), scales finite;
* the dequantized weights loaded into the transformers model give finite logits close to the
  original model's.

Run by CTest through run_interop.sh:  test_moe.py --nvfp4ctl PATH
"""

import argparse
import copy
import json
import os
import shutil
import sys
import tempfile
import unittest

import torch
from safetensors.torch import load_file, save_file

import transformers
from transformers import AutoModelForCausalLM
from compressed_tensors.compressors import ModelCompressor
from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config

from interop_util import (assert_close_to_control, decode_modelopt, load_dir, read_json, run,
                          run_tests)

ARGS = None
WORK = None
E, H, I = 4, 64, 32  # experts, hidden, expert intermediate (K % 16 == 0 everywhere)
ROUTER_SUFFIXES = (".gate", ".router", ".shared_expert_gate")


def common(**kw):
    base = dict(vocab_size=128, hidden_size=H, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=16, max_position_embeddings=64)
    base.update(kw)
    return base


def configs():
    return {
        "mixtral": transformers.MixtralConfig(**common(intermediate_size=I, num_local_experts=E,
                                                       num_experts_per_tok=2)),
        "qwen2_moe": transformers.Qwen2MoeConfig(**common(
            intermediate_size=64, moe_intermediate_size=I, shared_expert_intermediate_size=I,
            num_experts=E, num_experts_per_tok=2, decoder_sparse_step=1, mlp_only_layers=[])),
        "qwen3_moe": transformers.Qwen3MoeConfig(**common(
            intermediate_size=64, moe_intermediate_size=I, num_experts=E, num_experts_per_tok=2,
            decoder_sparse_step=1, mlp_only_layers=[])),
        "deepseek_v3": transformers.DeepseekV3Config(**common(
            num_key_value_heads=4, intermediate_size=64, moe_intermediate_size=I,
            n_shared_experts=1, n_routed_experts=E, kv_lora_rank=32, q_lora_rank=32,
            qk_rope_head_dim=16, v_head_dim=16, qk_nope_head_dim=16, n_group=1, topk_group=1,
            num_experts_per_tok=2, first_k_dense_replace=1, num_mtp_layers=1)),
        "gpt_oss": transformers.GptOssConfig(**common(
            intermediate_size=I, num_local_experts=E, num_experts_per_tok=2, sliding_window=16,
            layer_types=["sliding_attention", "full_attention"])),
        "nemotron_h": transformers.NemotronHConfig(**common(
            num_hidden_layers=4, hybrid_override_pattern="ME*E", intermediate_size=64,
            moe_intermediate_size=I, n_routed_experts=E, num_experts_per_tok=2, n_shared_experts=1,
            moe_shared_expert_intermediate_size=I, mamba_num_heads=4, mamba_head_dim=16,
            ssm_state_size=16, n_groups=1, mamba_chunk_size=16)),
    }


# The saved names each model must have: the layout this test means to cover.
EXPECTED_NAMES = {
    "mixtral": ["model.layers.1.block_sparse_moe.experts.3.w1.weight",
                "model.layers.1.block_sparse_moe.experts.3.w3.weight",
                "model.layers.1.block_sparse_moe.gate.weight"],
    "qwen2_moe": ["model.layers.1.mlp.experts.3.gate_proj.weight",
                  "model.layers.1.mlp.shared_expert.up_proj.weight",
                  "model.layers.1.mlp.shared_expert_gate.weight", "model.layers.1.mlp.gate.weight"],
    "qwen3_moe": ["model.layers.1.mlp.experts.3.up_proj.weight", "model.layers.1.mlp.gate.weight"],
    "deepseek_v3": ["model.layers.0.mlp.gate_proj.weight",
                    "model.layers.1.mlp.experts.3.down_proj.weight",
                    "model.layers.1.mlp.shared_experts.up_proj.weight",
                    "model.layers.1.mlp.gate.weight", "model.layers.1.mlp.gate.e_score_correction_bias",
                    "model.layers.1.self_attn.kv_a_proj_with_mqa.weight"],
    "gpt_oss": ["model.layers.1.mlp.experts.gate_up_proj", "model.layers.1.mlp.experts.down_proj_bias",
                "model.layers.1.mlp.router.weight"],
    "qwen3_moe_fused": ["model.layers.1.mlp.experts.gate_up_proj", "model.layers.1.mlp.experts.down_proj"],
    "nemotron_h": ["backbone.layers.0.mixer.in_proj.weight", "backbone.layers.0.mixer.conv1d.weight",
                   "backbone.layers.1.mixer.experts.3.up_proj.weight",
                   "backbone.layers.1.mixer.shared_experts.down_proj.weight",
                   "backbone.layers.1.mixer.gate.weight",
                   "backbone.layers.1.mixer.gate.e_score_correction_bias"],
}


def randomize(model, seed):
    """Random weights (fixed seed): std 0.05 for weights, 1 + noise for norms, wider routers."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "norm" in name and p.dim() == 1:
                p.copy_(1 + 0.1 * noise)
            elif name.endswith(("router.weight", "gate.weight")) and p.dim() == 2 and "proj" not in name:
                p.copy_(0.5 * noise)
            else:
                p.copy_(0.05 * noise)
    return model


def build(arch, d):
    """Saves a tiny random model of `arch` in `d`; returns the model (fp32) and its config."""
    cfgs = configs()
    fused = arch == "qwen3_moe_fused"
    cfg = cfgs["qwen3_moe" if fused else arch]
    torch.manual_seed(0)
    model = randomize(AutoModelForCausalLM.from_config(cfg, dtype=torch.float32), seed=1).eval()
    model_bf16 = copy.deepcopy(model).to(torch.bfloat16)
    if fused:
        # As transformers >= 5 holds the experts in memory: [E, 2I, H] and [E, H, I].
        os.makedirs(d)
        sd = {k: v.contiguous() for k, v in model_bf16.state_dict().items()}
        save_file(sd, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        cfg.save_pretrained(d)
    else:
        model_bf16.save_pretrained(d)
    if arch == "deepseek_v3":
        add_mtp_layer(d, cfg)
    saved = load_dir(d)
    for n in EXPECTED_NAMES[arch]:
        assert n in saved, f"{arch}: the saved checkpoint has no {n} (names: {sorted(saved)[:40]})"
    # The reference: the model as saved (bf16 weights), in fp32.
    return model_bf16.float(), cfg


def add_mtp_layer(d, cfg):
    """DeepSeek-V3's multi-token-prediction layer (index num_hidden_layers), as the released
    checkpoints store it; transformers does not build it, vLLM loads it for speculative decoding."""
    path = os.path.join(d, "model.safetensors")
    t = load_file(path)
    assert read_json(os.path.join(d, "config.json"))["num_nextn_predict_layers"] == 1
    g = torch.Generator().manual_seed(5)
    p = f"model.layers.{cfg.num_hidden_layers}."
    extra = {p + "eh_proj.weight": (H, 2 * H), p + "enorm.weight": (H,), p + "hnorm.weight": (H,),
             p + "self_attn.o_proj.weight": (H, H), p + "mlp.gate.weight": (E, H),
             p + "mlp.shared_experts.up_proj.weight": (I, H),
             p + "shared_head.head.weight": (128, H)}
    for e in range(E):
        extra[f"{p}mlp.experts.{e}.gate_proj.weight"] = (I, H)
    for k, shape in extra.items():
        t[k] = (0.05 * torch.randn(shape, generator=g)).to(torch.bfloat16)
    save_file(t, path, metadata={"format": "pt"})


def fused_source(arch, saved, module):
    """The original [N, K] weight of a per-expert module of a fused-experts checkpoint."""
    prefix, e, proj = module.rsplit(".", 2)
    e = int(e)
    if proj == "down_proj":
        w = saved[f"{prefix}.down_proj"][e]
        return w.T if arch == "gpt_oss" else w
    gu = saved[f"{prefix}.gate_up_proj"][e]
    if arch == "gpt_oss":  # [H, 2I]: gate = even columns, up = odd columns
        return (gu[:, 0::2] if proj == "gate_proj" else gu[:, 1::2]).T
    half = gu.shape[0] // 2  # [2I, H]: gate = first half
    return gu[:half] if proj == "gate_proj" else gu[half:]


def original_weight(arch, saved, module):
    if module + ".weight" in saved:
        return saved[module + ".weight"]
    return fused_source(arch, saved, module)


def decompress_ct(d):
    """Dequantized weights of a compressed-tensors output, by compressed_tensors' ModelCompressor:
    a module tree with a Linear per stored 2-D weight, the config's schemes applied (targets and
    ignore list), compressed, loaded strictly from our tensors, then decompressed."""
    qc = QuantizationConfig.model_validate(read_json(f"{d}/config.json")["quantization_config"])
    t = load_dir(d)
    root = torch.nn.Module()
    shapes = {}
    for k, v in t.items():
        if k.endswith(".weight_packed"):
            m = k[: -len(".weight_packed")]
            shapes[m] = (v.shape[0], v.shape[1] * 2)
        elif k.endswith(".weight") and v.dim() == 2 and k[: -len(".weight")] not in shapes:
            shapes[k[: -len(".weight")]] = tuple(v.shape)
    for m, (n, k) in shapes.items():
        parent = root
        parts = m.split(".")
        for p in parts[:-1]:
            if not hasattr(parent, p):
                parent.add_module(p, torch.nn.Module())
            parent = getattr(parent, p)
        if "embed" in m:  # an nn.Embedding in the model, not a quantization target
            parent.add_module(parts[-1], torch.nn.Embedding(n, k, dtype=torch.bfloat16))
        else:
            parent.add_module(parts[-1], torch.nn.Linear(k, n, bias=f"{m}.bias" in t,
                                                         dtype=torch.bfloat16))
    apply_quantization_config(root, qc)
    compressor = ModelCompressor(quantization_config=qc)
    compressor.compress_model(root)
    wanted = root.state_dict().keys()
    missing, unexpected = root.load_state_dict({k: t[k] for k in wanted if k in t}, strict=False)
    assert not missing, f"{d}: our tensors lack {missing[:5]} that compressed-tensors expects"
    compressor.decompress_model(root)
    return {m: root.get_submodule(m).weight.detach().float() for m in shapes
            if f"{m}.weight_packed" in t}


def check_error_bound(test, name, orig, deq):
    """NVFP4 error bound per 16-element block: an E2M1 step is at most 2 units of the block scale
    s (between 4 and 6), so |err| <= s; the E4M3 rounding of s adds at most 1/16 of the block's
    amax. And the whole tensor's relative error is that of 4-bit floats (nmse < 3%)."""
    orig = orig.float()
    test.assertEqual(tuple(orig.shape), tuple(deq.shape), name)
    err = (deq - orig).abs().reshape(orig.shape[0], -1, 16)
    amax = orig.abs().reshape(orig.shape[0], -1, 16).amax(-1, keepdim=True)
    s = amax / 6
    test.assertTrue(bool((err <= s * 1.0001 + amax / 16 + 1e-6).all()), name)
    nmse = float(((deq - orig) ** 2).sum() / (orig ** 2).sum())
    test.assertLess(nmse, 0.03, name)
    return nmse


def check_vllm_rules(test, arch, d, layout, quantized, ignore, cfg):
    """What vLLM's MoE loaders need (docs/CHECKPOINTS.md): see the module docstring."""
    t = load_dir(d)
    gname = ".weight_scale_2" if layout == "modelopt" else ".weight_global_scale"
    blocks = {}
    for m in quantized:
        parts = m.split(".")
        if "experts" in parts and parts[parts.index("experts") + 1].isdigit():
            i = parts.index("experts")
            blocks.setdefault(".".join(parts[: i + 1]), {}).setdefault(int(parts[i + 1]), set()).add(parts[-1])
    test.assertTrue(blocks, f"{arch}: no routed experts quantized")
    # (w1, w3, w2) as vLLM's expert mapping names them; Nemotron-H's experts have no gate: w1 is
    # up_proj, no w3 (vLLM: ckpt_names=("up_proj", "down_proj", "")).
    names = {"mixtral": ("w1", "w3", "w2"), "nemotron_h": ("up_proj", None, "down_proj")}.get(
        arch, ("gate_proj", "up_proj", "down_proj"))
    for block, experts in blocks.items():
        # Every expert of the block, with all three projections and all their scales.
        test.assertEqual(sorted(experts), list(range(E)), block)
        for e, projs in experts.items():
            test.assertEqual(projs, {p for p in names if p}, f"{block}.{e}")
            for p in filter(None, names):
                m = f"{block}.{e}.{p}"
                for suffix in (".weight_scale", gname):
                    test.assertIn(m + suffix, t)
                test.assertTrue(bool(torch.isfinite(t[m + ".weight_scale"].float()).all()), m)
                g = t[m + gname].float()
                test.assertTrue(bool(torch.isfinite(g).all() and (g > 0).all()), m)
            # w1 and w3 (gate and up) share one global scale: vLLM keeps w1's (compressed-tensors)
            # and TensorRT-LLM asserts them equal.
            if names[1]:
                w1, w3 = (t[f"{block}.{e}.{names[0]}{gname}"], t[f"{block}.{e}.{names[1]}{gname}"])
                test.assertTrue(torch.equal(w1, w3), f"{block}.{e}")
        # Tensor-parallel alignment: w13 is split along I (rows), w2 along I (K): I / tp must be
        # a multiple of 16 for the block scales. Our tiny I = 32 allows tp 1 and 2.
        down_k = t[f"{block}.0.{names[2]}.weight_scale"].shape[1] * 16
        test.assertEqual([tp for tp in (1, 2, 4, 8) if down_k % (16 * tp) == 0], [1, 2], block)
    # Routers: not quantized, in the ignore list.
    routers = [k[: -len(".weight")] for k in t if k.endswith(".weight")
               and k[: -len(".weight")].endswith(ROUTER_SUFFIXES) and t[k].dim() == 2]
    test.assertTrue(routers, arch)
    for r in routers:
        test.assertIn(r, ignore, arch)
        test.assertNotIn(r, quantized, arch)
    # vLLM's ModelOpt config also excludes a layer whose name merely contains an ignore entry;
    # none may hit a quantized module or vLLM's fused parents of one.
    parents = set(quantized)
    for m in quantized:
        for a, b in ((".q_proj", ".qkv_proj"), (".gate_proj", ".gate_up_proj"),
                     (".q_a_proj", ".fused_qkv_a_proj")):
            if m.endswith(a):
                parents.add(m[: -len(a)] + b)
        if ".experts." in m:
            parents.add(m[: m.index(".experts.") + len(".experts")])
    for x in ignore:
        hits = [p for p in parents if x in p]
        test.assertEqual(hits, [], f"{arch}: ignore entry {x} is a substring of {hits[:3]}")


def dequantized_checkpoint(arch, src, deq, d):
    """The input checkpoint with every quantized weight replaced by its dequantized values (bf16),
    under the input's names (gpt-oss and fused inputs: fused again)."""
    saved = load_dir(src)
    out = dict(saved)
    fused = {}
    for m, w in deq.items():
        if m + ".weight" in saved:
            out[m + ".weight"] = w.to(torch.bfloat16)
        else:
            fused[m] = w
    for m, w in fused.items():
        prefix, e, proj = m.rsplit(".", 2)
        e = int(e)
        if proj == "down_proj":
            out[f"{prefix}.down_proj"] = out[f"{prefix}.down_proj"].clone()
            out[f"{prefix}.down_proj"][e] = (w.T if arch == "gpt_oss" else w).to(torch.bfloat16)
            continue
        key = f"{prefix}.gate_up_proj"
        out[key] = out[key].clone()
        if arch == "gpt_oss":  # gate in the even columns, up in the odd ones
            first = 0 if proj == "gate_proj" else 1
            out[key][e][:, first::2] = w.T.to(torch.bfloat16)
        else:
            half = out[key].shape[1] // 2
            rows = slice(0, half) if proj == "gate_proj" else slice(half, 2 * half)
            out[key][e][rows] = w.to(torch.bfloat16)
    os.makedirs(d)
    save_file({k: v.contiguous() for k, v in out.items()}, f"{d}/model.safetensors",
              metadata={"format": "pt"})
    cfg = read_json(f"{src}/config.json")
    with open(f"{d}/config.json", "w") as f:
        json.dump(cfg, f)


ARCHS = ["mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v3", "gpt_oss", "qwen3_moe_fused",
         "nemotron_h"]
BUILT = {}


def setUpModule():
    global WORK
    WORK = tempfile.mkdtemp(prefix="nvfp4_moe_")
    for arch in ARCHS:
        src = f"{WORK}/{arch}"
        model, cfg = build(arch, src)
        BUILT[arch] = (model, cfg)
        for layout in ("modelopt", "compressed-tensors"):
            run(ARGS.nvfp4ctl, "quantize-model", "--local", "--input", src,
                "--output", f"{src}.{layout}", "--layout", layout, "--method", "rtn",
                "--device", "cpu", "--json")


def tearDownModule():
    shutil.rmtree(WORK, ignore_errors=True)


class MoeCheckpoints(unittest.TestCase):
    def check(self, arch):
        src = f"{WORK}/{arch}"
        saved = load_dir(src)
        model, cfg = BUILT[arch]
        deq = {"compressed-tensors": decompress_ct(f"{src}.compressed-tensors"),
               "modelopt": decode_modelopt(f"{src}.modelopt")}
        self.assertEqual(sorted(deq["modelopt"]), sorted(deq["compressed-tensors"]), arch)
        quantized = sorted(deq["modelopt"])
        for layout in ("modelopt", "compressed-tensors"):
            d = f"{src}.{layout}"
            qc = read_json(f"{d}/config.json")["quantization_config"]
            ignore = qc["ignore"]
            if layout == "modelopt":
                self.assertEqual(read_json(f"{d}/hf_quant_config.json")["quantization"]["exclude_modules"],
                                 ignore)
            out = load_dir(d)
            nmse = [check_error_bound(self, f"{arch} {layout} {m}", original_weight(arch, saved, m), w)
                    for m, w in deq[layout].items()]
            # Everything not quantized is copied bit for bit (routers, norms, biases, embeddings,
            # the router's e_score_correction_bias, the MTP layer); split fused biases are slices.
            for k, v in saved.items():
                if k.endswith(".weight") and k[: -len(".weight")] in quantized:
                    continue
                if k in out:
                    self.assertEqual(out[k].dtype, v.dtype, k)
                    self.assertTrue(torch.equal(out[k], v), f"{arch} {layout}: {k} changed")
                elif k.endswith("_bias") and ".experts." in k:  # split per expert
                    self.assertIn(k.replace("gate_up_proj_bias", "0.gate_proj.bias")
                                  .replace("down_proj_bias", "0.down_proj.bias"), out)
                else:  # a fused-experts weight, split per expert and quantized
                    self.assertTrue(k.endswith(("gate_up_proj", "down_proj")),
                                    f"{arch} {layout}: {k} is missing from the output")
            # Every 2-D weight of the input is quantized or named in the ignore list.
            for k, v in saved.items():
                if k.endswith(".weight") and v.dim() == 2:
                    m = k[: -len(".weight")]
                    if "embed" not in m:
                        self.assertTrue(m in quantized or m in ignore, f"{arch}: {m}")
            check_vllm_rules(self, arch, d, layout, quantized, ignore, cfg)
            print(f"{arch} {layout}: {len(quantized)} modules, mean nmse "
                  f"{sum(nmse) / len(nmse):.4f}, {len(ignore)} ignored", file=sys.stderr)
        # Both layouts hold the same codes and block-scale bytes.
        ct, mo = load_dir(f"{src}.compressed-tensors"), load_dir(f"{src}.modelopt")
        for m in quantized:
            self.assertTrue(torch.equal(ct[m + ".weight_packed"], mo[m + ".weight"]), m)
            self.assertTrue(torch.equal(ct[m + ".weight_scale"].view(torch.uint8),
                                        mo[m + ".weight_scale"].view(torch.uint8)), m)
        # The dequantized model: finite logits as close to the original's as a model whose weights
        # carry random noise of the same size per tensor (a random model amplifies any weight error;
        # a misplaced expert, a transposed or swapped gate/up gives an error of order 1).
        ids = torch.randint(3, 128, (2, 12), generator=torch.Generator().manual_seed(7))
        g = torch.Generator().manual_seed(11)
        control = {}
        for m, w in deq["compressed-tensors"].items():
            o = original_weight(arch, saved, m).float()
            noise = torch.randn(o.shape, generator=g)
            control[m] = o + noise * ((w - o).norm() / noise.norm())
        with torch.no_grad():
            ref = model(ids).logits
            rel = {}
            for name, weights in (("dequantized", deq["compressed-tensors"]), ("control", control)):
                d = f"{src}.{name}"
                dequantized_checkpoint(arch, src, weights, d)
                got = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()(ids).logits
                self.assertTrue(bool(torch.isfinite(got).all()), f"{arch} {name}")
                rel[name] = float((got - ref).norm() / ref.norm())
        assert_close_to_control(self, arch, rel)

    def test_mixtral(self):
        self.check("mixtral")

    def test_qwen2_moe(self):
        self.check("qwen2_moe")

    def test_qwen3_moe(self):
        self.check("qwen3_moe")

    def test_deepseek_v3(self):
        self.check("deepseek_v3")
        # The MTP layer past num_hidden_layers is kept whole and ignored; the MLA projections q_a
        # and kv_a share one global scale (vLLM fuses them into fused_qkv_a_proj).
        d = f"{WORK}/deepseek_v3.modelopt"
        t = load_dir(d)
        ignore = read_json(f"{d}/config.json")["quantization_config"]["ignore"]
        for m in ("model.layers.2.eh_proj", "model.layers.2.mlp.experts.0.gate_proj",
                  "model.layers.2.shared_head.head", "model.layers.2.mlp.gate"):
            self.assertEqual(t[m + ".weight"].dtype, torch.bfloat16, m)
            self.assertIn(m, ignore)
        p = "model.layers.1.self_attn."
        self.assertTrue(torch.equal(t[p + "q_a_proj.weight_scale_2"],
                                    t[p + "kv_a_proj_with_mqa.weight_scale_2"]))

    def test_gpt_oss_fused_experts(self):
        self.check("gpt_oss")
        t = load_dir(f"{WORK}/gpt_oss.compressed-tensors")
        saved = load_dir(f"{WORK}/gpt_oss")
        # Per-expert biases: the interleaved halves of the fused bias.
        b = saved["model.layers.0.mlp.experts.gate_up_proj_bias"][2]
        self.assertTrue(torch.equal(t["model.layers.0.mlp.experts.2.gate_proj.bias"], b[0::2]))
        self.assertTrue(torch.equal(t["model.layers.0.mlp.experts.2.up_proj.bias"], b[1::2]))
        self.assertNotIn("model.layers.0.mlp.experts.gate_up_proj", t)

    def test_qwen3_moe_fused_experts(self):
        self.check("qwen3_moe_fused")

    def test_nemotron_h(self):
        self.check("nemotron_h")
        # Mamba-2 in_proj / out_proj, attention and the shared expert are quantized; the Mamba
        # conv1d (3-D), A_log, D, dt_bias and its gated norm are copied (checked above).
        d = f"{WORK}/nemotron_h.modelopt"
        t = load_dir(d)
        for m in ("backbone.layers.0.mixer.in_proj", "backbone.layers.0.mixer.out_proj",
                  "backbone.layers.2.mixer.q_proj", "backbone.layers.3.mixer.shared_experts.up_proj"):
            self.assertEqual(t[m + ".weight"].dtype, torch.uint8, m)
        self.assertEqual(t["backbone.layers.0.mixer.conv1d.weight"].dtype, torch.bfloat16)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--nvfp4ctl", required=True)
    ARGS, rest = parser.parse_known_args()
    run_tests(rest, ("torch", "transformers", "compressed-tensors"))
