#!/usr/bin/env python3
"""Checks the manifests rendered by `kubectl kustomize` beyond what a schema can say.

Run by scripts/validate_deploy.sh (needs PyYAML and jsonschema, both in its tool venv):

    check_manifests.py --rendered DIR --out DIR

DIR holds one file per kustomize build: base.yaml, overlay-<name>.yaml, jobs-shards.yaml,
jobs-finalize.yaml. Writes to --out:
  core/<build>.yaml         the built-in kinds, for kubernetes-validate (CRDs removed)
  rules-<build>.yaml        the PrometheusRule groups as a Prometheus rule file, for promtool
  adapter-rules.yaml        the Prometheus adapter's query, expanded as the adapter would, for promtool
Checks: the CRDs (ServiceMonitor, PrometheusRule) against deploy/tests/schemas/; then the
cross-references and operational invariants listed in each check_* function. Exit status 1 if
any check failed.
"""

import argparse
import base64
import ipaddress
import json
import os
import re
import sys

import jsonschema
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
DEPLOY = os.path.dirname(HERE)
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.json",
}
HEALTH_PORT = 50052
GRPC_PORT = 50051
METRICS_PORT = 9090
# The HPA's custom metric: queued + running jobs per pod (queued alone scales down under long jobs).
HPA_METRIC = "nvfp4_jobs_queued_or_running"
# With the shared job store every pod reports the fleet's queue: the HPA reads one fleet-wide
# External metric instead (queued once + running on every pod).
FLEET_HPA_METRIC = "nvfp4_fleet_jobs_queued_or_running"
HPA_SERIES = ("nvfp4_jobs_queued", "nvfp4_jobs_running")
# Local scratch of one s3:// job: the output files being written, about two shards of
# --max_shard_bytes (5 GB) at a time (finished files are handed over to the bucket): three shards.
SCRATCH_PER_JOB_GIB = 16
DNS_PORT = 53
S3_PORT = 443
DB_PORT = 5432
# Node metadata endpoints (instance credentials): no egress rule may reach them.
METADATA_ADDRS = [ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254")]
# Service annotations that make each cloud's load balancer internal.
LB_ANNOTATIONS = {
    "overlay-internal-lb-gke": {"networking.gke.io/load-balancer-type": "Internal"},
    "overlay-internal-lb-eks": {
        "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal",
        "service.beta.kubernetes.io/aws-load-balancer-type": "external",
        "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "ip",
    },
    "overlay-internal-lb-aks": {"service.beta.kubernetes.io/azure-load-balancer-internal": "true"},
}
LB_ANNOTATIONS["overlay-fleet-eks-irsa"] = LB_ANNOTATIONS["overlay-internal-lb-eks"]
CPU_ONLY = {"overlay-cpu-only"}
EKS_NLB = {"overlay-internal-lb-eks", "overlay-fleet-eks-irsa"}
# After the drain times out, the unit in progress finishes (up to ~30 s) and gRPC shuts down (5 s).
GRACE_MARGIN = 35
# GPU node labels that name a product the image runs on (sm_90a, sm_100a), and the driver label.
PRODUCT_KEYS = {"nvidia.com/gpu.compute.major", "cloud.google.com/gke-accelerator",
                "node.kubernetes.io/instance-type", "karpenter.k8s.aws/instance-gpu-name", "nvidia.com/gpu.product"}
DRIVER_KEY = "nvidia.com/cuda.driver-version.major"
MIN_DRIVER = 580  # CUDA 13
REPO = os.path.dirname(DEPLOY)


def cli_exit_usage():
    """kExitUsage from client/cli/exit_codes.h: the CLI's exit code for the caller's errors."""
    with open(os.path.join(REPO, "client", "cli", "exit_codes.h")) as f:
        return int(re.search(r"kExitUsage\s*=\s*(\d+)", f.read()).group(1))
# Every namespaced object of every build lands here (kustomize's `namespace:` applies only to the
# resources of the kustomization that sets it: an overlay's own resources and components need it too).
NAMESPACE = "nvfp4"
CLUSTER_SCOPED = {"Namespace", "PriorityClass", "ClusterRole", "ClusterRoleBinding", "StorageClass",
                  "CustomResourceDefinition", "PersistentVolume", "IngressClass", "RuntimeClass",
                  "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "APIService"}


class Checker:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, ok, what, detail=""):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            print(f"FAIL: {what}" + (f": {detail}" if detail else ""))
        return ok


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def one(docs, kind, name=None):
    found = [d for d in by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    return found[0] if len(found) == 1 else None


def selects(selector, labels):
    """True if a matchLabels-style selector (dict) or LabelSelector selects these labels."""
    if selector is None:
        return False
    if "matchLabels" in selector or "matchExpressions" in selector:
        match = selector.get("matchLabels", {})  # a LabelSelector
    else:
        match = selector  # a Service's plain map
    if not all(labels.get(k) == v for k, v in match.items()):
        return False
    for e in selector.get("matchExpressions", []):
        v = labels.get(e["key"])
        op = e["operator"]
        if op == "In" and v not in e["values"]:
            return False
        if op == "NotIn" and v in e["values"]:
            return False
        if op == "Exists" and v is None:
            return False
        if op == "DoesNotExist" and v is not None:
            return False
    return bool(match) or bool(selector.get("matchExpressions"))


def flag_value(args, name):
    for a in args:
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return None


def configmap_env(docs, container):
    """Variables a container gets from its env and configMapRef envFrom (resolved in this build)."""
    env = {}
    for src in container.get("envFrom", []):
        ref = src.get("configMapRef")
        if ref:
            cm = one(docs, "ConfigMap", ref["name"])
            if cm:
                env.update(cm.get("data", {}))
    for e in container.get("env", []):
        env[e["name"]] = e.get("value", "<from %s>" % next(iter(e.get("valueFrom", {"?": 0}))))
    return env


def expand(value, env):
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), value)


