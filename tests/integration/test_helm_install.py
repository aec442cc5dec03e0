"""The chart against the real API server of the embedded stack.

1. Everything the chart renders (default values, every example values file) is accepted by kube-apiserver
   (`kubectl apply --dry-run=server`), and the operator's pod passes the "restricted" Pod Security Standard.
2. The chart's RBAC is enough: its ServiceAccounts, Role and RoleBinding are applied, the operator runs under the
   operator ServiceAccount's own identity (a token from the TokenRequest API: the Python clients do not honour a
   kubeconfig's impersonation fields, a real token is the identity a pod would have), with the configuration file the
   chart renders, and runs the seed's job to COMPLETED.
3. The chart's RBAC is not more than that: the operator's account can do nothing outside it (jobs where they are
   watched; runner pods, pools, its key Secrets and the webhook key's ConfigMap in the release namespace only), and
   the runner's account can do nothing at all (`kubectl auth can-i --as=system:serviceaccount:…`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from helm_support import EXAMPLES, FULLNAME, operator_config, render, stack_values

pytestmark = pytest.mark.stack

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_VALUES = sorted(EXAMPLES.glob("values-*.yaml"))
# Kinds whose CRDs the stack does not have (Prometheus Operator): checked by the unit tests only.
ABSENT_KINDS = {"ServiceMonitor"}
SA_GROUPS = ("system:serviceaccounts", "system:authenticated")


def _ensure_namespace(stack, name: str, restricted: bool = False) -> None:
    manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    if restricted:
        manifest["metadata"]["labels"] = {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/warn": "restricted",
        }
    stack.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(manifest))


def _as_list(manifests: list[dict]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests})


def _namespaces_of(manifests: list[dict]) -> set[str]:
    return {m["metadata"]["namespace"] for m in manifests if m["metadata"].get("namespace")}


# ---- 1. accepted by the API server --------------------------------------------------------------------------------
@pytest.mark.parametrize("values", [None, *EXAMPLE_VALUES], ids=lambda p: p.name if p else "defaults")
def test_the_rendered_chart_is_accepted_by_the_api_server(stack, values):
    release_ns = f"i2i-sys-{uuid.uuid4().hex[:6]}"
    manifests = [m for m in render([values] if values else [], namespace=release_ns) if m["kind"] not in ABSENT_KINDS]
    _ensure_namespace(stack, release_ns, restricted=True)
    for ns in _namespaces_of(manifests) - {release_ns}:
        _ensure_namespace(stack, ns)
    try:
        proc = stack.kubectl("apply", "--dry-run=server", "--server-side", "-f", "-", input=_as_list(manifests))
        assert "would violate PodSecurity" not in proc.stderr, proc.stderr
        applied = proc.stdout.splitlines()
        assert len(applied) == len(manifests), proc.stdout
        # The Deployment's pod, as its ReplicaSet would create it, in a namespace enforcing "restricted".
        deployment = next(m for m in manifests if m["kind"] == "Deployment")
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "operator-pod", "namespace": release_ns,
                            "labels": deployment["spec"]["template"]["metadata"]["labels"]},
               "spec": deployment["spec"]["template"]["spec"]}
        stack.kubectl("create", "serviceaccount", pod["spec"]["serviceAccountName"], "-n", release_ns)
        proc = stack.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)
        assert proc.returncode == 0, f"the operator's pod is refused under the restricted profile:\n{proc.stderr}"
    finally:
        stack.kubectl("delete", "namespace", release_ns, "--wait=false", check=False)


@pytest.mark.parametrize("crd_file", ["img2img.dev_img2imgjobs.yaml", "img2img.dev_runnerpools.yaml"])
def test_the_crd_shipped_in_the_chart_is_the_one_the_api_server_serves(stack, crd_file):
    shipped = yaml.safe_load((REPO / "helm" / "img2img-operator" / "crds" / crd_file).read_text())
    proc = stack.kubectl("apply", "--dry-run=server", "--server-side", "--force-conflicts", "-f", "-",
                         input=json.dumps(shipped))
    assert "serverside-applied" in proc.stdout or "unchanged" in proc.stdout, proc.stdout


# ---- 2. the operator under the chart's ServiceAccount -------------------------------------------------------------
def _token_kubeconfig(stack, namespace: str, service_account: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount itself (a bound token from the TokenRequest API)."""
    token = stack.kubectl("create", "token", service_account, "-n", namespace, "--duration=2h").stdout.strip()
    admin = yaml.safe_load(stack.kubeconfig.read_text())
    cluster = admin["clusters"][0]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": cluster["name"], "user": service_account,
                                                "namespace": namespace}}],
        "current-context": "sa",
    }))
    return path


