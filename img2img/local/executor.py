"""The local executor: plays kube-scheduler and the kubelet of one node, against a real API server.

    python -m img2img.local.executor --kubeconfig PATH --config executor.yaml [--node-name N] [--state-dir D]

Configuration (YAML; camelCase or snake_case keys; all optional):

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
    mountNamespace: auto            # auto | true | false (false: the non-root fallback, see below)
    hostIP: 127.0.0.1               # also podIP (podIP: ...)

There is no kubelet, no container runtime and no kube-scheduler in the local stack; this process stands in for them,
through the same API calls they make, so the operator cannot tell the difference:

- **Node**: registers Node `nodeName` (capacity/allocatable, labels, taints, Ready), renews its Lease in
  `kube-node-lease` every 10 s and refreshes the Ready heartbeat every 60 s (re-registers if the Node is deleted).
  It lifts the `node.kubernetes.io/not-ready:NoSchedule` taint the API server puts on a new Node once it is Ready
  (the node lifecycle controller's job, which the local kube-controller-manager may not run).
- **Scheduler** (`scheduler: true`, for pods whose `schedulerName` is `schedulerName`, default `default-scheduler`):
  filters every Node as kube-scheduler does (unschedulable, taints/tolerations, nodeSelector + required node
  affinity, requests vs allocatable minus the requests of the node's non-terminal pods, pod count), POSTs
  `pods/{name}/binding` to the best fit, or sets `PodScheduled=False/Unschedulable` with kube-scheduler's message.
  Pending pods are retried on every change in the cluster (a pod finishing frees its GPU). No preemption.
- **Kubelet** for pods bound to `nodeName`: admission (resources, node affinity), volumes, one local process per
  container (`command` + `args`, `$(VAR)` expansion), status PATCHes (`pods/{name}/status`) with kubelet semantics,
  `activeDeadlineSeconds`, graceful deletion (SIGTERM, grace, SIGKILL, then DELETE with grace 0), the Eviction API,
  and node-pressure eviction on demand: annotate a pod `local.img2img.dev/evict: "true"` (or a resource name such as
  `"memory"`) and it is killed and marked Failed/Evicted with `DisruptionTarget` (`TerminationByKubelet`).

Containers. The image picks a local environment from the `images` table (fnmatch patterns, first match wins):
`{pathPrepend: [dirs], env: {K: V}, inherit: [NAMES]}`; an image matching no pattern cannot be pulled
(`ErrImagePull`, then `ImagePullBackOff`, retried with the kubelet's back-off). A container without `command` gets
`CreateContainerError` (there is no image entrypoint here). The process gets the container's env (values, Secret
and ConfigMap keys, envFrom, fieldRef, resourceFieldRef) over the image env (`PATH` = prepended dirs + the standard
container PATH, `HOSTNAME`, `HOME`) and `KUBERNETES_SERVICE_HOST/PORT` pointing at the API server.

When the executor runs as root, each container runs in its own mount namespace (see `executor_sandbox.py`):
volumes are bind-mounted on their `mountPath` — emptyDir (a fresh folder), hostPath, configMap/secret/downwardAPI/
projected (files written by the executor, read-only; projected service account tokens come from the TokenRequest
API), persistentVolumeClaim (`<stateDir>/pvc/<namespace>/<claim>/`, shared by the claim's pods) — and a per-container
file is bind-mounted on `terminationMessagePath` (default `/dev/termination-log`), whose content becomes the
terminated state's `message` (≤ 4096 bytes; `FallbackToLogsOnError`: the last 80 lines / 2048 bytes of the log on
failure). Missing mount targets are created on the host filesystem (an empty file or folder), as the runtime does
inside an image. Without the privilege for that (non-root), containers run in the executor's mount namespace:
volumes are *not* mounted, and `IMG2IMG_TERMINATION_LOG` names the termination message file instead.

Files: `<stateDir>/pods/<namespace>_<name>_<uid>/` holds `logs/<container>.log` (stdout+stderr, all restarts
appended: what `kubectl logs` would show), `containers/<container>/termination-log` and `.../pid`, `work/` (the
working dir unless the container sets `workingDir`) and `volumes/`. Volumes are removed when the pod is deleted;
logs stay.

Restart policy: `Never` and `OnFailure`/`Always` (restart with the kubelet's CrashLoopBackOff: immediately, then
10 s doubling to 300 s; `restartCount`, `lastState`). Init containers run in order before the others (native
sidecars are not supported). Not emulated: probes (a container is ready once started), lifecycle hooks, resource
limits (no OOMKilled), securityContext, ports, ephemeral containers, token refresh, volume updates, image pulls.

Processes: each container is a process group of its own (new session), killed with the whole group when its main
process exits (as a container's processes die with its init). SIGTERM/SIGINT to the executor = graceful node
shutdown: every pod's main process gets SIGTERM, then its group SIGKILL after min(grace, `shutdownGracePeriodSeconds`),
and the pods are marked Failed/`Terminated` with `DisruptionTarget` (`TerminationByKubelet`), as a kubelet with
graceful node shutdown does. If the executor dies hard, PR_SET_PDEATHSIG kills the main processes; the next start
kills what is left of their process groups (pid files) and reports the started containers as a kubelet reports
containers it cannot find any more: terminated `ContainerStatusUnknown`, exit code 137, "The container could not be
located when the pod was terminated" (phase Failed for `restartPolicy: Never`; `OnFailure`/`Always` pods are
restarted with that as `lastState`).
"""

from __future__ import annotations

import argparse
import atexit
import base64
import datetime as dt
import hashlib
import json
import logging
import os
import platform
import queue
import secrets
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from urllib.parse import urlparse

import yaml

from img2img.local import executor_logic as L
from img2img.local.paths import default_state_dir

log = logging.getLogger("img2img.executor")

EVICT_ANNOTATION = "local.img2img.dev/evict"
SANDBOX = Path(__file__).with_name("executor_sandbox.py")
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
MIN_KILL_GRACE = 2.0  # kuberuntime's minimumGracePeriodInSeconds
LEASE_RENEW_SECONDS = 10.0
NODE_STATUS_SECONDS = 60.0
API_TIMEOUT = 20.0
SHUTDOWN_API_TIMEOUT = 2.0


# ---- configuration ------------------------------------------------------------------------------------------------
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
    scheduler_name: str = L.DEFAULT_SCHEDULER
    shutdown_grace_seconds: float = 5.0
    mount_namespace: str = "auto"  # auto | true | false

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


# ---- API access ---------------------------------------------------------------------------------------------------
class KubeError(Exception):
    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}: {body[:500] if body else ''}")
        self.status = status
        self.body = body


class Kube:
    """Raw JSON access over the official client's transport (kubeconfig, TLS, auth): dicts in, dicts out."""

    def __init__(self, kubeconfig: str, pool_size: int = 64):
        from kubernetes import client as kclient
        from kubernetes import config as kconfig

        self.kubeconfig = kubeconfig
        configuration = kclient.Configuration()
        kconfig.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        # One client serves every pod worker: a pool as large as a burst of pods avoids reconnecting (TLS) each call.
        configuration.connection_pool_maxsize = pool_size
        self.client = kclient.ApiClient(configuration)
        self.host = configuration.host

    def _call(self, method: str, path: str, query: dict | None, body, content_type: str, timeout):
        from kubernetes.client.exceptions import ApiException

        try:
            return self.client.call_api(
                path, method,
                query_params=[(k, v) for k, v in (query or {}).items() if v is not None],
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body, auth_settings=["BearerToken"], _preload_content=False,
                _request_timeout=timeout, _return_http_data_only=True,
            )
        except ApiException as e:
            raise KubeError(e.status or 0, e.body.decode() if isinstance(e.body, bytes) else (e.body or "")) from None

    def request(self, method: str, path: str, *, query: dict | None = None, body=None,
                content_type: str = "application/json", timeout: float = API_TIMEOUT):
        resp = self._call(method, path, query, body, content_type, timeout)
        data = resp.data
        return json.loads(data) if data else None

    def get(self, path: str, timeout: float = API_TIMEOUT) -> dict | None:
        try:
            return self.request("GET", path, timeout=timeout)
        except KubeError as e:
            if e.status == 404:
                return None
            raise

    def patch(self, path: str, body: dict, *, strategic: bool = True, timeout: float = API_TIMEOUT):
        ctype = "application/strategic-merge-patch+json" if strategic else "application/merge-patch+json"
        return self.request("PATCH", path, body=body, content_type=ctype, timeout=timeout)

    def stream(self, path: str, query: dict, timeout):
        return self._call("GET", path, query, None, "application/json", timeout)