# ---- checks -----------------------------------------------------------------------------------

def check_crds(c, build, docs, schemas):
    for d in docs:
        key = (d.get("apiVersion"), d.get("kind"))
        if key in CRD_SCHEMAS:
            errs = sorted(jsonschema.Draft202012Validator(schemas[key]).iter_errors(d), key=str)
            c.check(not errs, f"{build}: {d['kind']}/{d['metadata']['name']} matches its schema",
                    "; ".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errs[:5]))


def check_namespaces(c, build, docs):
    """Every namespaced object names the intended namespace explicitly; `kubectl apply` would put
    one without it in the context's namespace, where its selectors find nothing."""
    for d in docs:
        kind, md = d.get("kind"), d.get("metadata", {})
        if kind in CLUSTER_SCOPED:
            c.check("namespace" not in md, f"{build}: {kind}/{md.get('name')} is cluster-scoped (no namespace)")
        else:
            c.check(md.get("namespace") == NAMESPACE, f"{build}: {kind}/{md.get('name')} in namespace {NAMESPACE}",
                    f"namespace={md.get('namespace')!r}")
    for ns in by_kind(docs, "Namespace"):
        c.check(ns["metadata"]["name"] == NAMESPACE, f"{build}: the Namespace object is {NAMESPACE}",
                ns["metadata"]["name"])


def pod_templates(docs):
    for d in docs:
        spec = d.get("spec", {})
        if d.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
            yield d, spec["template"]


def check_pod_security(c, build, docs):
    """Every pod of every build meets the restricted Pod Security Standard the namespace enforces."""
    for obj, tpl in pod_templates(docs):
        pod = tpl["spec"]
        who = f"{build}: {obj['kind']}/{obj['metadata']['name']}"
        psc = pod.get("securityContext", {})
        c.check(psc.get("runAsNonRoot") is True and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
                f"{who}: runAsNonRoot and RuntimeDefault seccomp")
        for ctr in pod.get("containers", []) + pod.get("initContainers", []):
            csc = ctr.get("securityContext", {})
            c.check(csc.get("allowPrivilegeEscalation") is False and csc.get("capabilities", {}).get("drop") == ["ALL"]
                    and csc.get("readOnlyRootFilesystem") is True,
                    f"{who}/{ctr['name']}: no privilege escalation, capabilities dropped, read-only root")
        c.check(pod.get("automountServiceAccountToken") is False, f"{who}: no Kubernetes API token mounted")


def egress_reaches(rule, addr):
    """True if an egress rule admits traffic to this IP address (a rule without `to` admits all)."""
    peers = rule.get("to")
    if not peers:
        return True
    for peer in peers:
        blk = peer.get("ipBlock")
        if blk is None:
            continue  # pod/namespace selectors: cluster pods, never the node's metadata address
        net = ipaddress.ip_network(blk["cidr"], strict=False)
        if addr.version == net.version and addr in net and not any(
                addr in ipaddress.ip_network(e, strict=False) for e in blk.get("except", [])
                if ipaddress.ip_network(e, strict=False).version == addr.version):
            return True
    return False


def check_network_policy(c, build, docs, pod_labels, args):
    pols = [p for p in by_kind(docs, "NetworkPolicy") if selects(p["spec"]["podSelector"], pod_labels)]
    if not c.check(bool(pols), f"{build}: a NetworkPolicy selects the pods"):
        return
    ingress = [r for p in pols if "Ingress" in p["spec"].get("policyTypes", []) for r in p["spec"].get("ingress", [])]
    allowed_in = {pt["port"] for r in ingress for pt in r.get("ports", [])}
    c.check({GRPC_PORT, METRICS_PORT} <= allowed_in, f"{build}: NetworkPolicy admits gRPC and metrics")
    eg_pols = [p for p in pols if "Egress" in p["spec"].get("policyTypes", [])]
    if not c.check(bool(eg_pols), f"{build}: egress of the pods is restricted (a policy of type Egress)"):
        return
    rules = [r for p in eg_pols for r in p["spec"].get("egress", [])]
    for i, r in enumerate(rules):
        c.check(bool(r.get("ports")), f"{build}: egress rule {i} names its ports (no all-ports rule)")
        for addr in METADATA_ADDRS:
            c.check(not egress_reaches(r, addr), f"{build}: egress rule {i} cannot reach the metadata endpoint {addr}")
    ports = {(pt.get("protocol", "TCP"), pt["port"]) for r in rules for pt in r.get("ports", [])}
    c.check({("UDP", DNS_PORT), ("TCP", DNS_PORT)} <= ports, f"{build}: egress admits DNS (UDP and TCP 53)")
    c.check(("TCP", S3_PORT) in ports, f"{build}: egress admits HTTPS (S3, STS)")
    want = {("UDP", DNS_PORT), ("TCP", DNS_PORT), ("TCP", S3_PORT)}
    if flag_value(args, "job_store"):
        c.check(("TCP", DB_PORT) in ports, f"{build}: egress admits the job store (TCP {DB_PORT})")
        want.add(("TCP", DB_PORT))
    c.check(ports <= want, f"{build}: egress admits only DNS, S3 and the job store", str(sorted(ports - want)))