def _wait_healthy(port: int, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the operator exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the operator's /healthz did not answer within {timeout} s:\n{log.read_text()[-4000:]}")


def _wait_terminal(stack, namespace: str, name: str, timeout: float, proc: subprocess.Popen, log: Path) -> dict:
    deadline = time.monotonic() + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the operator exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        status = stack.get_json("-n", namespace, "img2imgjobs", name).get("status") or {}
        if status.get("status") in ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"):
            return status
        time.sleep(2)
    pytest.fail(f"{namespace}/{name} did not finish within {timeout} s; last status: {json.dumps(status)[:2000]}\n"
                f"--- operator log ---\n{log.read_text(errors='replace')[-4000:]}")


def test_the_operator_runs_the_seed_job_under_the_charts_service_account(stack, namespace, tmp_path):
    from img2img.local.supervisor import free_port

    if stack.catalog is None:
        pytest.skip("the stack has no tiny models (img2img_runner.tiny_models missing)")
    release_ns = f"i2i-sys-{uuid.uuid4().hex[:6]}"
    _ensure_namespace(stack, release_ns, restricted=True)
    health_port, metrics_port, runners_port = free_port(), free_port(), free_port()
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(stack_values(stack, namespace, health_port, metrics_port, runners_port)))
    manifests = render([values_file], namespace=release_ns)

    # What a cluster admin gets from `helm install`, less the Deployment: the operator runs as a local process below,
    # with the same configuration and the same identity (test_helm_ha.py runs the Deployment's pods themselves).
    installed = [m for m in manifests if m["kind"] not in ABSENT_KINDS | {"Deployment", "Service"}]
    assert {m["kind"] for m in installed} >= {"ServiceAccount", "Role", "RoleBinding", "ConfigMap"}
    stack.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=_as_list(installed))

    config = operator_config(manifests)
    # the operator runs here, not behind the chart's Service: runners reach it on this machine, and it has no pod to
    # label the leader (the Lease itself is taken under the chart's RBAC)
    config["runners"]["operatorUrl"] = f"http://127.0.0.1:{runners_port}"
    config["leaderElection"]["labelPod"] = False
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    kubeconfig = _token_kubeconfig(stack, release_ns, FULLNAME, tmp_path / "operator.kubeconfig")
    log = tmp_path / "operator.log"
    env = {**os.environ, **{k: v for k, v in stack.env.items() if k.startswith("AWS_")},
           "KUBECONFIG": str(kubeconfig), "IMG2IMG_OPERATOR_CONFIG": str(config_file), "POD_NAME": "test-operator"}
    operator = Path(sys.executable).parent / "img2img-operator"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(operator), "--config", str(config_file)], stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    try:
        _wait_healthy(health_port, proc, log)
        job = yaml.safe_load((EXAMPLES / "job.yaml").read_text())
        stack.kubectl("-n", namespace, "create", "-f", "-", input=json.dumps(job))
        status = _wait_terminal(stack, namespace, job["metadata"]["name"], 900, proc, log)
        text = log.read_text(errors="replace")
        assert status["status"] == "COMPLETED", f"{json.dumps(status, indent=1)[:3000]}\n--- operator log ---\n{text[-4000:]}"
        assert status["output"]["images"], status
        bucket, _, key = status["output"]["images"][0][len("s3://"):].partition("/")
        assert stack.s3().head_object(Bucket=bucket, Key=key)["ContentLength"] > 0
        lease = stack.get_json("-n", release_ns, "lease", config["leaderElection"]["leaseName"])
        assert lease["spec"]["holderIdentity"] == "test-operator"
        # its runner: a pod of the GPU class's implicit pool (scaled from zero) in the release namespace, under the
        # "restricted" profile; nothing of ours in the job's namespace
        runner = stack.get_json("-n", release_ns, "pod", status["runnerPod"])
        assert runner["metadata"]["labels"]["img2img.dev/pool"] == "local"
        assert stack.kubectl("-n", namespace, "get", "pods", "-o", "name").stdout == ""
        forbidden = [line for line in text.splitlines() if " 403" in line or "Forbidden" in line or "forbidden" in line]
        assert not forbidden, "the operator was refused API calls:\n" + "\n".join(forbidden[:20])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stack.kubectl("delete", "namespace", release_ns, "--wait=false", check=False)


