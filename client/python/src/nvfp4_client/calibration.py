"""Calibration statistics of a PyTorch model for nvfp4d (docs/CALIBRATION.md).

    from nvfp4_client.calibration import Collector

    with Collector(model, gram=True) as c:          # hooks every nn.Linear the service quantizes
        for batch in loader:                         # a few hundred samples
            model(**batch)                           # input_ids + attention_mask: padding is skipped
    uri = c.save("s3://bucket/run-42/calib.safetensors")   # or a path / file:// URI

then `Client.quantize_model(..., calibration_uri=uri, objective="hessian")` or `method="gptq"`.

Per nn.Linear `<m>` (the module name as in the checkpoint, `<m>.weight` being its weight) the file
holds `<m>.input_sq` ([K] sum over tokens of x^2: the wmse objective), `<m>.input_amax` ([] max |x|:
with it the export is W4A4, the activation global scales; `amax=False` for weight-only) and, where
asked (`gram=`), `<m>.input_gram` ([K, K] X^T X: the hessian objective, method gptq, output nmse).
Statistics accumulate in `dtype` (float32 or float64) on the module's device; a Gram that does not
fit beside the model (offload="auto") is accumulated on the host instead. Modules that read the same
input tensor in a forward pass (q/k/v, gate/up: a fused group) are computed once and written under
each member's name. Tokens where the model's `attention_mask` is 0 (padding) are left out.
Fused MoE experts (transformers >= 5's 3-D `gate_up_proj` / `down_proj` modules) get per-expert
statistics under the checkpoint's per-expert names, from the tokens routed to each expert (or
every token: `all_experts=True`).
"""
from __future__ import annotations

import contextlib
import fnmatch
import re
import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Union

try:
    import torch
    from torch import nn
except ImportError as e:  # pragma: no cover
    raise ImportError("nvfp4_client.calibration needs PyTorch: pip install torch (or "
                      "'nvfp4-client[calibration]')") from e

from . import storage

__all__ = ["Collector", "default_exclusion_reason", "checkpoint_name"]

Selector = Union[None, bool, str, Sequence[str], Callable[[str, nn.Module], bool]]

# Components that wrappers insert into module names (DDP, FSDP, activation checkpointing,
# torch.compile); the checkpoint's names do not have them.
_WRAPPER_PARTS = ("module", "_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module",
                  "_forward_module")


def default_exclusion_reason(module: str) -> Optional[str]:
    """Why nvfp4d leaves `module` unquantized by default (pipeline/selection.cc), or None: the
    collector skips those modules unless `modules=` names them."""
    parts = module.split(".")
    last = parts[-1]
    if last in ("lm_head", "embed_out") or module == "output" or "lm_head" in parts:
        return "output head"
    for p in parts:
        if p in ("vision_tower", "visual", "vision_model", "multi_modal_projector",
                 "mm_projector", "vision_encoder"):
            return "vision tower/projector"
        if p == "mtp" or p.startswith("mtp_") or p == "nextn" or p.startswith("nextn_"):
            return "MTP head"
        if "embed" in p or p in ("wte", "wpe"):
            return "embedding"
        if "norm" in p or p == "ln" or p.startswith("ln_"):
            return "norm"
        if "conv" in p:
            return "conv"
        if p == "router" or p.endswith("_router"):
            return "MoE router"
    if last in ("gate", "shared_expert_gate"):
        return "MoE router"
    return None


def _pattern_matches(pattern: str, name: str) -> bool:
    """The service's include/exclude syntax: an fnmatch glob (`*` also matches dots) on the
    module name or `<name>.weight`, or 're:' + a regular expression matched at the start."""
    for n in (name, name + ".weight"):
        if pattern.startswith("re:"):
            if re.match(pattern[3:], n):
                return True
        elif fnmatch.fnmatchcase(n, pattern):
            return True
    return False


def _selects(selector: Selector, name: str, module: nn.Module, default: bool) -> bool:
    if selector is None:
        return default
    if isinstance(selector, bool):
        return selector
    if isinstance(selector, str):
        return _pattern_matches(selector, name)
    if callable(selector):
        return bool(selector(name, module))
    return any(_pattern_matches(p, name) for p in selector)


