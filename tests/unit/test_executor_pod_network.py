"""Pods with a network of their own: which Service picks which pod and port, the names pods resolve, and (as root,
with `ip`) a real network namespace reached both ways."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import uuid

import pytest

from img2img.local.executor.pod_network import (
    NETWORK_ANNOTATION, PodNetworks, has_own_network, hosts_file, in_netns, listen, selects, target_port,
)


def pod(name="op-1", ns="sys", labels=None, annotations=None, phase="Running", ports=()):
    return {"metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}", "labels": labels or {},
                         "annotations": annotations or {}},
            "spec": {"containers": [{"name": "c", "ports": [{"name": n, "containerPort": p} for n, p in ports]}]},
            "status": {"phase": phase}}


def service(name="runners", ns="sys", selector=None, ports=()):
    return {"metadata": {"name": name, "namespace": ns},
            "spec": {"selector": selector, "ports": [dict(p) for p in ports]}}


def test_only_the_annotation_gives_a_pod_a_network_of_its_own():
    assert has_own_network(pod(annotations={NETWORK_ANNOTATION: "pod"}))
    assert not has_own_network(pod())
    assert not has_own_network(pod(annotations={NETWORK_ANNOTATION: "host"}))


def test_a_service_picks_the_pods_of_its_namespace_carrying_every_selector_label():
    leader = pod(labels={"app": "op", "img2img.dev/leader": "true"})
    standby = pod(name="op-2", labels={"app": "op"})
    svc = service(selector={"app": "op", "img2img.dev/leader": "true"})
    assert selects(svc, leader) and not selects(svc, standby)
    assert not selects(service(ns="other", selector={"app": "op"}), standby)
    assert not selects(service(selector=None), standby)  # no selector: no endpoints of its own


def test_the_target_port_is_a_number_or_the_name_of_a_container_port():
    p = pod(ports=[("runners", 8081), ("health", 8080)])
    assert target_port({"port": 80, "targetPort": "runners"}, p) == 8081
    assert target_port({"port": 80, "targetPort": 9000}, p) == 9000
    assert target_port({"port": 80}, p) == 80
    assert target_port({"port": 80, "targetPort": "metrics"}, p) is None


def test_pods_resolve_every_service_name_to_loopback_after_the_hosts_own_lines():
    text = hosts_file("127.0.0.1 localhost\n", [service("runners", "sys"), service("kubernetes", "default")])
    lines = text.splitlines()
    assert lines[0] == "127.0.0.1 localhost"
    assert "127.0.0.1\tkubernetes.default.svc kubernetes.default.svc.cluster.local" in lines
    assert "127.0.0.1\trunners.sys.svc runners.sys.svc.cluster.local" in lines


def echo_server(sock: socket.socket) -> None:
    def serve():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"echo:" + conn.recv(100))
    threading.Thread(target=serve, daemon=True).start()


def ask(port: int, make=None) -> bytes:
    conn = make() if make else socket.create_connection(("127.0.0.1", port), 5)
    with conn:
        conn.sendall(b"hi")
        return conn.recv(100)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="network namespaces need root and `ip`")
def test_a_pod_reaches_the_hosts_forwarded_port_on_its_loopback_and_a_service_reaches_the_selected_pod():
    host_port, pod_port, service_port = free_port(), free_port(), free_port()
    host_server = listen(host_port)
    echo_server(host_server)
    networks = PodNetworks({host_port: host_port})
    p = pod(name=f"p-{uuid.uuid4().hex[:6]}", labels={"app": "x"}, annotations={NETWORK_ANNOTATION: "pod"},
            ports=[("web", pod_port)])
    path = networks.create(p["metadata"]["uid"])
    try:
        # outbound: the host's port, at the same address inside the pod
        assert ask(host_port, lambda: in_netns(path, lambda: socket.create_connection(("127.0.0.1", host_port), 5))) \
            == b"echo:hi"
        # the pod's own ports are its own: the same port is free inside while the host holds it
        inside = in_netns(path, lambda: listen(pod_port))
        echo_server(inside)
        svc = service("web", "sys", {"app": "x"}, [{"port": service_port, "targetPort": "web"}])
        networks.sync([p], [svc])
        assert ask(service_port) == b"echo:hi"  # host -> Service -> the pod's namespace
        p["metadata"]["labels"] = {}  # the Service selects no pod of its own network any more: no proxy
        networks.sync([p], [svc])
        assert service_port not in [k[2] for k in networks.proxies]
        inside.close()
    finally:
        networks.close()
        host_server.close()
    assert not os.path.exists(path)
