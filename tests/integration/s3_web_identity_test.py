"""S3 credentials by STS web identity, for real: nvfp4d has no static keys in its environment, only
AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN (what deploy/components/s3-web-identity sets). It calls
STS AssumeRoleWithWebIdentity on moto_server, which hands out temporary credentials of the role,
and signs its S3 requests with them (and the session token); moto verifies every S3 request's
signature and the role's policy. nvfp4ctl quantize-model --local (a shard Job) does the same. Fails
(does not skip) without moto.

moto has no notion of an unsigned action: with authentication on it rejects the unsigned
AssumeRoleWithWebIdentity that real STS accepts. The test therefore lets exactly one action through
unauthenticated (moto's /moto-api/reset-auth) right before the server's first S3 use, which is the
STS call; every S3 request after it is verified. (An unsigned call with authentication on makes moto
answer 500, so STS refusals are unit-tested with a fake STS: tests/storage/aws_credentials_test.cc.)"""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import unittest
import urllib.request

from harness import Server, ctl, start_moto, write_llama_checkpoint

BUCKET = "nvfp4-wi"
ROLE = "nvfp4d-s3"
ROLE_ARN = f"arn:aws:iam::123456789012:role/{ROLE}"
# Unauthenticated setup actions: the role and its policy, the test's own user, policy and key, the
# bucket.
SETUP_ACTIONS = 6
STATIC_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
               "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS", "AWS_WEB_IDENTITY_TOKEN_FILE",
               "AWS_ROLE_ARN")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3WebIdentityTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for k in STATIC_KEYS:  # the servers inherit os.environ: no keys may leak in
            os.environ.pop(k, None)
        import boto3
        cls.tmp = tempfile.mkdtemp(prefix="nvfp4-wi-it-")
        cls.moto, cls.endpoint, cls.moto_log = start_moto(cls.tmp, SETUP_ACTIONS)
        iam = boto3.client("iam", endpoint_url=cls.endpoint, region_name="us-east-1",
                           aws_access_key_id="setup", aws_secret_access_key="setup")
        iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps({  # 1
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRoleWithWebIdentity",
                           "Principal": {"Federated": "arn:aws:iam::123456789012:oidc-provider/k8s"}}]}))
        iam.put_role_policy(RoleName=ROLE, PolicyName="s3-all", PolicyDocument=json.dumps({  # 2
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        iam.create_user(UserName="tester")  # 3
        iam.put_user_policy(UserName="tester", PolicyName="s3-all", PolicyDocument=json.dumps({  # 4
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="tester")["AccessKey"]  # 5
        cls.s3 = boto3.client("s3", endpoint_url=cls.endpoint, region_name="us-east-1",
                              aws_access_key_id=key["AccessKeyId"],
                              aws_secret_access_key=key["SecretAccessKey"])
        cls.s3.create_bucket(Bucket=BUCKET)  # 6: from here on every request is authenticated
        cls.bad = boto3.client("s3", endpoint_url=cls.endpoint, region_name="us-east-1",
                               aws_access_key_id=key["AccessKeyId"], aws_secret_access_key="wrong")
        cls.assert_auth_on()
        local = os.path.join(cls.tmp, "ckpt")
        write_llama_checkpoint(local, layers=1, hidden=256, inter=512)
        for name in os.listdir(local):
            cls.s3.upload_file(os.path.join(local, name), BUCKET, f"in/llama/{name}")

    @classmethod
    def assert_auth_on(cls):
        try:
            cls.bad.list_objects_v2(Bucket=BUCKET)
        except Exception:
            return
        raise AssertionError("moto_server is not verifying signatures")

    @classmethod
    def tearDownClass(cls):
        cls.moto.terminate()
        cls.moto.wait(10)
        cls.moto_log.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="nvfp4-wi-root-")
        self.token_file = os.path.join(self.root, "token")
        with open(self.token_file, "w") as f:
            f.write("eyJhbGciOiJSUzI1NiJ9.projected-service-account-token.sig\n")
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            s.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def allow_unauthenticated(self, n):
        """The next n moto actions pass without a signature (then verification is on again)."""
        # text/plain: with a form content type, flask consumes the body and moto reads ''.
        req = urllib.request.Request(self.endpoint + "/moto-api/reset-auth", data=str(n).encode(),
                                     headers={"Content-Type": "text/plain"}, method="POST")
        urllib.request.urlopen(req, timeout=10).read()

    def web_identity_env(self, **extra):
        env = {"AWS_WEB_IDENTITY_TOKEN_FILE": self.token_file, "AWS_ROLE_ARN": ROLE_ARN,
               "AWS_ROLE_SESSION_NAME": "nvfp4d-it", "AWS_REGION": "us-east-1"}
        env.update(extra)
        return env

    def server(self, env, extra_args=()):
        s = Server(self.root, ["--s3_part_bytes=5242880"] + list(extra_args), env=env)
        self.servers.append(s)
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            with open(f"/proc/{s.proc.pid}/environ", "rb") as f:
                self.assertNotIn(k.encode() + b"=", f.read(), "static keys leaked into the server")
        return s

    def test_job_reads_and_writes_s3_with_web_identity_credentials(self):
        # AWS_ENDPOINT_URL serves both S3 and (without AWS_ENDPOINT_URL_STS) STS, as one moto does.
        s = self.server(self.web_identity_env(AWS_ENDPOINT_URL=self.endpoint))
        self.assertIn(f"credentials: web identity: role {ROLE_ARN} via STS {self.endpoint}",
                      s.logs())
        self.allow_unauthenticated(1)  # the unsigned AssumeRoleWithWebIdentity
        r = ctl("quantize-model", "--server", s.address, "--input", f"s3://{BUCKET}/in/llama",
                "--output", f"s3://{BUCKET}/out/wi", "--method", "rtn")
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout + s.logs())
        self.assert_auth_on()  # the one unauthenticated action was the STS call
        keys = {o["Key"] for o in self.s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
        for name in ("model.safetensors", "config.json", "hf_quant_config.json"):
            self.assertIn(f"out/wi/{name}", keys)
        logs = s.logs()
        self.assertIn(f"S3 credentials from STS for {ROLE_ARN}: key ", logs)
        self.assertEqual(logs.count("S3 credentials from STS"), 1, "one STS call for the job")
        self.assertNotIn("projected-service-account-token", logs)
        # A second job reuses the cached credentials (no unauthenticated action is left: another
        # STS call would fail).
        r = ctl("quantize-model", "--server", s.address, "--input", f"s3://{BUCKET}/in/llama",
                "--output", f"s3://{BUCKET}/out/wi2", "--method", "rtn")
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout + s.logs())
        self.assertEqual(s.logs().count("S3 credentials from STS"), 1)

    def test_cli_local_with_web_identity(self):
        # nvfp4ctl quantize-model --local (what a shard Job runs) takes the same credentials path.
        env = dict(os.environ, **self.web_identity_env(AWS_ENDPOINT_URL=self.endpoint))
        self.allow_unauthenticated(1)
        r = subprocess.run([os.environ.get("NVFP4CTL", "nvfp4ctl"), "quantize-model", "--local",
                            "--device", "cpu", "--input", f"s3://{BUCKET}/in/llama", "--output",
                            f"s3://{BUCKET}/out/cli", "--method", "rtn", "--staging-dir",
                            os.path.join(self.root, "staging")],
                           capture_output=True, text=True, timeout=300, env=env)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assert_auth_on()
        keys = {o["Key"] for o in self.s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
        self.assertIn("out/cli/model.safetensors", keys)

    def test_unreachable_sts_fails_the_job_naming_sts_and_the_endpoint(self):
        sts = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        s = self.server(self.web_identity_env(AWS_ENDPOINT_URL_STS=sts),
                        [f"--s3_endpoint={self.endpoint}"])
        self.assertIn(f"via STS {sts}", s.logs())
        r = ctl("quantize-model", "--server", s.address, "--input", f"s3://{BUCKET}/in/llama",
                "--output", f"s3://{BUCKET}/out/refused", "--method", "rtn", "--json")
        self.assertEqual(r.returncode, 3, r.stderr + r.stdout)
        terminal = json.loads(r.stdout.splitlines()[-1])
        self.assertEqual(terminal["job"]["state"], "JOB_STATE_FAILED")
        message = terminal["job"]["error"]["message"]
        self.assertIn(f"S3 credentials: STS AssumeRoleWithWebIdentity at {sts} for role {ROLE_ARN}: ",
                      message)
        self.assertIn("gave up after 3 attempts", message)

    def test_unreadable_token_file_stops_the_server_at_startup(self):
        env = dict(os.environ, **self.web_identity_env(AWS_ENDPOINT_URL=self.endpoint))
        env["AWS_WEB_IDENTITY_TOKEN_FILE"] = os.path.join(self.root, "no-such-token")
        r = subprocess.run([os.environ.get("NVFP4D", "nvfp4d"), "--listen=127.0.0.1:0",
                            "--metrics_listen=", f"--data_root={self.root}", "--devices=cpu"],
                           capture_output=True, text=True, timeout=60, env=env)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("cannot read AWS_WEB_IDENTITY_TOKEN_FILE " + env["AWS_WEB_IDENTITY_TOKEN_FILE"],
                      r.stderr)
        env["AWS_WEB_IDENTITY_TOKEN_FILE"] = self.token_file
        del env["AWS_ROLE_ARN"]
        r = subprocess.run([os.environ.get("NVFP4D", "nvfp4d"), "--listen=127.0.0.1:0",
                            "--metrics_listen=", f"--data_root={self.root}", "--devices=cpu"],
                           capture_output=True, text=True, timeout=60, env=env)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("AWS_ROLE_ARN is not", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
