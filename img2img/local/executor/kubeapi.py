"""The executor's own Kubernetes API access: raw JSON over the official client's transport, and a list+watch cache.

Synchronous on purpose: every pod worker is a thread, and each call is one blocking request.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

API_TIMEOUT = 20.0


class KubeError(Exception):
    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}: {body[:500] if body else ''}")
        self.status = status


class Kube:
    """Raw JSON access over the official client's transport (kubeconfig, TLS, auth): dicts in, dicts out."""

    def __init__(self, kubeconfig: str, pool_size: int = 64):
        from kubernetes import client as kclient
        from kubernetes import config as kconfig

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
