"""What a training pipeline runs after a run: calibrate the checkpoint it just saved, upload the
statistics, have nvfp4d quantize it twice (SOAR with the hessian objective, and GPTQ error
feedback on top of the same block scales), watch both jobs with a progress bar, and check that
each output loads in transformers + compressed-tensors and stays close to the original model.

    pip install 'nvfp4-client[examples]'      # or: pip install 'client/python[examples]'
    python after_training.py --server nvfp4d.internal:50051 --tls-ca /etc/nvfp4/ca.crt \
        --model /ckpt/run-42/final --input s3://ckpt/run-42/final \
        --calibration s3://ckpt/run-42/calib.safetensors --data calib.txt \
        --output s3://ckpt/run-42/final-nvfp4

Steps (each printed as it runs):
 1. load --model (a Hugging Face checkpoint directory) with transformers;
 2. run --samples calibration samples through it (lines of --data, tokenized with padding, or
    random token ids without it) inside nvfp4_client.calibration.Collector(gram=True): per
    Linear input_sq, input_amax (W4A4; --weight-only leaves it out) and the input Gram;
 3. write the statistics to --calibration (a path or file:// URI inside nvfp4d's --data_root, or
    s3://, uploaded with boto3 using --s3-endpoint and the AWS_* credentials);
 4. submit QuantizeModel for --input (default: file:// + --model) twice: method soar with
    objective hessian to --output, and method gptq (its block scales: soar, objective hessian) to
    --gptq-output (default <--output>-gptq); request ids are derived from the inputs, so a
    retried pipeline step re-attaches to the jobs it submitted;
 5. watch both with a progress bar (re-attaching if nvfp4d restarts);
 6. load each output in transformers (compressed-tensors decompresses the NVFP4 weights; outputs
    elsewhere than a local path are first downloaded through the service) and compare its logits
    on calibration samples with the original model's.

The token comes from --token-file or $NVFP4_TOKEN. Exit codes: 0 succeeded, 1 server/network
error, 3 a job failed or was cancelled, 4 an output did not load or its logits are off.
"""
import argparse
import hashlib
import math
import os
import random
import sys
import tempfile
import time

import grpc
import torch

from nvfp4_client import Client, ProgressBar, pb, state_name
from nvfp4_client.calibration import Collector


def log(msg):
    print(msg, flush=True)


def load_model(path, dtype, device):
    import transformers
    from transformers import AutoModelForCausalLM
    major = int(transformers.__version__.split(".")[0])
    kw = {"dtype" if major >= 5 else "torch_dtype": dtype} if dtype is not None else {}
    return AutoModelForCausalLM.from_pretrained(path, **kw).to(device).eval()


