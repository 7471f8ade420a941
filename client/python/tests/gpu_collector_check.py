"""GPU check of nvfp4_client.calibration.Collector (not run in CI, which has no GPU):

  * Grams accumulated on the GPU (offload="never"), on the host from GPU column blocks
    (offload="always") and with offload="auto" under a reserve that forces the host agree;
  * TF32 enabled globally does not reach the Gram (error against a float64 reference stays at
    float32 level); float64 accumulation;
  * throughput on a slice of an 8B-shaped Llama (hidden 4096, intermediate 14336, GQA 32/8).

    python client/python/tests/gpu_collector_check.py [--layers 2 --batches 8 --seq 1024]
    ... --device cpu --hidden 256 --inter 512 --batches 2 --seq 64   # a CPU smoke run

Needs torch and transformers, and nvfp4_client.calibration: the installed package, or on a
machine without grpc the two source files as a bare package:
    mkdir -p /tmp/p/nvfp4_client && touch /tmp/p/nvfp4_client/__init__.py &&
    cp client/python/src/nvfp4_client/{calibration,storage}.py /tmp/p/nvfp4_client/ &&
    PYTHONPATH=/tmp/p python3 client/python/tests/gpu_collector_check.py"""
import argparse
import time

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--inter", type=int, default=14336)
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run without the offload part")
    args = ap.parse_args()
    from transformers import LlamaConfig, LlamaForCausalLM
    from nvfp4_client.calibration import Collector

    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32000, hidden_size=args.hidden, intermediate_size=args.inter,
                      num_hidden_layers=args.layers, num_attention_heads=32,
                      num_key_value_heads=8, max_position_embeddings=4096)
    model = LlamaForCausalLM(cfg).to(dev, torch.bfloat16).eval()
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(args.batches):
        ids = torch.randint(0, cfg.vocab_size, (args.batch_size, args.seq), generator=g)
        lengths = torch.randint(args.seq // 4, args.seq + 1, (args.batch_size,), generator=g)
        mask = (torch.arange(args.seq)[None, :] < lengths[:, None]).long()
        batches.append({"input_ids": ids.to(dev), "attention_mask": mask.to(dev)})
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)

    def run(**kw):
        sync()
        t0 = time.time()
        with Collector(model, **kw) as c, torch.no_grad():
            for b in batches:
                model(**b)
        sync()
        return c, time.time() - t0

    with torch.no_grad():  # warm-up
        model(**batches[0])
    _, t_plain = run(gram=False, amax=False)
    print(f"{torch.cuda.get_device_name() if cuda else 'cpu'}: {args.layers} layers, {tokens} tokens "
          f"({args.batches} batches of {args.batch_size}x{args.seq}, padded)")
    print(f"  input_sq + amax only:         {t_plain:6.2f} s")
    gpu, t_gpu = run(gram=True, offload="never")
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
    print(f"  + Grams on the device (fp32): {t_gpu:6.2f} s, peak GPU memory {peak:.1f} GiB")
    sd_gpu = gpu.state_dict()
    del gpu
    if cuda:
        torch.cuda.empty_cache()
    host, t_host = run(gram=True, offload="always")
    own = len(host.module_names) - sum(map(len, host.groups.values()))
    assert len(host.offloaded) == (own if cuda else 0), host.offloaded
    print(f"  + Grams on the host (fp32):   {t_host:6.2f} s ({len(host.offloaded)} offloaded)")
    sd_host = host.state_dict()
    del host
    worst = 0.0
    for k, v in sd_gpu.items():
        err = ((sd_host[k] - v).abs().max() / v.abs().max().clamp_min(1e-30)).item()
        worst = max(worst, err)
    print(f"  device vs host Grams: max relative difference {worst:.2e}")
    assert worst < 1e-5, worst
    if cuda:
        free, total = torch.cuda.mem_get_info()
        auto, _ = run(gram=True, offload="auto", device_reserve_bytes=total)
        assert len(auto.offloaded) == own, auto.offloaded
        print(f"  offload='auto' with a reserve of the whole GPU: {len(auto.offloaded)} on the host")
        del auto

    # TF32 on globally: the Gram stays float32-exact against a float64 reference.
    name = f"model.layers.{args.layers - 1}.mlp.down_proj"
    acts = []
    module = dict(model.named_modules())[name]
    h = module.register_forward_pre_hook(lambda m, a: acts.append(a[0].detach()))
    with torch.no_grad():
        for b in batches[:2]:
            model(**b)
    h.remove()
    ref = sum((a[b["attention_mask"].bool()].double().T @ a[b["attention_mask"].bool()].double())
              for a, b in zip(acts, batches[:2]))
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    saved = batches
    batches = batches[:2]
    c32, _ = run(gram=[name], offload="never")
    c64, t64 = run(gram=[name], offload="never", dtype=torch.float64)
    batches = saved
    e32 = ((c32.state_dict()[name + ".input_gram"].to(dev).double() - ref).abs().max()
           / ref.abs().max()).item()
    e64 = ((c64.state_dict()[name + ".input_gram"].to(dev).double() - ref).abs().max()
           / ref.abs().max()).item()
    xf = acts[0][batches[0]["attention_mask"].bool()].float()
    tf32 = ((xf.T @ xf).double() - (xf.double().T @ xf.double())).abs().max() / \
        (xf.double().T @ xf.double()).abs().max()
    print(f"  TF32 allowed globally: Gram error vs float64 {e32:.1e} (fp32 accumulation), "
          f"{e64:.1e} (fp64); a TF32 product would be {tf32.item():.1e}")
    assert e32 < 1e-5 and e64 < 1e-6, (e32, e64)
    print("OK")


if __name__ == "__main__":
    main()
