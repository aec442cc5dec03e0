"""The chart's operator in HA as the chart runs it: `helm install` on the embedded stack, its Deployment's two pods
run by the local executor (the operator image is this environment's `img2img-operator`), each in a network namespace
of its own, under the chart's ServiceAccount and RBAC (the in-cluster login: the pod's projected token, CA and
namespace at /var/run/secrets/kubernetes.io/serviceaccount, KUBERNETES_SERVICE_HOST/PORT), the runners reaching the
leader through the chart's runner Service (the executor proxies it to the pod its selector picks: the one labelled
leader). Runners are no-op runners (bench/noop-image): the operator is under test, not the models.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import ssl
import subprocess
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import pytest
import yaml

from helm_support import CHART, RELEASE, helm, stack_values

pytestmark = pytest.mark.stack

ELECTION = {"leaseDurationSeconds": 10, "renewDeadlineSeconds": 7, "retryPeriodSeconds": 1}
LIMIT = 2  # the GPU class's maxConcurrent
JOBS = 12
JOB_SECONDS = 1.5  # each no-op job lasts this long: the batch takes several seconds, time to kill the leader in it
OPERATOR = "app.kubernetes.io/component=operator"
LEADER_LABEL = "img2img.dev/leader"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def wait_for(what: str, check, timeout: float, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def tiny_png() -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def pod_dir(stack, pod: dict) -> Path:
    meta = pod["metadata"]
    return stack.info.state_dir / "executor" / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid']}"


def operator_pid(stack, pod: dict) -> int:
    """The operator container's process, from the executor's process table (the container's pid file)."""
    return int((pod_dir(stack, pod) / "containers" / "operator" / "pid").read_text().split()[0])


def operator_log(stack, pod: dict) -> str:
    return (pod_dir(stack, pod) / "logs" / "operator.log").read_text(errors="replace")


def in_container(pid: int, name: str) -> str:
    """A file of the service account's folder, as the container sees it (through its mount namespace)."""
    return subprocess.run(["nsenter", "-t", str(pid), "-m", "cat", f"{SA_DIR}/{name}"], capture_output=True,
                          text=True, check=True).stdout


def whoami(stack, token: str) -> str:
    """The user the API server sees for ``token`` (a SelfSubjectReview, as `kubectl auth whoami`)."""
    cluster = yaml.safe_load(stack.kubeconfig.read_text())["clusters"][0]["cluster"]
    ctx = ssl.create_default_context()
    if "certificate-authority-data" in cluster:
        ctx.load_verify_locations(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    else:
        ctx.load_verify_locations(cafile=cluster["certificate-authority"])
    body = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}).encode()
    req = urllib.request.Request(f"{cluster['server']}/apis/authentication.k8s.io/v1/selfsubjectreviews", body,
                                 {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as response:
        return json.loads(response.read())["status"]["userInfo"]["username"]


def test_helm_installed_replicas_the_leader_sigkilled_mid_batch_the_other_takes_over(stack, namespace, tmp_path):
    from kubernetes import client

    from img2img.local.bootstrap import TINY_POOL_MODELS, pool_manifest
    from img2img.local.components import NOOP_IMAGE, OPERATOR_IMAGE
    from img2img.local.executor.pod_network import NETWORK_ANNOTATION
    from img2img.local.supervisor import free_port

    if stack.catalog is None:
        pytest.skip("the stack has no tiny models (img2img_runner.tiny_models missing)")
    release_ns = f"i2i-ha-{uuid.uuid4().hex[:6]}"
    stack.kubectl("create", "namespace", release_ns)
    env = stack.env
    stack.kubectl("-n", release_ns, "create", "secret", "generic", "img2img-s3",
                  f"--from-literal=AWS_ACCESS_KEY_ID={env['AWS_ACCESS_KEY_ID']}",
                  f"--from-literal=AWS_SECRET_ACCESS_KEY={env['AWS_SECRET_ACCESS_KEY']}")
    health, metrics, runners = free_port(), free_port(), free_port()
    values = stack_values(stack, namespace, health, metrics, runners)
    repo, tag = OPERATOR_IMAGE.split(":")
    values["operator"].update({"replicas": 2, "image": {"repository": repo, "tag": tag},
                               "podAnnotations": {NETWORK_ANNOTATION: "pod"}})
    values["metrics"]["service"] = {"port": metrics}
    repo, tag = NOOP_IMAGE.split(":")
    values["runner"]["image"] = {"repository": repo, "tag": tag}
    values["runner"]["resources"] = {"requests": {"cpu": "100m", "memory": "256Mi"}}
    values["runner"]["env"] = {"IMG2IMG_NOOP_SECONDS": str(JOB_SECONDS)}
    values["gpuClasses"] = {"cpu": {"resources": {"cpu": "100m"}, "maxConcurrent": LIMIT}}
    values["defaultGpuClass"] = "cpu"
    values["leaderElection"] = ELECTION
    values["retryBackoff"] = {"initialSeconds": 1, "maxSeconds": 2}
    values["timing"] = {"tickSeconds": 1}
    values["runners"].update({"leaseSeconds": 10, "heartbeatSeconds": 1, "takeWaitSeconds": 5})
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    api = stack.api_client()
    try:
        helm("install", RELEASE, str(CHART), "-n", release_ns, "-f", str(values_file),
             f"--kubeconfig={stack.kubeconfig}")

        def operator_pods() -> list[dict]:
            return [p for p in stack.get_json("-n", release_ns, "pods", "-l", OPERATOR)["items"]
                    if not p["metadata"].get("deletionTimestamp")]

        def lease_holder() -> str:
            proc = stack.kubectl("-n", release_ns, "get", "lease", RELEASE, "-o", "jsonpath={.spec.holderIdentity}",
                                 check=False)
            return proc.stdout.strip() if proc.returncode == 0 else ""

        running = wait_for("the Deployment's two pods running", lambda: (lambda pods: len(pods) == 2 and all(
            p["status"].get("phase") == "Running" for p in pods) and pods)(operator_pods()), timeout=120)
        leader_name = wait_for("a leader, its pod labelled", lambda: (lambda h: h and any(
            p["metadata"]["name"] == h and (p["metadata"].get("labels") or {}).get(LEADER_LABEL) == "true"
            for p in operator_pods()) and h)(lease_holder()), timeout=120)
        leader = next(p for p in running if p["metadata"]["name"] == leader_name)
        standby = next(p for p in running if p["metadata"]["name"] != leader_name)

        # The operator's only credentials are its pod's: the ServiceAccount's token at the standard path, as the
        # container sees it (its mount namespace), the API server behind KUBERNETES_SERVICE_HOST, no kubeconfig.
        pid = operator_pid(stack, leader)
        assert whoami(stack, in_container(pid, "token")) == f"system:serviceaccount:{release_ns}:{RELEASE}"
        assert in_container(pid, "namespace") == release_ns
        assert "BEGIN CERTIFICATE" in in_container(pid, "ca.crt")
        environ = dict(line.split("=", 1) for line in
                       Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in line)
        assert "KUBECONFIG" not in environ and environ["KUBERNETES_SERVICE_HOST"] == "127.0.0.1", environ
        assert environ["POD_NAME"] == leader_name

        stack.kubectl("apply", "--server-side", "-f", "-", input=pool_manifest(
            "ha", "cpu", TINY_POOL_MODELS, min_ready=1, namespace=release_ns, buffer=1, maxRunners=3,
            idleSeconds=30))
        image = tiny_png()
        names = [f"h{i}" for i in range(JOBS)]
        for name in names:
            stack.kubectl("create", "-f", "-", input=json.dumps({
                "apiVersion": "img2img.dev/v1alpha1", "kind": "Img2ImgJob",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"input": {"api": {"method": "POST", "endpoint": "/sdapi/v1/img2img"},
                                   "payload": {"init_images": [image], "prompt": "a red square", "steps": 2,
                                               "width": 64, "height": 64,
                                               "override_settings": {"sd_model_checkpoint": "sd_xl_base_1.0"}}}}}))

        def poll() -> dict[str, str]:
            states = {j["metadata"]["name"]: (j.get("status") or {}).get("status")
                      for j in stack.get_json("-n", namespace, "img2imgjobs")["items"]}
            assert sum(s == "IN_PROGRESS" for s in states.values()) <= LIMIT, states
            return states

        wait_for("a job completed and more to do", lambda: (lambda s: "COMPLETED" in s.values() and sum(
            v not in ("COMPLETED", "FAILED") for v in s.values()) >= 4)(poll()), timeout=300, every=0.2)
        # SIGKILL the leader's process, and its pod is gone with it (as with a lost node): its container is not
        # restarted under the same name, which would lead again at once; the ReplicaSet makes a new standby.
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        client.CoreV1Api(api).delete_namespaced_pod(leader_name, release_ns, grace_period_seconds=0)
        wait_for("the standby to take the Lease", lambda: poll() and lease_holder() == standby["metadata"]["name"],
                 timeout=60, every=0.1)
        took = time.monotonic() - killed
        # the lease runs out leaseDurationSeconds after the standby last saw it renewed (within a retry period of
        # the kill), and the standby looks every retryPeriodSeconds; plus room for this loaded machine's polling
        assert took <= ELECTION["leaseDurationSeconds"] + 2 * ELECTION["retryPeriodSeconds"] + 5, took
        wait_for("every job done", lambda: all(s in ("COMPLETED", "FAILED") for s in poll().values()),
                 timeout=300, every=0.3)
        uids = {}
        for name in names:
            job = stack.get_json("-n", namespace, "img2imgjob", name)
            final = job["status"]
            assert final["status"] == "COMPLETED", (name, final)
            # a later attempt only when an earlier one was lost (the runner's report did not outlast the failover)
            assert final["attempts"] == 1 or final["lastFailure"]["reason"] == "RunnerLost", (name, final)
            uids[job["metadata"]["uid"]] = name
        runner_logs = "".join(p.read_text(errors="replace")
                              for p in (stack.info.state_dir / "executor" / "pods").glob(
                                  f"{release_ns}_*/logs/runner.log"))
        assigned = Counter(re.findall(r"assigned \(lease ([0-9a-f-]+)\.(\d+)\.", runner_logs))
        assert {uid for uid, _ in assigned} >= set(uids), "a job was never handed to a runner"
        assert max(n for (uid, _), n in assigned.items() if uid in uids) == 1, "an attempt was handed out twice"
        # the new leader serves the runners: its pod carries the label the runner Service selects
        new_leader = next(p for p in operator_pods() if p["metadata"]["name"] == standby["metadata"]["name"])
        assert new_leader["metadata"]["labels"].get(LEADER_LABEL) == "true"
        # nothing the chart's RBAC refuses was asked for, by either replica
        for pod in (leader, standby):
            text = operator_log(stack, pod)
            refused = [line for line in text.splitlines() if " 403" in line or "orbidden" in line]
            assert not refused, f"{pod['metadata']['name']} was refused API calls:\n" + "\n".join(refused[:20])
    finally:
        helm("uninstall", RELEASE, "-n", release_ns, f"--kubeconfig={stack.kubeconfig}", check=False)
        stack.kubectl("delete", "namespace", release_ns, "--wait=false", check=False)
