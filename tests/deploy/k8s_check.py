#!/usr/bin/env python3
"""Offline checks of deploy/k8s (run by tests/deploy/k8s.sh, which installs the dependencies).

1. Render the kustomization: as it is, and with components/shared-fs enabled (a temporary copy).
   `kubectl kustomize` where kubectl is installed; else, or with TESSERA_KUSTOMIZE=python, the small
   renderer below (resources, namespace, images, replicas, components with strategic-merge
   patches, secretGenerator from files: what this kustomization uses). Where both are there, both
   run and their outputs must agree.
2. Validate every rendered object and every examples/*.yaml against the JSON schemas of Kubernetes
   KUBE_VERSIONS bundled in kubernetes-validate (strict: unknown fields fail), after checking that
   the validator rejects known-bad objects (so a pass means something).
3. Check what matters for tessera (see `semantic_checks`).
4. Run the manifests' command lines with the local binary as uid 10001: the coordinator's args
   (addresses and paths moved to a temporary directory), the worker's args with their $(VAR)s
   expanded from its downward-API env, and the submit Job's shell script, on a small simulated
   recording; the run must succeed and its record name the worker's pod, namespace and node.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import kubernetes_validate
import yaml
from kubernetes_validate import utils as kv

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBE_VERSIONS = ["1.30.0", "1.37.0"]  # oldest still commonly run, newest bundled
MIN_WORKER_GRACE_S = 600
IMAGE_UID = 10001
NAMESPACE = "tessera"

failures: list[str] = []


def ok(msg: str) -> None:
    print(f"ok: {msg}")


def fail(msg: str) -> None:
    print(f"FAIL: {msg}", file=sys.stderr)
    failures.append(msg)


def check(cond: bool, msg: str) -> bool:
    (ok if cond else fail)(msg)
    return cond


def load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# ---------------------------------------------------------------------------------------------
# Rendering


def render_kubectl(root: Path) -> list[dict] | None:
    kubectl = shutil.which("kubectl")
    if not kubectl or os.environ.get("TESSERA_KUSTOMIZE") == "python":
        return None
    p = subprocess.run([kubectl, "kustomize", str(root)], capture_output=True, text=True)
    if p.returncode != 0:
        fail(f"kubectl kustomize {root}: {p.stderr.strip()}")
        return []
    return [d for d in yaml.safe_load_all(p.stdout) if d]


def smp(base, patch):
    """Strategic merge, as far as these manifests need: maps merge, lists of named maps merge by
    name (containers, volumes, env, volumeMounts), other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = smp(base[k], v) if k in base else copy.deepcopy(v)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(x, dict) and "name" in x for x in base + patch)
    ):
        out = [copy.deepcopy(x) for x in base]
        for p in patch:
            i = next((i for i, b in enumerate(out) if b["name"] == p["name"]), None)
            if i is None:
                out.insert(0, copy.deepcopy(p))
            else:
                out[i] = smp(out[i], p)
        return out
    return copy.deepcopy(patch)


CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding"}
KNOWN_FIELDS = {
    "apiVersion", "kind", "namespace", "resources", "images", "replicas", "components",
    "patches", "secretGenerator",
}


