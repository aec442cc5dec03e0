"""The executor's view of pods and nodes: a list + watch of one collection kept in a dict (img2img.kube's client)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from img2img.kube import Kube, KubeError

log = logging.getLogger(__name__)


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
                    items, rv = kube.list(self.path, timeout=60)
                    with self.lock:
                        self.items = {self.key(o): o for o in items}
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
        """Apply the events of one watch; the version to resume from, or None to relist."""
        events = kube.watch(self.path, rv)
        try:
            for kind, obj in events:
                if self.stop.is_set():
                    break
                key = self.key(obj)
                with self.lock:
                    if kind == "DELETED":
                        self.items.pop(key, None)
                    else:
                        self.items[key] = obj
                self.on_change()
        except KubeError as e:
            if e.status == 410:
                return None  # too old: relist
            raise
        return events.resource_version
