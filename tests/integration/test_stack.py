"""The embedded stack is the real thing: a kube-apiserver that stores, validates and watches; an S3 server that stores."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

pytestmark = pytest.mark.stack


def test_namespace_object_and_watch_round_trip(stack, namespace):
    from kubernetes import client, watch

    core = client.CoreV1Api(stack.api_client())
    seen: list[tuple[str, str]] = []
    # watched from the version of a list made now: what happens before the watch connects is still delivered
    listed = core.list_namespaced_config_map(namespace).metadata.resource_version

    def follow():
        w = watch.Watch()
        for event in w.stream(core.list_namespaced_config_map, namespace, resource_version=listed,
                              timeout_seconds=120):
            seen.append((event["type"], event["object"].metadata.name))
            if event["type"] == "DELETED" and event["object"].metadata.name == "probe":
                w.stop()

    watcher = threading.Thread(target=follow)
    watcher.start()
    stack.kubectl("-n", namespace, "create", "configmap", "probe", "--from-literal=answer=42")
    stored = stack.get_json("-n", namespace, "configmap", "probe")
    assert stored["data"] == {"answer": "42"}
    stack.kubectl("-n", namespace, "delete", "configmap", "probe")
    watcher.join(timeout=130)
    assert ("ADDED", "probe") in seen and ("DELETED", "probe") in seen


def test_api_server_refuses_an_invalid_object_with_the_field_named(stack, namespace):
    proc = stack.kubectl("-n", namespace, "create", "configmap", "Bad_Name", check=False)
    assert proc.returncode != 0
    assert "metadata.name" in proc.stderr or "RFC 1123" in proc.stderr


def test_owner_references_cascade_through_the_garbage_collector(stack, namespace):
    stack.kubectl("-n", namespace, "create", "configmap", "owner")
    uid = stack.get_json("-n", namespace, "configmap", "owner")["metadata"]["uid"]
    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "child",
            "namespace": namespace,
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}],
        },
    }
    stack.kubectl("create", "-f", "-", input=json.dumps(child))
    stack.kubectl("-n", namespace, "delete", "configmap", "owner")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if stack.kubectl("-n", namespace, "get", "configmap", "child", check=False).returncode != 0:
            return
        time.sleep(0.5)
    pytest.fail("the garbage collector did not delete the child of a deleted owner")


def test_s3_put_and_get(stack):
    s3 = stack.s3()
    key = f"probe/{uuid.uuid4().hex}.txt"
    s3.put_object(Bucket=stack.bucket, Key=key, Body=b"hello")
    assert s3.get_object(Bucket=stack.bucket, Key=key)["Body"].read() == b"hello"
    listed = s3.list_objects_v2(Bucket=stack.bucket, Prefix="probe/")["Contents"]
    assert key in [o["Key"] for o in listed]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_local_up_is_idempotent_and_down_leaves_nothing_behind(tmp_path):
    """`img2img local up` twice keeps the same processes; `down` leaves no process and no listening port."""
    img2img = [sys.executable, "-m", "img2img.cli", "local"]
    state = ["--state-dir", str(tmp_path), "--no-operator", "--no-models"]
    env = dict(os.environ)
    first = subprocess.run([*img2img, "up", *state], capture_output=True, text=True, env=env, timeout=600)
    if first.returncode != 0:
        subprocess.run([*img2img, "down", "--state-dir", str(tmp_path)], capture_output=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "export KUBECONFIG=" in first.stdout and "export AWS_ENDPOINT_URL=" in first.stdout
    pids = json.loads((tmp_path / "state.json").read_text())["pids"]
    second = subprocess.run([*img2img, "up", *state], capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0, second.stderr
    assert json.loads((tmp_path / "state.json").read_text())["pids"] == pids

    exports = dict(
        line.removeprefix("export ").split("=", 1) for line in first.stdout.splitlines() if line.startswith("export ")
    )
    # RunPod clients: the gateway's base URL (ending in /v2, as the runpod SDK wants it), a key, the endpoint
    assert exports["RUNPOD_ENDPOINT_BASE_URL"].endswith("/v2") and exports["RUNPOD_ENDPOINT_ID"] == "local"
    assert f"export RUNPOD_API_KEY={exports['RUNPOD_API_KEY']}" in second.stdout  # the same key on every `up`
    kubectl_env = dict(os.environ, KUBECONFIG=exports["KUBECONFIG"].strip("'\""))
    kubectl = str(next(p for p in exports["PATH"].strip('"').split(":") if "kubectl" in p)) + "/kubectl"
    namespaces = subprocess.run([kubectl, "get", "ns"], capture_output=True, text=True, env=kubectl_env)
    assert "kube-system" in namespaces.stdout
    resources = subprocess.run([kubectl, "api-resources"], capture_output=True, text=True, env=kubectl_env)
    assert "pods" in resources.stdout

    ports = json.loads((tmp_path / "state.json").read_text())["ports"]
    down = subprocess.run([*img2img, "down", "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    for pid in pids.values():
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] == "Z"
    assert not [p for p in ports.values() if _listening(p)]
