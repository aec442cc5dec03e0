"""The scheduler (config `scheduler: true`) for pods whose `schedulerName` is the configured one.

Filters every Node as kube-scheduler does (scheduling.py), POSTs `pods/{name}/binding` to the best fit, or sets
`PodScheduled=False/Unschedulable` with kube-scheduler's message. Pending pods are retried on every change in the
cluster (a pod finishing frees its GPU). No preemption.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

from img2img.kube import Kube, KubeError, pod_path
from img2img.local.executor.events import EventRecorder
from img2img.local.executor.kube_time import utcnow
from img2img.local.executor.scheduling import schedule, scheduling_order, unschedulable_condition, wants_scheduler

log = logging.getLogger(__name__)

ASSUME_SECONDS = 30.0  # a pod bound here counts on its node until the watch shows it bound, or for this long


class Scheduler:
    def __init__(self, name: str, kube: Kube, events: EventRecorder):
        self.name, self.kube, self.events = name, kube, events
        self.assumed: dict[str, tuple[str, float]] = {}  # uid -> (node, expiry): bound, not yet seen bound

    def schedule_pending(self, pods: list[dict], nodes: list[dict]) -> None:
        """One pass (from the controller thread): place every pending pod of this scheduler, in queue order."""
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
            elif wants_scheduler(pod, self.name):
                pending.append(pod)
        for pod in scheduling_order(pending):
            meta = pod["metadata"]
            key = f"{meta['namespace']}/{meta['name']}"
            result = schedule(pod, nodes, pods_by_node)
            if result.node is None:
                self._set_unschedulable(pod, result.reason, result.message)
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
            self.assumed[meta["uid"]] = (result.node, now_mono + ASSUME_SECONDS)
            pods_by_node[result.node].append(pod)
            log.info("scheduler: %s bound to %s", key, result.node)
            self.events.emit(pod, "Normal", "Scheduled", f"Successfully assigned {key} to {result.node}",
                             component=self.name)

    def _set_unschedulable(self, pod: dict, reason: str, message: str) -> None:
        previous = next((c for c in (pod.get("status") or {}).get("conditions") or []
                         if c.get("type") == "PodScheduled"), None)
        if previous and previous.get("status") == "False" and previous.get("reason") == reason and \
                previous.get("message") == message:
            return
        meta = pod["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        cond = unschedulable_condition(reason, message, utcnow(), previous)
        try:
            self.kube.patch(pod_path(meta["namespace"], meta["name"], "status"),
                            {"metadata": {"uid": meta["uid"]}, "status": {"conditions": [cond]}})
        except KubeError as e:
            if e.status not in (404, 409):
                log.warning("scheduler: status of %s: %s", key, e)
            return
        log.info("scheduler: %s: %s: %s", key, reason, message)
        if reason == "Unschedulable":
            self.events.emit(pod, "Warning", "FailedScheduling", message, component=self.name)
