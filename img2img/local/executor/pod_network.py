"""Pod networks: a pod annotated `local.img2img.dev/network: pod` gets a network namespace of its own, as a CNI gives
every pod, and Services reach it through a proxy on this host, as kube-proxy would.

Without the annotation a pod shares this host's network (as with `hostNetwork: true`): two replicas of one Deployment
could not both listen on their ports. With it:

- the pod's namespace (`ip netns add i2i-<uid>`) has its loopback only; its containers join it (executor_sandbox).
- outbound: the API server's port and the configuration's `hostPorts` (S3...) are forwarded from the pod's 127.0.0.1
  to this host's, so what the host serves on loopback is at the same address in the pod (KUBERNETES_SERVICE_HOST too);
  and the pod's port 443 leads to the API server, as the `kubernetes` Service's does (`kubernetes.default.svc`, below,
  is what kopf's in-cluster login calls).
- Services: a Service whose selector picks such a pod of this node gets a listener on this host's 127.0.0.1:<port>;
  each connection goes to a running pod the selector picks at that moment (its targetPort, a number or a
  containerPort's name), or is closed when there is none, the way kube-proxy follows the endpoints. The chart's runner
  Service selects the leader's label: the runners reach whichever replica leads.
- names: every container run with mount namespaces sees an /etc/hosts that maps each Service's
  `<name>.<namespace>.svc[.cluster.local]` to 127.0.0.1 (where cluster DNS would answer).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

NETWORK_ANNOTATION = "local.img2img.dev/network"
CLONE_NEWNET = 0x40000000
LOOPBACK = "127.0.0.1"
HTTPS_PORT = 443  # the `kubernetes` Service's port


# ---- decisions, on plain API dicts ---------------------------------------------------------------------------------
def has_own_network(pod: Mapping) -> bool:
    return ((pod.get("metadata") or {}).get("annotations") or {}).get(NETWORK_ANNOTATION) == "pod"


def netns_name(uid: str) -> str:
    return f"i2i-{uid}"


def selects(service: Mapping, pod: Mapping) -> bool:
    """The Service's selector picks the pod (same namespace, every selector label); a Service without one picks none."""
    selector = (service.get("spec") or {}).get("selector") or {}
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return (bool(selector) and pod["metadata"].get("namespace") == service["metadata"].get("namespace")
            and all(labels.get(k) == v for k, v in selector.items()))


