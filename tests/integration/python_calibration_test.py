"""The calibration collector (nvfp4_client.calibration.Collector) and
client/python/examples/after_training.py, on a tiny transformers Llama built from a config (random
weights, CPU), with a real nvfp4d and an S3 API server (moto_server, SigV4-checking):
  * input_sq / input_gram / input_amax equal a float64 reference computed from the unpadded
    activations (right- and left-padded batches; float32 and float64 accumulation), fused groups
    (q/k/v, gate/up) are computed once and written under every member's name, the names are the
    checkpoint's, module / gram selection and exclusions;
  * the file is the format of docs/CALIBRATION.md (safetensors loads it; F32, [K], [K, K], []),
    sharded with an index when asked; s3:// uploads (single PUT and multipart, aborted on error);
  * nvfp4d runs gptq / hessian / wmse jobs from the collector's file read from S3;
  * after_training.py: collect, upload to S3, QuantizeModel with objective hessian and with method
    gptq, progress bars, outputs on S3 downloaded through the service and loaded in transformers +
    compressed-tensors.
  * fused MoE experts (transformers >= 5's 3-D gate_up_proj / down_proj, Qwen3-MoE, Mixtral,
    gpt-oss): per-expert statistics under the checkpoint's names equal to those of the rows the
    eager experts loop reads; all_experts; W4A4 + gptq exports of a Qwen3-MoE model from them.
Runs in the venv of scripts/test_extra.d/25-python-calibration.sh (the nvfp4-client wheel, torch,
transformers, compressed-tensors, boto3); FAILS, never skips, without it or without moto_server."""
import os
import sys

VENV = os.environ.get("NVFP4_PY_CALIB_VENV", os.path.expanduser("~/.cache/nvfp4-py-calib-venv"))
VENV_PY = os.path.join(VENV, "bin", "python")
if os.path.realpath(sys.prefix) != os.path.realpath(VENV):
    if not os.path.exists(VENV_PY):
        sys.exit(f"FAIL: {VENV_PY} missing: run scripts/test_extra.d/25-python-calibration.sh")
    os.execv(VENV_PY, [VENV_PY] + sys.argv)

import json  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402
import urllib.request  # noqa: E402
import warnings  # noqa: E402
import re  # noqa: E402

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from nvfp4_client import Client, state_name, storage  # noqa: E402
from nvfp4_client.calibration import Collector  # noqa: E402
from harness import Server  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.normpath(os.path.join(HERE, "..", "..", "client", "python", "examples",
                                        "after_training.py"))
BUCKET = "nvfp4-calib"
WORDS = 200