def calibration_batches(args, model):
    """Batches of {input_ids, attention_mask}: --data lines through the checkpoint's tokenizer,
    or random token ids of random lengths (right-padded) without --data."""
    rng = random.Random(args.seed)
    if args.data:
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(args.model)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        with open(args.data) as f:
            lines = [line.strip() for line in f if line.strip()]
        if not lines:
            raise SystemExit(f"{args.data}: no text")
        samples = [lines[i % len(lines)] for i in range(args.samples)]
        for i in range(0, len(samples), args.batch_size):
            yield tok(samples[i:i + args.batch_size], return_tensors="pt", padding=True,
                      truncation=True, max_length=args.seq_len)
        return
    log("   (no --data: random token ids; pass real text for meaningful statistics)")
    vocab = model.config.vocab_size
    for i in range(0, args.samples, args.batch_size):
        n = min(args.batch_size, args.samples - i)
        lengths = [rng.randint(max(1, args.seq_len // 4), args.seq_len) for _ in range(n)]
        ids = torch.zeros((n, args.seq_len), dtype=torch.long)
        mask = torch.zeros((n, args.seq_len), dtype=torch.long)
        for r, length in enumerate(lengths):
            ids[r, :length] = torch.tensor([rng.randrange(vocab) for _ in range(length)])
            mask[r, :length] = 1
        yield {"input_ids": ids, "attention_mask": mask}


def collect(args, model):
    device = next(model.parameters()).device
    t0 = time.time()
    with Collector(model, gram=True, amax=not args.weight_only,
                   all_experts=args.all_experts) as c:
        with torch.no_grad():
            for batch in calibration_batches(args, model):
                model(**{k: v.to(device) for k, v in batch.items()})
    if c.missing:
        log(f"   {len(c.missing)} module(s) saw no token, e.g. {c.missing[0]} "
            "(MoE experts: --all-experts)")
    log(f"   {len(c.module_names)} Linear modules, {c.tokens} tokens in {c.forward_passes} "
        f"batches, {sum(len(v) for v in c.groups.values())} fused-group members collected "
        f"once, {len(c.offloaded)} Grams on the host, {time.time() - t0:.1f} s")
    return c


def request_id(*parts):
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def local_dir(uri):
    if uri.startswith("file://"):
        return uri[len("file://"):]
    return None if "://" in uri else uri


def verify(client, job, original, batches, tmp):
    """Loads the job's output in transformers and compares logits with the original model."""
    from transformers import AutoConfig
    path = local_dir(job.request.output_uri)
    if path is None or not os.path.isdir(path):
        path = os.path.join(tmp, job.job_id)
        files = client.download(job, path)
        log(f"   downloaded {len(files)} files through nvfp4d to {path}")
    qc = getattr(AutoConfig.from_pretrained(path), "quantization_config", None)
    qc = qc if isinstance(qc, dict) else (qc.to_dict() if qc is not None else {})
    if qc.get("quant_method") != "compressed-tensors":
        log(f"   {path}: quant_method {qc.get('quant_method')!r}: transformers loads the "
            "compressed-tensors layout only (use --layout compressed-tensors); not checked")
        return True
    try:
        import compressed_tensors  # noqa: F401  (transformers needs it for this config)
    except ImportError:
        log("   compressed-tensors is not installed: pip install compressed-tensors")
        return False
    device = next(original.parameters()).device
    quantized = load_model(path, None, device)  # the dtype compressed-tensors decompresses to
    errors, agree, total = [], 0, 0
    with torch.no_grad():
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            ref = original(**batch).logits.float()
            out = quantized(**batch).logits.float()
            m = batch["attention_mask"].bool()
            errors.append(((out - ref)[m].norm() / ref[m].norm()).item())
            agree += (out.argmax(-1) == ref.argmax(-1))[m].sum().item()
            total += m.sum().item()
    err = sum(errors) / len(errors)
    log(f"   {path}: loads in transformers ({qc.get('format')}), logits relative error "
        f"{err:.4f}, top-1 agreement {agree / max(1, total):.3f} on {total} tokens")
    del quantized
    return math.isfinite(err) and err < 0.5


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", default="localhost:50051")
    ap.add_argument("--model", required=True, help="the checkpoint directory training saved")
    ap.add_argument("--input", help="the checkpoint as nvfp4d sees it (default file://<--model>)")
    ap.add_argument("--output", required=True, help="output URI of the soar/hessian run")
    ap.add_argument("--gptq-output", help="output URI of the gptq run (default <--output>-gptq)")
    ap.add_argument("--no-gptq", action="store_true", help="only the soar/hessian run")
    ap.add_argument("--calibration", required=True,
                    help="where to write the statistics: a path or file:// URI that nvfp4d can "
                         "read (inside its --data_root), or s3://bucket/key")
    ap.add_argument("--data", help="calibration text, one sample per line")
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weight-only", action="store_true",
                    help="no input_amax: a W4A16 export instead of W4A4")
    ap.add_argument("--all-experts", action="store_true",
                    help="MoE models: every expert's statistics from every token (not only the "
                         "tokens routed to it), so that no expert is left without them")
    ap.add_argument("--layout", default="compressed-tensors",
                    choices=["compressed-tensors", "modelopt"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument("--s3-endpoint", help="S3 endpoint for the calibration upload")
    ap.add_argument("--s3-region")
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--tls-ca")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--tls-server-name")
    ap.add_argument("--token-file")
    args = ap.parse_args()
    input_uri = args.input or "file://" + os.path.abspath(args.model)
    outputs = [("soar", "hessian", args.output)]
    if not args.no_gptq:
        outputs.append(("gptq", "hessian", args.gptq_output or args.output.rstrip("/") + "-gptq"))

    log(f"1. loading {args.model} ({args.dtype}, {args.device})")
    model = load_model(args.model, getattr(torch, args.dtype), args.device)
    log(f"2. calibrating on {args.samples} samples of up to {args.seq_len} tokens")
    collector = collect(args, model)
    log(f"3. writing the statistics to {args.calibration}")
    calibration_uri = collector.save(args.calibration, s3_endpoint=args.s3_endpoint,
                                     s3_region=args.s3_region)
    del collector
    try:
        with Client(args.server, tls=args.tls, tls_ca=args.tls_ca, tls_cert=args.tls_cert,
                    tls_key=args.tls_key, tls_server_name=args.tls_server_name,
                    token_file=args.token_file) as c:
            jobs = []
            for method, objective, out in outputs:
                job = c.quantize_model(input_uri, out, layout=args.layout, method=method,
                                       objective=objective, calibration_uri=calibration_uri,
                                       request_id=request_id(
                                           input_uri, out, method, objective, calibration_uri,
                                           args.layout, str(args.data), str(args.samples),
                                           str(args.seq_len), str(args.seed),
                                           str(args.weight_only)))
                log(f"4. submitted {job.job_id}: {method} (objective {objective}) -> {out}")
                jobs.append(job)
            finals = []
            for job in jobs:
                log(f"5. watching {job.job_id}")
                with ProgressBar(label=job.job_id, stream=sys.stdout) as bar:
                    finals.append(c.watch(job.job_id, on_progress=bar))
            failed = False
            for job in finals:
                log(f"{job.job_id}: {state_name(job.state)}")
                if job.state != pb.JOB_STATE_SUCCEEDED:
                    log(f"   error: {job.error.message}")
                    failed = True
                    continue
                for f in job.outputs:
                    log(f"   {f.uri}  {f.size_bytes} bytes  sha256 {f.sha256}")
            if failed:
                return 3
            if args.no_verify:
                return 0
            log("6. verifying the outputs in transformers + compressed-tensors")
            model = model.float()
            args.samples = min(args.samples, 4 * args.batch_size)
            batches = list(calibration_batches(args, model))
            with tempfile.TemporaryDirectory(prefix="nvfp4-verify-") as tmp:
                ok = all([verify(c, job, model, batches, tmp) for job in finals])
            return 0 if ok else 4
    except grpc.RpcError as e:
        print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