# ---- 3. and nothing more -------------------------------------------------------------------------------------------
def _can_i(stack, user: str, namespace: str, verb: str, resource: str, name: str | None = None) -> str:
    groups = [f"--as-group={g}" for g in (*SA_GROUPS, f"system:serviceaccounts:{user.split(':')[2]}")]
    resource, _, subresource = resource.partition("/")
    extra = [f"--subresource={subresource}"] if subresource else []
    target = f"{resource}/{name}" if name else resource
    proc = stack.kubectl("auth", "can-i", verb, target, *extra, "-n", namespace, f"--as={user}", *groups,
                         check=False)
    return proc.stdout.strip()


def _install_rbac(stack, values: list[str], release_ns: str) -> list[dict]:
    manifests = render(sets=values, namespace=release_ns)
    _ensure_namespace(stack, release_ns)
    for ns in _namespaces_of(manifests):
        _ensure_namespace(stack, ns)
    rbac = [m for m in manifests if m["kind"] in {"ServiceAccount", "Role", "RoleBinding", "ClusterRole",
                                                   "ClusterRoleBinding"}]
    stack.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=_as_list(rbac))
    return rbac


def test_the_runner_service_account_can_do_nothing_in_the_api(stack, namespace):
    release_ns = f"i2i-sys-{uuid.uuid4().hex[:6]}"
    _install_rbac(stack, [f"watch.namespaces={{{namespace}}}", f"fullnameOverride=op-{release_ns}"], release_ns)
    runner = f"system:serviceaccount:{release_ns}:img2img-runner"
    try:
        answers = {(ns, verb, resource): _can_i(stack, runner, ns, verb, resource)
                   for ns in (release_ns, namespace)
                   for verb in ("get", "list", "watch", "create", "delete")
                   for resource in ("pods", "secrets", "configmaps", "img2imgjobs.img2img.dev",
                                    "runnerpools.img2img.dev", "events")}
        assert set(answers.values()) == {"no"}, answers
    finally:
        stack.kubectl("delete", "namespace", release_ns, "--wait=false", check=False)