def pod_path(ns: str, name: str, sub: str = "") -> str:
    return f"/api/v1/namespaces/{ns}/pods/{name}" + (f"/{sub}" if sub else "")


class Informer:
    """List + watch one collection into a dict; calls `on_change()` after every change. Relists on 410/errors."""

    def __init__(self, kube_factory: Callable[[], Kube], path: str, name: str, on_change: Callable[[], None],
                 stop: threading.Event):
        self.kube_factory, self.path, self.name = kube_factory, path, name
        self.on_change, self.stop = on_change, stop
        self.items: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.synced = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"watch-{name}", daemon=True)

    @staticmethod
    def key(obj: dict) -> str:
        meta = obj.get("metadata") or {}
        return f"{meta.get('namespace', '')}/{meta.get('name')}"

    def start(self) -> None:
        self.thread.start()

    def snapshot(self) -> list[dict]:
        with self.lock:
            return list(self.items.values())

    def get(self, key: str) -> dict | None:
        with self.lock:
            return self.items.get(key)

    def _run(self) -> None:
        kube = None
        rv = None
        while not self.stop.is_set():
            try:
                if kube is None:
                    kube = self.kube_factory()
                if rv is None:
                    data = kube.request("GET", self.path, timeout=60)
                    items = {self.key(o): o for o in data.get("items") or []}
                    rv = data["metadata"]["resourceVersion"]
                    with self.lock:
                        self.items = items
                    self.synced.set()
                    self.on_change()
                rv = self._watch(kube, rv)
            except Exception as e:  # noqa: BLE001 - a watch must survive anything and relist
                if self.stop.is_set():
                    return
                log.warning("watch %s: %s; relisting", self.name, e)
                rv = None
                self.stop.wait(1.0)

    def _watch(self, kube: Kube, rv: str) -> str | None:
        from kubernetes.watch.watch import iter_resp_lines

        resp = kube.stream(self.path, {"watch": "true", "resourceVersion": rv, "allowWatchBookmarks": "true",
                                       "timeoutSeconds": "240"}, timeout=(10, 270))
        try:
            for line in iter_resp_lines(resp):
                if self.stop.is_set():
                    return rv
                if not line:
                    continue
                event = json.loads(line)
                etype, obj = event.get("type"), event.get("object") or {}
                if etype == "ERROR":
                    if obj.get("code") == 410:
                        return None  # too old: relist
                    raise RuntimeError(f"watch error: {obj.get('message')}")
                rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
                if etype == "BOOKMARK":
                    continue
                key = self.key(obj)
                with self.lock:
                    if etype == "DELETED":
                        self.items.pop(key, None)
                    else:
                        self.items[key] = obj
                self.on_change()
        finally:
            try:
                resp.release_conn()
            except Exception:  # noqa: BLE001
                pass
        return rv


class EventRecorder:
    """core/v1 Events, posted from a background thread so the callers never wait on them."""

    def __init__(self, kube: Kube, host: str, stop: threading.Event):
        self.kube, self.host, self.stop = kube, host, stop
        self.queue: queue.Queue = queue.Queue(maxsize=1000)
        threading.Thread(target=self._run, name="events", daemon=True).start()

    def emit(self, pod: dict, etype: str, reason: str, message: str, component: str = "kubelet",
             container: str | None = None) -> None:
        meta = pod.get("metadata") or {}
        now = L.utcnow()
        involved = {"apiVersion": "v1", "kind": "Pod", "namespace": meta.get("namespace"), "name": meta.get("name"),
                    "uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion")}
        if container:
            involved["fieldPath"] = f"spec.containers{{{container}}}"
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta.get('name')}.{secrets.token_hex(8)}", "namespace": meta.get("namespace")},
            "involvedObject": involved, "reason": reason, "message": message, "type": etype,
            "source": {"component": component, **({"host": self.host} if component == "kubelet" else {})},
            "firstTimestamp": L.rfc3339(now), "lastTimestamp": L.rfc3339(now), "count": 1,
            "reportingComponent": component, "reportingInstance": self.host if component == "kubelet" else "",
        }
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            pass

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                event = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self.kube.request("POST", f"/api/v1/namespaces/{event['metadata']['namespace']}/events", body=event,
                                  timeout=5)
            except Exception as e:  # noqa: BLE001 - events are best effort (namespace terminating, API down)
                log.debug("event %s not recorded: %s", event["reason"], e)