def target_port(service_port: Mapping, pod: Mapping) -> int | None:
    """The pod's port a Service port leads to: targetPort as a number, or the containerPort of that name."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == target:
                return int(p["containerPort"])
    return None


def serving(pod: Mapping) -> bool:
    """An endpoint: running and not being deleted."""
    return (pod.get("status") or {}).get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp")


def hosts_file(base: str, services: list[Mapping]) -> str:
    """/etc/hosts for a container: this host's, then each Service's DNS names on loopback."""
    lines = [base.rstrip("\n"), "# Services (local executor)"]
    for s in sorted(services, key=lambda s: (s["metadata"]["namespace"], s["metadata"]["name"])):
        fqdn = f"{s['metadata']['name']}.{s['metadata']['namespace']}.svc"
        lines.append(f"{LOOPBACK}\t{fqdn} {fqdn}.cluster.local")
    return "\n".join(lines) + "\n"


# ---- I/O ------------------------------------------------------------------------------------------------------------
def _setns(path: str) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def in_netns(path: str, make: Callable[[], socket.socket]) -> socket.socket:
    """``make()`` on a thread of its own that joined the network namespace at ``path``: the socket belongs to it. (The
    namespace is a thread's: the caller's thread stays where it is.)"""
    out: dict = {}

    def run() -> None:
        try:
            _setns(path)
            out["sock"] = make()
        except OSError as e:
            out["error"] = e

    t = threading.Thread(target=run, name="netns", daemon=True)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["sock"]


def listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((LOOPBACK, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def connect(port: int) -> socket.socket:
    sock = socket.create_connection((LOOPBACK, port), 10)
    sock.settimeout(None)  # a watch may say nothing for minutes
    return sock


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Forwarder:
    """Accepts on ``sock``; each connection is joined to ``connect()`` (None or OSError: the client is hung up on)."""

    def __init__(self, sock: socket.socket, connect: Callable[[], socket.socket | None], name: str):
        self.sock, self.connect, self.name = sock, connect, name
        threading.Thread(target=self._accept, name=f"fwd-{name}", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._join, args=(client,), name=f"fwd-{self.name}", daemon=True).start()

    def _join(self, client: socket.socket) -> None:
        try:
            upstream = self.connect()
        except OSError as e:
            log.debug("%s: %s", self.name, e)
            upstream = None
        if upstream is None:
            client.close()
            return
        back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        back.start()
        _pump(client, upstream)
        back.join()
        client.close()
        upstream.close()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept
        except OSError:
            pass
        self.sock.close()


class PodNetworks:
    """The network namespaces of this node's pods that ask for one, their forwarders, and the Services' proxies."""

    def __init__(self, forwards: Mapping[int, int]):
        self.forwards = dict(forwards)  # the pod's loopback port -> this host's
        self.lock = threading.Lock()
        self.namespaces: dict[str, tuple[str, list[Forwarder]]] = {}  # uid -> (netns path, outbound forwarders)
        self.proxies: dict[tuple[str, str, int], Forwarder] = {}  # (namespace, service, port) -> listener
        self.refused: set[tuple[str, str, int]] = set()  # ports already taken on this host: said once
        self.pods: list[dict] = []
        self.services: list[dict] = []

    def create(self, uid: str) -> str:
        """The pod's network namespace (kept when it exists), with loopback up and the host ports forwarded into it;
        its path. Raises OSError."""
        with self.lock:
            if uid in self.namespaces:
                return self.namespaces[uid][0]
        name = netns_name(uid)
        path = f"/run/netns/{name}"
        for argv in ([] if os.path.exists(path) else [["ip", "netns", "add", name]]) + [["ip", "-n", name, "link",
                                                                                          "set", "lo", "up"]]:
            proc = subprocess.run(argv, capture_output=True, text=True)
            if proc.returncode != 0:
                raise OSError(f"{' '.join(argv)}: {proc.stderr.strip()}")
        forwarders = []
        for inside, outside in sorted(self.forwards.items()):
            sock = in_netns(path, lambda port=inside: listen(port))
            forwarders.append(Forwarder(sock, lambda port=outside: connect(port), f"{name}:{inside}"))
        with self.lock:
            self.namespaces[uid] = (path, forwarders)
        return path

    def delete(self, uid: str) -> None:
        with self.lock:
            entry = self.namespaces.pop(uid, None)
        if entry is None:
            return
        for f in entry[1]:
            f.close()
        subprocess.run(["ip", "netns", "delete", netns_name(uid)], capture_output=True)

    def sync(self, pods: list[dict], services: list[dict]) -> None:
        """From the controller thread: the current pods and Services; a proxy for each Service port that selects a
        pod with a network of its own, none for the others."""
        with self.lock:
            self.pods, self.services = pods, services
            own = [p for p in pods if p["metadata"]["uid"] in self.namespaces]
        wanted = {}
        for s in services:
            if any(selects(s, p) for p in own):
                for sp in (s.get("spec") or {}).get("ports") or []:
                    if sp.get("protocol", "TCP") == "TCP":
                        wanted[(s["metadata"]["namespace"], s["metadata"]["name"], int(sp["port"]))] = (s, sp)
        for key in [k for k in self.proxies if k not in wanted]:
            self.proxies.pop(key).close()
        for key, (service, port) in wanted.items():
            if key in self.proxies:
                continue
            try:
                sock = listen(key[2])
            except OSError as e:
                if key not in self.refused:
                    log.warning("service %s/%s: port %d not proxied: %s", key[0], key[1], key[2], e)
                    self.refused.add(key)
                continue
            self.proxies[key] = Forwarder(sock, lambda key=key, port=port: self._endpoint(key, port),
                                          f"svc-{key[0]}/{key[1]}:{key[2]}")
            log.info("service %s/%s: port %d proxied to its pods", *key)

    def _endpoint(self, key: tuple[str, str, int], port: Mapping) -> socket.socket | None:
        """A connection to a pod the Service selects now, inside the pod's network namespace."""
        with self.lock:
            service = next((s for s in self.services
                            if (s["metadata"]["namespace"], s["metadata"]["name"]) == key[:2]), None)
            picked = [(self.namespaces[p["metadata"]["uid"]][0], p) for p in self.pods
                      if service and p["metadata"]["uid"] in self.namespaces and selects(service, p) and serving(p)]
        for path, pod in picked:
            target = target_port(port, pod)
            if target is None:
                continue
            try:
                return in_netns(path, lambda: connect(target))
            except OSError:
                continue  # not listening (a standby, a pod starting): the next one
        return None

    def hosts(self) -> str:
        try:
            with open("/etc/hosts") as f:
                base = f.read()
        except OSError:
            base = f"{LOOPBACK}\tlocalhost\n"
        with self.lock:
            return hosts_file(base, self.services)

    def close(self) -> None:
        for f in self.proxies.values():
            f.close()
        self.proxies.clear()
        for uid in list(self.namespaces):
            self.delete(uid)
