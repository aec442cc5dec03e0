"""The local executor against the real API server: it schedules, runs and reports pods as kube-scheduler + kubelet do.

Most tests run their own executor (module fixture `executor`): its own tainted Node, its own schedulerName, its own
state folder — so the stack's node and whatever else runs on the stack cannot disturb GPU accounting, and the code
under test is the code in this checkout. One test checks the stack's own executor (node `local-gpu-0`).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from img2img.kube import Kube, connect
from img2img.local.components import python_image

pytestmark = pytest.mark.stack

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = str(Path(sys.executable).parent)
HOLD = "img2img.dev/test-hold"  # a finalizer that keeps a deleted pod readable after the executor is done with it
WAIT_FOR_GO = "import os, time\nwhile not os.path.exists('go'):\n    time.sleep(0.05)\n"  # until the test says go


@dataclass
class ExecutorHandle:
    node: str
    scheduler: str
    taint_key: str
    state_dir: Path
    log: Path
    config: Path
    proc: subprocess.Popen
    kubeconfig: Path

    def pod_dir(self, namespace: str, pod: dict) -> Path:
        return self.state_dir / "pods" / f"{namespace}_{pod['metadata']['name']}_{pod['metadata']['uid']}"

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def start_executor(stack, state_dir: Path, node: str, scheduler: str, taint_key: str, *, gpus: int = 1,
                   shutdown_grace: float = 5, **extra) -> ExecutorHandle:
    config = {
        "nodeName": node,
        "capacity": {"cpu": "4", "memory": "16Gi", "pods": "20", "nvidia.com/gpu": str(gpus)},
        "labels": {"nvidia.com/gpu.product": "TEST-GPU", "img2img.dev/executor-test": node},
        "taints": [{"key": taint_key, "value": node, "effect": "NoSchedule"}],
        "stateDir": str(state_dir),
        "schedulerName": scheduler,
        "shutdownGracePeriodSeconds": shutdown_grace,
        "images": {"img2img/runner:*": {**python_image(), "env": {"IMAGE_ENV": "from-the-table"}}},
        **extra,
    }
    state_dir.mkdir(parents=True, exist_ok=True)
    config_file = state_dir.parent / f"{node}.yaml"
    config_file.write_text(yaml.safe_dump(config))
    log = state_dir.parent / f"{node}.log"
    log_start = log.stat().st_size if log.exists() else 0  # a restart appends to the same log
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "img2img.local.executor", f"--kubeconfig={stack.kubeconfig}",
             f"--config={config_file}"],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
        )
    handle = ExecutorHandle(node, scheduler, taint_key, state_dir, log, config_file, proc, stack.kubeconfig)
    kube = connect(stack.kubeconfig)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        n = kube.get(f"/api/v1/nodes/{node}")
        ready = n and any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
        if ready and not any(t["key"] == "node.kubernetes.io/not-ready" for t in n["spec"].get("taints") or []) \
                and b"executor for node" in log.read_bytes()[log_start:]:  # this run registered and said how
            return handle
        assert proc.poll() is None, f"executor exited:\n{handle.logs()}"
        time.sleep(0.2)
    raise AssertionError(f"node {node} not Ready:\n{handle.logs()}")


def container_pids(handle: ExecutorHandle) -> list[int]:
    pids = []
    for line in handle.logs().splitlines():
        if " started: pid " in line:
            pids.append(int(line.split(" started: pid ")[1].split(",")[0]))
    return pids


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_executor(handle: ExecutorHandle, sig: int = signal.SIGTERM) -> None:
    if handle.proc.poll() is None:
        handle.proc.send_signal(sig)
        handle.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def executor(stack, tmp_path_factory):
    ident = uuid.uuid4().hex[:6]
    node = f"exec-test-{ident}"
    handle = start_executor(stack, tmp_path_factory.mktemp("executor") / "state", node, f"executor-test-{ident}",
                            "img2img.dev/executor-test")
    try:
        yield handle
    finally:
        stop_executor(handle)
        stack.kubectl("delete", "node", node, "--wait=false", check=False)
    leftovers = [pid for pid in container_pids(handle) if alive(pid)]
    assert not leftovers, f"container processes outlived the executor: {leftovers}"


@pytest.fixture
def kube(stack) -> Kube:
    return connect(stack.kubeconfig)


# ---- helpers ------------------------------------------------------------------------------------------------------
def make_pod(handle: ExecutorHandle | None, name: str, script: str | None = None, *, gpus: int | None = None,
             image: str = "img2img/runner:local", command: list[str] | None = None, **spec) -> dict:
    container = {"name": "main", "image": image}
    if command is not None:
        container["command"] = command
    elif script is not None:
        container["command"] = ["python", "-c", script]
    if gpus is not None:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    container.update(spec.pop("container", {}))
    pod_spec = {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5, "containers": [container], **spec}
    if handle is not None:
        pod_spec.setdefault("schedulerName", handle.scheduler)
        pod_spec.setdefault("nodeSelector", {"img2img.dev/executor-test": handle.node})
        pod_spec.setdefault("tolerations", [{"key": handle.taint_key, "operator": "Exists"}])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": pod_spec}


def create(kube: Kube, namespace: str, manifest: dict) -> dict:
    return kube.request("POST", f"/api/v1/namespaces/{namespace}/pods", body=manifest)


def get(kube: Kube, namespace: str, name: str) -> dict | None:
    return kube.get(f"/api/v1/namespaces/{namespace}/pods/{name}")


def wait_for(kube: Kube, namespace: str, name: str, predicate, timeout: float = 60, what: str = "") -> dict:
    deadline = time.monotonic() + timeout
    pod = None
    while time.monotonic() < deadline:
        pod = get(kube, namespace, name)
        if pod is not None and predicate(pod):
            return pod
        time.sleep(0.2)
    raise AssertionError(f"pod {namespace}/{name}: timed out waiting for {what or predicate}:\n"
                         f"{json.dumps((pod or {}).get('status'), indent=1)}")


def pod_versions(kube: Kube, namespace: str, name: str, resource_version: str, timeout: int = 30) -> Iterator[dict]:
    """Every version of the pod written after `resource_version`: a watch misses none (polling can miss a short one)."""
    events = kube.watch(f"/api/v1/namespaces/{namespace}/pods", resource_version,
                        query={"fieldSelector": f"metadata.name={name}"}, timeout_seconds=timeout)
    for kind, pod in events:
        if kind in ("ADDED", "MODIFIED"):
            yield pod


def phase_is(*phases):
    return lambda p: p.get("status", {}).get("phase") in phases


def container_state(pod: dict) -> dict:
    return (pod["status"].get("containerStatuses") or [{}])[0].get("state") or {}


def condition(pod: dict, ctype: str) -> dict | None:
    return next((c for c in pod["status"].get("conditions") or [] if c["type"] == ctype), None)


def unschedulable(pod: dict) -> bool:
    c = condition(pod, "PodScheduled")
    return bool(c and c["status"] == "False" and c.get("reason") == "Unschedulable")


def release(kube: Kube, namespace: str, name: str) -> None:
    kube.patch(f"/api/v1/namespaces/{namespace}/pods/{name}", {"metadata": {"finalizers": None}}, strategic=False)


# ---- tests --------------------------------------------------------------------------------------------------------
def test_pod_runs_to_succeeded_with_its_termination_message(executor, kube, namespace):
    script = (
        "import json, os, sys, time\n"
        "print('hello from', os.environ['HOSTNAME'], 'cwd', os.getcwd(), flush=True)\n"
        "print('image env', os.environ['IMAGE_ENV'], 'python', sys.executable, flush=True)\n"
        f"{WAIT_FOR_GO}"
        "open('/dev/termination-log', 'w').write(json.dumps({'result': 's3://b/k', 'error': None}))\n"
    )
    create(kube, namespace, make_pod(executor, "ok", script))
    running = wait_for(kube, namespace, "ok", phase_is("Running", "Succeeded", "Failed"), what="Running")
    assert running["status"]["phase"] == "Running"
    cs = running["status"]["containerStatuses"][0]
    assert cs["ready"] and cs["started"] and "startedAt" in cs["state"]["running"]
    assert condition(running, "Ready")["status"] == "True"
    assert running["status"]["podIP"] == "127.0.0.1" and running["status"]["startTime"]
    (executor.pod_dir(namespace, running) / "work" / "go").touch()
    pod = wait_for(kube, namespace, "ok", phase_is("Succeeded", "Failed"), what="a terminal phase")
    assert pod["spec"]["nodeName"] == executor.node
    assert pod["status"]["phase"] == "Succeeded"
    term = container_state(pod)["terminated"]
    assert term["exitCode"] == 0 and term["reason"] == "Completed"
    assert json.loads(term["message"]) == {"result": "s3://b/k", "error": None}
    assert term["startedAt"] <= term["finishedAt"]
    assert condition(pod, "Ready")["reason"] == "PodCompleted"
    assert condition(pod, "PodScheduled")["status"] == "True"
    log = (executor.pod_dir(namespace, pod) / "logs" / "main.log").read_text()
    assert "hello from ok cwd" in log and "image env from-the-table" in log
    assert f"python {VENV_BIN}" in log  # the image table's PATH picked the interpreter
    events = kube.request("GET", f"/api/v1/namespaces/{namespace}/events")["items"]
    reasons = {e["reason"] for e in events if e["involvedObject"]["name"] == "ok"}
    assert {"Scheduled", "Created", "Started"} <= reasons


def test_exit_code_3_fails_and_falls_back_to_the_log(executor, kube, namespace):
    script = "import sys\nprint('model not found: xl-base')\nsys.exit(3)\n"
    create(kube, namespace, make_pod(executor, "exit3", script,
                                     container={"terminationMessagePolicy": "FallbackToLogsOnError"}))
    pod = wait_for(kube, namespace, "exit3", phase_is("Succeeded", "Failed"), what="a terminal phase")
    assert pod["status"]["phase"] == "Failed"
    term = container_state(pod)["terminated"]
    assert (term["exitCode"], term["reason"]) == (3, "Error")
    assert term["message"] == "model not found: xl-base\n"


def test_env_from_secret_configmap_and_downward_api(executor, kube, namespace):
    kube.request("POST", f"/api/v1/namespaces/{namespace}/secrets", body={
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
        "stringData": {"AWS_SECRET_ACCESS_KEY": "s3cr3t", "AWS_ACCESS_KEY_ID": "key-id"}})
    kube.request("POST", f"/api/v1/namespaces/{namespace}/configmaps", body={
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"region": "us-east-1"}})
    script = (
        "import json, os\n"
        "keys = ['SECRET', 'KEY_ID', 'REGION', 'POD', 'NS', 'UID', 'COMBINED', 'KUBERNETES_SERVICE_HOST']\n"
        "open('/dev/termination-log', 'w').write(json.dumps({k: os.environ.get(k) for k in keys}))\n"
    )
    create(kube, namespace, make_pod(executor, "env", script, container={"env": [
        {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "AWS_SECRET_ACCESS_KEY"}}},
        {"name": "KEY_ID", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "AWS_ACCESS_KEY_ID"}}},
        {"name": "REGION", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "region"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
        {"name": "COMBINED", "value": "$(REGION)/$(POD)"},
    ]}))
    pod = wait_for(kube, namespace, "env", phase_is("Succeeded", "Failed"), what="a terminal phase")
    assert pod["status"]["phase"] == "Succeeded", pod["status"]
    env = json.loads(container_state(pod)["terminated"]["message"])
    assert env == {"SECRET": "s3cr3t", "KEY_ID": "key-id", "REGION": "us-east-1", "POD": "env", "NS": namespace,
                   "UID": pod["metadata"]["uid"], "COMBINED": "us-east-1/env", "KUBERNETES_SERVICE_HOST": "127.0.0.1"}


def test_missing_secret_is_create_container_config_error_until_it_exists(executor, kube, namespace):
    create(kube, namespace, make_pod(executor, "late", "print('ran')", container={"env": [
        {"name": "X", "valueFrom": {"secretKeyRef": {"name": "later", "key": "x"}}}]}))
    pod = wait_for(kube, namespace, "late",
                   lambda p: container_state(p).get("waiting", {}).get("reason") == "CreateContainerConfigError",
                   what="CreateContainerConfigError")
    assert container_state(pod)["waiting"]["message"] == 'secret "later" not found'
    assert pod["status"]["phase"] == "Pending"
    kube.request("POST", f"/api/v1/namespaces/{namespace}/secrets", body={
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "later"}, "stringData": {"x": "1"}})
    pod = wait_for(kube, namespace, "late", phase_is("Succeeded"), what="Succeeded once the Secret exists")


def test_no_command_is_create_container_error(executor, kube, namespace):
    create(kube, namespace, make_pod(executor, "nocmd"))
    pod = wait_for(kube, namespace, "nocmd",
                   lambda p: container_state(p).get("waiting", {}).get("reason") == "CreateContainerError",
                   what="CreateContainerError")
    assert "no command specified" in container_state(pod)["waiting"]["message"]


def test_active_deadline_seconds_kills_and_fails_the_pod(executor, kube, namespace):
    create(kube, namespace, make_pod(executor, "slow", command=["sleep", "300"], activeDeadlineSeconds=2))
    pod = wait_for(kube, namespace, "slow", phase_is("Succeeded", "Failed"), timeout=30, what="a terminal phase")
    assert (pod["status"]["phase"], pod["status"]["reason"]) == ("Failed", "DeadlineExceeded")
    assert pod["status"]["message"] == "Pod was active on the node longer than the specified deadline"
    term = container_state(pod)["terminated"]
    assert term["exitCode"] == 143 and term["reason"] == "Error"  # SIGTERM
    assert condition(pod, "DisruptionTarget") is None


def test_deletion_kills_the_process_after_the_grace_period_then_removes_the_pod(executor, kube, namespace):
    script = "trap '' TERM; sleep 300 & echo child $! ; wait"  # ignores SIGTERM: only SIGKILL ends it
    manifest = make_pod(executor, "doomed", command=["sh", "-c", script], terminationGracePeriodSeconds=2)
    manifest["metadata"]["finalizers"] = [HOLD]
    create(kube, namespace, manifest)
    pod = wait_for(kube, namespace, "doomed", phase_is("Running"), what="Running")
    pod_dir = executor.pod_dir(namespace, pod)
    wait = time.monotonic() + 10
    while "child" not in (pod_dir / "logs" / "main.log").read_text() and time.monotonic() < wait:
        time.sleep(0.1)
    main_pid = int((pod_dir / "containers" / "main" / "pid").read_text().split()[0])
    child_pid = int((pod_dir / "logs" / "main.log").read_text().split("child")[1].split()[0])
    assert alive(main_pid) and alive(child_pid)
    started = time.monotonic()
    kube.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/doomed")
    while alive(main_pid) and time.monotonic() - started < 30:
        time.sleep(0.05)
    lived = time.monotonic() - started  # SIGTERM is ignored: only the SIGKILL after the grace period ends it
    assert lived >= 1.9, f"killed {lived:.1f} s after the delete, before its 2 s grace period ran out"
    pod = wait_for(kube, namespace, "doomed", phase_is("Succeeded", "Failed"), timeout=30, what="a terminal phase")
    assert time.monotonic() - started >= 1.9
    deadline = time.monotonic() + 5
    while (alive(main_pid) or alive(child_pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(main_pid) and not alive(child_pid)
    assert pod["status"]["phase"] == "Failed"
    assert container_state(pod)["terminated"]["exitCode"] == 137
    # the executor finalized the deletion (grace 0); only our finalizer holds the object now
    pod = wait_for(kube, namespace, "doomed", lambda p: p["metadata"].get("deletionGracePeriodSeconds") == 0,
                   what="the kubelet's final delete")
    release(kube, namespace, "doomed")
    wait_for_gone(kube, namespace, "doomed")


def wait_for_gone(kube: Kube, namespace: str, name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while get(kube, namespace, name) is not None:
        assert time.monotonic() < deadline, f"pod {name} still exists"
        time.sleep(0.2)


def test_deleted_pod_disappears_without_finalizers(executor, kube, namespace):
    create(kube, namespace, make_pod(executor, "quick-delete", command=["sleep", "300"]))
    wait_for(kube, namespace, "quick-delete", phase_is("Running"), what="Running")
    kube.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/quick-delete")
    wait_for_gone(kube, namespace, "quick-delete")


def test_two_gpus_on_a_one_gpu_node_stay_pending_unschedulable(executor, kube, namespace):
    create(kube, namespace, make_pod(executor, "greedy", "print(1)", gpus=2))
    pod = wait_for(kube, namespace, "greedy", unschedulable, what="Unschedulable")
    message = condition(pod, "PodScheduled")["message"]
    assert message.startswith("0/") and "1 Insufficient nvidia.com/gpu" in message
    time.sleep(1)
    pod = get(kube, namespace, "greedy")
    assert pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName")


def test_node_selector_mismatch_stays_pending(executor, kube, namespace):
    manifest = make_pod(executor, "picky", "print(1)", nodeSelector={"nvidia.com/gpu.product": "H100"})
    create(kube, namespace, manifest)
    pod = wait_for(kube, namespace, "picky", unschedulable, what="Unschedulable")
    assert "node(s) didn't match Pod's node affinity/selector" in condition(pod, "PodScheduled")["message"]
    assert "Insufficient" not in condition(pod, "PodScheduled")["message"]
    assert pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName")


def test_second_one_gpu_pod_waits_for_the_first(executor, kube, namespace):
    create(kube, namespace, make_pod(executor, "first", WAIT_FOR_GO, gpus=1))
    first = wait_for(kube, namespace, "first", phase_is("Running"), what="Running")
    create(kube, namespace, make_pod(executor, "second", "print('my turn')", gpus=1))
    second = wait_for(kube, namespace, "second", unschedulable, what="Unschedulable")
    assert "1 Insufficient nvidia.com/gpu" in condition(second, "PodScheduled")["message"]
    (executor.pod_dir(namespace, first) / "work" / "go").touch()
    first = wait_for(kube, namespace, "first", phase_is("Succeeded", "Failed"), what="first done")
    second = wait_for(kube, namespace, "second", phase_is("Succeeded", "Failed"), what="second done")
    assert first["status"]["phase"] == second["status"]["phase"] == "Succeeded"
    assert container_state(second)["terminated"]["startedAt"] >= container_state(first)["terminated"]["finishedAt"]
    assert second["spec"]["nodeName"] == executor.node


def test_unknown_image_is_err_image_pull_then_image_pull_back_off(executor, kube, namespace):
    created = create(kube, namespace, make_pod(executor, "noimage", "print(1)", image="registry.example/none:1"))
    seen = set()
    with closing(pod_versions(kube, namespace, "noimage", created["metadata"]["resourceVersion"])) as versions:
        for pod in versions:
            reason = container_state(pod).get("waiting", {}).get("reason") if pod.get("status", {}).get(
                "containerStatuses") else None
            if reason:
                seen.add(reason)
                assert pod["status"]["phase"] == "Pending"
            if {"ErrImagePull", "ImagePullBackOff"} <= seen:
                break
    assert {"ErrImagePull", "ImagePullBackOff"} <= seen, seen
    assert 'Back-off pulling image "registry.example/none:1"' in container_state(pod)["waiting"]["message"]


def test_node_pressure_eviction_hook(executor, kube, namespace):
    create(kube, namespace, make_pod(executor, "victim", command=["sleep", "300"]))
    wait_for(kube, namespace, "victim", phase_is("Running"), what="Running")
    kube.patch(f"/api/v1/namespaces/{namespace}/pods/victim",
               {"metadata": {"annotations": {"local.img2img.dev/evict": "true"}}}, strategic=False)
    pod = wait_for(kube, namespace, "victim", phase_is("Succeeded", "Failed"), timeout=30, what="a terminal phase")
    assert (pod["status"]["phase"], pod["status"]["reason"]) == ("Failed", "Evicted")
    assert pod["status"]["message"].startswith("The node was low on resource: memory.")
    target = condition(pod, "DisruptionTarget")
    assert (target["status"], target["reason"]) == ("True", "TerminationByKubelet")
    assert "terminated" in container_state(pod)


def test_eviction_api_is_a_graceful_deletion_with_disruption_target(executor, kube, namespace):
    manifest = make_pod(executor, "drained", command=["sleep", "300"])
    manifest["metadata"]["finalizers"] = [HOLD]
    create(kube, namespace, manifest)
    wait_for(kube, namespace, "drained", phase_is("Running"), what="Running")
    kube.request("POST", f"/api/v1/namespaces/{namespace}/pods/drained/eviction", body={
        "apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "drained", "namespace": namespace}})
    pod = wait_for(kube, namespace, "drained", phase_is("Succeeded", "Failed"), timeout=30, what="a terminal phase")
    assert pod["metadata"].get("deletionTimestamp")
    target = condition(pod, "DisruptionTarget")
    assert (target["status"], target["reason"]) == ("True", "EvictionByEvictionAPI")  # set by the API server, kept
    assert pod["status"]["phase"] == "Failed" and container_state(pod)["terminated"]["exitCode"] == 143
    release(kube, namespace, "drained")
    wait_for_gone(kube, namespace, "drained")


def test_volumes_are_mounted_where_the_container_expects_them(executor, kube, namespace, tmp_path):
    if "mount namespaces on" not in executor.logs():
        pytest.skip("no mount namespaces on this machine (not root)")
    kube.request("POST", f"/api/v1/namespaces/{namespace}/configmaps", body={
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "catalog"}, "data": {"catalog.yaml": "a: 1\n"}})
    kube.request("POST", f"/api/v1/namespaces/{namespace}/secrets", body={
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tls"}, "stringData": {"key.pem": "PEM"}})
    host = tmp_path / "host"
    host.mkdir()
    (host / "in.txt").write_text("from the host")
    # Mount targets missing on the host are created there (as a runtime creates them in an image): keep them in
    # one throwaway folder.
    root = f"/tmp/img2img-executor-test-{uuid.uuid4().hex[:6]}"
    script = (
        "import json, os\n"
        f"root = {root!r}\n"
        "sa = '/var/run/secrets/kubernetes.io/serviceaccount'\n"
        "out = {'catalog': open(root + '/etc/catalog.yaml').read(), 'secret': open(root + '/tls/key.pem').read(),\n"
        "       'host': open(root + '/host/in.txt').read(),\n"
        "       'sa': sorted(os.listdir(sa)) if os.path.isdir(sa) else None}\n"
        "open(root + '/scratch/x', 'w').write('scratch')\n"
        "open(root + '/shared/' + os.environ['HOSTNAME'], 'w').write('pvc')\n"
        "out['shared'] = sorted(os.listdir(root + '/shared'))\n"
        "try:\n"
        "    open(root + '/tls/new', 'w')\n"
        "except OSError:\n"
        "    out['secret_read_only'] = True\n"
        "open(root + '/custom/termination', 'w').write(json.dumps(out))\n"
    )

    def volume_pod(name):
        return make_pod(executor, name, script, volumes=[
            {"name": "catalog", "configMap": {"name": "catalog"}},
            {"name": "tls", "secret": {"secretName": "tls"}},
            {"name": "host", "hostPath": {"path": str(host), "type": "Directory"}},
            {"name": "scratch", "emptyDir": {}},
            {"name": "shared", "persistentVolumeClaim": {"claimName": "models"}},
        ], container={"terminationMessagePath": f"{root}/custom/termination", "volumeMounts": [
            {"name": "catalog", "mountPath": f"{root}/etc"},
            {"name": "tls", "mountPath": f"{root}/tls"},
            {"name": "host", "mountPath": f"{root}/host"},
            {"name": "scratch", "mountPath": f"{root}/scratch"},
            {"name": "shared", "mountPath": f"{root}/shared"},
        ]})

    try:
        create(kube, namespace, volume_pod("vol-a"))
        a = wait_for(kube, namespace, "vol-a", phase_is("Succeeded", "Failed"), what="a terminal phase")
        assert a["status"]["phase"] == "Succeeded", a["status"]
        create(kube, namespace, volume_pod("vol-b"))
        b = wait_for(kube, namespace, "vol-b", phase_is("Succeeded", "Failed"), what="a terminal phase")
        assert b["status"]["phase"] == "Succeeded", b["status"]
        out = json.loads(container_state(b)["terminated"]["message"])
        assert out["catalog"] == "a: 1\n" and out["secret"] == "PEM" and out["host"] == "from the host"
        assert out["secret_read_only"] is True
        assert out["shared"] == ["vol-a", "vol-b"]  # one folder per claim, shared by the claim's pods
        if out["sa"] is not None:  # the ServiceAccount admission plugin added the projected token volume
            assert out["sa"] == ["ca.crt", "namespace", "token"]
        assert (executor.pod_dir(namespace, b) / "volumes" / "scratch" / "x").read_text() == "scratch"
        # the mounts existed only in the containers' mount namespaces
        assert not Path(f"{root}/scratch/x").exists() and not Path(f"{root}/host/in.txt").exists()
    finally:
        subprocess.run(["rm", "-rf", root])


def test_a_pod_shaped_like_the_operators_runner_pod(executor, kube, namespace):
    """emptyDir on /tmp (the executor's state dir is under /tmp here), the runner's security settings, no token."""
    script = (
        "import json, os, tempfile\n"
        "with tempfile.NamedTemporaryFile(dir='/tmp', delete=False) as f:\n"
        "    f.write(b'scratch')\n"
        "report = {'tmp': sorted(os.listdir('/tmp')), 'attempt': os.environ['IMG2IMG_ATTEMPT'],\n"
        "          'token': os.path.exists('/var/run/secrets/kubernetes.io/serviceaccount/token')}\n"
        "open('/dev/termination-log', 'w').write(json.dumps(report))\n"
    )
    manifest = make_pod(executor, "runner-1", script, gpus=1, activeDeadlineSeconds=120,
                        automountServiceAccountToken=False, enableServiceLinks=False,
                        securityContext={"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                                         "seccompProfile": {"type": "RuntimeDefault"}},
                        volumes=[{"name": "tmp", "emptyDir": {}}],
                        container={"env": [{"name": "IMG2IMG_ATTEMPT", "value": "1"}],
                                   "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                                   "terminationMessagePath": "/dev/termination-log",
                                   "terminationMessagePolicy": "FallbackToLogsOnError",
                                   "securityContext": {"allowPrivilegeEscalation": False,
                                                       "capabilities": {"drop": ["ALL"]},
                                                       "readOnlyRootFilesystem": False}})
    create(kube, namespace, manifest)
    pod = wait_for(kube, namespace, "runner-1", phase_is("Succeeded", "Failed"), what="a terminal phase")
    assert pod["status"]["phase"] == "Succeeded", pod["status"]
    report = json.loads(container_state(pod)["terminated"]["message"])
    assert report["attempt"] == "1" and report["token"] is False
    if "mount namespaces on" in executor.logs():
        # a fresh /tmp: only the file it wrote, and the image's own folders when this checkout lies in /tmp
        image_dirs = {Path(p).parts[2] for p in python_image()["paths"] if Path(p).parts[1:2] == ("tmp",)}
        assert len(set(report["tmp"]) - image_dirs) == 1, report["tmp"]
        written = {p.name for p in (executor.pod_dir(namespace, pod) / "volumes" / "tmp").iterdir()}
        assert len(written - image_dirs) == 1


def test_a_burst_of_pods_all_run_to_completion(executor, kube, namespace):
    names = [f"burst-{i:02d}" for i in range(12)]
    for name in names:
        script = "echo -n $HOSTNAME > /dev/termination-log"
        create(kube, namespace, make_pod(executor, name, command=["sh", "-c", script]))
    for name in names:
        pod = wait_for(kube, namespace, name, phase_is("Succeeded", "Failed"), timeout=120, what="a terminal phase")
        assert pod["status"]["phase"] == "Succeeded"
        assert container_state(pod)["terminated"]["message"] == name
    assert "Connection pool is full" not in executor.logs()


def test_kubelet_admission_rejects_a_pod_bound_past_capacity(executor, kube, namespace):
    manifest = make_pod(executor, "forced", "print(1)", gpus=3)
    manifest["spec"]["nodeName"] = executor.node  # bypasses the scheduler, as a static assignment does
    create(kube, namespace, manifest)
    pod = wait_for(kube, namespace, "forced", phase_is("Failed"), what="Failed")
    assert pod["status"]["reason"] == "OutOfnvidia.com/gpu"
    assert "Node didn't have enough resource: nvidia.com/gpu, requested: 3" in pod["status"]["message"]


def test_restart_policy_on_failure_restarts_with_backoff_then_succeeds(executor, kube, namespace):
    script = ("import os, sys\n"
              "n = len(os.listdir('.'))\n"
              "open(f'run{n}', 'w').close()\n"
              "sys.exit(0 if n >= 1 else 1)\n")
    create(kube, namespace, make_pod(executor, "flaky", script, restartPolicy="OnFailure"))
    pod = wait_for(kube, namespace, "flaky", phase_is("Succeeded", "Failed"), what="a terminal phase")
    cs = pod["status"]["containerStatuses"][0]
    assert pod["status"]["phase"] == "Succeeded"
    assert cs["restartCount"] == 1 and cs["lastState"]["terminated"]["exitCode"] == 1


def test_executor_restart_and_shutdown_mark_running_pods_failed(stack, kube, namespace, tmp_path):
    ident = uuid.uuid4().hex[:6]
    node, scheduler = f"exec-restart-{ident}", f"executor-restart-{ident}"
    handle = start_executor(stack, tmp_path / "state", node, scheduler, "img2img.dev/executor-test")
    try:
        create(kube, namespace, make_pod(handle, "orphan", command=["sh", "-c", "sleep 300 & wait"]))
        pod = wait_for(kube, namespace, "orphan", phase_is("Running"), what="Running")
        main_pid = int((handle.pod_dir(namespace, pod) / "containers" / "main" / "pid").read_text().split()[0])

        stop_executor(handle, signal.SIGKILL)  # a crash: no chance to clean up
        deadline = time.monotonic() + 5
        while alive(main_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(main_pid), "the container outlived its executor (PR_SET_PDEATHSIG)"

        handle = start_executor(stack, tmp_path / "state", node, scheduler, "img2img.dev/executor-test")
        pod = wait_for(kube, namespace, "orphan", phase_is("Succeeded", "Failed"), what="a terminal phase")
        assert pod["status"]["phase"] == "Failed"
        term = container_state(pod)["terminated"]
        assert (term["reason"], term["exitCode"]) == ("ContainerStatusUnknown", 137)
        assert term["message"] == "The container could not be located when the pod was terminated"
        assert "left by a previous executor" in handle.logs()  # the orphaned `sleep` was killed too

        create(kube, namespace, make_pod(handle, "at-shutdown", command=["sleep", "300"]))
        wait_for(kube, namespace, "at-shutdown", phase_is("Running"), what="Running")
        stop_executor(handle, signal.SIGTERM)  # graceful node shutdown
        pod = get(kube, namespace, "at-shutdown")
        assert (pod["status"]["phase"], pod["status"]["reason"]) == ("Failed", "Terminated")
        target = condition(pod, "DisruptionTarget")
        assert (target["reason"], target["message"]) == ("TerminationByKubelet",
                                                         "Pod was terminated in response to imminent node shutdown.")
        assert not [pid for pid in container_pids(handle) if alive(pid)]
    finally:
        stop_executor(handle, signal.SIGKILL)
        stack.kubectl("delete", "node", node, "--wait=false", check=False)


def test_the_stack_executor_schedules_and_runs_a_pod(stack, kube, namespace):
    create(kube, namespace, make_pod(None, "on-stack", "open('/dev/termination-log', 'w').write('stack ok')",
                                     image="img2img/runner:local"))
    pod = wait_for(kube, namespace, "on-stack", phase_is("Succeeded", "Failed"), what="a terminal phase")
    assert pod["spec"]["nodeName"] == "local-gpu-0"
    assert pod["status"]["phase"] == "Succeeded"
    assert container_state(pod)["terminated"]["message"] == "stack ok"


def test_without_mount_namespaces_the_termination_file_is_named_by_an_env_var(stack, kube, namespace, tmp_path):
    """The non-root fallback (forced here): no mounts, IMG2IMG_TERMINATION_LOG names the termination message file."""
    ident = uuid.uuid4().hex[:6]
    node = f"exec-nomount-{ident}"
    handle = start_executor(stack, tmp_path / "state", node, f"executor-nomount-{ident}", "img2img.dev/executor-test",
                            mountNamespace=False)
    try:
        assert "mount namespaces off" in handle.logs()
        script = "import os\nopen(os.environ['IMG2IMG_TERMINATION_LOG'], 'w').write('via env')\n"
        create(kube, namespace, make_pod(handle, "fallback", script))
        pod = wait_for(kube, namespace, "fallback", phase_is("Succeeded", "Failed"), what="a terminal phase")
        assert pod["status"]["phase"] == "Succeeded"
        assert container_state(pod)["terminated"]["message"] == "via env"
    finally:
        stop_executor(handle)
        stack.kubectl("delete", "node", node, "--wait=false", check=False)