def render_python(root: Path) -> list[dict]:
    kz = yaml.safe_load((root / "kustomization.yaml").read_text())
    unknown = set(kz) - KNOWN_FIELDS
    if unknown:
        fail(f"the python renderer does not understand {sorted(unknown)} in {root}/kustomization.yaml")
    docs: list[dict] = []
    for r in kz.get("resources", []):
        p = root / r
        if p.is_dir():
            docs += render_python(p)
        else:
            docs += load_all(p)
    for c in kz.get("components", []):
        cdir = root / c
        ckz = yaml.safe_load((cdir / "kustomization.yaml").read_text())
        if set(ckz) - KNOWN_FIELDS:
            fail(f"the python renderer does not understand {sorted(set(ckz) - KNOWN_FIELDS)} in {c}")
        for r in ckz.get("resources", []):
            docs += load_all(cdir / r)
        for pt in ckz.get("patches", []):
            for patch in load_all(cdir / pt["path"]):
                hits = [
                    i for i, d in enumerate(docs)
                    if d["kind"] == patch["kind"] and d["metadata"]["name"] == patch["metadata"]["name"]
                ]
                if len(hits) != 1:
                    fail(f"patch {pt['path']} matches {len(hits)} objects")
                for i in hits:
                    docs[i] = smp(docs[i], patch)
    for g in kz.get("secretGenerator", []):
        data = {}
        for f in g.get("files", []):
            key, _, src = f.partition("=")
            src = src or key
            data[Path(key).name] = base64.b64encode((root / src).read_bytes()).decode()
        docs.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                     "metadata": {"name": g["name"]}, "data": data})
    ns = kz.get("namespace")
    for d in docs:
        if ns and d["kind"] not in CLUSTER_SCOPED:
            d.setdefault("metadata", {})["namespace"] = ns
    for im in kz.get("images", []):
        for d in docs:
            for c in containers(d):
                name = c.get("image", "").split(":")[0]
                if name == im["name"]:
                    tag = im.get("newTag", c["image"].partition(":")[2])
                    c["image"] = im.get("newName", name) + (f":{tag}" if tag else "")
    for rep in kz.get("replicas", []):
        for d in docs:
            if d["metadata"]["name"] == rep["name"] and "replicas" in d.get("spec", {}):
                d["spec"]["replicas"] = rep["count"]
    return docs


def normalize(x):
    """Order-insensitive form for comparing renderings (lists of named maps sorted by name)."""
    if isinstance(x, dict):
        return {k: normalize(v) for k, v in x.items()}
    if isinstance(x, list):
        items = [normalize(v) for v in x]
        if all(isinstance(v, dict) and "name" in v for v in items):
            items.sort(key=lambda v: str(v["name"]))
        return items
    return x


def key(d: dict) -> tuple:
    return (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])


def render(root: Path, label: str) -> list[dict]:
    py = render_python(root)
    kc = render_kubectl(root)
    if kc is None:
        print(f"note: no kubectl (or TESSERA_KUSTOMIZE=python): {label} rendered by the python renderer only")
        return py
    a = {key(d): normalize(d) for d in kc}
    b = {key(d): normalize(d) for d in py}
    if a == b:
        ok(f"{label}: kubectl kustomize and the python renderer agree ({len(kc)} objects)")
    else:
        diff = sorted(set(a) ^ set(b)) or [k for k in a if a[k] != b.get(k)]
        fail(f"{label}: kubectl kustomize and the python renderer differ on {diff}")
    return kc


# ---------------------------------------------------------------------------------------------
# Schema validation


