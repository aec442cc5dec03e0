"""img2img.kube, the synchronous client of the CLI, the executor and the benchmarks, against the real API server."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from img2img.kube import KubeError, connect

pytestmark = pytest.mark.stack


def configmap(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"name": name}}


def test_a_refusal_carries_the_status_and_the_servers_message(stack, namespace):
    kube = connect(stack.kubeconfig)
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    kube.request("POST", path, body=configmap("one"))
    with pytest.raises(KubeError) as caught:
        kube.request("POST", path, body=configmap("one"))
    assert caught.value.status == 409 and caught.value.message == 'configmaps "one" already exists'
    with pytest.raises(KubeError) as caught:
        kube.request("GET", f"{path}/nope")
    assert caught.value.status == 404 and caught.value.details["name"] == "nope"
    assert kube.get(f"{path}/nope") is None and kube.get(f"{path}/one")["data"] == {"name": "one"}


def test_a_list_reads_every_page_and_a_watch_resumes_from_its_version(stack, namespace):
    kube = connect(stack.kubeconfig)
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    names = {f"cm-{i}" for i in range(5)}
    for name in names:
        kube.request("POST", path, body=configmap(name))
    items, version = kube.list(path, limit=2)  # three pages
    assert {item["metadata"]["name"] for item in items} >= names  # (and the namespace's kube-root-ca.crt)

    kube.patch(f"{path}/cm-0", {"data": {"name": "changed"}}, strategic=False)  # after the list, before the watch
    watch = kube.watch(path, version, timeout_seconds=30)
    seen = []
    for kind, obj in watch:
        seen.append((kind, obj["metadata"]["name"], obj["data"]["name"]))
        break
    assert seen == [("MODIFIED", "cm-0", "changed")]


def test_a_watch_closed_from_another_thread_ends_at_once(stack, namespace):
    kube = connect(stack.kubeconfig)
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    _, version = kube.list(path)
    watch = kube.watch(path, version, timeout_seconds=120)
    events = []
    reader = threading.Thread(target=lambda: events.extend(watch))
    reader.start()
    time.sleep(0.5)  # the reader is blocked on a quiet watch (nothing changes in the namespace)
    started = time.monotonic()
    watch.close()
    reader.join(timeout=10)
    assert not reader.is_alive() and time.monotonic() - started < 5 and events == []


def test_threads_share_one_client_each_getting_its_own_answer(stack, namespace):
    kube = connect(stack.kubeconfig, pool_size=2)  # fewer kept connections than threads
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    with ThreadPoolExecutor(8) as pool:
        created = list(pool.map(lambda i: kube.request("POST", path, body=configmap(f"t-{i}")), range(40)))
    assert [c["metadata"]["name"] for c in created] == [f"t-{i}" for i in range(40)]