def checkpoint_name(model: nn.Module, name: str) -> str:
    """The name of module `name` of `model` as its checkpoint spells it: wrapper components
    (DDP `module.`, torch.compile `_orig_mod.`, FSDP, activation checkpointing) removed, and
    transformers' weight conversions reverted as save_pretrained does (transformers >= 5
    `revert_weight_conversion`, e.g. Nemotron-H's `model.` -> `backbone.`; else a
    `_checkpoint_conversion_mapping` applied in reverse)."""
    return _checkpoint_names(model, [name]).get(name) or _mapped_name(model, name)


def _mapped_name(model: nn.Module, name: str) -> str:
    """`name` without wrapper components, a `_checkpoint_conversion_mapping` applied in reverse."""
    name = _unwrapped(name)
    mapping = getattr(model, "_checkpoint_conversion_mapping", None)
    if isinstance(mapping, dict) and mapping:
        for pattern, replacement in {v: k for k, v in mapping.items()}.items():
            replacement = re.sub(r"\(.*\)", "", replacement.lstrip("^"))
            name, n = re.subn(pattern, replacement, name)
            if n:
                break
    return name


@dataclass
class _Stats:
    k: int
    sq: torch.Tensor
    amax: torch.Tensor
    gram: Optional[torch.Tensor]
    tokens: int = 0


@dataclass
class _ExpertBlock:
    """A transformers fused-experts module (`gate_up_proj` [E, 2I, H] and `down_proj` [E, H, I],
    or transposed, with a leading expert dimension; ungated: `up_proj` [E, I, H]) and the
    checkpoint names of its experts' projections: names[e] = (gate, up, down), None where not
    selected (gate: always, when ungated)."""
    module: nn.Module
    name: str
    names: List[tuple]
    gated: bool = True


