"""The kubelet of one node: a PodWorker per pod bound to it, admission, the final delete, graceful node shutdown.

Admission repeats the scheduler's checks for the node (resources, node affinity): a pod bound past capacity (e.g. with
`spec.nodeName`) fails before anything runs. A deleted pod whose containers are gone is deleted for good (grace 0).

Files: `<stateDir>/pods/<namespace>_<name>_<uid>/` holds `logs/<container>.log` (stdout+stderr, all restarts
appended: what `kubectl logs` would show), `containers/<container>/termination-log` and `.../pid`, `work/` (the
working dir unless the container sets `workingDir`) and `volumes/`. Volumes are removed when the pod is deleted;
logs stay.

SIGTERM/SIGINT to the executor = graceful node shutdown: every pod's main process gets SIGTERM, then its group SIGKILL
after min(grace, `shutdownGracePeriodSeconds`), and the pods are marked Failed/`Terminated` with `DisruptionTarget`
(`TerminationByKubelet`), as a kubelet with graceful node shutdown does. After a hard death of the executor, the next
start reports the containers it ran as a kubelet reports containers it cannot find any more: terminated
`ContainerStatusUnknown`, exit code 137, "The container could not be located when the pod was terminated" (phase
Failed for `restartPolicy: Never`; `OnFailure`/`Always` pods are restarted with that as `lastState`).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from img2img.kube import Kube, KubeError, pod_path
from img2img.local.executor.config import Config
from img2img.local.executor.env import kubernetes_service_env
from img2img.local.executor.events import EventRecorder
from img2img.local.executor.kills import MIN_KILL_GRACE
from img2img.local.executor.node import NodeAgent
from img2img.local.executor.pod_network import HTTPS_PORT, PodNetworks
from img2img.local.executor.pod_status import is_terminal, was_started
from img2img.local.executor.pod_worker import PodWorker
from img2img.local.executor.processes import Processes, cleanup_leftovers, probe_mount_namespace
from img2img.local.executor.scheduling import admit

log = logging.getLogger(__name__)


class Kubelet:
    def __init__(self, cfg: Config, kube: Kube, events: EventRecorder, node: NodeAgent, notify: Callable[[], None]):
        self.cfg, self.kube, self.events, self.node = cfg, kube, events, node
        self.notify = notify  # a worker finished: the controller looks again
        self.processes = Processes()
        self.mount_namespace = False
        self.service_env = kubernetes_service_env(kube.host)
        api_port = int(self.service_env["KUBERNETES_SERVICE_PORT"])
        self.networks = PodNetworks({api_port: api_port, HTTPS_PORT: api_port, **{p: p for p in cfg.host_ports}})
        self.workers: dict[str, PodWorker] = {}
        self.done: dict[str, Path] = {}  # uid -> pod dir, for pods this process finished
        self.finalized: set[str] = set()
        self.lock = threading.Lock()
        self.stopping = False

    def pod_dir(self, meta: dict) -> Path:
        return self.cfg.state_dir / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid']}"

    def prepare(self) -> None:
        """Before the first pod: the state folder, mount namespaces or not, what a previous executor left running."""
        pods = self.cfg.state_dir / "pods"
        pods.mkdir(parents=True, exist_ok=True)
        self.mount_namespace = probe_mount_namespace(self.cfg.mount_namespace)
        cleanup_leftovers(pods)

    def admit(self, pod: dict) -> tuple[str, str] | None:
        """None when the pod may run here, else the (reason, message) it fails with."""
        active = [w.pod for w in self.workers.values() if not w.terminal and not w.rejected]
        ok, reason, message = admit(pod, self.node.current(), active)
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

    def sync(self, pods: list[dict]) -> None:
        """One pass over every pod (from the controller thread): start, update or remove the workers of this node's."""
        live = {p["metadata"]["uid"]: p for p in pods}
        for uid, w in list(self.workers.items()):
            if w.done:
                del self.workers[uid]
                self.done[uid] = w.dir
        mine = sorted((p for p in pods if (p.get("spec") or {}).get("nodeName") == self.cfg.node_name),
                      key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))
        for pod in mine:
            meta = pod["metadata"]
            uid = meta["uid"]
            worker = self.workers.get(uid)
            if worker is not None:
                worker.update(pod)
                continue
            deleting = bool(meta.get("deletionTimestamp"))
            if uid in self.done or is_terminal(pod):
                self.done.setdefault(uid, self.pod_dir(meta))
                if deleting and is_terminal(pod):
                    self.finalize_deletion(meta["namespace"], meta["name"], uid)
                continue
            if self.stopping:
                continue
            started = any(was_started(s) for s in (pod.get("status") or {}).get("containerStatuses") or [])
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
            self.networks.delete(uid)
            with self.lock:
                self.finalized.discard(uid)

    def stop_admitting(self) -> bool:
        """No new worker and no new container process from now on; False when that was already so."""
        if self.stopping:
            return False
        self.stopping = True
        self.processes.close()
        return True

    def shut_down(self) -> None:
        """Graceful node shutdown (after stop_admitting, with the controller stopped: it owns `workers`)."""
        workers = list(self.workers.values())
        log.info("shutting down: terminating %d pod(s)", sum(1 for w in workers if not w.done))
        for w in workers:
            w.request_shutdown()
        deadline = time.monotonic() + self.cfg.shutdown_grace_seconds + MIN_KILL_GRACE + 3
        for w in workers:
            if w.thread.is_alive():
                w.thread.join(max(deadline - time.monotonic(), 0.01))
        self.processes.kill_all()
        self.networks.close()
