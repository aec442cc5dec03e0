"""The Node this executor stands for, kept as a kubelet keeps it: registered, Ready, its Lease renewed.

Registers Node `nodeName` (capacity/allocatable, labels, taints, Ready), renews its Lease in `kube-node-lease` every
10 s and refreshes the Ready heartbeat every 60 s (re-registers if the Node is deleted). It lifts the
`node.kubernetes.io/not-ready:NoSchedule` taint the API server puts on a new Node once it is Ready (the node
lifecycle controller's job, which the local kube-controller-manager may not run).
"""

from __future__ import annotations

import logging
import platform
import threading
import time
from pathlib import Path

from img2img.kube import Kube, KubeError
from img2img.local.executor.config import Config
from img2img.local.executor.informer import Informer
from img2img.local.executor.kube_time import micro_time, rfc3339, utcnow
from img2img.local.executor.quantities import node_allocatable

log = logging.getLogger(__name__)

LEASE_RENEW_SECONDS = 10.0
NODE_STATUS_SECONDS = 60.0
LEASE_NAMESPACE = "kube-node-lease"


def is_not_ready_taint(taint: dict) -> bool:
    return taint.get("key") == "node.kubernetes.io/not-ready" and taint.get("effect") == "NoSchedule"


class NodeAgent:
    def __init__(self, cfg: Config, kube: Kube, nodes: Informer, stop: threading.Event):
        self.cfg, self.kube, self.nodes, self.stop = cfg, kube, nodes, stop
        self.path = f"/api/v1/nodes/{cfg.node_name}"
        self.node_uid = ""
        self.kubelet_version = "v0.0.0"

    def cached(self) -> dict | None:
        """The Node as last watched."""
        return self.nodes.get(f"/{self.cfg.node_name}")

    def current(self) -> dict:
        """The Node as last watched, or as this executor would register it."""
        return self.cached() or self.manifest()

    def allocatable(self) -> dict:
        return node_allocatable(self.current())

    def manifest(self) -> dict:
        cfg = self.cfg
        labels = {"kubernetes.io/hostname": cfg.node_name, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": _arch(), "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": _arch(),
                  **cfg.labels}
        return {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": cfg.node_name, "labels": labels,
                             "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                                             "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
                "spec": {"taints": cfg.taints} if cfg.taints else {},
                "status": {"capacity": cfg.capacity, "allocatable": cfg.allocatable or cfg.capacity}}

    def status(self, previous: list | None) -> dict:
        now = utcnow()
        prev = {c.get("type"): c for c in previous or []}

        def cond(ctype, status, reason, message):
            p = prev.get(ctype)
            return {"type": ctype, "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": rfc3339(now),
                    "lastTransitionTime": p["lastTransitionTime"] if p and p.get("status") == status
                    else rfc3339(now)}

        cfg = self.cfg
        return {
            "capacity": cfg.capacity,
            "allocatable": cfg.allocatable or cfg.capacity,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory",
                     "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": cfg.host_ip},
                          {"type": "Hostname", "address": cfg.node_name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": _read("/etc/machine-id"), "systemUUID": _read("/etc/machine-id"),
                "bootID": _read("/proc/sys/kernel/random/boot_id"), "kernelVersion": platform.release(),
                "osImage": _os_image(), "containerRuntimeVersion": "local-executor://0.1.0",
                "kubeletVersion": self.kubelet_version, "kubeProxyVersion": "", "operatingSystem": "linux",
                "architecture": _arch(),
            },
        }

    def register(self, timeout: float = 120) -> None:
        """Register the node, retrying while the API server may still be starting."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._register()
                return
            except Exception as e:  # noqa: BLE001 - the API server may still be starting
                if time.monotonic() > deadline or self.stop.is_set():
                    raise
                log.warning("registering node %s: %s; retrying", self.cfg.node_name, e)
                self.stop.wait(2)

    def _register(self) -> None:
        cfg = self.cfg
        try:
            self.kubelet_version = (self.kube.request("GET", "/version") or {}).get("gitVersion", "v0.0.0")
        except Exception:  # noqa: BLE001
            self.kubelet_version = "v0.0.0"
        manifest = self.manifest()
        try:
            node = self.kube.request("POST", "/api/v1/nodes", body={k: v for k, v in manifest.items() if k != "status"})
            log.info("node %s registered", cfg.node_name)
        except KubeError as e:
            if e.status != 409:
                raise
            existing = self.kube.get(self.path) or {}
            taints = list((existing.get("spec") or {}).get("taints") or [])
            for t in cfg.taints:
                if not any(x.get("key") == t.get("key") and x.get("effect") == t.get("effect") for x in taints):
                    taints.append(t)
            node = self.kube.patch(self.path,
                                   {"metadata": {"labels": manifest["metadata"]["labels"]}, "spec": {"taints": taints}},
                                   strategic=False)
            log.info("node %s already registered: labels and taints updated", cfg.node_name)
        self.node_uid = node["metadata"]["uid"]
        self.update_status(node)
        self.renew_lease()
        self.lift_not_ready_taint()

    def lift_not_ready_taint(self) -> None:
        """Remove `node.kubernetes.io/not-ready:NoSchedule` once the node is Ready.

        The API server's TaintNodesByCondition admission puts it on every new Node; kube-controller-manager's node
        lifecycle controller lifts it when Ready is True. The local stack may not run that controller, so the
        executor does the same (harmless when the controller runs too).
        """
        node = self.kube.get(self.path)
        if not node:
            return
        taints = (node.get("spec") or {}).get("taints") or []
        kept = [t for t in taints if not is_not_ready_taint(t)]
        if len(kept) == len(taints):
            return
        try:
            self.kube.patch(self.path, {"metadata": {"resourceVersion": node["metadata"]["resourceVersion"]},
                                        "spec": {"taints": kept or None}}, strategic=False)
            log.info("node %s: lifted the node.kubernetes.io/not-ready taint", self.cfg.node_name)
        except KubeError as e:
            if e.status != 409:
                raise

    def update_status(self, node: dict | None = None) -> None:
        """PATCH the node status; `node`: the Node as just written (default: as last watched)."""
        if node is None:
            node = self.cached()
        previous = ((node or {}).get("status") or {}).get("conditions")
        self.kube.patch(f"{self.path}/status", {"status": self.status(previous)})

    def renew_lease(self) -> None:
        name, ns = self.cfg.node_name, LEASE_NAMESPACE
        now = micro_time(utcnow())
        path = f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}"
        try:
            self.kube.patch(path, {"spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now}},
                            strategic=False)
        except KubeError as e:
            if e.status != 404:
                raise
            self.kube.request("POST", f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases", body={
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": ns, "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": name, "uid": self.node_uid}]},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now},
            })

    def start_heartbeat(self) -> None:
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()

    def _heartbeat(self) -> None:
        last_status = time.monotonic()
        while not self.stop.wait(LEASE_RENEW_SECONDS):
            try:
                if self.kube.get(self.path, timeout=10) is None:
                    log.warning("node %s was deleted; registering it again", self.cfg.node_name)
                    self._register()
                    last_status = time.monotonic()
                    continue
                self.renew_lease()
                cached = self.cached() or {}
                if any(is_not_ready_taint(t) for t in (cached.get("spec") or {}).get("taints") or []):
                    self.lift_not_ready_taint()
                if time.monotonic() - last_status >= NODE_STATUS_SECONDS:
                    self.update_status()
                    last_status = time.monotonic()
            except Exception as e:  # noqa: BLE001 - keep beating
                log.warning("node heartbeat failed: %s", e)


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return "Linux"