def _fused_experts(module: nn.Module) -> Optional[tuple]:
    """(E, H, I, gated) of a fused-experts module as transformers >= 5 holds routed MoE experts,
    or None. Those modules are called as forward(hidden_states [T, H], top_k_index [T, k],
    top_k_weights [T, k]) and compute, for expert e and its routed tokens x,
    down(_apply_gate(x @ gate_up[e].T + bias)) (transposed: x @ gate_up[e]), or without a gate
    (Nemotron-H: `up_proj` [E, I, H], no gate_up_proj) down(act_fn(x @ up[e].T))."""
    if isinstance(module, nn.Linear):
        return None
    down = getattr(module, "down_proj", None)
    gated = isinstance(getattr(module, "gate_up_proj", None), torch.Tensor)
    into = getattr(module, "gate_up_proj" if gated else "up_proj", None)
    if not isinstance(into, torch.Tensor) or not isinstance(down, torch.Tensor) or \
            into.dim() != 3 or down.dim() != 3:
        return None
    width = 2 if gated else 1  # rows of `into` per intermediate channel
    e = into.shape[0]
    if getattr(module, "is_transposed", False):
        h, wide = into.shape[1], into.shape[2]
        ok = tuple(down.shape) == (e, wide // width, h)
    else:
        wide, h = into.shape[1], into.shape[2]
        ok = tuple(down.shape) == (e, h, wide // width)
    return (e, h, wide // width, gated) if ok and wide % width == 0 else None


def _unwrapped(name: str) -> str:
    return ".".join(p for p in name.split(".") if p not in _WRAPPER_PARTS)


def _reverted(model: nn.Module, params: Dict[str, torch.Tensor]) -> Optional[Dict[str, Any]]:
    """`params` (names in the transformers model inside `model`, wrapper components removed) as
    transformers' save_pretrained would write them (revert_weight_conversion: renamings such as
    Nemotron-H's `model.` -> `backbone.`, fused experts split per expert), or None without a
    transformers model or where reverting fails."""
    root = next((m for m in model.modules() if hasattr(m, "config") and
                 hasattr(m, "save_pretrained")), None)
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:
        return None
    if root is None:
        return None
    try:
        return revert_weight_conversion(root, params)
    except Exception:  # noqa: BLE001 -- any failure: the caller's own names
        return None


def _checkpoint_names(model: nn.Module, names: List[str]) -> Dict[str, str]:
    """The checkpoint names of the modules `names` of `model` as transformers' reverted
    conversions give them, in one call (stand-in [16, 1] weights whose value is the module's
    index); modules that are not found whole and once each (a conversion that splits or merges
    them), or all without transformers, are left out."""
    out = _reverted(model, {f"{_unwrapped(n)}.weight": torch.full((16, 1), float(i + 1))
                            for i, n in enumerate(names)})
    found: Dict[int, List[str]] = {}
    for key, t in (out or {}).items():
        if key.endswith(".weight") and torch.is_tensor(t) and t.numel() == 16 and \
                bool((t == t.reshape(-1)[0]).all()):
            found.setdefault(int(t.reshape(-1)[0].item()) - 1, []).append(key[:-len(".weight")])
    return {names[i]: keys[0] for i, keys in found.items()
            if 0 <= i < len(names) and len(keys) == 1}


def _expert_checkpoint_names(model: nn.Module, name: str, experts: int, gated: bool,
                             name_fn: Callable[[str], str]) -> List[tuple]:
    """The checkpoint names (gate, up, down) of each expert of the fused-experts module `name` (a
    name in `model`; gate None when ungated): what transformers' save_pretrained writes, its
    weight conversions reverted (Mixtral's `block_sparse_moe.experts.<e>.w1/w3/w2`, Qwen's
    `mlp.experts.<e>.gate_proj/up_proj/down_proj`, Nemotron-H's `backbone.layers.<i>.mixer.
    experts.<e>.up_proj/down_proj`), found by reverting stand-in tensors; where the checkpoint
    keeps the fused tensors (gpt-oss), or without transformers, `name_fn(name).<e>.gate_proj/
    up_proj/down_proj`, the per-expert names nvfp4d splits fused tensors into."""
    base = name_fn(name)
    default = [(f"{base}.{e}.gate_proj" if gated else None, f"{base}.{e}.up_proj",
                f"{base}.{e}.down_proj") for e in range(experts)]
    name = _unwrapped(name)
    # Stand-ins [E, 2, 1] (ungated: [E, 1, 1] of up) and [E, 1, 1] whose values say which expert
    # and projection they hold: 1 + 2e (gate), 2 + 2e (up), -(1 + e) (down).
    into = (torch.arange(2 * experts, dtype=torch.float32) + 1).reshape(experts, 2, 1)
    if not gated:
        into = into[:, 1:].contiguous()
    down = -(torch.arange(experts, dtype=torch.float32) + 1).reshape(experts, 1, 1)
    out = _reverted(model, {f"{name}.{'gate_up_proj' if gated else 'up_proj'}": into,
                            f"{name}.down_proj": down})
    if out is None:
        return default
    found: Dict[tuple, str] = {}
    for key, t in out.items():
        if not key.endswith(".weight") or not torch.is_tensor(t) or t.numel() != 1:
            return default
        v = int(t.reshape(()).item())
        slot = ((v - 1) // 2, (v - 1) % 2) if v > 0 else (-v - 1, 2)
        found[slot] = key[:-len(".weight")]
    slots = range(3) if gated else range(1, 3)
    if sorted(found) != [(e, j) for e in range(experts) for j in slots]:
        return default
    return [tuple(found.get((e, j)) for j in range(3)) for e in range(experts)]


class Collector:
    """Forward hooks on a model's nn.Linear modules that accumulate the calibration statistics
    nvfp4d reads. Use as a context manager around the calibration forward passes (the hooks are
    removed on exit; the statistics stay), then save()."""

    def __init__(self, model: nn.Module, modules: Selector = None, exclude: Selector = None, *,
                 gram: Selector = False, amax: bool = True,
                 dtype: torch.dtype = torch.float32, offload: str = "auto",
                 device_reserve_bytes: Optional[int] = None, max_gram_dim: Optional[int] = None,
                 fuse_groups: bool = True, mask_padding: bool = True,
                 name_fn: Optional[Callable[[str], str]] = None, all_experts: bool = False):
        """`modules`: which nn.Linear to hook: None = every one the service quantizes by default
        (default_exclusion_reason: not lm_head, embeddings, routers, vision towers), or glob /
        're:' patterns as the service's `include`, or a callable(name, module) -> bool.
        `exclude`: patterns (or a callable) to leave out. `gram`: which of them also get the full
        [K, K] input Gram: False, True (all), patterns or a callable; `max_gram_dim` skips the
        Gram of modules wider than that (K), with a warning. `amax`: collect input_amax (W4A4
        export). `dtype`: accumulation type, torch.float32 or torch.float64 (the file stores
        float32). `offload`: where the Grams of GPU modules accumulate: "auto" (the GPU while
        `device_reserve_bytes`, default max(1 GiB, 10% of the GPU), stay free, else the host),
        "always" (the host), "never" (the GPU). `fuse_groups`: compute modules that read the
        same input tensor once. `mask_padding`: leave out tokens whose attention_mask is 0.
        `name_fn`: maps a module name of `model` to the checkpoint's (default: as transformers'
        save_pretrained writes it, its weight conversions reverted, e.g. Nemotron-H's `model.`
        -> `backbone.`; else checkpoint_name; fused experts are named as save_pretrained writes
        them where transformers reverts its conversions, else `name_fn(<experts module>).<e>.
        gate_proj` / `up_proj` / `down_proj`).

        Fused MoE experts (transformers >= 5 holds routed experts as one module with 3-D
        `gate_up_proj` / `down_proj`, no nn.Linear per expert) are hooked too: each expert's
        gate/up statistics are those of the tokens routed to it, its down_proj's those of its
        intermediate activations (recomputed from the routed tokens), under the checkpoint's
        per-expert names (`<p>.experts.<e>.gate_proj`, Mixtral's `w1`/`w3`/`w2`, ...); experts
        without a gate (Nemotron-H: 3-D `up_proj`, relu2) likewise, with up_proj and down_proj.
        `all_experts`: every expert gets the statistics of every token instead (as if each token
        were routed to it; the model's output is unchanged), so that no expert is left without
        statistics by a small calibration set -- the W4A4 export needs an input_amax for each."""
        if dtype not in (torch.float32, torch.float64):
            raise ValueError("dtype must be torch.float32 or torch.float64")
        if offload not in ("auto", "always", "never"):
            raise ValueError("offload must be 'auto', 'always' or 'never'")
        self.model = model
        self.dtype = dtype
        self.amax = amax
        self.offload = offload
        self.device_reserve_bytes = device_reserve_bytes
        self.fuse_groups = fuse_groups
        self.mask_padding = mask_padding
        self.all_experts = all_experts
        self._modules: Dict[str, nn.Module] = {}
        self._want_gram: Set[str] = set()
        self._alias: Dict[str, str] = {}        # fused-group member -> the module computed
        self._expert_blocks: List[_ExpertBlock] = []
        self.skipped_grams: List[str] = []

        def select(name: str, m: nn.Module, k: int) -> bool:
            if not _selects(modules, name, m, default_exclusion_reason(name) is None):
                return False
            if exclude is not None and _selects(exclude, name, m, False):
                return False
            self._modules[name] = m
            if _selects(gram, name, m, False):
                if max_gram_dim is not None and k > max_gram_dim:
                    self.skipped_grams.append(name)
                else:
                    self._want_gram.add(name)
            return True

        # Default names: checkpoint_name's, reverted in one call for all modules hooked.
        renamed: Dict[str, str] = {} if name_fn else _checkpoint_names(
            model, [n for n, m in model.named_modules()
                    if isinstance(m, nn.Linear) or _fused_experts(m)])
        self._name_fn = name_fn or (lambda n: renamed.get(n) or _mapped_name(model, n))
        for raw_name, m in model.named_modules():
            if isinstance(m, nn.Linear):
                select(self._name_fn(raw_name), m, m.in_features)
                continue
            shape = _fused_experts(m)
            if shape is None:
                continue
            experts, hidden, intermediate, gated = shape
            names = []
            leader = None  # the gate/up computed for the others: per expert, or per block
            for gate, up, down in _expert_checkpoint_names(model, raw_name, experts, gated,
                                                           self._name_fn):
                chosen = [n if n and select(n, m, k) else None
                          for n, k in ((gate, hidden), (up, hidden), (down, intermediate))]
                if not all_experts:
                    leader = None    # gate and up of an expert read its routed tokens
                for n in chosen[:2]:  # with all_experts, every expert's gate/up read every token
                    if n and leader:
                        self._alias[n] = leader
                    leader = leader or n
                names.append(tuple(chosen))
            if any(n for t in names for n in t):
                self._expert_blocks.append(
                    _ExpertBlock(m, self._name_fn(raw_name), names, gated))
        if not self._modules:
            raise ValueError("no nn.Linear module (or fused MoE experts) selected")
        if self.skipped_grams:
            warnings.warn(f"no input_gram for {len(self.skipped_grams)} module(s) wider than "
                          f"max_gram_dim={max_gram_dim}, e.g. {self.skipped_grams[0]}")
        self._stats: Dict[str, _Stats] = {}
        self._seen: Dict[int, Any] = {}          # id(input) -> (weakref(input), module) this pass
        self._mask: Optional[torch.Tensor] = None
        self._mask_by_device: Dict[torch.device, torch.Tensor] = {}
        self._explicit_mask: Optional[torch.Tensor] = None
        self.unmasked: Set[str] = set()          # modules whose input did not match the mask
        self.forward_passes = 0
        self.tokens = 0                          # unpadded tokens of the calibration passes
        self._handles: List[Any] = []

    # ---- hooks ----
    @property
    def module_names(self) -> List[str]:
        """The checkpoint names of the hooked modules."""
        return sorted(self._modules)

    def attach(self) -> "Collector":
        if self._handles:
            return self
        if self.model.training:
            warnings.warn("the model is in training mode (dropout active): call model.eval() "
                          "before collecting calibration statistics")
        self._handles.append(self.model.register_forward_pre_hook(self._root_pre,
                                                                  with_kwargs=True))
        self._handles.append(self.model.register_forward_hook(self._root_post, always_call=True))
        for name, m in self._modules.items():
            if isinstance(m, nn.Linear):
                self._handles.append(m.register_forward_pre_hook(self._module_hook(name),
                                                                 with_kwargs=True))
        for block in self._expert_blocks:
            self._handles.append(block.module.register_forward_pre_hook(
                self._experts_hook(block), with_kwargs=True))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._seen.clear()
        self._mask = None
        self._mask_by_device.clear()

    def __enter__(self) -> "Collector":
        return self.attach()

    def __exit__(self, *exc: Any) -> None:
        self.detach()

    @contextlib.contextmanager
    def mask(self, attention_mask: Optional[torch.Tensor]) -> Iterator[None]:
        """Uses `attention_mask` ([batch, seq], 0 = padding) for the forward passes inside, for
        models called without an `attention_mask` argument."""
        prev = self._explicit_mask
        self._explicit_mask = attention_mask
        try:
            yield
        finally:
            self._explicit_mask = prev

    def _root_pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._seen.clear()
        self._mask_by_device.clear()
        mask = self._explicit_mask
        first: Any = args[0] if args else kwargs.get("input_ids", kwargs.get("inputs_embeds"))
        if mask is None:
            mask = kwargs.get("attention_mask")
            if mask is None and len(args) >= 2 and torch.is_tensor(args[1]) and \
                    torch.is_tensor(first) and args[1].shape == first.shape[:2]:
                mask = args[1]
        self._mask = None
        if mask is not None and self.mask_padding:
            if torch.is_tensor(mask) and mask.dim() == 2:
                self._mask = mask != 0
            else:
                warnings.warn("attention_mask is not [batch, seq]: padding is not excluded")
        self.forward_passes += 1
        if self._mask is not None:
            self.tokens += int(self._mask.sum())
        elif torch.is_tensor(first):
            self.tokens += int(first.shape[0] * first.shape[1]) if first.dim() >= 2 else \
                int(first.numel())

    def _root_post(self, *unused: Any) -> None:
        self._seen.clear()
        self._mask = None
        self._mask_by_device.clear()

    def _module_hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            x = args[0] if args else kwargs.get("input")
            if torch.is_tensor(x):
                self._observe(name, x)
        return hook

    def _experts_hook(self, block: _ExpertBlock) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            x = args[0] if args else kwargs.get("hidden_states")
            index = args[1] if len(args) > 1 else kwargs.get(
                "top_k_index", kwargs.get("router_indices"))
            if not torch.is_tensor(x) or not torch.is_tensor(index) or \
                    index.is_floating_point() or x.dim() != 2 or index.shape[0] != x.shape[0]:
                raise RuntimeError(
                    f"{block.name}: fused MoE experts called without (hidden_states [T, H], "
                    "top_k_index [T, k]); pass modules= / exclude= to leave them out")
            self._observe_experts(block, x, index)
        return hook

    @torch.no_grad()
    def _observe_experts(self, block: _ExpertBlock, x: torch.Tensor,
                         index: torch.Tensor) -> None:
        m = block.module
        keep = self._token_mask(x, [n for t in block.names for n in t if n])
        transposed = getattr(m, "is_transposed", False)
        into = "gate_up_proj" if block.gated else "up_proj"
        bias = getattr(m, into + "_bias", None) if getattr(m, "has_bias", False) else None
        for e, (gate, up, down) in enumerate(block.names):
            if self.all_experts:
                routed = keep
            else:
                routed = (index == e).any(-1)
                if keep is not None:
                    routed = routed & keep
            rows = x if routed is None else x[routed]
            if rows.shape[0] == 0:
                continue
            first = gate or up
            if first and first not in self._alias:  # else computed under its leader's name
                self._accumulate_rows(first, rows)
            if down:
                w = getattr(m, into)[e]
                h = rows.to(w.dtype) @ (w if transposed else w.T)
                if bias is not None:
                    h = h + bias[e]
                if not block.gated:
                    h = m.act_fn(h)
                elif hasattr(m, "_apply_gate"):
                    h = m._apply_gate(h)
                else:
                    g, u = h.chunk(2, dim=-1)
                    h = m.act_fn(g) * u
                self._accumulate_rows(down, h)

    # ---- accumulation ----
    @torch.no_grad()
    def _observe(self, name: str, x: torch.Tensor) -> None:
        if self.fuse_groups:
            seen = self._seen.get(id(x))
            if seen is not None and seen[0]() is x and seen[1] != name:
                leader = seen[1]
                current = self._alias.get(name)
                if current == leader:
                    return
                if current is None and name not in self._stats:
                    self._alias[name] = leader
                    return
            if name in self._alias:
                raise RuntimeError(
                    f"{name} read the same input as {self._alias[name]} before (a fused group, "
                    "collected once) but not in this forward pass: use fuse_groups=False")
            if len(self._seen) > 4096:
                self._seen = {k: v for k, v in self._seen.items() if v[0]() is not None}
            self._seen[id(x)] = (weakref.ref(x), name)
        self._accumulate(name, x)

    def _device_mask(self, device: torch.device) -> Optional[torch.Tensor]:
        if self._mask is None:
            return None
        m = self._mask_by_device.get(device)
        if m is None:
            m = self._mask.to(device).reshape(-1)
            self._mask_by_device[device] = m
        return m

    def _gram_device(self, name: str, k: int, device: torch.device) -> torch.device:
        if device.type != "cuda" or self.offload == "never":
            return device
        if self.offload == "always":
            return torch.device("cpu")
        need = k * k * torch.tensor([], dtype=self.dtype).element_size()
        free, total = torch.cuda.mem_get_info(device)
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        reserve = self.device_reserve_bytes
        if reserve is None:
            reserve = max(1 << 30, total // 10)
        return device if free - need >= reserve else torch.device("cpu")

    def _new_stats(self, name: str, k: int, device: torch.device) -> _Stats:
        gram = None
        if name in self._want_gram:
            where = self._gram_device(name, k, device)
            try:
                gram = torch.zeros((k, k), dtype=self.dtype, device=where)
            except torch.cuda.OutOfMemoryError:
                if self.offload == "never":
                    raise
                gram = torch.zeros((k, k), dtype=self.dtype, device="cpu")
        st = _Stats(k, torch.zeros(k, dtype=self.dtype, device=device),
                    torch.zeros((), dtype=self.dtype, device=device), gram)
        self._stats[name] = st
        return st

    @property
    def offloaded(self) -> List[str]:
        """Modules whose Gram accumulates on the host although the module is on a GPU."""
        return sorted(n for n, s in self._stats.items()
                      if s.gram is not None and s.gram.device != s.sq.device)

    def _token_mask(self, x: torch.Tensor, names: List[str]) -> Optional[torch.Tensor]:
        """The padding mask of this pass for the rows of `x` ([batch, seq, K] or flattened
        [batch x seq, K]), or None: no mask, or `x` is neither (then `names` are unmasked)."""
        mask = self._device_mask(x.device)
        if mask is None:
            return None
        if x.dim() >= 2 and tuple(x.shape[:-1]) == tuple(self._mask.shape) or \
                x.dim() == 2 and x.shape[0] == mask.numel():
            return mask
        self.unmasked.update(names)
        return None

    def _accumulate(self, name: str, x: torch.Tensor) -> None:
        rows = x.reshape(-1, x.shape[-1])
        mask = self._token_mask(x, [name])
        self._accumulate_rows(name, rows if mask is None else rows[mask])

    def _accumulate_rows(self, name: str, rows: torch.Tensor) -> None:
        k = rows.shape[-1]
        st = self._stats.get(name) or self._new_stats(name, k, rows.device)
        if st.k != k:
            raise RuntimeError(f"{name}: input width {k}, earlier {st.k}")
        if rows.shape[0] == 0:
            return
        st.tokens += rows.shape[0]
        if self.amax:
            torch.maximum(st.amax, rows.abs().amax().to(self.dtype), out=st.amax)
        xf = rows.to(self.dtype)
        st.sq += (xf * xf).sum(0)
        if st.gram is not None:
            precision = torch.get_float32_matmul_precision()
            if precision != "highest":  # no TF32 for the Gram
                torch.set_float32_matmul_precision("highest")
            try:
                if st.gram.device == xf.device:
                    st.gram.addmm_(xf.T, xf)
                else:  # offloaded: column blocks of at most 256 MiB come to the host
                    step = max(16, min(k, (256 << 20) // max(1, k * xf.element_size())))
                    for j in range(0, k, step):
                        st.gram[:, j:j + step] += (xf.T @ xf[:, j:j + step]).to(st.gram.device)
            finally:
                if precision != "highest":
                    torch.set_float32_matmul_precision(precision)

    # ---- results ----
    def _source(self, name: str) -> Optional[_Stats]:
        st = self._stats.get(self._alias.get(name, name))
        return st if st is not None and st.tokens > 0 else None

    @property
    def missing(self) -> List[str]:
        """Hooked modules that saw no token (never called, or only padding)."""
        return sorted(n for n in self._modules if self._source(n) is None)

    @property
    def groups(self) -> Dict[str, List[str]]:
        """Fused groups found: the module computed -> the members that share its statistics."""
        out: Dict[str, List[str]] = {}
        for member, leader in sorted(self._alias.items()):
            out.setdefault(leader, []).append(member)
        return out

    def _entries(self) -> List[List[storage.SafetensorsEntry]]:
        """Per module, its safetensors entries (float32 on the host, produced lazily)."""

        def host(t: torch.Tensor) -> Callable[[], Any]:
            return lambda: t.detach().to(device="cpu", dtype=torch.float32).contiguous() \
                .reshape(-1).numpy()

        out = []
        for name in sorted(self._modules):
            st = self._source(name)
            if st is None:
                continue
            e: List[storage.SafetensorsEntry] = [(f"{name}.input_sq", "F32", [st.k], host(st.sq))]
            if st.gram is not None:
                e.append((f"{name}.input_gram", "F32", [st.k, st.k], host(st.gram)))
            if self.amax:
                e.append((f"{name}.input_amax", "F32", [], host(st.amax)))
            out.append(e)
        return out

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """The file's tensors (float32, on the host), for small models and tests."""
        return {n: torch.from_numpy(produce().copy()).reshape(shape)
                for group in self._entries() for n, _, shape, produce in group}

    def save(self, uri: str, *, max_shard_bytes: Optional[int] = None,
             s3_endpoint: Optional[str] = None, s3_region: Optional[str] = None,
             s3: Any = None, metadata: Optional[Dict[str, str]] = None) -> str:
        """Writes the statistics as docs/CALIBRATION.md specifies to a path, file:// URI or
        s3://bucket/key (streamed: one tensor in host memory at a time; S3 through a multipart
        upload with boto3, credentials from the usual chain, `s3_endpoint`/`s3_region` as
        nvfp4d's --s3_endpoint/--s3_region) and returns the URI to pass as calibration_uri.

        `max_shard_bytes`: when the file would be larger, writes `<stem>-0000i-of-0000N.safetensors`
        shards (a module's entries stay together) and `<stem>.safetensors.index.json` (the
        checkpoint index format), and returns the index URI. nvfp4d reads one file today, so
        leave it unset for the service."""
        if self.missing:
            warnings.warn(f"{len(self.missing)} hooked module(s) saw no tokens and are not "
                          f"written, e.g. {self.missing[0]}")
        if self.unmasked:
            warnings.warn(f"{len(self.unmasked)} module(s) read inputs not shaped like the "
                          f"attention mask (padding included), e.g. {sorted(self.unmasked)[0]}")
        groups = self._entries()
        if not groups:
            raise RuntimeError("no statistics: run the model inside the collector first")
        meta = {"format": "nvfp4-calibration", "producer": "nvfp4_client.calibration",
                "tokens": str(self.tokens), "accumulate_dtype": str(self.dtype).split(".")[-1]}
        meta.update(metadata or {})
        if s3 is None and uri.startswith("s3://"):
            s3 = storage.s3_client(s3_endpoint, s3_region)
        sizes = [storage.safetensors_header(g)[1] for g in groups]
        if max_shard_bytes is None or sum(sizes) <= max_shard_bytes:
            with storage.open_output(uri, s3=s3) as out:
                storage.write_safetensors(out, [e for g in groups for e in g], meta)
                return out.commit()
        shards: List[List[storage.SafetensorsEntry]] = [[]]
        used = 0
        for g, size in zip(groups, sizes):
            if shards[-1] and used + size > max_shard_bytes:
                shards.append([])
                used = 0
            shards[-1].extend(g)
            used += size
        stem = uri[:-len(".safetensors")] if uri.endswith(".safetensors") else uri
        n = len(shards)
        weight_map: Dict[str, str] = {}
        for i, entries in enumerate(shards):
            file_uri = f"{stem}-{i + 1:05d}-of-{n:05d}.safetensors"
            with storage.open_output(file_uri, s3=s3) as out:
                storage.write_safetensors(out, entries, meta)
                out.commit()
            for e in entries:
                weight_map[e[0]] = file_uri.rsplit("/", 1)[-1]
        import json
        index = json.dumps({"metadata": dict(meta, total_size=str(sum(sizes))),
                            "weight_map": weight_map}, indent=1, sort_keys=True).encode()
        with storage.open_output(stem + ".safetensors.index.json", s3=s3) as out:
            out.write(index)
            return out.commit()