def test_the_operator_account_gets_exactly_its_rules_in_the_watched_namespace_and_nothing_elsewhere(stack, namespace):
    release_ns = f"i2i-sys-{uuid.uuid4().hex[:6]}"
    fullname = f"op-{release_ns}"
    _install_rbac(stack, [f"watch.namespaces={{{namespace}}}", f"fullnameOverride={fullname}"], release_ns)
    operator = f"system:serviceaccount:{release_ns}:{fullname}"
    try:
        for verb, resource in [("watch", "img2imgjobs.img2img.dev"), ("delete", "img2imgjobs.img2img.dev"),
                               ("patch", "img2imgjobs.img2img.dev/status"), ("create", "events")]:
            assert _can_i(stack, operator, namespace, verb, resource) == "yes", (verb, resource)
        for verb, resource in [("get", "secrets"), ("list", "secrets"), ("create", "img2imgjobs.img2img.dev"),
                               ("patch", "img2imgjobs.img2img.dev"), ("list", "namespaces"),
                               ("update", "img2imgjobs.img2img.dev/status"), ("patch", "pods"),
                               ("create", "pods/exec"), ("get", "configmaps"), ("create", "serviceaccounts/token"),
                               ("create", "pods"), ("list", "pods"), ("delete", "pods"),
                               ("list", "runnerpools.img2img.dev")]:
            assert _can_i(stack, operator, namespace, verb, resource) == "no", (verb, resource)
        # the runner namespace (the release's): runner pods, the pools, the token Secret by name
        for verb, resource in [("create", "pods"), ("delete", "pods"), ("watch", "pods"), ("patch", "pods"),
                               ("watch", "runnerpools.img2img.dev"), ("patch", "runnerpools.img2img.dev/status"),
                               ("create", "secrets"), ("create", "leases.coordination.k8s.io")]:
            assert _can_i(stack, operator, release_ns, verb, resource) == "yes", (release_ns, verb, resource)
        for verb in ("get", "update"):  # the leader election's Lease, by name
            assert _can_i(stack, operator, release_ns, verb, "leases.coordination.k8s.io", fullname) == "yes", verb
            assert _can_i(stack, operator, release_ns, verb, "leases.coordination.k8s.io", "other") == "no", verb
        for verb, resource in [("list", "secrets"), ("get", "secrets"), ("create", "pods/exec"),
                               ("create", "runnerpools.img2img.dev"), ("delete", "runnerpools.img2img.dev")]:
            assert _can_i(stack, operator, release_ns, verb, resource) == "no", (release_ns, verb, resource)
        assert _can_i(stack, operator, release_ns, "get", "secrets", "img2img-runner-token") == "yes"
        assert _can_i(stack, operator, release_ns, "get", "secrets", "img2img-webhook-signing-key") == "yes"
        assert _can_i(stack, operator, release_ns, "get", "secrets", "img2img-s3") == "no"
        # the webhooks' public key: its ConfigMap written by name (created once), no other ConfigMap
        assert _can_i(stack, operator, release_ns, "patch", "configmaps", "img2img-webhook-public-key") == "yes"
        assert _can_i(stack, operator, release_ns, "create", "configmaps") == "yes"
        for verb, name in [("get", None), ("list", None), ("patch", f"{fullname}-config")]:
            assert _can_i(stack, operator, release_ns, verb, "configmaps", name) == "no", (verb, name)
        other = f"t-other-{uuid.uuid4().hex[:6]}"
        _ensure_namespace(stack, other)
        for verb, resource in [("list", "img2imgjobs.img2img.dev"), ("create", "pods"),
                               ("list", "runnerpools.img2img.dev")]:
            assert _can_i(stack, operator, other, verb, resource) == "no", (other, verb, resource)
        stack.kubectl("delete", "namespace", other, "--wait=false", check=False)
    finally:
        stack.kubectl("delete", "namespace", release_ns, "--wait=false", check=False)


def test_watching_every_namespace_grants_the_same_rules_cluster_wide(stack, namespace):
    release_ns = f"i2i-sys-{uuid.uuid4().hex[:6]}"
    fullname = f"op-{release_ns}"
    _install_rbac(stack, [f"fullnameOverride={fullname}"], release_ns)
    operator = f"system:serviceaccount:{release_ns}:{fullname}"
    try:
        assert _can_i(stack, operator, namespace, "patch", "img2imgjobs.img2img.dev/status") == "yes"
        assert _can_i(stack, operator, namespace, "create", "pods") == "no"  # runner pods: the release's only
        assert _can_i(stack, operator, release_ns, "create", "pods") == "yes"
        assert _can_i(stack, operator, namespace, "get", "secrets") == "no"
        assert _can_i(stack, operator, namespace, "create", "img2imgjobs.img2img.dev") == "no"
    finally:
        stack.kubectl("delete", "namespace", release_ns, "--wait=false", check=False)
        stack.kubectl("delete", "clusterrole,clusterrolebinding", fullname, "--wait=false", check=False)
