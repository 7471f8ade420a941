"""S3 integration: nvfp4d reads a checkpoint from and writes the output to a real S3 API server
(moto_server on 127.0.0.1) that verifies SigV4 signatures. Fails (does not skip) without moto."""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

from harness import Server, ctl, start_moto, write_llama_checkpoint

BUCKET = "nvfp4-it"
# Actions moto serves unauthenticated before it starts verifying every request (the IAM setup).
SETUP_ACTIONS = 4



class S3IntegrationTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="nvfp4-s3-it-")
        cls.moto, cls.endpoint, cls.moto_log = start_moto(cls.tmp, SETUP_ACTIONS)
        cls.setup_iam_and_bucket()

    @classmethod
    def setup_iam_and_bucket(cls):
        import boto3
        iam = boto3.client("iam", endpoint_url=cls.endpoint, region_name="us-east-1",
                           aws_access_key_id="setup", aws_secret_access_key="setup")
        iam.create_user(UserName="nvfp4")  # 1
        iam.put_user_policy(UserName="nvfp4", PolicyName="s3-all", PolicyDocument=json.dumps({  # 2
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="nvfp4")["AccessKey"]  # 3
        cls.key_id, cls.secret = key["AccessKeyId"], key["SecretAccessKey"]
        cls.s3 = boto3.client("s3", endpoint_url=cls.endpoint, region_name="us-east-1",
                              aws_access_key_id=cls.key_id, aws_secret_access_key=cls.secret)
        cls.s3.create_bucket(Bucket=BUCKET)  # 4: from here on every request is authenticated
        # Sanity: moto now rejects a wrong secret.
        bad = boto3.client("s3", endpoint_url=cls.endpoint, region_name="us-east-1",
                           aws_access_key_id=cls.key_id, aws_secret_access_key="wrong")
        try:
            bad.list_objects_v2(Bucket=BUCKET)
        except Exception:
            pass
        else:
            raise AssertionError("moto_server is not verifying signatures")

    @classmethod
    def tearDownClass(cls):
        cls.moto.terminate()
        cls.moto.wait(10)
        cls.moto_log.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="nvfp4-s3-root-")
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            s.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def server(self, secret=None):
        env = {"AWS_ACCESS_KEY_ID": self.key_id, "AWS_SECRET_ACCESS_KEY": secret or self.secret,
               "AWS_REGION": "us-east-1"}
        s = Server(self.root, [f"--s3_endpoint={self.endpoint}", "--s3_part_bytes=5242880"], env=env)
        self.servers.append(s)
        return s

    def upload_checkpoint(self, prefix, big_embedding):
        local = os.path.join(self.root, "ckpt")
        write_llama_checkpoint(local, layers=1, hidden=256, inter=512)
        if big_embedding:
            # Re-write with an 8 MiB copied tensor so the output shard needs a multipart upload.
            from harness import write_safetensors, bf16_bytes
            import struct
            with open(os.path.join(local, "model.safetensors"), "rb") as f:
                n = struct.unpack("<Q", f.read(8))[0]
                header = json.loads(f.read(n))
                data = f.read()
            tensors = []
            for name, meta in header.items():
                if name == "__metadata__":
                    continue
                b, e = meta["data_offsets"]
                tensors.append((name, meta["dtype"], meta["shape"], data[b:e]))
            tensors.append(("model.rotary_cache", "BF16", [4096, 1024],
                            bytes(bytearray(os.urandom(4096 * 1024 * 2)))))
            write_safetensors(os.path.join(local, "model.safetensors"), tensors, {"format": "pt"})
        for name in os.listdir(local):
            self.s3.upload_file(os.path.join(local, name), BUCKET, f"{prefix}/{name}")

    def test_checkpoint_from_s3_to_s3_with_multipart(self):
        self.upload_checkpoint("in/llama", big_embedding=True)
        s = self.server()
        r = ctl("quantize-model", "--server", s.address, "--input", f"s3://{BUCKET}/in/llama",
                "--output", f"s3://{BUCKET}/out/llama-nvfp4", "--method", "rtn")
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout + s.logs())
        # (No Prefix=: moto mis-verifies the signature of an encoded '/' in boto3's query string.)
        keys = {o["Key"]: o["Size"] for o in self.s3.list_objects_v2(Bucket=BUCKET)["Contents"]
                if o["Key"].startswith("out/llama-nvfp4/")}
        self.assertIn("out/llama-nvfp4/model.safetensors", keys)
        self.assertIn("out/llama-nvfp4/hf_quant_config.json", keys)
        self.assertIn("out/llama-nvfp4/tokenizer.json", keys)
        self.assertGreater(keys["out/llama-nvfp4/model.safetensors"], 5 << 20)
        # The server's jobs are durable (--state_dir): the finished shard was handed over to the
        # staging prefix (a multipart upload: the metrics below), then copied into place, and the
        # staging prefix removed.
        self.assertFalse([k for k in keys if "/.nvfp4-staging-" in k], keys)
        cfg = json.loads(self.s3.get_object(Bucket=BUCKET, Key="out/llama-nvfp4/config.json")["Body"].read())
        self.assertEqual(cfg["quantization_config"]["quant_method"], "modelopt")
        m = s.metrics()
        self.assertIn('nvfp4_s3_request_duration_seconds_count{op="upload_part"}', m)
        self.assertIn('nvfp4_s3_request_duration_seconds_count{op="complete_multipart"} 1', m)
        self.assertIn('nvfp4_s3_request_duration_seconds_count{op="get"}', m)
        self.assertIn('nvfp4_s3_request_duration_seconds_count{op="copy"} 1', m)

    def test_cli_local_reads_and_writes_s3_byte_identical_to_a_local_run(self):
        # What a Kubernetes Job runs: nvfp4ctl quantize-model --local with s3:// in and out.
        self.upload_checkpoint("in/cli", big_embedding=True)
        local_in = os.path.join(self.root, "ckpt")
        local_out = os.path.join(self.root, "local-out")
        r = ctl("quantize-model", "--local", "--device", "cpu", "--input", local_in, "--output",
                local_out, "--method", "rtn")
        self.assertEqual(r.returncode, 0, r.stderr)
        env = dict(os.environ, AWS_ACCESS_KEY_ID=self.key_id, AWS_SECRET_ACCESS_KEY=self.secret,
                   AWS_REGION="us-east-1")
        env.pop("AWS_ENDPOINT_URL", None)
        staging = os.path.join(self.root, "staging")
        args = ["quantize-model", "--local", "--device", "cpu", "--input", f"s3://{BUCKET}/in/cli",
                "--output", f"s3://{BUCKET}/out/cli", "--method", "rtn",
                "--s3-endpoint", self.endpoint, "--staging-dir", staging]
        r = subprocess.run([os.environ.get("NVFP4CTL", "nvfp4ctl")] + args, capture_output=True,
                           text=True, timeout=300, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn(self.secret, r.stdout + r.stderr)
        self.assertEqual(os.listdir(staging), [], "staging directory left behind")
        keys = sorted(o["Key"][len("out/cli/"):]
                      for o in self.s3.list_objects_v2(Bucket=BUCKET)["Contents"]
                      if o["Key"].startswith("out/cli/"))
        self.assertEqual(keys, sorted(os.listdir(local_out)))
        for name in keys:
            body = self.s3.get_object(Bucket=BUCKET, Key="out/cli/" + name)["Body"].read()
            with open(os.path.join(local_out, name), "rb") as f:
                self.assertEqual(body, f.read(), f"{name} differs from the local run")
        # The output prefix now holds objects: a second run is refused (user error, exit 2).
        r = subprocess.run([os.environ.get("NVFP4CTL", "nvfp4ctl")] + args, capture_output=True,
                           text=True, timeout=300, env=env)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("already holds", r.stderr)

    def test_wrong_secret_fails(self):
        self.upload_checkpoint("in/small", big_embedding=False)
        s = self.server(secret="definitely-wrong")
        r = ctl("quantize-model", "--server", s.address, "--input", f"s3://{BUCKET}/in/small",
                "--output", f"s3://{BUCKET}/out/small", "--method", "rtn", "--json")
        self.assertEqual(r.returncode, 3, r.stderr + r.stdout)
        terminal = json.loads(r.stdout.splitlines()[-1])
        self.assertEqual(terminal["job"]["state"], "JOB_STATE_FAILED")
        self.assertEqual(terminal["job"]["error"]["code"], 16, terminal)  # UNAUTHENTICATED
        self.assertIn("SignatureDoesNotMatch", terminal["job"]["error"]["message"])
        self.assertIn('nvfp4_s3_errors_total{code="SignatureDoesNotMatch",op="list"}', s.metrics())


if __name__ == "__main__":
    unittest.main(verbosity=2)