def make_tiny_model(directory, arch="llama", seed=0):
    """A 2-layer model (hidden 64, GQA 4/2 heads) with random bf16 weights and a word-level
    tokenizer, saved as transformers does after training. llama: intermediate 128. The MoE ones
    (4 experts of intermediate 32, top-2), which transformers >= 5 holds as fused 3-D experts:
    qwen3_moe and mixtral (saved per expert: `mlp.experts.<e>.gate_proj`, Mixtral's
    `block_sparse_moe.experts.<e>.w1`), gpt_oss (transposed, interleaved, with biases; saved
    fused), nemotron_h (4 layers: Mamba-2, MoE, attention, MoE; ungated relu2 experts on a
    latent of 32 (fc1/fc2_latent_proj) with a shared expert; saved per expert under `backbone.`,
    which transformers renames `model.`)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    import transformers
    vocab = {"[PAD]": 0, "[UNK]": 1, "[BOS]": 2, "[EOS]": 3}
    for i in range(WORDS):
        vocab[f"w{i}"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]",
        eos_token="[EOS]")
    torch.manual_seed(seed)
    common = dict(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0,
                  bos_token_id=2, eos_token_id=3)
    moe = dict(num_experts_per_tok=2, router_aux_loss_coef=0.0)
    config = {
        "llama": lambda: transformers.LlamaConfig(intermediate_size=128, **common),
        "qwen3_moe": lambda: transformers.Qwen3MoeConfig(
            intermediate_size=128, moe_intermediate_size=32, num_experts=4, head_dim=16,
            **moe, **common),
        "mixtral": lambda: transformers.MixtralConfig(intermediate_size=32, num_local_experts=4,
                                                      **moe, **common),
        "gpt_oss": lambda: transformers.GptOssConfig(intermediate_size=32, num_local_experts=4,
                                                     head_dim=16, **moe, **common),
        "nemotron_h": lambda: transformers.NemotronHConfig(
            **{**common, "num_hidden_layers": 4}, hybrid_override_pattern="ME*E", head_dim=16,
            intermediate_size=128, moe_intermediate_size=32, n_routed_experts=4,
            num_experts_per_tok=2, n_shared_experts=1, moe_shared_expert_intermediate_size=32,
            mamba_num_heads=4, mamba_head_dim=16, ssm_state_size=16, n_groups=1,
            mamba_chunk_size=16, moe_latent_size=32),
    }[arch]()
    model = transformers.AutoModelForCausalLM.from_config(config).to(torch.bfloat16)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def texts(n, seed=0):
    rng = random.Random(seed)
    return [" ".join(f"w{rng.randrange(WORDS)}" for _ in range(rng.randrange(2, 40)))
            for _ in range(n)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Moto:
    """moto_server on 127.0.0.1 with an IAM user whose SigV4 signatures it checks."""

    def __init__(self, tmp):
        moto = shutil.which("moto_server")
        if moto is None:
            raise AssertionError("moto_server not found: scripts/test_extra.d/15-moto.sh")
        import boto3
        self.endpoint = f"http://127.0.0.1:{free_port()}"
        self.log = open(os.path.join(tmp, "moto.log"), "wb")
        self.proc = subprocess.Popen(
            [moto, "-H", "127.0.0.1", "-p", self.endpoint.rsplit(":", 1)[1]],
            env=dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="4"), stdout=self.log,
            stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1)
                break
            except Exception:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise AssertionError("moto_server did not start")
                time.sleep(0.2)
        iam = boto3.client("iam", endpoint_url=self.endpoint, region_name="us-east-1",
                           aws_access_key_id="setup", aws_secret_access_key="setup")
        iam.create_user(UserName="nvfp4")
        iam.put_user_policy(UserName="nvfp4", PolicyName="s3-all", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="nvfp4")["AccessKey"]
        self.env = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                    "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"], "AWS_REGION": "us-east-1"}
        os.environ.update(self.env)  # the collector's boto3 uses the usual credential chain
        self.s3 = storage.s3_client(self.endpoint, "us-east-1")
        self.s3.create_bucket(Bucket=BUCKET)

    def get(self, key):
        return self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


class CollectorTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        from transformers import AutoModelForCausalLM, AutoTokenizer
        cls.tmp = tempfile.mkdtemp(prefix="nvfp4-calib-it-")
        cls.model_dir = make_tiny_model(os.path.join(cls.tmp, "tiny"))
        cls.model = AutoModelForCausalLM.from_pretrained(cls.model_dir,
                                                         dtype=torch.float32).eval()
        cls.tok = AutoTokenizer.from_pretrained(cls.model_dir)
        cls.moto = Moto(cls.tmp)

    @classmethod
    def tearDownClass(cls):
        cls.moto.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def batches(self, n=48, size=8, side="right"):
        self.tok.padding_side = side
        t = texts(n)
        return [self.tok(t[i:i + size], return_tensors="pt", padding=True)
                for i in range(0, n, size)]

    def reference(self, batches):
        """float64 statistics of every Linear's unpadded inputs, by plain hooks."""
        acts = {}
        hooks = [m.register_forward_hook(
            lambda mod, inp, out, n=n: acts.setdefault(n, []).append(inp[0].detach()))
            for n, m in self.model.named_modules() if isinstance(m, torch.nn.Linear)]
        try:
            masks = []
            with torch.no_grad():
                for b in batches:
                    self.model(**b)
                    masks.append(b["attention_mask"].bool())
        finally:
            for h in hooks:
                h.remove()
        ref = {}
        for n, xs in acts.items():
            x = torch.cat([a[m] for a, m in zip(xs, masks)]).double()
            ref[n] = {"input_sq": (x * x).sum(0), "input_gram": x.T @ x,
                      "input_amax": x.abs().max()}
        return ref, sum(int(m.sum()) for m in masks)

    def collect(self, batches, **kw):
        with Collector(self.model, **kw) as c:
            with torch.no_grad():
                for b in batches:
                    self.model(**b)
        return c

    def test_statistics_equal_the_unpadded_reference(self):
        for side in ("right", "left"):
            for dtype, rtol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
                batches = self.batches(side=side)
                ref, tokens = self.reference(batches)
                c = self.collect(batches, gram=True, dtype=dtype)
                self.assertEqual(c.tokens, tokens)
                self.assertEqual(c.forward_passes, len(batches))
                self.assertFalse(c.unmasked)
                sd = c.state_dict()
                for name, r in ref.items():
                    if name == "lm_head":
                        continue
                    for stat, want in r.items():
                        got = sd[f"{name}.{stat}"].double()
                        self.assertEqual(got.dtype, torch.float64)
                        err = ((got - want).abs().max() / want.abs().max()).item()
                        self.assertLess(err, max(rtol, 1e-7), (side, dtype, name, stat, err))
                # The padding changes the statistics: they really are masked.
                self.assertGreater(sum(int((b["attention_mask"] == 0).sum()) for b in batches), 0)

    def test_fused_groups_names_and_selection(self):
        batches = self.batches(n=16)
        c = self.collect(batches, gram=["*.mlp.*"])
        from safetensors import safe_open as so
        with so(os.path.join(self.model_dir, "model.safetensors"), "pt") as f:
            linear_weights = {k[:-len(".weight")] for k in f.keys()
                              if k.endswith("_proj.weight")}
        self.assertEqual(set(c.module_names), linear_weights)  # checkpoint names, no lm_head
        self.assertEqual(c.groups, {
            f"model.layers.{i}.{leader}": [f"model.layers.{i}.{m}" for m in members]
            for i in range(2)
            for leader, members in (("mlp.gate_proj", ["mlp.up_proj"]),
                                    ("self_attn.q_proj", ["self_attn.k_proj",
                                                          "self_attn.v_proj"]))})
        sd = c.state_dict()
        for i in range(2):
            p = f"model.layers.{i}."
            for stat in ("input_sq", "input_amax"):
                self.assertTrue(torch.equal(sd[p + "self_attn.q_proj." + stat],
                                            sd[p + "self_attn.v_proj." + stat]))
            self.assertTrue(torch.equal(sd[p + "mlp.gate_proj.input_gram"],
                                        sd[p + "mlp.up_proj.input_gram"]))
            self.assertNotIn(p + "self_attn.q_proj.input_gram", sd)  # gram=["*.mlp.*"]
            self.assertIn(p + "mlp.down_proj.input_gram", sd)
        # Without fusing, the members are computed on their own: the same numbers.
        sd2 = self.collect(batches, gram=["*.mlp.*"], fuse_groups=False).state_dict()
        self.assertEqual(sorted(sd2), sorted(sd))
        for k in sd:
            torch.testing.assert_close(sd2[k], sd[k], rtol=1e-6, atol=0)
        # Selection: patterns, exclusions, a callable, max_gram_dim, amax off.
        c = self.collect(batches, modules=["re:model\\.layers\\.1\\."], exclude="*.o_proj",
                         gram=True, max_gram_dim=64, amax=False)
        self.assertEqual(c.module_names, sorted(
            f"model.layers.1.{m}" for m in ("self_attn.q_proj", "self_attn.k_proj",
                                            "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj",
                                            "mlp.down_proj")))
        self.assertEqual(c.skipped_grams, ["model.layers.1.mlp.down_proj"])  # K = 128 > 64
        sd = c.state_dict()
        self.assertFalse([k for k in sd if k.endswith(".input_amax")])
        self.assertNotIn("model.layers.1.mlp.down_proj.input_gram", sd)
        c = Collector(self.model, modules=lambda name, m: name.endswith("lm_head"))
        self.assertEqual(c.module_names, ["lm_head"])
        with self.assertRaisesRegex(ValueError, "no nn.Linear"):
            Collector(self.model, modules=["nothing.*"])
        # An explicit mask for a model called without one.
        b = batches[0]
        with Collector(self.model) as c, c.mask(b["attention_mask"]), torch.no_grad():
            self.model(b["input_ids"])
        self.assertEqual(c.tokens, int(b["attention_mask"].sum()))

    def test_file_format_shards_and_s3(self):
        batches = self.batches(n=16)
        c = self.collect(batches, gram=True)
        sd = c.state_dict()
        path = os.path.join(self.tmp, "calib.safetensors")
        uri = c.save(path)
        self.assertEqual(uri, "file://" + path)
        loaded = load_file(path)
        self.assertEqual(sorted(loaded), sorted(sd))
        for k, v in loaded.items():
            self.assertEqual(v.dtype, torch.float32, k)
            self.assertTrue(torch.equal(v, sd[k]), k)
        k_of = {"model.layers.0.mlp.down_proj": 128, "model.layers.0.self_attn.q_proj": 64}
        for m, k in k_of.items():
            self.assertEqual(list(loaded[m + ".input_sq"].shape), [k])
            self.assertEqual(list(loaded[m + ".input_gram"].shape), [k, k])
            self.assertEqual(list(loaded[m + ".input_amax"].shape), [])
        with safe_open(path, "pt") as f:
            meta = f.metadata()
        self.assertEqual(meta["format"], "nvfp4-calibration")
        self.assertEqual(int(meta["tokens"]), c.tokens)
        # Sharded: an index and shards that hold the same tensors, each module in one shard.
        index_uri = c.save(os.path.join(self.tmp, "sharded", "calib.safetensors"),
                           max_shard_bytes=100_000)
        with open(index_uri[len("file://"):]) as f:
            index = json.load(f)
        shards = sorted(set(index["weight_map"].values()))
        self.assertGreater(len(shards), 2)
        self.assertTrue(all(s.endswith(f"-of-{len(shards):05d}.safetensors") for s in shards))
        merged = {}
        for s in shards:
            part = load_file(os.path.join(self.tmp, "sharded", s))
            modules = {k.rsplit(".", 1)[0] for k in part}
            for m in modules:
                self.assertTrue(all(index["weight_map"][k] == s for k in sd
                                    if k.rsplit(".", 1)[0] == m))
            merged.update(part)
        self.assertEqual(sorted(merged), sorted(sd))
        self.assertEqual(sorted(index["weight_map"]), sorted(sd))
        # s3://: one PutObject, read back byte-identical to the local file.
        s3_uri = f"s3://{BUCKET}/run/calib.safetensors"
        self.assertEqual(c.save(s3_uri, s3_endpoint=self.moto.endpoint), s3_uri)
        with open(path, "rb") as f:
            self.assertEqual(self.moto.get("run/calib.safetensors"), f.read())
        # A multipart upload (3 parts of >= 5 MiB), and an aborted one that leaves nothing.
        data = os.urandom(13 << 20)
        with storage.open_output(f"s3://{BUCKET}/big.bin", s3=self.moto.s3,
                                 part_bytes=5 << 20) as out:
            for i in range(0, len(data), 1 << 20):
                out.write(data[i:i + (1 << 20)])
            out.commit()
        self.assertEqual(self.moto.get("big.bin"), data)
        with self.assertRaises(RuntimeError):
            with storage.open_output(f"s3://{BUCKET}/aborted.bin", s3=self.moto.s3,
                                     part_bytes=5 << 20) as out:
                out.write(data)
                raise RuntimeError("training pipeline died")
        self.assertNotIn("Contents", self.moto.s3.list_objects_v2(Bucket=BUCKET,
                                                                  Prefix="aborted"))
        self.assertFalse(self.moto.s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads"))
        # Local writes are atomic: nothing is left behind by a failure either.
        with self.assertRaises(RuntimeError):
            with storage.open_output(os.path.join(self.tmp, "partial.bin")) as out:
                out.write(b"x")
                raise RuntimeError("died")
        self.assertFalse([f for f in os.listdir(self.tmp) if "partial" in f])

    def test_service_jobs_read_the_collected_file_from_s3(self):
        """gptq and hessian need the Grams, wmse only input_sq: jobs over a file in S3."""
        batches = self.batches(n=32)
        full = self.collect(batches, gram=True)
        full.save(f"s3://{BUCKET}/jobs/full.safetensors", s3_endpoint=self.moto.endpoint)
        sq_only = self.collect(batches, gram=False, amax=False)
        sq_only.save(f"s3://{BUCKET}/jobs/sq.safetensors", s3_endpoint=self.moto.endpoint)
        root = tempfile.mkdtemp(prefix="nvfp4-calib-root-", dir=self.tmp)
        model_dir = os.path.join(root, "tiny")
        shutil.copytree(self.model_dir, model_dir)
        server = Server(root, [f"--s3_endpoint={self.moto.endpoint}"], env=self.moto.env)
        try:
            with Client(server.address) as c:
                for method, objective, cal in (("gptq", "mse", "full"),
                                               ("soar", "hessian", "full"),
                                               ("soar", "wmse", "sq")):
                    job = c.quantize_model(
                        "file://" + model_dir, f"file://{root}/out-{method}-{objective}",
                        layout="compressed-tensors", method=method, objective=objective,
                        calibration_uri=f"s3://{BUCKET}/jobs/{cal}.safetensors", wait=True)
                    self.assertEqual(state_name(job.state), "SUCCEEDED",
                                     f"{method}/{objective}: {job.error.message}")
                    with open(f"{root}/out-{method}-{objective}/config.json") as f:
                        qc = json.load(f)["quantization_config"]
                    # input_amax collected -> W4A4 (activation scales); none -> weight-only.
                    w4a4 = "input_activations" in qc["config_groups"]["group_0"] and \
                        qc["config_groups"]["group_0"]["input_activations"] is not None
                    self.assertEqual(w4a4, cal == "full", qc)
                # quantize_tensor takes torch tensors (bf16 weight, fp32 Gram) as it takes bytes.
                gram = full.state_dict()["model.layers.0.mlp.down_proj.input_gram"]
                w = torch.randn(64, 128, generator=torch.Generator().manual_seed(1)).bfloat16()
                a = c.quantize_tensor(w, name="w", method="gptq", gram=gram)
                b = c.quantize_tensor(w.view(torch.int16).numpy().tobytes(), name="w",
                                      dtype="bf16", shape=[64, 128], method="gptq",
                                      gram=gram.numpy())
                self.assertEqual((a.packed, a.scales, a.global_scale),
                                 (b.packed, b.scales, b.global_scale))
                self.assertIn("output_nmse", a.metrics)
                # gptq without a Gram fails naming the module.
                job = c.quantize_model("file://" + model_dir, f"file://{root}/out-bad",
                                       method="gptq",
                                       calibration_uri=f"s3://{BUCKET}/jobs/sq.safetensors",
                                       wait=True)
                self.assertEqual(state_name(job.state), "FAILED")
                self.assertIn("input_gram", job.error.message)
        finally:
            server.kill()

    def test_after_training_example(self):
        root = tempfile.mkdtemp(prefix="nvfp4-example-root-", dir=self.tmp)
        model_dir = os.path.join(root, "run-42", "final")
        shutil.copytree(self.model_dir, model_dir)
        data = os.path.join(root, "calib.txt")
        with open(data, "w") as f:
            f.write("\n".join(texts(300, seed=7)) + "\n")
        server = Server(root, [f"--s3_endpoint={self.moto.endpoint}"], env=self.moto.env)
        try:
            t0 = time.time()
            r = subprocess.run(
                [sys.executable, EXAMPLE, "--server", server.address, "--model", model_dir,
                 "--calibration", f"s3://{BUCKET}/run-42/calib.safetensors",
                 "--s3-endpoint", self.moto.endpoint, "--data", data, "--samples", "256",
                 "--seq-len", "48", "--batch-size", "16", "--device", "cpu",
                 "--output", f"s3://{BUCKET}/run-42/final-nvfp4"],
                capture_output=True, text=True, timeout=600, env=dict(os.environ, **self.moto.env))
            out = r.stdout
            self.assertEqual(r.returncode, 0, out + r.stderr + server.logs())
            print(f"\nafter_training.py: {time.time() - t0:.1f} s", file=sys.stderr)
            self.assertIn("256 samples", out)
            self.assertIn("6 fused-group members collected once", out)
            self.assertIn("soar (objective hessian)", out)
            self.assertIn("gptq (objective hessian)", out)
            self.assertEqual(out.count(": SUCCEEDED"), 2, out)
            self.assertRegex(out, r"\[#+\] 100% 21/21 tensors .* SUCCEEDED")
            self.assertEqual(out.count("downloaded 5 files through nvfp4d"), 2, out)
            self.assertEqual(out.count("loads in transformers (nvfp4-pack-quantized)"), 2, out)
            errs = [float(x) for x in
                    re.findall(r"logits relative error ([0-9.]+)", out)]
            self.assertEqual(len(errs), 2)
            self.assertTrue(all(0 < e < 0.5 for e in errs), errs)
            keys = [o["Key"] for o in self.moto.s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
            for k in ("run-42/calib.safetensors", "run-42/final-nvfp4/model.safetensors",
                      "run-42/final-nvfp4-gptq/model.safetensors",
                      "run-42/final-nvfp4-gptq/config.json"):
                self.assertIn(k, keys)
        finally:
            server.kill()


def _experts_input(module):
    """'gate_up_proj' or (ungated, Nemotron-H) 'up_proj' where `module` holds them 3-D."""
    for which in ("gate_up_proj", "up_proj"):
        p = getattr(module, which, None)
        if isinstance(p, torch.Tensor) and p.dim() == 3:
            return which
    return None


class ExpertInputs(torch.overrides.TorchFunctionMode):
    """The reference for fused MoE experts: records, while the model runs with transformers'
    eager experts loop, every call of each experts module (its hidden_states and top_k_index, by a
    pre-hook) and, inside it, the operand each torch function applies expert e's slice of
    `gate_up_proj` (or `up_proj`: "in") / `down_proj` ("down") to: the rows the expert's
    projections really read."""

    def __init__(self, model):
        super().__init__()
        self.blocks = {n: m for n, m in model.named_modules() if _experts_input(m)}
        self.params = {}
        for n, m in self.blocks.items():
            for which, attr in (("in", _experts_input(m)), ("down", "down_proj")):
                p = getattr(m, attr)
                self.params[p.untyped_storage().data_ptr()] = (n, which, p)
        self.calls = {n: [] for n in self.blocks}
        self.hooks = [m.register_forward_pre_hook(
            lambda mod, args, n=n: self.calls[n].append(
                {"x": args[0].detach().clone(), "index": args[1].clone(), "in": {}}))
            for n, m in self.blocks.items()]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if len(args) >= 2 and torch.is_tensor(args[0]) and torch.is_tensor(args[1]) and \
                args[1].dim() == 2 and args[1].is_floating_point():
            hit = self.params.get(args[1].untyped_storage().data_ptr())
            if hit is not None:
                n, which, p = hit
                e = (args[1].storage_offset() - p.storage_offset()) // p.stride(0)
                self.calls[n][-1]["in"][(which, e)] = args[0].detach().clone()
        return func(*args, **(kwargs or {}))

    def close(self):
        for h in self.hooks:
            h.remove()


class FusedExpertsCollectorTest(unittest.TestCase):
    """Fused MoE experts (transformers >= 5: one module with 3-D gate_up_proj / down_proj per MoE
    block): per-expert statistics under the checkpoint's names, equal to those of the rows the
    eager experts loop reads, and a W4A4 / gptq export of the model from them."""

    @classmethod
    def setUpClass(cls):
        from transformers import AutoTokenizer
        cls.tmp = tempfile.mkdtemp(prefix="nvfp4-calib-moe-")
        cls.dirs = {a: make_tiny_model(os.path.join(cls.tmp, a), a)
                    for a in ("qwen3_moe", "mixtral", "gpt_oss", "nemotron_h")}
        cls.tok = AutoTokenizer.from_pretrained(cls.dirs["qwen3_moe"])

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def load(self, arch, **kw):
        from transformers import AutoModelForCausalLM
        return AutoModelForCausalLM.from_pretrained(self.dirs[arch], dtype=torch.float32,
                                                    **kw).eval()

    def batches(self, n=32, size=8):
        self.tok.padding_side = "right"
        t = texts(n, seed=3)
        return [self.tok(t[i:i + size], return_tensors="pt", padding=True)
                for i in range(0, n, size)]

    def reference(self, arch, batches):
        """float64 statistics per checkpoint module of the unpadded rows each expert read."""
        model = self.load(arch, experts_implementation="eager")
        rec = ExpertInputs(model)
        try:
            with rec, torch.no_grad():
                for b in batches:
                    model(**b)
        finally:
            rec.close()
        masks = [b["attention_mask"].reshape(-1).bool() for b in batches]
        rows = {}
        for n, calls in rec.calls.items():
            self.assertEqual(len(calls), len(batches))
            for call, mask in zip(calls, masks):
                for (which, e), x in call["in"].items():
                    # The eager loop's rows of expert e: its tokens in torch.where order.
                    tok = torch.where((call["index"] == e).T)[1]
                    if which == "in":
                        self.assertTrue(torch.equal(x, call["x"][tok]), (n, e))
                    rows.setdefault((n, e, which), []).append(x[mask[tok]])
        ref = {}
        for (n, e, which), xs in rows.items():
            x = torch.cat(xs).double()
            if x.shape[0]:
                ref[(n, e, which)] = {"input_sq": (x * x).sum(0), "input_gram": x.T @ x,
                                      "input_amax": x.abs().max()}
        return ref

    def collect(self, model, batches, **kw):
        with Collector(model, **kw) as c, torch.no_grad():
            for b in batches:
                model(**b)
        return c

    def test_statistics_and_names_of_each_expert(self):
        batches = self.batches()
        gated = tuple(f"model.layers.{{i}}.mlp.experts.{{e}}.{p}"
                      for p in ("gate_proj", "up_proj", "down_proj"))
        for arch, names, layers in (
                ("qwen3_moe", gated, (0, 1)),
                ("mixtral", tuple(f"model.layers.{{i}}.block_sparse_moe.experts.{{e}}.{w}"
                                  for w in ("w1", "w3", "w2")), (0, 1)),
                ("gpt_oss", gated, (0, 1)),
                ("nemotron_h", (None, "backbone.layers.{i}.mixer.experts.{e}.up_proj",
                                "backbone.layers.{i}.mixer.experts.{e}.down_proj"), (1, 3))):
            with self.subTest(arch=arch):
                ref = self.reference(arch, batches)
                model = self.load(arch)  # the default experts implementation
                c = self.collect(model, batches, gram=True)
                self.assertFalse(c.unmasked)
                sd = c.state_dict()
                # The names: save_pretrained's keys (Mixtral's w1/w3/w2 under block_sparse_moe,
                # Nemotron-H's `backbone.`, dense modules too), or for gpt-oss's experts (saved
                # fused) the names nvfp4d splits into.
                with safe_open(os.path.join(self.dirs[arch], "model.safetensors"), "pt") as f:
                    file_keys = set(f.keys())
                keys = {k[:-len(".weight")] for k in file_keys if k.endswith(".weight")}
                experts = {m for m in c.module_names if ".experts." in m}
                per_expert = len([t for t in names if t])
                self.assertEqual(len(experts), len(layers) * 4 * per_expert)
                if arch == "gpt_oss":
                    self.assertIn("model.layers.0.mlp.experts.gate_up_proj", file_keys)
                    self.assertLessEqual(set(c.module_names) - experts, keys)
                else:
                    self.assertLessEqual(set(c.module_names), keys)
                    self.assertEqual(experts, {k for k in keys if ".experts." in k})
                self.assertEqual(len([g for g in c.groups if ".experts." in g]),
                                 len(layers) * 4 if names[0] else 0)
                # The same names under a wrapper (DDP's `module.`).
                wrapper = torch.nn.Module()
                wrapper.module = model
                self.assertEqual(Collector(wrapper).module_names, c.module_names)
                checked = 0
                for (n, e, which), r in ref.items():
                    i = int(re.search(r"layers\.(\d+)\.", n).group(1))
                    gate, up, down = (t and t.format(i=i, e=e) for t in names)
                    for m in ((gate, up) if which == "in" else (down,)):
                        if m is None:
                            continue
                        for stat, want in r.items():
                            got = sd[f"{m}.{stat}"].double()
                            err = ((got - want).abs().max() / want.abs().max()).item()
                            self.assertLess(err, 1e-5, (arch, m, stat, err))
                        checked += 1
                # Every expert that saw a token, and only those, has statistics.
                self.assertEqual(checked, len([m for m in experts if f"{m}.input_sq" in sd]))
                self.assertGreater(checked, 12)
                self.assertEqual(sorted(c.missing),
                                 sorted(m for m in experts if f"{m}.input_sq" not in sd))
                # all_experts: every expert, every unpadded token of its block.
                a = self.collect(model, batches, all_experts=True).state_dict()
                self.assertEqual(len([k for k in a if k.endswith(".input_amax")
                                      and ".experts." in k]), len(experts))
                first = names[0] or names[1]
                for i in layers:
                    sq = [a[f"{first.format(i=i, e=e)}.input_sq"] for e in range(4)]
                    self.assertTrue(all(torch.equal(sq[0], v) for v in sq[1:]))
                    routed = [sd[f"{first.format(i=i, e=e)}.input_sq"] for e in range(4)
                              if f"{first.format(i=i, e=e)}.input_sq" in sd]
                    # top-2 of 4: each token counted twice over the routed experts
                    torch.testing.assert_close(sum(routed), 2 * sq[0], rtol=1e-4, atol=0)

    def test_w4a4_and_gptq_exports_of_a_moe_model(self):
        """A Qwen3-MoE model, saved per expert and (its state_dict) fused: nvfp4ctl quantizes it
        with the collected file (gptq and hessian, W4A4): every expert has its activation scale,
        gate and up share it, and it is 2688 / the expert's input amax."""
        batches = self.batches()
        model = self.load("qwen3_moe")
        c = self.collect(model, batches, gram=True, all_experts=True)
        self.assertEqual(c.missing, [])
        calib = os.path.join(self.tmp, "moe-calib.safetensors")
        c.save(calib)
        amax = {k[:-len(".input_amax")]: v.item() for k, v in c.state_dict().items()
                if k.endswith(".input_amax")}
        # An expert without input_amax (no token routed to it): the W4A4 run names it.
        partial = os.path.join(self.tmp, "moe-calib-partial.safetensors")
        from safetensors.torch import save_file
        save_file({k: v for k, v in c.state_dict().items()
                   if not k.startswith("model.layers.1.mlp.experts.2.")}, partial)
        r = subprocess.run(
            [os.environ["NVFP4CTL"], "quantize-model", "--local", "--input",
             self.dirs["qwen3_moe"], "--output", os.path.join(self.tmp, "out-partial"),
             "--calibration", partial], capture_output=True, text=True, timeout=300)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("model.layers.1.mlp.experts.2.", r.stdout + r.stderr)
        self.assertIn("input_amax", r.stdout + r.stderr)
        self.assertIn("Collector(all_experts=True)", r.stdout + r.stderr)
        fused = os.path.join(self.tmp, "qwen3_moe_fused")
        shutil.copytree(self.dirs["qwen3_moe"], fused)
        save_file({k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()
                   if k != "lm_head.weight" or not model.config.tie_word_embeddings},
                  os.path.join(fused, "model.safetensors"))
        with safe_open(os.path.join(fused, "model.safetensors"), "pt") as f:
            self.assertIn("model.layers.1.mlp.experts.gate_up_proj", set(f.keys()))
        for src in (self.dirs["qwen3_moe"], fused):
            for args in (["--method", "gptq"], ["--objective", "hessian"]):
                with self.subTest(src=os.path.basename(src), args=args):
                    out = os.path.join(self.tmp, "out-" + os.path.basename(src) + args[1])
                    r = subprocess.run(
                        [os.environ["NVFP4CTL"], "quantize-model", "--local", "--input", src,
                         "--output", out, "--layout", "compressed-tensors", "--calibration",
                         calib, *args], capture_output=True, text=True, timeout=300)
                    self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                    with open(os.path.join(out, "config.json")) as f:
                        qc = json.load(f)["quantization_config"]
                    self.assertIsNotNone(qc["config_groups"]["group_0"]["input_activations"])
                    sd = load_file(os.path.join(out, "model.safetensors"))
                    scales = {k[:-len(".input_global_scale")]: v.float().item()
                              for k, v in sd.items() if k.endswith(".input_global_scale")}
                    for i in range(2):
                        for e in range(4):
                            p = f"model.layers.{i}.mlp.experts.{e}."
                            want = 2688.0 / max(amax[p + "gate_proj"], amax[p + "up_proj"])
                            self.assertEqual(scales[p + "gate_proj"], scales[p + "up_proj"])
                            self.assertAlmostEqual(scales[p + "gate_proj"] / want, 1, places=5)
                            self.assertAlmostEqual(
                                scales[p + "down_proj"] / (2688.0 / amax[p + "down_proj"]), 1,
                                places=5)

    def test_w4a4_gptq_export_of_a_nemotron_h_model(self):
        """Nemotron-H (hybrid Mamba-2 / attention / MoE, ungated experts): the collected file,
        under the checkpoint's `backbone.` names, drives a W4A4 gptq export of every quantized
        module; each activation scale is 2688 / its module's input amax."""
        model = self.load("nemotron_h")
        c = self.collect(model, self.batches(), gram=True, all_experts=True)
        self.assertEqual(c.missing, [])
        self.assertIn("backbone.layers.0.mixer.in_proj", c.module_names)
        self.assertIn("backbone.layers.3.mixer.shared_experts.up_proj", c.module_names)
        # fc1_latent_proj reads the MoE block's input flattened to [batch x seq, H]: masked like
        # the shared expert, which reads the same values as [batch, seq, H].
        self.assertFalse(c.unmasked)
        sd = c.state_dict()
        for i in (1, 3):
            p = f"backbone.layers.{i}.mixer."
            torch.testing.assert_close(sd[p + "fc1_latent_proj.input_sq"],
                                       sd[p + "shared_experts.up_proj.input_sq"], rtol=1e-6, atol=0)
        calib = os.path.join(self.tmp, "nemotron-calib.safetensors")
        c.save(calib)
        out = os.path.join(self.tmp, "out-nemotron")
        r = subprocess.run(
            [os.environ["NVFP4CTL"], "quantize-model", "--local", "--input",
             self.dirs["nemotron_h"], "--output", out, "--layout", "compressed-tensors",
             "--method", "gptq", "--calibration", calib],
            capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with open(os.path.join(out, "config.json")) as f:
            qc = json.load(f)["quantization_config"]
        self.assertIsNotNone(qc["config_groups"]["group_0"]["input_activations"])
        self.assertIn("backbone.layers.1.mixer.gate", qc["ignore"])
        sd = load_file(os.path.join(out, "model.safetensors"))
        scales = {k[:-len(".input_global_scale")]: v.float().item()
                  for k, v in sd.items() if k.endswith(".input_global_scale")}
        self.assertEqual(set(scales), set(c.module_names))
        for name, amax in ((k[:-len(".input_amax")], v.item())
                           for k, v in c.state_dict().items() if k.endswith(".input_amax")):
            if name.endswith(("q_proj", "k_proj", "v_proj")):
                continue  # one fused group: the largest amax of the three
            self.assertAlmostEqual(scales[name] / (2688.0 / amax), 1, places=5, msg=name)
        self.assertEqual(sd["backbone.layers.0.mixer.conv1d.weight"].dim(), 3)


if __name__ == "__main__":
    warnings.simplefilter("default")
    unittest.main(verbosity=2)
