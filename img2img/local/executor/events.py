"""core/v1 Events about pods, as the kubelet and kube-scheduler record them (best effort)."""

from __future__ import annotations

import logging
import queue
import secrets
import threading

from img2img.kube import Kube
from img2img.local.executor.kube_time import rfc3339, utcnow

log = logging.getLogger(__name__)


class EventRecorder:
    """core/v1 Events, posted from a background thread so the callers never wait on them."""

    def __init__(self, kube: Kube, host: str, stop: threading.Event):
        self.kube, self.host, self.stop = kube, host, stop
        self.queue: queue.Queue = queue.Queue(maxsize=1000)
        threading.Thread(target=self._run, name="events", daemon=True).start()

    def emit(self, pod: dict, etype: str, reason: str, message: str, component: str = "kubelet",
             container: str | None = None) -> None:
        meta = pod.get("metadata") or {}
        now = utcnow()
        involved = {"apiVersion": "v1", "kind": "Pod", "namespace": meta.get("namespace"), "name": meta.get("name"),
                    "uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion")}
        if container:
            involved["fieldPath"] = f"spec.containers{{{container}}}"
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta.get('name')}.{secrets.token_hex(8)}", "namespace": meta.get("namespace")},
            "involvedObject": involved, "reason": reason, "message": message, "type": etype,
            "source": {"component": component, **({"host": self.host} if component == "kubelet" else {})},
            "firstTimestamp": rfc3339(now), "lastTimestamp": rfc3339(now), "count": 1,
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
