"""A small, fast client for the embedded stack's kube-apiserver: keep-alive HTTPS, raw JSON, watches, /metrics.

The benchmarks create thousands of objects from one Python process on a 2-core machine, so the client must cost
little: no model classes, one connection per thread, JSON parsed once. It only talks to the loopback API server of a
`Stack` (admin client certificate from the stack's certs folder).
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from img2img.local.certs import make_certs

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


class ApiError(Exception):
    def __init__(self, status: int, method: str, path: str, body: bytes):
        self.status = status
        try:
            message = json.loads(body).get("message", "")
        except ValueError:
            message = body[:300].decode(errors="replace")
        super().__init__(f"{method} {path}: HTTP {status}: {message}")


class Api:
    def __init__(self, server: str, state_dir: Path):
        url = urllib.parse.urlsplit(server)
        if url.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the benchmarks only talk to a loopback API server, not {server}")
        self.host, self.port = url.hostname, url.port or 443
        certs = make_certs(Path(state_dir) / "certs")  # reuses the stack's certificates
        self.ctx = ssl.create_default_context(cafile=str(certs.ca.cert))
        self.ctx.load_cert_chain(str(certs.admin.cert), str(certs.admin.key))
        self._local = threading.local()

    # ---- requests ---------------------------------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPSConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=60)
            self._local.conn = conn
        return conn

    def raw(self, method: str, path: str, body: Any = None,
            content_type: str = "application/json") -> tuple[int, bytes]:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in range(2):  # a keep-alive connection the server closed: reconnect once
            conn = self._connection()
            try:
                conn.request(method, path, body=data, headers=headers)
                response = conn.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                ok: tuple[int, ...] = (200, 201, 202)) -> dict:
        status, data = self.raw(method, path, body, content_type)
        if status not in ok:
            raise ApiError(status, method, path, data)
        return json.loads(data) if data else {}

    def get(self, path: str) -> dict:
        return self.request("GET", path)

    def create(self, path: str, body: dict) -> dict:
        return self.request("POST", path, body)

    def merge_patch(self, path: str, body: dict) -> dict:
        return self.request("PATCH", path, body, "application/merge-patch+json")

    def list_all(self, path: str, limit: int = 500) -> tuple[list[dict], str]:
        """Every item of a collection (paginated) and the list's resourceVersion."""
        items: list[dict] = []
        token = ""
        sep = "&" if "?" in path else "?"
        while True:
            page = self.get(f"{path}{sep}limit={limit}" + (f"&continue={urllib.parse.quote(token)}" if token else ""))
            items += page.get("items") or []
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return items, page["metadata"]["resourceVersion"]

    # ---- metrics ----------------------------------------------------------------------------------------------
    def metrics(self) -> str:
        status, data = self.raw("GET", "/metrics")
        if status != 200:
            raise ApiError(status, "GET", "/metrics", data)
        return data.decode()

    def request_counts(self) -> Counter:
        return request_counts(self.metrics())

    def version(self) -> str:
        return self.get("/version").get("gitVersion", "?")

    # ---- watches ----------------------------------------------------------------------------------------------
    def watch(self, path: str, resource_version: str, on_event: Callable[[str, dict, float], None]) -> Watch:
        """Follow `path` from `resource_version` in a thread: `on_event(type, object, monotonic arrival time)`."""
        return Watch(self, path, resource_version, on_event)


class Watch:
    """One watch in its own thread, resumed from the last resourceVersion when the server ends it; `stop()` ends it."""

    def __init__(self, api: Api, path: str, resource_version: str, on_event: Callable[[str, dict, float], None]):
        self.api, self.path, self.rv, self.on_event = api, path, resource_version, on_event
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._conn: http.client.HTTPSConnection | None = None
        self._thread = threading.Thread(target=self._loop, name=f"watch {path}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        conn = self._conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)  # unblocks the reader at once
            except OSError:
                pass
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        sep = "&" if "?" in self.path else "?"
        while not self._stop.is_set():
            conn = http.client.HTTPSConnection(self.api.host, self.api.port, context=self.api.ctx, timeout=120)
            self._conn = conn
            try:
                conn.request("GET", f"{self.path}{sep}watch=1&allowWatchBookmarks=true&timeoutSeconds=60"
                                    f"&resourceVersion={self.rv}", headers={"Accept": "application/json"})
                response = conn.getresponse()
                if response.status != 200:
                    raise ApiError(response.status, "WATCH", self.path, response.read())
                while not self._stop.is_set():
                    line = response.readline()
                    if not line:
                        break  # the server ended the watch (timeoutSeconds): resume from the last resourceVersion
                    arrived = time.monotonic()
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        self.errors.append(str(obj.get("message")))
                        if obj.get("code") == 410:  # too old: go on from now (events in between are lost)
                            self.rv = self.api.get(f"{self.path}{sep}limit=1")["metadata"]["resourceVersion"]
                        break
                    self.rv = (obj.get("metadata") or {}).get("resourceVersion") or self.rv
                    if event.get("type") != "BOOKMARK":
                        self.on_event(event["type"], obj, arrived)
            except (OSError, ValueError, http.client.HTTPException, ApiError) as e:
                if not self._stop.is_set():
                    self.errors.append(str(e))
                    time.sleep(0.2)
            finally:
                conn.close()
