"""What the benchmarks add to img2img.kube's client: API requests counted from kube-apiserver's /metrics, and watches
that follow a collection in a thread and time each event's arrival."""

from __future__ import annotations

import re
import sys
import threading
import time
from collections import Counter
from typing import Callable

from img2img.kube import Kube, KubeError

WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY"})
_SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def request_counts(metrics_text: str) -> Counter:
    """`apiserver_request_total` summed by (verb, resource[/subresource]) over codes, scopes and versions."""
    counts: Counter = Counter()
    for line in metrics_text.splitlines():
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = dict(_LABEL.findall(m["labels"]))
        resource = labels.get("resource", "")
        if not resource:
            continue  # /healthz, /metrics, discovery
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        counts[(labels.get("verb", ""), resource)] += int(float(m["value"]))
    return counts


def counts_now(kube: Kube) -> Counter:
    """Every request the API server has served so far, by (verb, resource)."""
    return request_counts(kube.raw("GET", "/metrics").decode())


def version_now(kube: Kube, path: str) -> str:
    """The collection's resourceVersion now (a list of one item): a watch from there sees what comes next."""
    return kube.request("GET", path, query={"limit": 1})["metadata"]["resourceVersion"]


class Follow:
    """One watch in its own thread, resumed from the last resourceVersion when the server ends it; `stop()` ends it.
    `on_event(type, object, monotonic arrival time)` is called for every change."""

    def __init__(self, kube: Kube, path: str, resource_version: str, on_event: Callable[[str, dict, float], None]):
        self.kube, self.path, self.on_event = kube, path, on_event
        self.rv: str | None = resource_version
        self._stop = threading.Event()
        self._watch = None
        self._thread = threading.Thread(target=self._loop, name=f"watch {path}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.close()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.rv is None:  # too old: go on from now (events in between are lost)
                    self.rv = version_now(self.kube, self.path)
                self._watch = self.kube.watch(self.path, self.rv, timeout_seconds=60)
                if self._stop.is_set():  # stop() came before there was a watch to close
                    self._watch.close()
                try:
                    for kind, obj in self._watch:
                        self.on_event(kind, obj, time.monotonic())
                finally:
                    self.rv = self._watch.resource_version  # the next watch resumes after the last event seen
            except KubeError as e:
                if self._stop.is_set():
                    return
                print(f"[watch {self.path}] {e}", file=sys.stderr, flush=True)
                if e.status == 410:
                    self.rv = None
                else:
                    time.sleep(0.2)