class Processes:
    """Every container process group this executor started; `close()` refuses new ones (shutdown)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.procs: dict[int, subprocess.Popen] = {}
        self.closed = False

    def add(self, proc: subprocess.Popen) -> bool:
        with self.lock:
            if self.closed:
                return False
            self.procs[proc.pid] = proc
            return True

    def remove(self, pid: int) -> None:
        with self.lock:
            self.procs.pop(pid, None)

    def close(self) -> None:
        with self.lock:
            self.closed = True

    def kill_all(self) -> None:
        with self.lock:
            pids = list(self.procs)
        for pid in pids:
            kill_group(pid, signal.SIGKILL)

    def alive(self) -> list[int]:
        with self.lock:
            return [pid for pid, p in self.procs.items() if p.poll() is None]


def kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ---- the kubelet side: one worker thread per pod ------------------------------------------------------------------
class VolumeError(Exception):
    pass


@dataclass
class Running:
    proc: subprocess.Popen
    log_offset: int
    termination_file: Path
    policy: str


class PodWorker:
    """Runs one pod bound to this node from admission to its terminal status (and its deletion)."""

    def __init__(self, ex: Executor, pod: dict, rejected: tuple[str, str] | None = None):
        self.ex = ex
        meta = pod["metadata"]
        self.uid, self.ns, self.name = meta["uid"], meta["namespace"], meta["name"]
        self.key = f"{self.ns}/{self.name}"
        self.pod = pod
        self.rejected = rejected
        self.wake = threading.Event()
        self.removed = False
        self.shutdown = False
        self.terminal = False  # no longer holds node resources
        self.done = False
        self.dir = ex.cfg.state_dir / "pods" / f"{self.ns}_{self.name}_{self.uid}"
        self.kube = ex.kube
        self.running: dict[str, Running] = {}
        self.exits: dict[str, tuple[int, dt.datetime]] = {}
        self.exits_lock = threading.Lock()
        self.last_status: dict | None = None
        self.last_patch_error = ""
        self.conditions = list((pod.get("status") or {}).get("conditions") or [])
        self.volumes: dict[str, tuple[str, bool]] | None = None  # name -> (host path, read-only)
        self.volume_retry_at: dt.datetime | None = None
        self.last_mount_error = ""
        self.sandbox_ready = False
        self.phase_override = self.reason = self.message = self.disruption = None
        self.retry: dict[str, dict] = {}  # container -> {at, show_backoff_at, failures, ...}
        self.thread = threading.Thread(target=self.run, name=f"pod-{self.key}", daemon=True)

    # -- called from the controller thread
    def update(self, pod: dict) -> None:
        self.pod = pod
        self.wake.set()

    def remove(self) -> None:
        self.removed = True
        self.wake.set()

    def request_shutdown(self) -> None:
        self.shutdown = True
        self.wake.set()

    def start(self) -> None:
        self.thread.start()

    # -- the worker thread
    def run(self) -> None:
        try:
            self._run()
        except Exception:  # noqa: BLE001
            log.exception("pod %s: worker failed; killing its containers", self.key)
            for r in list(self.running.values()):
                kill_group(r.proc.pid, signal.SIGKILL)
        finally:
            self.terminal = True
            self.done = True
            self.ex.notify()

    def _event(self, etype: str, reason: str, message: str, container: str | None = None) -> None:
        self.ex.events.emit(self.pod, etype, reason, message, container=container)

    def _run(self) -> None:
        pod = self.pod
        spec = pod["spec"]
        status = pod.get("status") or {}
        now = L.utcnow()
        if self.rejected:
            reason, message = self.rejected
            log.warning("pod %s: rejected by admission: %s", self.key, message)
            self._event("Warning", reason, message)
            attempt = 0
            while not self._patch_status(L.rejected_status(reason, message, self.ex.cfg.host_ip, now)):
                attempt += 1
                if self.removed or (self.shutdown and attempt >= 2):
                    return
                self.wake.wait(min(2.0 * attempt, 10.0))
                self.wake.clear()
            return
        self.restart_policy = spec.get("restartPolicy") or "Always"
        self.start_time = L.parse_time(status.get("startTime")) or now
        self.init_specs = list(spec.get("initContainers") or [])
        self.specs = list(spec.get("containers") or [])
        default_reason = "PodInitializing" if self.init_specs else "ContainerCreating"
        self.init_runs = [L.ContainerRun(c["name"], c.get("image", ""), reason=default_reason) for c in self.init_specs]
        self.runs = [L.ContainerRun(c["name"], c.get("image", ""), reason=default_reason) for c in self.specs]
        self._recover(status)
        for d in ("logs", "containers", "work", "volumes"):
            (self.dir / d).mkdir(parents=True, exist_ok=True)
        log.info("pod %s: admitted (uid %s, restartPolicy %s)", self.key, self.uid, self.restart_policy)
        self._sync_status()
        while True:
            now = L.utcnow()
            kill = self._kill_decision(now)
            if kill:
                self._terminate(*kill)
                return
            self._step(now)
            if self._finished():
                self.terminal = True
                self._flush_final_status()
                log.info("pod %s: %s", self.key, self._phase())
                return
            self._sync_status()
            self.wake.wait(self._next_timeout(now))
            self.wake.clear()

    # -- restart safety
    def _recover(self, status: dict) -> None:
        """Containers the API shows as started, which this (new) executor process cannot have: they are gone."""
        listed = (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])
        old = {s["name"]: s for s in listed}
        if not any(L.was_started(s) for s in old.values()):
            return
        log.warning("pod %s: its containers ran under a previous executor process; they are gone", self.key)
        for run in self.init_runs + self.runs:
            s = old.get(run.name)
            if not s:
                continue
            state = s.get("state") or {}
            run.restart_count = int(s.get("restartCount") or 0)
            run.container_id = s.get("containerID", "")
            run.image_id = s.get("imageID", "")
            last = (s.get("lastState") or {}).get("terminated")
            run.last_state = last or None
            if "terminated" in state:
                t = state["terminated"]
                run.state, run.reason, run.message = "terminated", t.get("reason", "Error"), t.get("message", "")
                run.exit_code = int(t.get("exitCode", 0))
                run.started_at, run.finished_at = L.parse_time(t.get("startedAt")), L.parse_time(t.get("finishedAt"))
            elif "running" in state:
                if self.restart_policy == "Never":
                    run.state, run.reason, run.message = "terminated", "ContainerStatusUnknown", L.UNKNOWN_MESSAGE
                    run.exit_code = L.UNKNOWN_EXIT_CODE
                    run.started_at = run.finished_at = None
                    run.restart_count += 1
                else:
                    run.last_state = {"exitCode": L.UNKNOWN_EXIT_CODE, "reason": "ContainerStatusUnknown",
                                      "message": L.UNKNOWN_DELETED_MESSAGE, "startedAt": None, "finishedAt": None}
                    run.restart_count += 1
                    run.state, run.reason, run.message = "waiting", "ContainerCreating", ""
        self.sandbox_ready = True

    # -- decisions
    def _kill_decision(self, now: dt.datetime) -> tuple[str, float] | None:
        pod = self.pod
        meta, spec = pod["metadata"], pod["spec"]
        grace = float(spec.get("terminationGracePeriodSeconds", 30) or 0)
        if self.shutdown:
            return "shutdown", min(grace, self.ex.cfg.shutdown_grace_seconds)
        if self.removed:
            return "removed", 0.0
        if meta.get("deletionTimestamp"):
            return "delete", float(meta.get("deletionGracePeriodSeconds") or 0)
        evict = (meta.get("annotations") or {}).get(EVICT_ANNOTATION, "")
        if evict and evict.lower() not in ("false", "0", "no"):
            return "evict", 0.0
        deadline = spec.get("activeDeadlineSeconds")
        if deadline is not None and now >= self.start_time + dt.timedelta(seconds=int(deadline)):
            return "deadline", grace
        return None

    def _next_timeout(self, now: dt.datetime) -> float:
        timeout = 1.0
        deadline = self.pod["spec"].get("activeDeadlineSeconds")
        if deadline is not None:
            left = (self.start_time + dt.timedelta(seconds=int(deadline)) - now).total_seconds()
            timeout = min(timeout, max(left, 0.01))
        return timeout

    def _phase(self) -> str:
        return self.phase_override or L.pod_phase(self.restart_policy, self.init_runs, self.runs, self.terminal)

    def _finished(self) -> bool:
        if self.running:
            return False
        if self._phase() not in L.TERMINAL_PHASES:
            return False
        # OnFailure/Always containers waiting for a restart keep the pod alive (phase says Running then).
        return True

    # -- status
    def _view(self) -> L.PodView:
        return L.PodView(
            restart_policy=self.restart_policy, init_runs=self.init_runs, runs=self.runs,
            host_ip=self.ex.cfg.host_ip, pod_ip=self.ex.cfg.pod_ip if self.sandbox_ready or self.terminal else None,
            start_time=self.start_time, sandbox_ready=self.sandbox_ready and not self.terminal,
            terminal=self.terminal, phase_override=self.phase_override, reason=self.reason, message=self.message,
            disruption=self.disruption,
        )

    def _sync_status(self, timeout: float = API_TIMEOUT) -> bool:
        """PATCH the status when it changed; False when that failed."""
        if self.removed:
            return True
        status = L.build_pod_status(self._view(), self.conditions, L.utcnow())
        if status == self.last_status:
            return True
        if self._patch_status(status, timeout):
            self.last_status = status
            self.conditions = status["conditions"]
            return True
        return False

    def _flush_final_status(self, timeout: float = API_TIMEOUT) -> None:
        """The terminal status must reach the API server (the operator waits for it): retry like a status manager."""
        attempt = 0
        while not self._sync_status(timeout):
            attempt += 1
            if self.shutdown and attempt >= 2:
                log.warning("pod %s: terminal status not written before shutdown", self.key)
                return
            self.wake.wait(min(2.0 * attempt, 10.0))
            self.wake.clear()

    def _patch_status(self, status: dict, timeout: float = API_TIMEOUT) -> bool:
        try:
            self.kube.patch(pod_path(self.ns, self.name, "status"), {"metadata": {"uid": self.uid}, "status": status},
                            timeout=timeout)
            self.last_patch_error = ""
            return True
        except KubeError as e:
            if e.status in (404, 409):
                log.info("pod %s: gone while writing its status", self.key)
                self.removed = True
                return False
            error = str(e)
        except Exception as e:  # noqa: BLE001 - API down: retried on the next loop
            error = str(e)
        if error != self.last_patch_error:  # retried every loop: say it once
            log.warning("pod %s: status update failed (retrying): %s", self.key, error)
            self.last_patch_error = error
        return False

    # -- running containers
    def _step(self, now: dt.datetime) -> None:
        self._collect_exits()
        if self.volumes is None:
            if self.volume_retry_at and now < self.volume_retry_at:
                return
            try:
                self.volumes = self._prepare_volumes()
            except VolumeError as e:
                msg = str(e)
                if msg != self.last_mount_error:
                    log.warning("pod %s: %s", self.key, msg)
                    self._event("Warning", "FailedMount", msg)
                    self.last_mount_error = msg
                self.volume_retry_at = now + dt.timedelta(seconds=2)
                return
            self.sandbox_ready = True
        for c, r in zip(self.init_specs, self.init_runs, strict=True):
            if r.state == "terminated":
                if r.exit_code == 0:
                    continue
                if L.should_restart("OnFailure" if self.restart_policy == "Always" else self.restart_policy,
                                    r.exit_code):
                    self._crash_loop(c, r, now)
                return
            if r.state == "running":
                return
            self._try_start(c, r, now)
            return
        if self.init_specs and any(r.reason == "PodInitializing" and r.state == "waiting" for r in self.runs):
            for r in self.runs:
                if r.state == "waiting" and r.reason == "PodInitializing":
                    r.reason = "ContainerCreating"
        for c, r in zip(self.specs, self.runs, strict=True):
            if r.state == "running":
                continue
            if r.state == "terminated":
                if L.should_restart(self.restart_policy, r.exit_code or 0):
                    self._crash_loop(c, r, now)
                continue
            self._try_start(c, r, now)

    def _crash_loop(self, c: dict, r: L.ContainerRun, now: dt.datetime) -> None:
        """A terminated container that the restart policy restarts: back-off first (the first restart is at once)."""
        delay = 0.0 if r.restart_count == 0 else L.crash_backoff(r.restart_count)
        r.last_state = r.terminated_dict()
        r.state, r.exit_code = "waiting", None
        r.reason = "CrashLoopBackOff"
        r.message = f"back-off {int(delay)}s restarting failed container={r.name} pod={self.name}_{self.ns}({self.uid})"
        self.retry[r.name] = {"at": now + dt.timedelta(seconds=delay), "restart": True}
        if delay:
            self._event("Warning", "BackOff", f"Back-off restarting failed container {r.name} in pod "
                        f"{self.name}_{self.ns}({self.uid})", r.name)

    def _try_start(self, c: dict, r: L.ContainerRun, now: dt.datetime) -> None:
        retry = self.retry.get(r.name) or {}
        if retry.get("at") and now < retry["at"]:
            if r.reason == "ErrImagePull" and now >= retry.get("show_backoff_at", now):
                r.reason = "ImagePullBackOff"
                r.message = f'Back-off pulling image "{r.image}": ErrImagePull: {retry.get("error", "")}'
                self._event("Normal", "BackOff", f'Back-off pulling image "{r.image}"', r.name)
                self._event("Warning", "Failed", "Error: ImagePullBackOff", r.name)
            return
        restart = bool(retry.get("restart"))
        entry = L.match_image(r.image, self.ex.cfg.images)
        if entry is None:
            failures = int(retry.get("failures", 0)) + 1
            err = L.image_pull_error(r.image)
            if failures == 1:
                log.warning("pod %s: container %s: image %r matches no entry of the image table", self.key, r.name,
                            r.image)
            self._event("Normal", "Pulling", f'Pulling image "{r.image}"', r.name)
            self._event("Warning", "Failed", f'Failed to pull image "{r.image}": {err}', r.name)
            self._event("Warning", "Failed", "Error: ErrImagePull", r.name)
            r.reason, r.message = "ErrImagePull", err
            delay = min(10.0 * 2 ** (failures - 1), 300.0)
            self.retry[r.name] = {"at": now + dt.timedelta(seconds=delay), "failures": failures, "error": err,
                                  "show_backoff_at": now + dt.timedelta(seconds=1), "restart": restart}
            return
        try:
            env = self._container_env(c, entry)
        except L.EnvError as e:
            self._waiting_error(r, "CreateContainerConfigError", str(e), now, 2.0, restart)
            return
        argv = L.container_argv(c, env)
        if argv is None:
            cid = hashlib.sha256(f"{self.uid}/{r.name}/{r.restart_count}".encode()).hexdigest()
            self._waiting_error(r, "CreateContainerError", f'failed to generate container "{cid}" spec: failed to '
                                "generate spec: no command specified", now, 10.0, restart)
            return
        if restart:
            r.restart_count += 1
        self.retry.pop(r.name, None)
        self._spawn(c, r, argv, env, entry)

    def _waiting_error(self, r: L.ContainerRun, reason: str, message: str, now: dt.datetime, delay: float,
                       restart: bool) -> None:
        if (r.reason, r.message) != (reason, message):
            log.warning("pod %s: container %s: %s: %s", self.key, r.name, reason, message)
            self._event("Warning", "Failed", f"Error: {message}", r.name)
        r.state, r.reason, r.message = "waiting", reason, message
        self.retry[r.name] = {"at": now + dt.timedelta(seconds=delay), "restart": restart}

    def _container_env(self, c: dict, entry: dict) -> dict[str, str]:
        cfg = self.ex.cfg
        base = {"PATH": ":".join([*entry["path_prepend"], CONTAINER_PATH]), "HOSTNAME": self.name,
                "HOME": os.environ.get("HOME", "/root")}
        for name in entry["inherit"]:
            if name in os.environ:
                base[name] = os.environ[name]
        base.update(entry["env"])
        cache: dict[tuple[str, str, str], dict | None] = {}

        def getter(kind: str):
            def get(ns: str, name: str):
                k = (kind, ns, name)
                if k not in cache:
                    cache[k] = self.kube.get(f"/api/v1/namespaces/{ns}/{kind}/{name}")
                return cache[k]
            return get

        env = L.container_env(self.pod, c, get_secret=getter("secrets"), get_configmap=getter("configmaps"),
                              service_env=self.ex.service_env, pod_ip=cfg.pod_ip, host_ip=cfg.host_ip,
                              node_alloc=self.ex.node_allocatable())
        return {**base, **env}

    def _spawn(self, c: dict, r: L.ContainerRun, argv: list[str], env: dict[str, str], entry: dict) -> None:
        now = L.utcnow()
        cid = secrets.token_hex(32)
        cdir = self.dir / "containers" / r.name
        cdir.mkdir(parents=True, exist_ok=True)
        term_file = cdir / "termination-log"
        term_file.write_bytes(b"")
        term_file.chmod(0o666)
        log_path = self.dir / "logs" / f"{r.name}.log"
        mounts = []
        if self.ex.mount_namespace:
            for vm in c.get("volumeMounts") or []:
                source, ro = self.volumes.get(vm["name"], (None, False))
                if source is None:
                    continue
                if vm.get("subPath"):
                    source = os.path.join(source, vm["subPath"])
                    if not os.path.exists(source):
                        os.makedirs(source, exist_ok=True)
                mounts.append({"source": source, "target": vm["mountPath"],
                               "read_only": ro or bool(vm.get("readOnly"))})
            mounts.append({"source": str(term_file),
                           "target": c.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH, "read_only": False})
        else:
            env = {**env, "IMG2IMG_TERMINATION_LOG": str(term_file)}
            if c.get("volumeMounts"):
                log.warning("pod %s: container %s: no mount namespace here: its volumeMounts are not applied",
                            self.key, r.name)
        workdir = c.get("workingDir") or str(self.dir / "work")
        status_r, status_w = os.pipe()
        spec_path = cdir / f"launch-{cid[:12]}.json"
        spec = {"argv": argv, "env": env, "workdir": workdir, "workdir_is_host_path": not c.get("workingDir"),
                "mounts": mounts, "image_paths": entry.get("paths", []),
                "mount_namespace": self.ex.mount_namespace, "status_fd": status_w, "parent_pid": os.getpid()}
        fd = os.open(spec_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(spec, f)
        with open(log_path, "ab") as logf:
            offset = logf.tell()
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", str(SANDBOX), str(spec_path)],
                    stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, cwd=str(self.dir),
                    env={"LC_ALL": "C.UTF-8"}, start_new_session=True, pass_fds=(status_w,),
                )
            except OSError as e:
                os.close(status_r)
                os.close(status_w)
                self._waiting_error(r, "CreateContainerError", f"failed to start the container process: {e}", now,
                                    10.0, False)
                return
        os.close(status_w)
        if not self.ex.processes.add(proc):
            kill_group(proc.pid, signal.SIGKILL)
            proc.wait()
            os.close(status_r)
            return
        report = self._read_start_report(status_r)
        r.container_id = f"containerd://{cid}"
        r.image_id = L.image_id(r.image)
        r.started_at = L.utcnow()
        if report:
            proc.wait()
            kill_group(proc.pid, signal.SIGKILL)
            self.ex.processes.remove(proc.pid)
            r.state, r.reason, r.message = "terminated", report.get("reason", "StartError"), report.get("message", "")
            r.exit_code = 128
            r.finished_at = L.utcnow()
            log.warning("pod %s: container %s: %s", self.key, r.name, r.message)
            self._event("Warning", "Failed", f"Error: {r.message}", r.name)
            return
        r.state, r.reason, r.message, r.exit_code, r.finished_at = "running", "", "", None, None
        self.running[r.name] = Running(proc, offset, term_file, c.get("terminationMessagePolicy") or "File")
        (cdir / "pid").write_text(f"{proc.pid} {_start_time(proc.pid)}\n")
        log.info("pod %s: container %s started: pid %d, image %s, argv %s", self.key, r.name, proc.pid, r.image,
                 json.dumps(argv)[:300])
        self._event("Normal", "Pulled", f'Container image "{r.image}" already present on machine', r.name)
        self._event("Normal", "Created", f"Created container: {r.name}", r.name)
        self._event("Normal", "Started", f"Started container {r.name}", r.name)
        threading.Thread(target=self._wait_process, args=(r.name, proc), name=f"wait-{proc.pid}", daemon=True).start()

    @staticmethod
    def _read_start_report(fd: int) -> dict | None:
        data = b""
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([fd], [], [], 1.0)
                if not ready:
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(fd)
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return {"reason": "StartError", "message": data.decode(errors="replace")}

    def _wait_process(self, name: str, proc: subprocess.Popen) -> None:
        """Wait without reaping, kill what is left of the container's process group, then reap."""
        try:
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass
        kill_group(proc.pid, signal.SIGKILL)  # the container's init exited: the rest of the container goes too
        rc = proc.wait()
        self.ex.processes.remove(proc.pid)
        try:
            (self.dir / "containers" / name / "pid").unlink()
        except OSError:
            pass
        with self.exits_lock:
            self.exits[name] = (rc, L.utcnow())
        self.wake.set()

    def _collect_exits(self) -> None:
        with self.exits_lock:
            exits, self.exits = self.exits, {}
        for name, (rc, finished) in exits.items():
            running = self.running.pop(name, None)
            run = next((r for r in self.init_runs + self.runs if r.name == name), None)
            if running is None or run is None:
                continue
            code = L.exit_code_of(rc)
            try:
                content = running.termination_file.read_bytes()[: L.MAX_TERMINATION_MESSAGE]
            except OSError:
                content = b""
            tail = b""
            if not content and code != 0 and running.policy == "FallbackToLogsOnError":
                tail = read_tail(self.dir / "logs" / f"{name}.log", running.log_offset)
            run.state, run.exit_code, run.finished_at = "terminated", code, finished
            run.reason = "Completed" if code == 0 else "Error"
            run.message = L.termination_message(content, running.policy, code, tail)
            log.info("pod %s: container %s exited with code %d", self.key, name, code)

    # -- killing
    def _terminate(self, kind: str, grace: float) -> None:
        pod = self.pod
        log.info("pod %s: terminating (%s, grace %.0f s)", self.key, kind, grace)
        if kind == "deadline":
            self.phase_override, self.reason, self.message = "Failed", L.DEADLINE_REASON, L.DEADLINE_MESSAGE
            self._event("Normal", L.DEADLINE_REASON, L.DEADLINE_MESSAGE)
        elif kind == "evict":
            value = (pod["metadata"].get("annotations") or {}).get(EVICT_ANNOTATION, "")
            resource = value if value.lower() not in ("true", "yes", "1", "") else "memory"
            message = L.NODE_LOW_MESSAGE.format(resource=resource)
            self.phase_override, self.reason, self.message = "Failed", L.EVICTED_REASON, message
            self.disruption = message
            self._event("Warning", L.EVICTED_REASON, message)
        elif kind == "shutdown":
            self.phase_override, self.reason, self.message = "Failed", L.SHUTDOWN_REASON, L.SHUTDOWN_MESSAGE
            self.disruption = L.SHUTDOWN_MESSAGE
        grace = max(grace, MIN_KILL_GRACE)
        started = time.monotonic()
        deadline = started + grace
        self._collect_exits()
        for name, running in self.running.items():
            self._event("Normal", "Killing", f"Stopping container {name}", name)
            try:
                os.kill(running.proc.pid, signal.SIGTERM)  # the runtime signals the container's init only
            except ProcessLookupError:
                pass
        while self.running and time.monotonic() < deadline:
            self.wake.wait(min(0.2, max(deadline - time.monotonic(), 0.01)))
            self.wake.clear()
            self._collect_exits()
            if kind == "delete":  # a second, shorter delete (e.g. --grace-period=0 --force) shortens the wait
                newer = float(self.pod["metadata"].get("deletionGracePeriodSeconds") or 0)
                deadline = min(deadline, started + max(newer, MIN_KILL_GRACE))
            if self.removed:
                deadline = min(deadline, started + MIN_KILL_GRACE)
        for running in list(self.running.values()):
            kill_group(running.proc.pid, signal.SIGKILL)
        end = time.monotonic() + 10
        while self.running and time.monotonic() < end:
            self.wake.wait(0.1)
            self.wake.clear()
            self._collect_exits()
        for run in self.init_runs + self.runs:
            if run.state != "terminated":
                run.state, run.reason, run.message = "terminated", "ContainerStatusUnknown", L.UNKNOWN_MESSAGE
                run.exit_code = L.UNKNOWN_EXIT_CODE
                run.started_at = run.finished_at = None
        self.terminal = True
        self._flush_final_status(SHUTDOWN_API_TIMEOUT if kind == "shutdown" else API_TIMEOUT)
        log.info("pod %s: %s%s", self.key, self._phase(), f" ({self.reason})" if self.reason else "")
        if kind == "delete" and not self.removed:
            self.ex.finalize_deletion(self.ns, self.name, self.uid)

    # -- volumes
    def _prepare_volumes(self) -> dict[str, tuple[str, bool]]:
        out: dict[str, tuple[str, bool]] = {}
        for vol in self.pod["spec"].get("volumes") or []:
            name = vol["name"]
            target = self.dir / "volumes" / name
            if "emptyDir" in vol:
                target.mkdir(parents=True, exist_ok=True)
                out[name] = (str(target), False)
            elif "hostPath" in vol:
                out[name] = (self._host_path(name, vol["hostPath"]), False)
            elif "persistentVolumeClaim" in vol:
                claim = vol["persistentVolumeClaim"]
                path = self.ex.cfg.state_dir / "pvc" / self.ns / claim["claimName"]
                path.mkdir(parents=True, exist_ok=True)
                out[name] = (str(path), bool(claim.get("readOnly")))
            elif "configMap" in vol or "secret" in vol or "downwardAPI" in vol or "projected" in vol:
                files: dict[str, tuple[bytes, int | None]] = {}
                if "configMap" in vol:
                    self._add_source_files(files, name, "configMap", vol["configMap"],
                                           vol["configMap"].get("defaultMode"))
                elif "secret" in vol:
                    self._add_source_files(files, name, "secret", vol["secret"], vol["secret"].get("defaultMode"))
                elif "downwardAPI" in vol:
                    self._add_downward_files(files, vol["downwardAPI"].get("items") or [],
                                             vol["downwardAPI"].get("defaultMode"))
                else:
                    mode = vol["projected"].get("defaultMode")
                    for source in vol["projected"].get("sources") or []:
                        if "serviceAccountToken" in source:
                            self._add_token(files, name, source["serviceAccountToken"], mode)
                        elif "configMap" in source:
                            self._add_source_files(files, name, "configMap", source["configMap"], mode)
                        elif "secret" in source:
                            self._add_source_files(files, name, "secret", source["secret"], mode)
                        elif "downwardAPI" in source:
                            self._add_downward_files(files, source["downwardAPI"].get("items") or [], mode)
                write_files(target, files)
                out[name] = (str(target), True)
            else:
                kind = next((k for k in vol if k != "name"), "?")
                raise VolumeError(f'MountVolume.SetUp failed for volume "{name}" : volume type {kind} is not '
                                  "supported by the local executor")
        return out

    def _host_path(self, name: str, hp: dict) -> str:
        path, htype = hp["path"], hp.get("type") or ""
        if htype == "DirectoryOrCreate":
            os.makedirs(path, mode=0o755, exist_ok=True)
        elif htype == "FileOrCreate":
            os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
            with open(path, "a"):
                pass
        elif htype == "Directory" and not os.path.isdir(path):
            raise VolumeError(f'MountVolume.SetUp failed for volume "{name}" : hostPath type check failed: {path} '
                              "is not a directory")
        elif htype == "File" and not os.path.isfile(path):
            raise VolumeError(f'MountVolume.SetUp failed for volume "{name}" : hostPath type check failed: {path} '
                              "is not a file")
        elif not htype and not os.path.exists(path):
            os.makedirs(path, exist_ok=True)  # the runtime creates a missing unchecked hostPath as a directory
        return path

    def _add_source_files(self, files: dict, volume: str, kind: str, source: dict, default_mode) -> None:
        obj_name = source.get("name") if kind == "configMap" else source.get("secretName", source.get("name"))
        plural = "configmaps" if kind == "configMap" else "secrets"
        try:
            obj = self.kube.get(f"/api/v1/namespaces/{self.ns}/{plural}/{obj_name}")
        except Exception as e:  # noqa: BLE001
            raise VolumeError(f'MountVolume.SetUp failed for volume "{volume}" : {e}') from None
        if obj is None:
            if source.get("optional"):
                return
            raise VolumeError(f'MountVolume.SetUp failed for volume "{volume}" : {kind.lower()} "{obj_name}" not found')
        if kind == "configMap":
            data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
            data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        else:
            data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        items = source.get("items")
        mode = source.get("defaultMode", default_mode)
        if items:
            for item in items:
                if item["key"] not in data:
                    if source.get("optional"):
                        continue
                    raise VolumeError(f'MountVolume.SetUp failed for volume "{volume}" : configmap references '
                                      f"non-existent config key: {item['key']}" if kind == "configMap" else
                                      f'MountVolume.SetUp failed for volume "{volume}" : references non-existent '
                                      f"secret key: {item['key']}")
                files[item.get("path") or item["key"]] = (data[item["key"]], item.get("mode", mode))
        else:
            for k, v in data.items():
                files[k] = (v, mode)

    def _add_downward_files(self, files: dict, items: list, mode) -> None:
        cfg = self.ex.cfg
        for item in items:
            if "fieldRef" in item:
                value = L.field_ref_value(self.pod, item["fieldRef"].get("fieldPath", ""), pod_ip=cfg.pod_ip,
                                          host_ip=cfg.host_ip)
            elif "resourceFieldRef" in item:
                ref = item["resourceFieldRef"]
                container = next((c for c in self.pod["spec"].get("containers") or []
                                  if c["name"] == ref.get("containerName")), {})
                value = L.resource_field_value(container, ref, self.ex.node_allocatable())
            else:
                continue
            files[item["path"]] = (value.encode(), item.get("mode", mode))

    def _add_token(self, files: dict, volume: str, source: dict, mode) -> None:
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"audiences": [source["audience"]] if source.get("audience") else [],
                         "expirationSeconds": int(source.get("expirationSeconds") or 3607),
                         "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.name, "uid": self.uid}}}
        try:
            resp = self.kube.request("POST", f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token", body=body)
        except Exception as e:  # noqa: BLE001
            raise VolumeError(f'MountVolume.SetUp failed for volume "{volume}" : failed to fetch token: {e}') from None
        files[source.get("path") or "token"] = (resp["status"]["token"].encode(), mode if mode is not None else 0o600)


def write_files(folder: Path, files: dict[str, tuple[bytes, int | None]]) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for rel, (data, mode) in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o644 if mode is None else int(mode) & 0o777)