def check_s3_and_job_store(c, build, docs, ctr, args, env):
    """S3: an endpoint set unconditionally needs credentials that are always there (nvfp4d exits at
    startup with an endpoint and no credentials). Job store: the connection string from a Secret."""
    refs = [s["secretRef"] for s in ctr.get("envFrom", []) if "secretRef" in s]
    endpoint = flag_value(args, "s3_endpoint") or env.get("AWS_ENDPOINT_URL")
    static_required = any(r["name"].startswith("nvfp4d-s3") and not r.get("optional", False) for r in refs)
    web_identity = "AWS_WEB_IDENTITY_TOKEN_FILE" in env and "AWS_ROLE_ARN" in env
    c.check(not endpoint or static_required or web_identity,
            f"{build}: an S3 endpoint outside the optional Secret comes with credentials that are always present",
            f"endpoint={endpoint!r}")
    if web_identity:
        mounts = {m["mountPath"]: m["name"] for m in ctr.get("volumeMounts", [])}
        token = env["AWS_WEB_IDENTITY_TOKEN_FILE"]
        vol_name = mounts.get(os.path.dirname(token))
        vols = {v["name"]: v for v in by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"].get("volumes", [])}
        srcs = vols.get(vol_name, {}).get("projected", {}).get("sources", [])
        sat = [x["serviceAccountToken"] for x in srcs if "serviceAccountToken" in x]
        c.check(len(sat) == 1 and sat[0].get("path") == os.path.basename(token) and sat[0].get("audience"),
                f"{build}: AWS_WEB_IDENTITY_TOKEN_FILE is a projected service account token with an audience", token)
        c.check(not any(r["name"] == "nvfp4d-s3" for r in refs),
                f"{build}: web identity replaces the static S3 keys (no Secret nvfp4d-s3)")
    store = flag_value(args, "job_store")
    if store is not None:
        m = re.fullmatch(r"\$\(([A-Za-z_0-9]+)\)", store)
        src = next((e.get("valueFrom", {}).get("secretKeyRef") for e in ctr.get("env", [])
                    if m and e["name"] == m.group(1)), None)
        c.check(src is not None, f"{build}: --job_store comes from a Secret key (not the ConfigMap or the args)", store)
        lease = expand(flag_value(args, "job_lease_seconds") or "", env)
        c.check(lease.isdigit() and int(lease) > 0, f"{build}: --job_lease_seconds set", lease)
        sec = one(docs, "Secret", src["name"]) if src else None
        pg = [s for s in by_kind(docs, "Secret") if s["metadata"]["name"].startswith("nvfp4-postgresql")]
        if sec and pg:  # the in-cluster example: the URL's credentials are the database's
            url = base64.b64decode(sec["data"][src["key"]]).decode()
            pgenv = {k: base64.b64decode(v).decode() for k, v in pg[0]["data"].items()}
            u = re.match(r"postgresql://([^:]+):([^@]+)@([^:/]+):(\d+)/([^?]+)", url)
            c.check(u is not None and u.groups()[:2] == (pgenv.get("POSTGRES_USER"), pgenv.get("POSTGRES_PASSWORD"))
                    and u.group(5) == pgenv.get("POSTGRES_DB") and int(u.group(4)) == DB_PORT,
                    f"{build}: the job store URL matches the example database's user, password, database, port")
            svc = [s for s in by_kind(docs, "Service") if u and u.group(3).split(".")[0] == s["metadata"]["name"]]
            c.check(len(svc) == 1 and u.group(3).split(".")[1:2] in ([], [NAMESPACE]),
                    f"{build}: the job store URL names the example database's Service", u.group(3) if u else url)


def gib(q):
    """A Kubernetes quantity of bytes in GiB."""
    q = str(q)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    for u, f in units.items():
        if q.endswith(u):
            return float(q[: -len(u)]) * f / 2**30
    return float(q) / 2**30


def check_storage(c, build, pod, ctr, args, gpus):
    """s3:// staging (--scratch_dir) on a volume sized for the files one job writes at once per GPU, outside the
    kubelet's ephemeral-storage accounting; the emptyDirs fit the ephemeral-storage limit."""
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["mountPath"]: m["name"] for m in ctr.get("volumeMounts", [])}
    scratch = flag_value(args, "scratch_dir")
    if not c.check(scratch is not None, f"{build}: --scratch_dir set (s3:// staging)"):
        return
    vol = vols.get(mounts.get(scratch), {})
    tmpl = vol.get("ephemeral", {}).get("volumeClaimTemplate", {}).get("spec")
    c.check(tmpl is not None, f"{build}: --scratch_dir is a generic ephemeral volume (not an emptyDir)",
            str(sorted(vol)))
    per_pod = max(int(gpus or 1), 1)
    size = gib(tmpl["resources"]["requests"]["storage"]) if tmpl else 0
    c.check(size >= SCRATCH_PER_JOB_GIB * per_pod,
            f"{build}: scratch volume >= {SCRATCH_PER_JOB_GIB}Gi (the files a job writes at once) x {per_pod} GPU(s)",
            f"{size}Gi")
    limit = ctr.get("resources", {}).get("limits", {}).get("ephemeral-storage")
    total = sum(gib(v["emptyDir"].get("sizeLimit", "0")) for v in vols.values() if "emptyDir" in v)
    c.check(limit is not None and total <= gib(limit),
            f"{build}: emptyDir sizeLimits ({total}Gi) fit the ephemeral-storage limit ({limit})")