def validate_schema(docs: list[tuple[str, dict]]) -> None:
    # The validator must reject what it should, or a pass says nothing.
    probe = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
             "spec": {"selector": {"matchLabels": {"a": "b"}},
                      "template": {"metadata": {"labels": {"a": "b"}},
                                   "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    bad_field = copy.deepcopy(probe)
    bad_field["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    bad_type = copy.deepcopy(probe)
    bad_type["spec"]["replicas"] = "two"
    missing = copy.deepcopy(probe)
    del missing["spec"]["template"]["spec"]["containers"][0]["name"]
    for v in KUBE_VERSIONS:
        try:
            kv.validate(probe, v, strict=True)
        except Exception as e:  # noqa: BLE001
            fail(f"schema self-test: a valid Deployment fails for {v}: {e}")
        for what, doc in [("an unknown field", bad_field), ("a wrong type", bad_type),
                          ("a missing required field", missing)]:
            try:
                kv.validate(doc, v, strict=True)
                fail(f"schema self-test: {what} passes for Kubernetes {v}")
            except kv.ValidationError:
                pass
    if not any(f.startswith("schema self-test") for f in failures):
        ok(f"schema self-test: kubernetes-validate {kubernetes_validate_version()} rejects unknown "
           f"fields, wrong types and missing required fields ({', '.join(KUBE_VERSIONS)})")
    for where, d in docs:
        before = len(failures)
        for v in KUBE_VERSIONS:
            try:
                got = kv.validate(d, v, strict=True)
                assert got == kv.major_minor(v), f"validated against {got}, not {v}"
            except kv.ValidationError as e:
                path = "/".join(str(p) for p in e.absolute_path)
                fail(f"{where}: {d['kind']}/{d['metadata'].get('name') or d['metadata'].get('generateName')}"
                     f" is invalid for Kubernetes {v} at {path}: {e.message}")
                continue
            except (kv.SchemaNotFoundError, kv.VersionNotSupportedError) as e:
                fail(f"{where}: {e.message}")
                continue
        if len(failures) == before:
            ok(f"{where}: {d['kind']}/{d['metadata'].get('name') or d['metadata'].get('generateName')} "
               f"valid (strict) for Kubernetes {', '.join(KUBE_VERSIONS)}")


def kubernetes_validate_version() -> str:
    from importlib.metadata import version
    return version("kubernetes-validate")


# ---------------------------------------------------------------------------------------------
# Semantic checks


def pod_spec(d: dict) -> dict | None:
    if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return d["spec"]["template"]["spec"]
    if d["kind"] == "Pod":
        return d["spec"]
    return None


def containers(d: dict) -> list[dict]:
    ps = pod_spec(d)
    return (ps.get("containers", []) + ps.get("initContainers", [])) if ps else []


def arg(args: list[str], flag: str) -> str | None:
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def port_of(addr: str | None) -> int | None:
    m = re.search(r":(\d+)$", addr or "")
    return int(m.group(1)) if m else None


def mount_for(c: dict, path: str) -> dict | None:
    """The volumeMount under which `path` lies (the deepest)."""
    best = None
    for m in c.get("volumeMounts", []):
        mp = m["mountPath"].rstrip("/") + "/"
        if (path + "/").startswith(mp) and (best is None or len(mp) > len(best["mountPath"])):
            best = m
    return best


def volume(ps: dict, name: str) -> dict | None:
    return next((v for v in ps.get("volumes", []) if v["name"] == name), None)


def named_port(c: dict, ref) -> dict | None:
    return next((p for p in c.get("ports", []) if p.get("name") == ref or p["containerPort"] == ref), None)


def provenance_env_names() -> list[str]:
    """The environment variables crates/io/src/provenance.rs scheduler_ids() records."""
    src = (ROOT / "crates/io/src/provenance.rs").read_text()
    body = src.split("pub fn scheduler_ids", 1)[1].split("]", 1)[0]
    return re.findall(r'"([A-Z_]+)"', body)


def semantic_checks(label: str, docs: list[dict], example_docs: list[dict], expected_image: str) -> None:
    print(f"-- {label}")
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    # No token (or any Secret with data) in the output, nothing outside the namespace.
    check(not any(d["kind"] == "Secret" for d in docs),
          f"{label}: no Secret is rendered (the token Secret is made by the admin, never committed)")
    for d in docs:
        if d["kind"] != "Namespace" and d["metadata"].get("namespace") != NAMESPACE:
            fail(f"{label}: {d['kind']}/{d['metadata']['name']} is not in namespace {NAMESPACE}")
    ns = by.get(("Namespace", NAMESPACE))
    check(bool(ns) and ns["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") == "restricted",
          f"{label}: namespace {NAMESPACE} enforces the restricted Pod Security Standard")

    workloads = [d for d in docs + example_docs if pod_spec(d)]
    for d in workloads:
        name = f"{d['kind']}/{d['metadata'].get('name') or d['metadata'].get('generateName')}"
        ps = pod_spec(d)
        psc = ps.get("securityContext", {})
        if d["kind"] in ("Deployment", "StatefulSet"):
            sel = d["spec"]["selector"]["matchLabels"]
            labels = d["spec"]["template"]["metadata"]["labels"]
            check(sel.items() <= labels.items(), f"{name}: selector {sel} matches its pod template's labels")
        host = [k for k in ("hostNetwork", "hostPID", "hostIPC") if ps.get(k)] + \
               [v["name"] for v in ps.get("volumes", []) if "hostPath" in v]
        check(not host, f"{name}: no host namespaces or hostPath volumes {host}")
        for c in containers(d):
            csc = c.get("securityContext", {})
            where = f"{name} container {c['name']}"
            run_as_non_root = csc.get("runAsNonRoot", psc.get("runAsNonRoot"))
            uid = csc.get("runAsUser", psc.get("runAsUser"))
            check(run_as_non_root is True and uid == IMAGE_UID,
                  f"{where}: runAsNonRoot with runAsUser {IMAGE_UID} (the image's user): {run_as_non_root}, {uid}")
            check(csc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation false")
            check(csc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem")
            check(csc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: drops all capabilities")
            check((csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
                  f"{where}: seccomp RuntimeDefault")
            tmp = mount_for(c, "/tmp")
            check(tmp is not None and tmp["mountPath"] == "/tmp", f"{where}: a writable /tmp (emptyDir) on the read-only root")
            res = c.get("resources", {})
            check(all(k in res.get(s, {}) for s in ("requests", "limits") for k in ("cpu", "memory")),
                  f"{where}: cpu and memory requests and limits")
            check(c.get("image") == expected_image, f"{where}: image {c.get('image')} is {expected_image} (kustomization images:)")
            claims = {t["metadata"]["name"] for t in d["spec"].get("volumeClaimTemplates", [])} \
                if d["kind"] == "StatefulSet" else set()
            for m in c.get("volumeMounts", []):
                if volume(ps, m["name"]) is None and m["name"] not in claims:
                    fail(f"{where}: volumeMount {m['name']} has no volume")
            env = {e["name"]: e for e in c.get("env", [])}
            for a in c.get("args", []) + c.get("command", []):
                for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", a):
                    if ref not in env:
                        fail(f"{where}: argument {a!r} refers to $({ref}), which is not in its env")
            # The token: --token-file under a mount of the tessera-token Secret, key `token`.
            shell = " ".join(c.get("command", []) + c.get("args", []))
            mt = re.search(r"--token-file[= ](\S+)", shell)
            tf = mt.group(1) if mt else None
            if tf:
                m = mount_for(c, tf)
                v = volume(ps, m["name"]) if m else None
                sec = (v or {}).get("secret", {})
                rel = tf[len(m["mountPath"].rstrip("/")) + 1:] if m else None
                items = {i["path"]: i["key"] for i in sec.get("items", [])}
                check(sec.get("secretName") == "tessera-token" and items.get(rel, rel) == "token",
                      f"{where}: --token-file {tf} is key `token` of Secret tessera-token")
                check(psc.get("fsGroup") == IMAGE_UID or psc.get("runAsGroup") == IMAGE_UID,
                      f"{where}: the token file is readable by the pod's group")
            else:
                fail(f"{where}: no --token-file: every call needs the token")

    # Coordinator: a StatefulSet of one, state on a volumeClaimTemplate, a Service that selects it.
    sts = by.get(("StatefulSet", "tessera-coordinator"))
    if not check(sts is not None, f"{label}: a StatefulSet tessera-coordinator"):
        return
    ps = pod_spec(sts)
    c = ps["containers"][0]
    args = c["args"]
    check(args[0] == "coordinator", "coordinator: runs `tessera coordinator`")
    check(sts["spec"]["replicas"] == 1, "coordinator: exactly 1 replica (the state database admits one coordinator)")
    state = arg(args, "--state")
    m = mount_for(c, state or "/")
    claims = {t["metadata"]["name"]: t for t in sts["spec"].get("volumeClaimTemplates", [])}
    check(bool(state) and m is not None and m["name"] in claims,
          f"coordinator: --state {state} lies on a PersistentVolumeClaim (volumeClaimTemplates {list(claims)})")
    if m and m["name"] in claims:
        check("ReadWriteOnce" in claims[m["name"]]["spec"]["accessModes"], "coordinator: the state claim is ReadWriteOnce")
        check(not m.get("readOnly"), "coordinator: the state volume is mounted writable")
    check(ps.get("securityContext", {}).get("fsGroup") == IMAGE_UID,
          f"coordinator: fsGroup {IMAGE_UID}, so the state volume is writable by the non-root user")
    listen, metrics = arg(args, "--listen"), arg(args, "--metrics")
    check(bool(listen) and listen.startswith("0.0.0.0:"), f"coordinator: --listen {listen} on all interfaces (reachable through the Service)")
    check(bool(metrics) and metrics.startswith("0.0.0.0:"), f"coordinator: --metrics {metrics} on all interfaces")
    grpc_port = named_port(c, port_of(listen))
    metrics_port = named_port(c, port_of(metrics))
    check(grpc_port is not None, f"coordinator: --listen port {port_of(listen)} is a containerPort")
    check(metrics_port is not None, f"coordinator: --metrics port {port_of(metrics)} is a containerPort")
    for probe in ("readinessProbe", "livenessProbe"):
        p = c.get(probe, {}).get("tcpSocket", {}).get("port")
        pp = named_port(c, p)
        check(pp is not None and pp["containerPort"] == port_of(listen), f"coordinator: {probe} is tcpSocket on the gRPC port ({p})")
    svc_grpc = None
    svc = by.get(("Service", sts["spec"]["serviceName"]))
    if check(svc is not None, f"coordinator: its serviceName {sts['spec']['serviceName']} is a Service"):
        labels = sts["spec"]["template"]["metadata"]["labels"]
        check(svc["spec"]["selector"].items() <= labels.items(),
              f"Service {svc['metadata']['name']}: selector {svc['spec']['selector']} matches the coordinator pod's labels")
        for w in docs:
            if w["kind"] in ("Deployment",) and svc["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items():
                fail(f"Service {svc['metadata']['name']} also selects {w['kind']}/{w['metadata']['name']}")
        for sp in svc["spec"]["ports"]:
            target = named_port(c, sp.get("targetPort", sp["port"]))
            check(target is not None, f"Service port {sp['name']} ({sp['port']}) targets container port {sp.get('targetPort')}")
        ann = svc["metadata"].get("annotations", {})
        check(ann.get("prometheus.io/scrape") == "true" and metrics_port is not None
              and ann.get("prometheus.io/port") == str(metrics_port["containerPort"]) and ann.get("prometheus.io/path") == "/metrics",
              f"Service: prometheus.io annotations scrape the metrics port {port_of(metrics)} at /metrics")
        svc_grpc = next((sp for sp in svc["spec"]["ports"] if named_port(c, sp.get("targetPort")) is grpc_port), None)

    # Workers.
    dep = by.get(("Deployment", "tessera-worker"))
    if not check(dep is not None, f"{label}: a Deployment tessera-worker"):
        return
    ps = pod_spec(dep)
    c = ps["containers"][0]
    args = c["args"]
    check(args[0] == "worker", "worker: runs `tessera worker`")
    grace = ps.get("terminationGracePeriodSeconds", 30)
    check(grace >= MIN_WORKER_GRACE_S, f"worker: terminationGracePeriodSeconds {grace} >= {MIN_WORKER_GRACE_S} (time to drain)")
    url = arg(args, "--coordinator") or ""
    mm = re.match(r"http://([^:/]+):(\d+)$", url)
    check(bool(mm) and svc is not None and mm.group(1) in (svc["metadata"]["name"], f"{svc['metadata']['name']}.{NAMESPACE}",
                                                            f"{svc['metadata']['name']}.{NAMESPACE}.svc")
          and svc_grpc is not None and int(mm.group(2)) == svc_grpc["port"],
          f"worker: --coordinator {url} is the coordinator Service's gRPC port")
    slots = int(arg(args, "--slots") or 1)
    check(slots >= 1, f"worker: --slots {slots}")
    env = {e["name"]: e for e in c.get("env", [])}
    want = {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace", "NODE_NAME": "spec.nodeName"}
    for n, fp in want.items():
        got = env.get(n, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        check(got == fp, f"worker: env {n} from the downward API ({fp})")
    recorded = provenance_env_names()
    for n in want:
        if n not in recorded:
            print(f"note: the worker sets {n}, but crates/io/src/provenance.rs scheduler_ids() does not record it yet")
    for n in recorded:
        if n.startswith(("POD_", "NODE_")) and n not in env:
            fail(f"worker: provenance records {n}, which the worker's env does not set")
    ef = c.get("envFrom", [])
    check(any(e.get("secretRef", {}).get("name") == "tessera-storage" and e["secretRef"].get("optional") is True for e in ef),
          "worker: object-store credentials from the optional Secret tessera-storage (envFrom)")
    dep_strategy = dep["spec"].get("strategy", {}).get("rollingUpdate", {})
    check(str(dep_strategy.get("maxUnavailable", "25%")) in ("0", "0%"), "worker: rolling updates keep every worker until its replacement is up")


def check_kustomization_files() -> None:
    kz = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kz.get("resources", []))
    present = {p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"} | \
              {p.name for p in K8S.glob("*.yml")}
    check(listed == present, f"kustomization.yaml resources {sorted(listed)} are exactly the manifests in deploy/k8s {sorted(present)}")
    for comp in sorted((K8S / "components").glob("*/kustomization.yaml")):
        ckz = yaml.safe_load(comp.read_text())
        files = {p.name for p in comp.parent.glob("*.yaml") if p.name != "kustomization.yaml"}
        used = set(ckz.get("resources", [])) | {p["path"] for p in ckz.get("patches", [])}
        check(ckz.get("kind") == "Component" and used == files,
              f"{comp.parent.relative_to(ROOT)}: a Component using all its files {sorted(files)}")
    tracked = subprocess.run(["git", "ls-files", "deploy/k8s"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    check(not any(Path(t).name in ("token", "token.txt") for t in tracked) and not (K8S / "token").exists(),
          "no token file in deploy/k8s")


# ---------------------------------------------------------------------------------------------
# Running the manifests' command lines


def run_manifests(docs: list[dict], job: dict) -> None:
    bin_path = Path(os.environ.get("TESSERA_BIN", ROOT / "target/debug/tessera")).resolve()
    if not bin_path.exists():
        fail(f"no binary at {bin_path} to run the manifests' commands (set TESSERA_BIN)")
        return
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        print("note: not root or no setpriv: running the manifests' commands as this user")
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    coord = pod_spec(by[("StatefulSet", "tessera-coordinator")])["containers"][0]
    worker = pod_spec(by[("Deployment", "tessera-worker")])["containers"][0]
    jobc = pod_spec(job)["containers"][0]
    procs: list[subprocess.Popen] = []
    work = Path(tempfile.mkdtemp(prefix="tessera-k8s-"))
    try:
        bindir, data, state, secrets, wf = (work / n for n in ("bin", "data", "state", "secrets", "workflow"))
        for d in (bindir, data, state, secrets, wf):
            d.mkdir()
        shutil.copy(bin_path, bindir / "tessera")
        (secrets / "token").write_text(os.urandom(16).hex() + "\n")
        shutil.copy(ROOT / "workflows/fast.yaml", wf / "workflow.yaml")
        for p in [work, bindir, secrets, wf, *secrets.iterdir(), *wf.iterdir()]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        (bindir / "tessera").chmod(0o755)
        root_mode = os.geteuid() == 0 and shutil.which("setpriv")
        if root_mode:
            for d in (data, state):
                os.chown(d, IMAGE_UID, IMAGE_UID)
        # Paths of the pods, moved into the temporary directory.
        moves = {"/state": str(state), "/secrets": str(secrets), "/workflow": str(wf), "/data": str(data)}

        def local(a: str) -> str:
            for src, dst in moves.items():
                a = re.sub(rf"(^|=|\s){re.escape(src)}(?=/|$|\s)", lambda m: m.group(1) + dst, a)
            return a

        def start(argv: list[str], env: dict, log: str) -> subprocess.Popen:
            full = ["env", "-i", *(f"{k}={v}" for k, v in env.items())]
            if root_mode:
                full += ["setpriv", f"--reuid={IMAGE_UID}", f"--regid={IMAGE_UID}", "--clear-groups", "--"]
            out = open(work / f"{log}.out", "w")
            err = open(work / f"{log}.err", "w")
            p = subprocess.Popen(full + argv, stdout=out, stderr=err, cwd=data)
            procs.append(p)
            return p

        def pod_env(c: dict, pod: str) -> dict:
            env = {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(data), "KUBERNETES_SERVICE_HOST": "10.0.0.1"}
            fields = {"metadata.name": pod, "metadata.namespace": NAMESPACE, "spec.nodeName": "node-a"}
            for e in c.get("env", []):
                if "value" in e:
                    env[e["name"]] = e["value"]
                elif "fieldRef" in e.get("valueFrom", {}):
                    env[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
            return env

        def expand(a: str, env: dict) -> str:
            return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), a)

        # The coordinator with its own args, on loopback ephemeral ports.
        cargs = [local(a) for a in coord["args"]]
        cargs = [re.sub(r"^(--listen|--metrics)=0\.0\.0\.0:\d+$", r"\1=127.0.0.1:0", a) for a in cargs]
        cp = start(["tessera", *cargs], pod_env(coord, "tessera-coordinator-0"), "coordinator")
        grpc = None
        for _ in range(100):
            text = (work / "coordinator.out").read_text()
            mm = re.search(r"listening on (\S+)", text)
            if mm and "metrics on" in text:
                grpc = mm.group(1)
                break
            if cp.poll() is not None:
                break
            time.sleep(0.1)
        if not check(grpc is not None, f"coordinator starts with the StatefulSet's args as uid {IMAGE_UID}: "
                                        f"{(work / 'coordinator.err').read_text().strip()[-300:]}"):
            return
        url = f"http://{grpc}"
        # Two workers with the Deployment's args ($(VAR)s expanded), the coordinator's URL local.
        wps = []
        for i in range(2):
            env = pod_env(worker, f"tessera-worker-abc-{i}")
            wargs = [local(expand(a, env)) for a in worker["args"]]
            wargs = [re.sub(r"^--coordinator=.*$", f"--coordinator={url}", a) for a in wargs]
            wps.append(start(["tessera", *wargs], env, f"worker{i}"))
        # The submit Job's script, its env, the recording and output moved under the temp dir.
        subprocess.run(["env", "-i", f"PATH={bindir}:/usr/bin:/bin", *(
            ["setpriv", f"--reuid={IMAGE_UID}", f"--regid={IMAGE_UID}", "--clear-groups", "--"] if root_mode else []),
            "tessera", "simulate", "-o", str(data / "rec.zarr"), "--frames", "200", "--height", "64", "--width", "64"],
            check=True, capture_output=True, cwd=data)
        jenv = pod_env(jobc, "tessera-submit-xyz")
        jenv.update(COORDINATOR=url, INPUT=str(data / "rec.zarr"), OUTPUT=str(data / "results"))
        script = local(jobc["args"][0])
        jp = start([*jobc["command"], script], jenv, "submit")
        deadline = time.monotonic() + 120
        rc = None
        while rc is None:
            rc = jp.poll()
            dead = [(i, w.returncode) for i, w in enumerate(wps + [cp]) if w.poll() is not None]
            if rc is None and dead:
                logs = " | ".join((work / f"{n}.err").read_text().strip()[-300:] for n in ("worker0", "coordinator"))
                fail(f"a worker or the coordinator exited during the run (index, code) {dead}: {logs}")
                return
            if rc is None and time.monotonic() > deadline:
                rc = "timeout"
            time.sleep(0.05)
        check(rc == 0, f"the submit Job's script submits a run and follows it to success (exit {rc}): "
                       f"{(work / 'submit.err').read_text().strip()[-400:]}")
        status = (work / "submit.out").read_text().strip().splitlines()
        check(bool(status) and " succeeded " in status[-1], f"the run succeeded: {status[-1] if status else ''}")
        # Drain: SIGTERM, exit 0.
        for w in wps:
            w.send_signal(signal.SIGTERM)
        codes = [w.wait(timeout=60) for w in wps]
        check(codes == [0, 0], f"workers drain and exit 0 on SIGTERM: {codes}")
        cp.send_signal(signal.SIGTERM)
        check(cp.wait(timeout=30) == 0, "the coordinator exits 0 on SIGTERM")
        # Provenance names the pods.
        record = data / "results/provenance/record.json"
        if not check(record.exists(), "the run wrote its provenance record"):
            return
        rec = json.loads(record.read_text())
        sched = rec.get("scheduler", {})
        check(sched.get("POD_NAME", "").startswith("tessera-worker-abc-") and sched.get("POD_NAMESPACE") == NAMESPACE,
              f"the run's provenance names the worker's pod and namespace: {sched}")
        if "NODE_NAME" not in provenance_env_names():
            print("note: NODE_NAME not yet recorded in provenance (crates/io/src/provenance.rs)")
        elif b"NODE_NAME" not in bin_path.read_bytes():
            print(f"note: crates/io/src/provenance.rs records NODE_NAME but {bin_path} predates that: rebuild it")
        else:
            check(sched.get("NODE_NAME") == "node-a", f"the run's provenance names the node: {sched}")
        owners = {p.stat().st_uid for p in (data / "results").rglob("*")}
        if root_mode:
            check(owners == {IMAGE_UID}, f"everything the run wrote is owned by uid {IMAGE_UID}: {owners}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------------------------


def main() -> int:
    t0 = time.monotonic()
    print(f"== kubernetes-validate {kubernetes_validate_version()} (schemas bundled: "
          f"{kv.all_versions()[0]} .. {kv.latest_version()}), validating for {', '.join(KUBE_VERSIONS)}")
    kz = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    im = next(i for i in kz["images"] if i["name"] == "tessera")
    expected_image = f"{im['newName']}:{im['newTag']}"

    print("== files")
    check_kustomization_files()

    print("== render")
    base = render(K8S, "base")
    with tempfile.TemporaryDirectory() as t:
        copy_root = Path(t) / "k8s"
        shutil.copytree(K8S, copy_root)
        text = (copy_root / "kustomization.yaml").read_text()
        assert "# components:\n#   - components/shared-fs\n" in text, "the shared-fs component line is not in kustomization.yaml"
        (copy_root / "kustomization.yaml").write_text(
            text.replace("# components:\n#   - components/shared-fs\n", "components:\n  - components/shared-fs\n"))
        shared = render(copy_root, "with components/shared-fs")
    examples = [(f"examples/{p.name}", d) for p in sorted((K8S / "examples").glob("*.yaml")) for d in load_all(p)]

    print("== schemas")
    validate_schema([("base", d) for d in base] +
                    [("shared-fs", d) for d in shared if key(d) not in {key(b) for b in base} or d["kind"] == "Deployment"] +
                    examples)

    print("== semantics")
    semantic_checks("base", base, [d for _, d in examples], expected_image)
    semantic_checks("shared-fs", shared, [], expected_image)
    dep = next(d for d in shared if d["kind"] == "Deployment")
    pvc = next((d for d in shared if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == "tessera-data"), None)
    c = pod_spec(dep)["containers"][0]
    m = mount_for(c, "/data")
    check(pvc is not None and "ReadWriteMany" in pvc["spec"]["accessModes"] and m is not None
          and volume(pod_spec(dep), m["name"]).get("persistentVolumeClaim", {}).get("claimName") == "tessera-data",
          "shared-fs: workers mount the ReadWriteMany claim tessera-data at /data")
    jobs = [d for _, d in examples if d["kind"] == "Job"]
    if check(len(jobs) == 1, "examples: one submit Job"):
        job = jobs[0]
        jc = pod_spec(job)["containers"][0]
        script = " ".join(jc.get("command", []) + jc.get("args", []))
        check("tessera submit" in script and "tessera status" in script and "--watch" in script,
              "submit Job: submits, then follows the run with status --watch")
        comments = [l.strip() for l in (K8S / "examples/submit-job.yaml").read_text().splitlines()
                    if l.strip().startswith("#")]
        check(any(re.match(r"#\s*mountPath: /data$", l) for l in comments)
              and any(re.match(r"#\s*claimName: tessera-data$", l) for l in comments),
              "submit Job: shows how to mount tessera-data at /data (commented)")

        print("== run the manifests' command lines")
        run_manifests(base, job)

    print()
    took = time.monotonic() - t0
    if failures:
        print(f"k8s checks: {len(failures)} failed ({took:.1f} s)", file=sys.stderr)
        return 1
    print(f"k8s checks: all passed ({took:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