def read_tail(path: Path, offset: int, window: int = 64 * 1024) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            start = max(offset, end - window)
            f.seek(start)
            return f.read(end - start)
    except OSError:
        return b""


# ---- the executor -------------------------------------------------------------------------------------------------
class Executor:
    def __init__(self, cfg: Config, kubeconfig: str):
        self.cfg = cfg
        self.kubeconfig = kubeconfig
        self.stop = threading.Event()
        self.kube = Kube(kubeconfig)
        self.events = EventRecorder(self.kube, cfg.node_name, self.stop)
        self.processes = Processes()
        self.workers: dict[str, PodWorker] = {}
        self.done: dict[str, Path] = {}  # uid -> pod dir, for pods this process finished
        self.finalized: set[str] = set()
        self.lock = threading.Lock()
        self.assumed: dict[str, tuple[str, float]] = {}  # uid -> (node, expiry): bound, not yet seen bound
        self.changed = threading.Event()
        self.stopping = False
        self.controller: threading.Thread | None = None
        self.node_uid = ""
        self.mount_namespace = False
        api = urlparse(self.kube.host)
        port = str(api.port or 443)
        self.service_env = {
            "KUBERNETES_SERVICE_HOST": api.hostname or "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": f"tcp://{api.hostname}:{port}",
        }
        self.pods = Informer(lambda: Kube(kubeconfig, 2), "/api/v1/pods", "pods", self.notify, self.stop)
        self.nodes = Informer(lambda: Kube(kubeconfig, 2), "/api/v1/nodes", "nodes", self.notify, self.stop)

    def notify(self) -> None:
        self.changed.set()

    # -- node
    def node_allocatable(self) -> dict:
        node = self.nodes.get(f"/{self.cfg.node_name}") or self.node_manifest()
        return L.node_allocatable(node)

    def node_manifest(self) -> dict:
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

    def node_status(self, previous: list | None) -> dict:
        now = L.utcnow()
        prev = {c.get("type"): c for c in previous or []}

        def cond(ctype, status, reason, message):
            p = prev.get(ctype)
            return {"type": ctype, "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": L.rfc3339(now),
                    "lastTransitionTime": p["lastTransitionTime"] if p and p.get("status") == status
                    else L.rfc3339(now)}

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

    def register_node(self) -> None:
        cfg = self.cfg
        try:
            self.kubelet_version = (self.kube.request("GET", "/version") or {}).get("gitVersion", "v0.0.0")
        except Exception:  # noqa: BLE001
            self.kubelet_version = "v0.0.0"
        manifest = self.node_manifest()
        try:
            node = self.kube.request("POST", "/api/v1/nodes", body={k: v for k, v in manifest.items() if k != "status"})
            log.info("node %s registered", cfg.node_name)
        except KubeError as e:
            if e.status != 409:
                raise
            existing = self.kube.get(f"/api/v1/nodes/{cfg.node_name}") or {}
            taints = list((existing.get("spec") or {}).get("taints") or [])
            for t in cfg.taints:
                if not any(x.get("key") == t.get("key") and x.get("effect") == t.get("effect") for x in taints):
                    taints.append(t)
            node = self.kube.patch(f"/api/v1/nodes/{cfg.node_name}",
                                   {"metadata": {"labels": manifest["metadata"]["labels"]}, "spec": {"taints": taints}},
                                   strategic=False)
            log.info("node %s already registered: labels and taints updated", cfg.node_name)
        self.node_uid = node["metadata"]["uid"]
        self.update_node_status(node)
        self.renew_lease()
        self.lift_not_ready_taint()

    def lift_not_ready_taint(self) -> None:
        """Remove `node.kubernetes.io/not-ready:NoSchedule` once the node is Ready.

        The API server's TaintNodesByCondition admission puts it on every new Node; kube-controller-manager's node
        lifecycle controller lifts it when Ready is True. The local stack may not run that controller, so the
        executor does the same (harmless when the controller runs too).
        """
        node = self.kube.get(f"/api/v1/nodes/{self.cfg.node_name}")
        if not node:
            return
        taints = (node.get("spec") or {}).get("taints") or []
        kept = [t for t in taints
                if not (t.get("key") == "node.kubernetes.io/not-ready" and t.get("effect") == "NoSchedule")]
        if len(kept) == len(taints):
            return
        try:
            self.kube.patch(f"/api/v1/nodes/{self.cfg.node_name}",
                            {"metadata": {"resourceVersion": node["metadata"]["resourceVersion"]},
                             "spec": {"taints": kept or None}}, strategic=False)
            log.info("node %s: lifted the node.kubernetes.io/not-ready taint", self.cfg.node_name)
        except KubeError as e:
            if e.status != 409:
                raise

    def update_node_status(self, node: dict | None = None) -> None:
        previous = ((node or {}).get("status") or {}).get("conditions")
        if node is None:
            cached = self.nodes.get(f"/{self.cfg.node_name}")
            previous = ((cached or {}).get("status") or {}).get("conditions")
        self.kube.patch(f"/api/v1/nodes/{self.cfg.node_name}/status", {"status": self.node_status(previous)})

    def renew_lease(self) -> None:
        name, ns = self.cfg.node_name, "kube-node-lease"
        now = L.micro_time(L.utcnow())
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

    def _heartbeat(self) -> None:
        last_status = time.monotonic()
        while not self.stop.wait(LEASE_RENEW_SECONDS):
            try:
                if self.kube.get(f"/api/v1/nodes/{self.cfg.node_name}", timeout=10) is None:
                    log.warning("node %s was deleted; registering it again", self.cfg.node_name)
                    self.register_node()
                    last_status = time.monotonic()
                    continue
                self.renew_lease()
                cached = self.nodes.get(f"/{self.cfg.node_name}") or {}
                if any(t.get("key") == "node.kubernetes.io/not-ready" and t.get("effect") == "NoSchedule"
                       for t in (cached.get("spec") or {}).get("taints") or []):
                    self.lift_not_ready_taint()
                if time.monotonic() - last_status >= NODE_STATUS_SECONDS:
                    self.update_node_status()
                    last_status = time.monotonic()
            except Exception as e:  # noqa: BLE001 - keep beating
                log.warning("node heartbeat failed: %s", e)

    # -- kubelet
    def admit(self, pod: dict) -> tuple[str, str] | None:
        node = self.nodes.get(f"/{self.cfg.node_name}") or self.node_manifest()
        active = [w.pod for w in self.workers.values() if not w.terminal and not w.rejected]
        ok, reason, message = L.admit(pod, node, active)
        return None if ok else (reason, message)

    def finalize_deletion(self, ns: str, name: str, uid: str) -> None:
        """The kubelet's last word on a deleted pod whose containers are gone: delete it for good."""
        with self.lock:
            if uid in self.finalized:
                return
            self.finalized.add(uid)
        try:
            self.kube.request("DELETE", pod_path(ns, name), body={
                "apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0, "preconditions": {"uid": uid}})
            log.info("pod %s/%s: deleted", ns, name)
        except KubeError as e:
            if e.status not in (404, 409):
                log.warning("pod %s/%s: final delete failed: %s", ns, name, e)
                with self.lock:
                    self.finalized.discard(uid)

    def _kubelet_pass(self, pods: list[dict]) -> None:
        node = self.cfg.node_name
        live = {p["metadata"]["uid"]: p for p in pods}
        for uid, w in list(self.workers.items()):
            if w.done:
                del self.workers[uid]
                self.done[uid] = w.dir
        mine = sorted((p for p in pods if (p.get("spec") or {}).get("nodeName") == node),
                      key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))
        for pod in mine:
            uid = pod["metadata"]["uid"]
            worker = self.workers.get(uid)
            if worker is not None:
                worker.update(pod)
                continue
            deleting = bool(pod["metadata"].get("deletionTimestamp"))
            if uid in self.done or L.is_terminal(pod):
                self.done.setdefault(uid, self.cfg.state_dir / "pods" /
                                     f"{pod['metadata']['namespace']}_{pod['metadata']['name']}_{uid}")
                if deleting and L.is_terminal(pod):
                    self.finalize_deletion(pod["metadata"]["namespace"], pod["metadata"]["name"], uid)
                continue
            if self.stopping:
                continue
            started = any(L.was_started(s) for s in (pod.get("status") or {}).get("containerStatuses") or [])
            rejected = None if (started or deleting) else self.admit(pod)
            worker = PodWorker(self, pod, rejected)
            self.workers[uid] = worker
            worker.start()
        for uid, w in self.workers.items():
            if uid not in live:
                w.remove()
        for uid in [u for u in self.done if u not in live]:
            volumes = self.done.pop(uid) / "volumes"
            shutil.rmtree(volumes, ignore_errors=True)
            with self.lock:
                self.finalized.discard(uid)

    # -- scheduler
    def _scheduler_pass(self, pods: list[dict]) -> None:
        nodes = self.nodes.snapshot()
        now_mono = time.monotonic()
        by_uid = {p["metadata"]["uid"]: p for p in pods}
        for uid, (_node, expiry) in list(self.assumed.items()):
            pod = by_uid.get(uid)
            if pod is None or (pod.get("spec") or {}).get("nodeName") or now_mono > expiry:
                del self.assumed[uid]
        pods_by_node: dict[str, list[dict]] = defaultdict(list)
        pending = []
        for pod in pods:
            uid = pod["metadata"]["uid"]
            node = (pod.get("spec") or {}).get("nodeName") or (self.assumed.get(uid) or (None,))[0]
            if node:
                pods_by_node[node].append(pod)
            elif L.wants_scheduler(pod, self.cfg.scheduler_name):
                pending.append(pod)
        for pod in L.scheduling_order(pending):
            meta = pod["metadata"]
            key = f"{meta['namespace']}/{meta['name']}"
            previous = next((c for c in (pod.get("status") or {}).get("conditions") or []
                             if c.get("type") == "PodScheduled"), None)
            if (pod.get("spec") or {}).get("schedulingGates"):
                self._set_unschedulable(pod, previous, "SchedulingGated",
                                        "Scheduling is blocked due to non-empty scheduling gates")
                continue
            result = L.schedule(pod, nodes, pods_by_node)
            if result.node is None:
                self._set_unschedulable(pod, previous, "Unschedulable", result.message)
                continue
            try:
                self.kube.request("POST", pod_path(meta["namespace"], meta["name"], "binding"), body={
                    "apiVersion": "v1", "kind": "Binding",
                    "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": result.node}})
            except KubeError as e:
                if e.status not in (404, 409):
                    log.warning("scheduler: binding %s failed: %s", key, e)
                continue
            self.assumed[meta["uid"]] = (result.node, now_mono + 30)
            pods_by_node[result.node].append(pod)
            log.info("scheduler: %s bound to %s", key, result.node)
            self.events.emit(pod, "Normal", "Scheduled", f"Successfully assigned {key} to {result.node}",
                             component=self.cfg.scheduler_name)

    def _set_unschedulable(self, pod: dict, previous: dict | None, reason: str, message: str) -> None:
        if previous and previous.get("status") == "False" and previous.get("reason") == reason and \
                previous.get("message") == message:
            return
        meta = pod["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        cond = L.unschedulable_condition(reason, message, L.utcnow(), previous)
        try:
            self.kube.patch(pod_path(meta["namespace"], meta["name"], "status"),
                            {"metadata": {"uid": meta["uid"]}, "status": {"conditions": [cond]}})
        except KubeError as e:
            if e.status not in (404, 409):
                log.warning("scheduler: status of %s: %s", key, e)
            return
        log.info("scheduler: %s: %s: %s", key, reason, message)
        if reason == "Unschedulable":
            self.events.emit(pod, "Warning", "FailedScheduling", message, component=self.cfg.scheduler_name)

    # -- main loop
    def _controller(self) -> None:
        while not self.stop.is_set():
            self.changed.wait(1.0)
            self.changed.clear()
            if self.stopping:
                return
            time.sleep(0.02)  # let bursts of watch events coalesce
            try:
                pods = self.pods.snapshot()
                self._kubelet_pass(pods)
                if self.cfg.scheduler:
                    self._scheduler_pass(pods)
            except Exception:  # noqa: BLE001
                log.exception("controller pass failed")

    def probe_mount_namespace(self) -> bool:
        mode = self.cfg.mount_namespace
        if mode in ("false", "no", "0"):
            return False
        result = subprocess.run([sys.executable, "-I", "-S", str(SANDBOX), "--probe"], capture_output=True, text=True)
        if result.returncode == 0:
            return True
        if mode in ("true", "yes", "1"):
            raise SystemExit(f"mountNamespace: true, but {result.stderr.strip()}")
        log.warning("%s: containers run in the executor's mount namespace; volumes are not mounted and the "
                    "termination message file is named by IMG2IMG_TERMINATION_LOG", result.stderr.strip())
        return False

    def cleanup_leftovers(self) -> None:
        """Kill container process groups a previous executor process left behind (it died without cleaning up).

        The pid file holds the main process's pid and start time. A live process with that pid but another start
        time is someone else's; a dead leader whose group still has members is ours (the kernel does not reuse a
        pid while it names a process group).
        """
        for pid_file in (self.cfg.state_dir / "pods").glob("*/containers/*/pid"):
            try:
                pid_text, _, started = pid_file.read_text().strip().partition(" ")
                pid = int(pid_text)
            except (OSError, ValueError):
                continue
            leader_start = _start_time(pid)
            ours = (leader_start == started) if leader_start else bool(_group_members(pid))
            if ours and pid != os.getpgid(0):
                log.warning("killing process group %d left by a previous executor (%s)", pid, pid_file.parent)
                kill_group(pid, signal.SIGKILL)
            try:
                pid_file.unlink()
            except OSError:
                pass

    def run(self) -> None:
        cfg = self.cfg
        (cfg.state_dir / "pods").mkdir(parents=True, exist_ok=True)
        self.mount_namespace = self.probe_mount_namespace()
        self.cleanup_leftovers()
        deadline = time.monotonic() + 120
        while True:
            try:
                self.register_node()
                break
            except Exception as e:  # noqa: BLE001 - the API server may still be starting
                if time.monotonic() > deadline or self.stop.is_set():
                    raise
                log.warning("registering node %s: %s; retrying", cfg.node_name, e)
                self.stop.wait(2)
        log.info("executor for node %s: capacity %s, labels %s, taints %s, scheduler %s, mount namespaces %s, "
                 "state %s, images %s", cfg.node_name, cfg.capacity, cfg.labels, cfg.taints,
                 cfg.scheduler_name if cfg.scheduler else "off", "on" if self.mount_namespace else "off",
                 cfg.state_dir, list(cfg.images))
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()
        self.pods.start()
        self.nodes.start()
        while not (self.pods.synced.wait(0.5) and self.nodes.synced.wait(0.5)):
            if self.stop.is_set():
                return
        self.controller = threading.Thread(target=self._controller, name="controller", daemon=True)
        self.controller.start()
        while not self.stop.wait(0.5):
            pass

    def shutdown(self) -> None:
        """Graceful node shutdown: every pod gets SIGTERM, then SIGKILL, and a terminal status."""
        if self.stopping:
            return
        self.stopping = True
        self.changed.set()
        self.processes.close()
        if self.controller is not None and self.controller is not threading.current_thread():
            self.controller.join(10)  # it owns self.workers; it creates no new worker once stopping
        workers = list(self.workers.values())
        log.info("shutting down: terminating %d pod(s)", sum(1 for w in workers if not w.done))
        for w in workers:
            w.request_shutdown()
        deadline = time.monotonic() + self.cfg.shutdown_grace_seconds + MIN_KILL_GRACE + 3
        for w in workers:
            if w.thread.is_alive():
                w.thread.join(max(deadline - time.monotonic(), 0.01))
        self.processes.kill_all()
        self.stop.set()


def _stat_fields(pid: int | str) -> list[str]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _start_time(pid: int) -> str:
    """/proc/<pid>/stat starttime (clock ticks since boot): with the pid, identifies one process."""
    fields = _stat_fields(pid)
    return fields[19] if len(fields) > 19 else ""


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(entry)
            if len(fields) > 2 and fields[2] == str(pgid):
                members.append(int(entry))
    return members


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m img2img.local.executor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--config", help="executor.yaml (see the module docstring)")
    parser.add_argument("--node-name", help="override nodeName")
    parser.add_argument("--state-dir", help="override stateDir")
    parser.add_argument("--log-level", default=os.environ.get("IMG2IMG_EXECUTOR_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    raw = {}
    if args.config:
        raw = yaml.safe_load(Path(args.config).read_text()) or {}
    cfg = Config.from_dict(raw)
    if args.node_name:
        cfg.node_name = args.node_name
    if args.state_dir:
        cfg.state_dir = Path(args.state_dir)
    executor = Executor(cfg, args.kubeconfig)

    def on_signal(signum, _frame):
        log.info("received %s", signal.Signals(signum).name)
        threading.Thread(target=executor.shutdown, name="shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    atexit.register(executor.processes.kill_all)
    try:
        executor.run()
    except KeyboardInterrupt:
        executor.shutdown()
    finally:
        executor.processes.kill_all()
    log.info("executor stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