SHARDS_N = [4]  # set from jobs-shards before the server builds are checked


def check_gpu_affinity(c, build, pod):
    """Each ORed node selector term pins a GPU product the image runs on; GPU feature discovery
    terms also pin the driver (>= 580 for CUDA 13)."""
    terms = pod.get("affinity", {}).get("nodeAffinity", {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms", [])
    c.check(bool(terms), f"{build}: required GPU node affinity")
    for i, t in enumerate(terms):
        exprs = {e["key"]: e for e in t.get("matchExpressions", [])}
        prod = [exprs[k] for k in PRODUCT_KEYS if k in exprs]
        c.check(bool(prod) and all(e["operator"] == "In" for e in prod),
                f"{build}: node affinity term {i} pins GPU products (not any NVIDIA GPU)", str(sorted(exprs)))
        if "nvidia.com/gpu.compute.major" in exprs:
            cc = (exprs["nvidia.com/gpu.compute.major"]["values"], exprs.get("nvidia.com/gpu.compute.minor", {}).get("values"))
            c.check(cc in ((["9"], ["0"]), (["10"], ["0"])), f"{build}: term {i}: compute capability 9.0 or 10.0", str(cc))
            d = exprs.get(DRIVER_KEY, {})
            c.check(d.get("operator") == "Gt" and int(d["values"][0]) >= MIN_DRIVER - 1,
                    f"{build}: term {i}: driver >= {MIN_DRIVER}", str(d))


def check_server(c, build, docs, adapter_metric):
    dep = one(docs, "Deployment", "nvfp4d")
    if not c.check(dep is not None, f"{build}: one Deployment nvfp4d"):
        return
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    pod_labels = spec["template"]["metadata"]["labels"]
    ctr = pod["containers"][0]
    args = ctr.get("args", [])
    env = configmap_env(docs, ctr)

    c.check("replicas" not in spec, f"{build}: Deployment leaves replicas to the HPA")
    c.check(selects(spec["selector"], pod_labels), f"{build}: Deployment selector matches its pods")
    c.check(ctr.get("image", "nvfp4d") != "nvfp4d", f"{build}: image name was rewritten by `images:`")

    # Every $(VAR) in args resolves (ConfigMap keys or env); Kubernetes would pass it literally.
    unresolved = sorted({m for a in args for m in re.findall(r"\$\(([A-Za-z_0-9]+)\)", a) if m not in env})
    c.check(not unresolved, f"{build}: every $(VAR) in args is defined", ", ".join(unresolved))
    for ref in (s["configMapRef"]["name"] for s in ctr.get("envFrom", []) if "configMapRef" in s):
        c.check(one(docs, "ConfigMap", ref) is not None, f"{build}: ConfigMap {ref} exists in the build")

    # Ports and probes: all probes are gRPC on the plaintext health port.
    ports = {p["name"]: p["containerPort"] for p in ctr.get("ports", [])}
    c.check(ports.get("grpc") == GRPC_PORT and ports.get("health") == HEALTH_PORT
            and ports.get("metrics") == METRICS_PORT, f"{build}: container ports grpc/health/metrics")
    for flag, port in (("listen", GRPC_PORT), ("health_listen", HEALTH_PORT), ("metrics_listen", METRICS_PORT)):
        v = flag_value(args, flag)
        c.check(v is not None and v.endswith(f":{port}"), f"{build}: --{flag} on port {port}", str(v))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        p = ctr.get(probe, {})
        c.check(p.get("grpc", {}).get("port") == HEALTH_PORT,
                f"{build}: {probe} is a gRPC probe on the plaintext health port {HEALTH_PORT}")
    if flag_value(args, "tls_cert"):
        c.check(flag_value(args, "tls_key") is not None, f"{build}: --tls_cert comes with --tls_key")

    # Flags the issue requires in the ConfigMap.
    age = expand(flag_value(args, "max_connection_age") or "", env)
    c.check(age.isdigit() and int(age) > 0, f"{build}: --max_connection_age set from the ConfigMap", age)
    devices = expand(flag_value(args, "devices") or "", env)

    # Grace period covers preStop + drain + margin.
    drain = expand(flag_value(args, "drain_timeout") or "", env)
    pre = ctr.get("lifecycle", {}).get("preStop", {})
    pre_s = 0
    if "sleep" in pre:
        pre_s = int(pre["sleep"]["seconds"])
    elif "exec" in pre:
        cmd = pre["exec"]["command"]
        if len(cmd) == 2 and cmd[0].endswith("sleep"):
            pre_s = int(cmd[1])
    c.check(pre_s > 0, f"{build}: preStop delay before SIGTERM")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    ok = drain.isdigit() and grace >= pre_s + int(drain) + GRACE_MARGIN
    c.check(ok, f"{build}: terminationGracePeriodSeconds >= preStop + --drain_timeout + {GRACE_MARGIN}"
            " (last unit + gRPC shutdown)", f"{grace} < {pre_s} + {drain} + {GRACE_MARGIN}")

    # Security.
    psc, csc = pod.get("securityContext", {}), ctr.get("securityContext", {})
    c.check(psc.get("runAsNonRoot") is True and psc.get("runAsUser", 0) != 0, f"{build}: runs as non-root")
    c.check(csc.get("readOnlyRootFilesystem") is True and csc.get("allowPrivilegeEscalation") is False
            and csc.get("capabilities", {}).get("drop") == ["ALL"], f"{build}: read-only root, no privileges")
    emptydirs = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
    mounts = {m["mountPath"]: m["name"] for m in ctr.get("volumeMounts", [])}
    state_dir = flag_value(args, "state_dir")
    for path in ("/tmp", state_dir):
        c.check(mounts.get(path) in emptydirs, f"{build}: writable emptyDir at {path}")
    secrets = {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
    env_secrets = {s["secretRef"]["name"] for s in ctr.get("envFrom", []) if "secretRef" in s}
    c.check({"nvfp4d-tls", "nvfp4d-auth"} <= secrets,
            f"{build}: Secret references (TLS, auth tokens)")
    c.check("nvfp4d-s3" in env_secrets or "AWS_WEB_IDENTITY_TOKEN_FILE" in env,
            f"{build}: S3 credentials (Secret nvfp4d-s3 or web identity)")
    check_s3_and_job_store(c, build, docs, ctr, args, env)

    # GPU vs CPU.
    gpus = ctr.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
    tolerates_gpu = any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", []))
    if build in CPU_ONLY:
        c.check(gpus is None and not tolerates_gpu and "affinity" not in pod,
                f"{build}: no GPU limit, toleration or GPU node affinity")
        c.check(devices == "cpu", f"{build}: --devices=cpu", devices)
    else:
        c.check(gpus is not None and int(gpus) >= 1, f"{build}: nvidia.com/gpu limit")
        c.check(tolerates_gpu and "nodeAffinity" in pod.get("affinity", {}),
                f"{build}: GPU toleration and node affinity")
        c.check(devices in ("auto",) or devices.startswith("cuda"), f"{build}: --devices uses GPUs", devices)
        check_gpu_affinity(c, build, pod)
    pcs = {p["metadata"]["name"] for p in by_kind(docs, "PriorityClass")}
    c.check(pod.get("priorityClassName") in pcs, f"{build}: priorityClassName names a PriorityClass of the build",
            str(pod.get("priorityClassName")))
    quota = [q for q in by_kind(docs, "ResourceQuota") if "requests.nvidia.com/gpu" in q["spec"].get("hard", {})]
    if c.check(len(quota) == 1, f"{build}: a ResourceQuota on requests.nvidia.com/gpu"):
        hpa_max = (one(docs, "HorizontalPodAutoscaler") or {}).get("spec", {}).get("maxReplicas", 0)
        need = hpa_max * int(gpus or 0) + SHARDS_N[0]
        have = int(quota[0]["spec"]["hard"]["requests.nvidia.com/gpu"])
        c.check(have >= need, f"{build}: GPU quota >= maxReplicas x GPUs per pod + shards N", f"{have} < {need}")
    if build in EKS_NLB:
        ns = one(docs, "Namespace")
        c.check(ns is not None and ns["metadata"].get("labels", {}).get("elbv2.k8s.aws/pod-readiness-gate-inject")
                == "enabled", f"{build}: namespace labelled for NLB pod readiness gates")

    check_storage(c, build, pod, ctr, args, None if build in CPU_ONLY else gpus)

    # Services: select the pods, name real container ports.
    # nvfp4d's Services (the example database's Service selects its own pod).
    services = [s for s in by_kind(docs, "Service")
                if s["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "nvfp4d"]
    for svc in services:
        name = svc["metadata"]["name"]
        c.check(selects(svc["spec"]["selector"], pod_labels), f"{build}: Service {name} selects the pods")
        for p in svc["spec"]["ports"]:
            c.check(p["targetPort"] in ports or p["targetPort"] in ports.values(),
                    f"{build}: Service {name} port {p['name']} targets a container port")
        c.check(all(p["port"] != HEALTH_PORT for p in svc["spec"]["ports"]),
                f"{build}: Service {name} does not expose the plaintext health port")
    lbs = [s for s in services if s["spec"].get("type") == "LoadBalancer"]
    if build in LB_ANNOTATIONS:
        ok = len(lbs) == 1
        if c.check(ok, f"{build}: exactly one LoadBalancer Service", str(len(lbs))):
            ann = lbs[0]["metadata"].get("annotations", {})
            for k, v in LB_ANNOTATIONS[build].items():
                c.check(ann.get(k) == v, f"{build}: internal LB annotation {k}={v}", str(ann.get(k)))
            if lbs[0]["spec"].get("externalTrafficPolicy") == "Local":
                bad = [k for k in ann if k.startswith("service.beta.kubernetes.io/azure-load-balancer-health-probe")]
                c.check(not bad, f"{build}: no Azure health-probe annotations (ignored with externalTrafficPolicy Local)",
                        str(bad))
            c.check([p["port"] for p in lbs[0]["spec"]["ports"]] == [GRPC_PORT],
                    f"{build}: the load balancer exposes only gRPC {GRPC_PORT}")
    else:
        c.check(not lbs, f"{build}: no LoadBalancer Service")
    c.check(any(s["spec"].get("type", "ClusterIP") == "ClusterIP" for s in services),
            f"{build}: a ClusterIP Service")

    # PDB, NetworkPolicy, HPA.
    pdb = one(docs, "PodDisruptionBudget")
    c.check(pdb is not None and selects(pdb["spec"]["selector"], pod_labels), f"{build}: PDB selects the pods")
    check_network_policy(c, build, docs, pod_labels, args)
    hpa = one(docs, "HorizontalPodAutoscaler")
    if c.check(hpa is not None, f"{build}: HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        c.check(ref["kind"] == "Deployment" and ref["name"] == dep["metadata"]["name"],
                f"{build}: HPA targets the Deployment")
        # Each pod queues its own jobs: a Pods metric summed per pod. With the shared job store
        # every pod reports the fleet's queue: one External metric, the queue taken once.
        shared = bool(flag_value(args, "job_store"))
        kind, key, want = ("External", "external", FLEET_HPA_METRIC) if shared else ("Pods", "pods", HPA_METRIC)
        metrics = hpa["spec"]["metrics"]
        names = [m[key]["metric"]["name"] for m in metrics if m["type"] == kind]
        c.check(names == [want] and len(metrics) == 1,
                f"{build}: HPA scales on the {kind} metric {want}" + (" (job store: fleet-wide queue)" if shared else ""),
                str(metrics))
        c.check(want in adapter_metric.values(), f"{build}: the Prometheus adapter serves {want}",
                str(adapter_metric))
        # Target <= jobs one pod runs at once (one per device): a pod busy with its jobs never
        # counts as spare, so the HPA does not scale down under running jobs.
        target = [m[key]["target"] for m in metrics if m["type"] == kind]
        per_pod = int(gpus) if gpus is not None and build not in CPU_ONLY else 1
        ok = len(target) == 1 and target[0].get("type") == "AverageValue"
        c.check(ok and float(str(target[0]["averageValue"])) <= per_pod,
                f"{build}: HPA target (queued + running per pod) <= jobs a pod runs at once ({per_pod})",
                str(target))
        c.check(hpa["spec"].get("minReplicas", 1) >= 2 and pdb is not None,
                f"{build}: at least 2 replicas, so the PDB allows a drain without an outage")

    # ServiceMonitor: selects the ClusterIP Service, on a port it has.
    sm = one(docs, "ServiceMonitor")
    if c.check(sm is not None, f"{build}: ServiceMonitor"):
        targets = [s for s in services if selects(sm["spec"]["selector"], s["metadata"].get("labels", {}))]
        c.check(len(targets) == 1 and targets[0]["spec"].get("type", "ClusterIP") == "ClusterIP",
                f"{build}: ServiceMonitor selects exactly the ClusterIP Service")
        for ep in sm["spec"]["endpoints"]:
            c.check(any(ep.get("port") == p["name"] for t in targets for p in t["spec"]["ports"]),
                    f"{build}: ServiceMonitor endpoint port {ep.get('port')} exists on the Service")

    # Alerts: the right set per build; the saturation threshold follows --queue_capacity.
    pr = one(docs, "PrometheusRule")
    if c.check(pr is not None, f"{build}: PrometheusRule"):
        alerts = {r["alert"]: r for g in pr["spec"]["groups"] for r in g["rules"] if "alert" in r}
        want = {"Nvfp4dQueueSaturated", "Nvfp4dJobFailureRateHigh", "Nvfp4dTargetDown", "Nvfp4dQueueStalled"}
        c.check(want <= set(alerts), f"{build}: alerts for queue saturation, job failures, target down",
                str(sorted(want - set(alerts))))
        if build in CPU_ONLY:
            c.check("Nvfp4dNoGPU" not in alerts, f"{build}: no 'no GPU' alert on CPU-only pods")
        else:
            c.check("Nvfp4dNoGPU" in alerts, f"{build}: 'no GPU' alert")
        sat = alerts.get("Nvfp4dQueueSaturated", {}).get("expr", "")
        m = re.search(r"0\.8\s*\*\s*(\d+)", sat)
        cap = expand(flag_value(args, "queue_capacity") or "", env)
        c.check(m is not None and m.group(1) == cap,
                f"{build}: Nvfp4dQueueSaturated threshold is 80% of --queue_capacity",
                f"alert uses {m.group(1) if m else '?'}, --queue_capacity={cap}")
        job_label = sm["spec"].get("jobLabel") if sm else None
        svc_job = targets[0]["metadata"]["labels"].get(job_label) if sm and targets and job_label else None
        for name, rule in alerts.items():
            jobs = set(re.findall(r'job="([^"]+)"', rule["expr"]))
            c.check(jobs == {svc_job}, f"{build}: alert {name} selects job=\"{svc_job}\" (ServiceMonitor jobLabel)",
                    str(jobs))


def check_jobs(c, shards, finalize, base):
    sj, fj = one(shards, "Job"), one(finalize, "Job")
    if not (c.check(sj is not None, "jobs-shards: one Job") and c.check(fj is not None, "jobs-finalize: one Job")):
        return
    s, f = sj["spec"], fj["spec"]
    sc, fc = s["template"]["spec"]["containers"][0], f["template"]["spec"]["containers"][0]
    senv, fenv = configmap_env(shards, sc), configmap_env(finalize, fc)
    c.check(s.get("completionMode") == "Indexed", "jobs-shards: completionMode Indexed")
    n = senv.get("NVFP4_NUM_SHARDS", "")
    c.check(n.isdigit() and s.get("completions") == int(n) == s.get("parallelism"),
            "jobs-shards: completions == parallelism == NVFP4_NUM_SHARDS",
            f"completions={s.get('completions')} parallelism={s.get('parallelism')} N={n}")
    args = sc["command"] + sc["args"]
    c.check(args[:3] == ["nvfp4ctl", "quantize-model", "--local"], "jobs-shards: nvfp4ctl quantize-model --local")
    shard = args[args.index("--shard") + 1] if "--shard" in args else ""
    c.check(shard == "$(JOB_COMPLETION_INDEX)/$(NVFP4_NUM_SHARDS)", "jobs-shards: --shard INDEX/N", shard)
    unresolved = sorted({m for a in args for m in re.findall(r"\$\(([A-Za-z_0-9]+)\)", a) if m not in senv})
    c.check(not unresolved, "jobs-shards: every $(VAR) in args is defined", ", ".join(unresolved))
    c.check(int(sc["resources"]["limits"].get("nvidia.com/gpu", 0)) >= 1, "jobs-shards: one GPU per shard")
    out_s = expand(args[args.index("--output") + 1], senv)
    in_s = expand(args[args.index("--input") + 1], senv)
    c.check(in_s.startswith("s3://") and out_s.startswith("s3://"), "jobs-shards: s3:// input and output")
    fargs = fc["command"] + fc["args"]
    c.check(fargs[:2] == ["nvfp4ctl", "finalize"], "jobs-finalize: nvfp4ctl finalize")
    out_f = expand(fargs[fargs.index("--output") + 1], fenv)
    c.check(out_f == out_s, "jobs: finalize writes to the shards' output prefix", f"{out_f} vs {out_s}")
    c.check(sc["envFrom"][0]["configMapRef"]["name"] == fc["envFrom"][0]["configMapRef"]["name"],
            "jobs: both Jobs read the same parameters (same ConfigMap content hash)")
    dep = one(base, "Deployment", "nvfp4d")
    c.check(dep is not None and s["template"]["spec"].get("affinity")
            == dep["spec"]["template"]["spec"].get("affinity"),
            "jobs-shards: GPU node affinity identical to the Deployment's (products, driver)")
    check_gpu_affinity(c, "jobs-shards", s["template"]["spec"])
    pcs = {p["metadata"]["name"] for p in by_kind(base, "PriorityClass")}
    usage = cli_exit_usage()
    for name, docs, job in (("jobs-shards", shards, sj), ("jobs-finalize", finalize, fj)):
        js = job["spec"]
        c.check(int(js.get("activeDeadlineSeconds", 0)) > 0, f"{name}: activeDeadlineSeconds bounds the run")
        ctr_name = js["template"]["spec"]["containers"][0]["name"]
        fail = [r for r in js.get("podFailurePolicy", {}).get("rules", []) if r["action"] == "FailJob"
                and r.get("onExitCodes", {}).get("operator") == "In" and usage in r["onExitCodes"]["values"]
                and r["onExitCodes"].get("containerName") in (None, ctr_name)]
        c.check(bool(fail), f"{name}: podFailurePolicy FailJob on exit {usage} (nvfp4ctl kExitUsage: permanent errors)")
        c.check(js["template"]["spec"].get("priorityClassName") in pcs,
                f"{name}: priorityClassName names a PriorityClass of deploy/base",
                str(js["template"]["spec"].get("priorityClassName")))
    for name, docs, job in (("jobs-shards", shards, sj), ("jobs-finalize", finalize, fj)):
        ctr = job["spec"]["template"]["spec"]["containers"][0]
        c.check(ctr.get("image", "nvfp4d") != "nvfp4d", f"{name}: image name was rewritten by `images:`")
        c.check(job["spec"]["template"]["spec"].get("securityContext", {}).get("runAsNonRoot") is True
                and ctr.get("securityContext", {}).get("readOnlyRootFilesystem") is True,
                f"{name}: non-root, read-only root filesystem")


def expand_adapter_query(c, r, kind, matchers, group_by):
    """Checks one adapter rule of `kind` ("custom" or "external"); returns (name, expanded query)."""
    name = r.get("name", {})
    series = re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", r["seriesQuery"]).group(1)
    c.check(re.fullmatch(name.get("matches", ""), series) is not None,
            f"prometheus-adapter {kind}: name.matches the series")
    q = (r["metricsQuery"].replace("<<.Series>>", series)
         .replace("<<.LabelMatchers>>", matchers)
         .replace("<<.GroupBy>>", group_by))
    c.check("<<" not in q, f"prometheus-adapter {kind}: metricsQuery uses only Series, LabelMatchers, GroupBy", q)
    c.check(all(re.search(rf"\b{m}\b", q) for m in HPA_SERIES),
            f"prometheus-adapter {kind}: metricsQuery counts {' + '.join(HPA_SERIES)}", q)
    return name.get("as"), q


def adapter_rule(c, out_dir):
    """Checks deploy/prometheus-adapter/values.yaml; writes its expanded queries as a rule file.
    Returns {"custom": name, "external": name}."""
    with open(os.path.join(DEPLOY, "prometheus-adapter", "values.yaml")) as f:
        values = yaml.safe_load(f)
    custom = values.get("rules", {}).get("custom", [])
    external = values.get("rules", {}).get("external", [])
    if not c.check(len(custom) == 1 and len(external) == 1,
                   "prometheus-adapter: one custom rule and one external rule"):
        return {}
    over = custom[0].get("resources", {}).get("overrides", {})
    c.check(over.get("namespace", {}).get("resource") == "namespace" and over.get("pod", {}).get("resource") == "pod",
            "prometheus-adapter custom: namespace and pod labels map to resources (a Pods metric)")
    over = external[0].get("resources", {}).get("overrides", {})
    c.check(list(over) == ["namespace"] and over["namespace"].get("resource") == "namespace",
            "prometheus-adapter external: only the namespace label maps to a resource (one fleet-wide value)")
    names = {}
    rules = [{"record": "adapter:series_query", "expr": f"count({custom[0]['seriesQuery']})"}]
    names["custom"], q = expand_adapter_query(c, custom[0], "custom", 'namespace="nvfp4",pod=~"nvfp4d-a|nvfp4d-b"',
                                              "pod")
    rules.append({"record": "adapter:metrics_query", "expr": q})
    # External queries get the HPA's namespace as their only matcher and no grouping.
    names["external"], q = expand_adapter_query(c, external[0], "external", 'namespace="nvfp4"', "")
    c.check(re.search(r"\bmax\b[^+]*\bnvfp4_jobs_queued\b", q) is not None
            and re.search(r"\bsum\b[^+]*\bnvfp4_jobs_running\b", q) is not None,
            "prometheus-adapter external: the fleet-wide queue is taken once (max), running jobs summed", q)
    rules.append({"record": "adapter:external_series_query", "expr": f"count({external[0]['seriesQuery']})"})
    rules.append({"record": "adapter:external_metrics_query", "expr": q})
    rule_file = {"groups": [{"name": "prometheus-adapter-expanded", "rules": rules}]}
    with open(os.path.join(out_dir, "adapter-rules.yaml"), "w") as f:
        yaml.safe_dump(rule_file, f, sort_keys=False)
    return names


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rendered", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(os.path.join(a.out, "core"), exist_ok=True)
    schemas = {}
    for key, fname in CRD_SCHEMAS.items():
        with open(os.path.join(HERE, "schemas", fname)) as f:
            schemas[key] = json.load(f)
        jsonschema.Draft202012Validator.check_schema(schemas[key])

    c = Checker()
    adapter_metric = adapter_rule(c, a.out)
    builds = sorted(f[:-5] for f in os.listdir(a.rendered) if f.endswith(".yaml"))
    docs_of = {}
    if "jobs-shards.yaml" in os.listdir(a.rendered):
        sj = one(load_docs(os.path.join(a.rendered, "jobs-shards.yaml")), "Job")
        if sj:
            SHARDS_N[0] = int(sj["spec"].get("parallelism", SHARDS_N[0]))
    for b in builds:
        docs = load_docs(os.path.join(a.rendered, b + ".yaml"))
        docs_of[b] = docs
        c.check(bool(docs), f"{b}: renders to at least one object")
        core = [d for d in docs if (d.get("apiVersion"), d.get("kind")) not in CRD_SCHEMAS]
        with open(os.path.join(a.out, "core", b + ".yaml"), "w") as f:
            yaml.safe_dump_all(core, f, sort_keys=False)
        check_crds(c, b, docs, schemas)
        check_namespaces(c, b, docs)
        check_pod_security(c, b, docs)
        for pr in by_kind(docs, "PrometheusRule"):
            with open(os.path.join(a.out, f"rules-{b}.yaml"), "w") as f:
                yaml.safe_dump({"groups": pr["spec"]["groups"]}, f, sort_keys=False)
        if b == "base" or b.startswith("overlay-"):
            check_server(c, b, docs, adapter_metric)
    expected = {"base", "jobs-shards", "jobs-finalize", "overlay-cpu-only"} | set(LB_ANNOTATIONS)
    c.check(expected <= set(builds), "every kustomization was rendered", str(sorted(expected - set(builds))))
    if {"jobs-shards", "jobs-finalize"} <= set(builds):
        check_jobs(c, docs_of["jobs-shards"], docs_of["jobs-finalize"], docs_of.get("base", []))

    print(f"check_manifests: {c.passed} checks passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
