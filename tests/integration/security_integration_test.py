"""Security integration: TLS, mutual TLS, certificate reload, bearer tokens and the plaintext
health-only port, with the real nvfp4d and nvfp4ctl. Certificates come from a CA made at test time
with the openssl CLI (fails, does not skip, without it)."""
import os
import shutil
import subprocess
import tempfile
import time
import unittest

from harness import Server, ctl


def openssl(*args, cwd):
    r = subprocess.run(["openssl"] + list(args), cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError("openssl " + " ".join(args) + " failed:\n" + r.stderr)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=d)


def make_cert(d, ca, name, server):
    ext = os.path.join(d, f"{name}.ext")
    with open(ext, "w") as f:
        if server:
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        else:
            f.write("extendedKeyUsage=clientAuth\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout",
            f"{name}.key", "-out", f"{name}.csr", cwd=d)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", f"{name}.crt", cwd=d)


class SecurityIntegrationTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if shutil.which("openssl") is None:
            raise AssertionError("the openssl CLI is required")
        cls.pki = tempfile.mkdtemp(prefix="nvfp4-pki-")
        make_ca(cls.pki, "ca")
        make_ca(cls.pki, "otherca")
        make_cert(cls.pki, "ca", "server", server=True)
        make_cert(cls.pki, "ca", "client", server=False)
        make_cert(cls.pki, "otherca", "rogue", server=False)
        make_cert(cls.pki, "otherca", "server2", server=True)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.pki, ignore_errors=True)

    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="nvfp4-sec-root-")
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            s.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def p(self, name):
        return os.path.join(self.pki, name)

    def start(self, *args):
        s = Server(self.root, args)
        self.servers.append(s)
        return s

    def tls_server(self, *extra):
        return self.start(f"--tls_cert={self.p('server.crt')}", f"--tls_key={self.p('server.key')}",
                          *extra)

    def test_tls_works_and_plaintext_client_is_refused(self):
        s = self.tls_server()
        r = ctl("health", "--server", s.address, "--tls_ca", self.p("ca.crt"))
        self.assertEqual(r.returncode, 0, r.stderr + s.logs())
        self.assertIn("SERVING", r.stdout)
        r = ctl("jobs", "list", "--server", s.address, "--tls_ca", self.p("ca.crt"))
        self.assertEqual(r.returncode, 0, r.stderr)
        r = ctl("jobs", "list", "--server", s.address, "--timeout", "5")
        self.assertNotEqual(r.returncode, 0, "a plaintext client reached the TLS port")
        # A client that trusts another CA does not accept the server.
        r = ctl("jobs", "list", "--server", s.address, "--tls_ca", self.p("otherca.crt"))
        self.assertNotEqual(r.returncode, 0)

    def test_mutual_tls_requires_a_client_certificate_from_the_ca(self):
        s = self.tls_server(f"--tls_ca={self.p('ca.crt')}")
        self.assertIn("mutual TLS", s.logs())
        ok = ctl("jobs", "list", "--server", s.address, "--tls_ca", self.p("ca.crt"), "--tls_cert",
                 self.p("client.crt"), "--tls_key", self.p("client.key"))
        self.assertEqual(ok.returncode, 0, ok.stderr + s.logs())
        no_cert = ctl("jobs", "list", "--server", s.address, "--tls_ca", self.p("ca.crt"))
        self.assertNotEqual(no_cert.returncode, 0, "a client without a certificate got in")
        rogue = ctl("jobs", "list", "--server", s.address, "--tls_ca", self.p("ca.crt"),
                    "--tls_cert", self.p("rogue.crt"), "--tls_key", self.p("rogue.key"))
        self.assertNotEqual(rogue.returncode, 0, "a certificate of another CA got in")

    def test_bearer_tokens_and_open_health(self):
        tokens = os.path.join(self.root, "tokens")
        with open(tokens, "w") as f:
            f.write("# comment\n\nsecret-token-one\n  secret-token-two  \n")
        s = self.tls_server(f"--auth_tokens_file={tokens}")
        base = ["--server", s.address, "--tls_ca", self.p("ca.crt")]
        r = ctl("jobs", "list", *base)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("UNAUTHENTICATED", r.stderr)
        bad = os.path.join(self.root, "bad-token")
        with open(bad, "w") as f:
            f.write("not-a-token\n")
        r = ctl("jobs", "list", *base, "--token_file", bad)
        self.assertIn("UNAUTHENTICATED", r.stderr)
        self.assertNotEqual(r.returncode, 0)
        good = os.path.join(self.root, "good-token")
        with open(good, "w") as f:
            f.write("secret-token-two\n")
        r = ctl("jobs", "list", *base, "--token_file", good)
        self.assertEqual(r.returncode, 0, r.stderr)
        env = dict(os.environ, NVFP4_TOKEN="secret-token-one")
        r = subprocess.run([os.environ.get("NVFP4CTL", "nvfp4ctl"), "jobs", "list"] + base,
                           capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        # Health needs no token.
        r = ctl("health", *base)
        self.assertEqual(r.returncode, 0, r.stderr)
        # Rotation: the file is re-read when it changes.
        time.sleep(1.1)
        with open(tokens, "w") as f:
            f.write("rotated-token\n")
        time.sleep(1.1)
        r = ctl("jobs", "list", *base, "--token_file", good)
        self.assertIn("UNAUTHENTICATED", r.stderr)
        with open(good, "w") as f:
            f.write("rotated-token\n")
        r = ctl("jobs", "list", *base, "--token_file", good)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('nvfp4_auth_failures_total', s.metrics())
        logs = s.logs()
        for secret in ["secret-token-one", "secret-token-two", "rotated-token", "not-a-token"]:
            self.assertNotIn(secret, logs)

    def test_plaintext_health_port_while_main_port_is_tls(self):
        s = self.tls_server("--health_listen=127.0.0.1:0")
        self.assertGreater(s.health_port, 0)
        health = f"127.0.0.1:{s.health_port}"
        r = ctl("health", "--server", health)
        self.assertEqual(r.returncode, 0, r.stderr + s.logs())
        self.assertIn("SERVING", r.stdout)
        r = ctl("health", "--server", health, "--service", "nvfp4.v1.Quantizer")
        self.assertEqual(r.returncode, 0, r.stderr)
        # Only health there: the Quantizer service is not served on the health port.
        r = ctl("jobs", "list", "--server", health)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("UNIMPLEMENTED", r.stderr)

    def test_certificates_are_reloaded_when_the_files_change(self):
        d = os.path.join(self.root, "tls")
        os.makedirs(d)
        shutil.copy(self.p("server.crt"), os.path.join(d, "tls.crt"))
        shutil.copy(self.p("server.key"), os.path.join(d, "tls.key"))
        s = self.start(f"--tls_cert={d}/tls.crt", f"--tls_key={d}/tls.key",
                       "--tls_refresh_seconds=1")
        r = ctl("health", "--server", s.address, "--tls_ca", self.p("ca.crt"))
        self.assertEqual(r.returncode, 0, r.stderr)
        # Rotate to a certificate of another CA (key first, as a Secret update swaps both).
        shutil.copy(self.p("server2.key"), os.path.join(d, "tls.key"))
        shutil.copy(self.p("server2.crt"), os.path.join(d, "tls.crt"))
        deadline = time.time() + 20
        while True:
            r = ctl("health", "--server", s.address, "--tls_ca", self.p("otherca.crt"), "--timeout", "5")
            if r.returncode == 0 or time.time() > deadline:
                break
            time.sleep(0.5)
        self.assertEqual(r.returncode, 0, "the new certificate was not picked up: " + r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
