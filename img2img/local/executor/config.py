"""The executor's configuration (YAML; camelCase or snake_case keys; all optional):

    nodeName: local-gpu-0
    capacity: {cpu: "<cores>", memory: "<MemTotal>", pods: "110", nvidia.com/gpu: "1"}
    allocatable: {...}              # default: = capacity
    labels: {nvidia.com/gpu.product: LOCAL-CPU}
    taints: [{key: nvidia.com/gpu, value: present, effect: NoSchedule}]
    stateDir: ~/.local/state/img2img-operator/local/executor
    images:                         # fnmatch pattern -> local environment; first match wins
      "img2img/runner:*": {pathPrepend: [/repo/.venv/bin], env: {K: V}, inherit: [HF_HOME], paths: [/repo]}
    scheduler: true                 # also act as scheduler (false: kubelet only)
    schedulerName: default-scheduler
    shutdownGracePeriodSeconds: 5   # cap on each pod's grace period when the executor stops
    mountNamespace: auto            # auto | true | false (false: the non-root fallback, see processes.py)
    hostIP: 127.0.0.1               # also podIP (podIP: ...)
    hostPorts: [9000]               # this host's loopback ports that pods with a network of their own reach on their
                                    # 127.0.0.1 (the API server's always; see pod_network.py)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from img2img.local.executor.scheduling import DEFAULT_SCHEDULER
from img2img.local.paths import default_state_dir


def _meminfo_total() -> str:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1])}Ki"
    except OSError:
        pass
    return "8Gi"


@dataclass
class Config:
    node_name: str = "local-gpu-0"
    capacity: dict = field(default_factory=lambda: {"cpu": str(os.cpu_count() or 1), "memory": _meminfo_total(),
                                                    "pods": "110", "nvidia.com/gpu": "1"})
    allocatable: dict | None = None
    labels: dict = field(default_factory=dict)
    taints: list = field(default_factory=list)
    state_dir: Path = field(default_factory=lambda: default_state_dir() / "executor")
    images: dict = field(default_factory=dict)
    host_ip: str = "127.0.0.1"
    pod_ip: str = "127.0.0.1"
    scheduler: bool = True
    scheduler_name: str = DEFAULT_SCHEDULER
    shutdown_grace_seconds: float = 5.0
    mount_namespace: str = "auto"  # auto | true | false
    host_ports: list[int] = field(default_factory=list)

    @classmethod
    def from_dict(cls, raw: dict) -> Config:
        def get(*names, default=None):
            for n in names:
                if n in raw and raw[n] is not None:
                    return raw[n]
            return default

        cfg = cls()
        cfg.node_name = get("nodeName", "node_name", "node", default=cfg.node_name)
        cfg.capacity = {k: str(v) for k, v in (get("capacity", default=cfg.capacity)).items()}
        alloc = get("allocatable")
        cfg.allocatable = {k: str(v) for k, v in alloc.items()} if alloc else None
        cfg.labels = {k: str(v) for k, v in (get("labels", default={})).items()}
        cfg.taints = list(get("taints", default=[]))
        cfg.state_dir = Path(get("stateDir", "state_dir", default=cfg.state_dir)).expanduser()
        cfg.images = normalize_images(get("images", default={}))
        cfg.host_ip = get("hostIP", "host_ip", default=cfg.host_ip)
        cfg.pod_ip = get("podIP", "pod_ip", default=cfg.pod_ip)
        cfg.scheduler = bool(get("scheduler", default=True))
        cfg.scheduler_name = get("schedulerName", "scheduler_name", default=cfg.scheduler_name)
        cfg.shutdown_grace_seconds = float(get("shutdownGracePeriodSeconds", "shutdown_grace_seconds",
                                               default=cfg.shutdown_grace_seconds))
        cfg.host_ports = [int(p) for p in get("hostPorts", "host_ports", default=[])]
        cfg.mount_namespace = str(get("mountNamespace", "mount_namespace", default="auto")).lower()
        return cfg


def normalize_images(raw) -> dict[str, dict]:
    """{pattern: {path_prepend: [...], env: {...}, inherit: [...], paths: [...]}}; accepts camelCase, a bare dir, or
    a list. ``paths`` are the image's own files on this host: volumes never hide them (see executor_sandbox)."""
    if isinstance(raw, list):
        raw = {item["pattern"]: item for item in raw}
    out = {}
    for pattern, entry in (raw or {}).items():
        if isinstance(entry, str):
            entry = {"pathPrepend": [entry]}
        entry = entry or {}
        prepend = entry.get("pathPrepend", entry.get("path_prepend", [])) or []
        if isinstance(prepend, str):
            prepend = [prepend]
        out[pattern] = {
            "path_prepend": [str(Path(p).expanduser()) for p in prepend],
            "env": {k: str(v) for k, v in (entry.get("env") or {}).items()},
            "inherit": list(entry.get("inherit") or []),
            "paths": [str(Path(p).expanduser()) for p in entry.get("paths") or []],
        }
    return out
