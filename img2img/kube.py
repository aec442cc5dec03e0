"""The one synchronous Kubernetes API client (the CLI, the local executor, the benchmarks, the tests).

The official client reads the kube context (kubeconfig, exec plugins, or the pod's service account: server, TLS
files, credentials, token refresh); requests go over keep-alive `http.client` connections shared by all threads, as
raw JSON: dicts in, dicts out, each answer parsed once. The benchmarks create thousands of objects from one process
on a 2-core machine, where the official client's own request path (model serialization, urllib3's pool) costs twice
the CPU per request. The async operator has its own client (kubernetes_asyncio). `kubernetes` is imported only when
a client is made, so that importing this module stays light (the CLI).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from img2img import API_GROUP, API_VERSION, PLURAL

API_TIMEOUT = 20.0  # seconds for one request
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class KubeError(Exception):
    """The API server refused a request: ``status`` (HTTP), ``message`` (what it said), ``details`` (its Status's
    details, e.g. ``name`` of a missing object); or gave no answer at all: ``status`` 0, ``message`` says why."""

    def __init__(self, status: int, message: str, details: dict | None = None):
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message
        self.details = details or {}

    @classmethod
    def from_answer(cls, status: int, reason: str, body: bytes) -> KubeError:
        """From a refusal: its metav1.Status' message, else the body's text, else the HTTP reason phrase."""
        try:
            answer = json.loads(body) if body else None
        except ValueError:
            answer = None
        if isinstance(answer, dict):
            message, details = answer.get("message"), answer.get("details")
        else:
            message, details = body.decode(errors="replace").strip()[:500], None
        return cls(status, message or reason or f"HTTP {status}", details if isinstance(details, dict) else None)


class NoContext(Exception):
    """Neither a usable kube context nor a pod's service account: ``where`` the kubeconfig was looked for, and why."""

    def __init__(self, where: str, why: str):
        super().__init__(f"{where}: {why}")
        self.where, self.why = where, why


def connect(kubeconfig: str | os.PathLike | None = None, *, pool_size: int = 8) -> Kube:
    """A client for the current context of ``kubeconfig`` (else ``$KUBECONFIG``, else ~/.kube/config), else for the
    pod's service account; its ``namespace`` is the context's (or the service account's). ``pool_size``: connections
    kept open, as many as threads calling at once (each reconnect is a TLS handshake)."""
    from kubernetes import client, config

    config_file = str(kubeconfig) if kubeconfig is not None else None
    configuration = client.Configuration()
    try:
        config.load_kube_config(config_file=config_file, client_configuration=configuration)
        _, context = config.list_kube_config_contexts(config_file=config_file)
        namespace = (context.get("context") or {}).get("namespace") or "default"
    except config.ConfigException as kube_exc:
        try:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        except (config.ConfigException, OSError):
            where = config_file or os.environ.get("KUBECONFIG") or "~/.kube/config"
            raise NoContext(where, str(kube_exc)) from None
    return Kube(configuration, namespace, pool_size)


def pod_path(namespace: str, name: str, sub: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/pods/{name}" + (f"/{sub}" if sub else "")


def job_path(namespace: str | None, name: str = "", sub: str = "") -> str:
    """The Img2ImgJobs of a namespace (of every namespace when None), or one of them (and a subresource)."""
    path = f"/apis/{API_GROUP}/{API_VERSION}" + (f"/namespaces/{namespace}" if namespace else "") + f"/{PLURAL}"
    return path + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")


class Kube:
    """Requests to one API server, from any number of threads: keep-alive connections, each used by one request at a
    time and then kept for the next (a new connection costs a TLS handshake)."""

    def __init__(self, configuration, namespace: str = "default", pool_size: int = 8):
        self.configuration = configuration  # kubernetes.client.Configuration: server, TLS files, credentials
        self.host: str = configuration.host
        self.namespace = namespace
        self.pool_size = pool_size
        url = urlsplit(self.host)
        self._tls = tls_context(configuration) if url.scheme == "https" else None
        self._address = (url.hostname, url.port or (443 if self._tls else 80))
        self._server_name = configuration.tls_server_name or url.hostname
        self._prefix = url.path.rstrip("/")  # a server behind a path (e.g. a proxy's /k8s/clusters/<id>)
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _send(self, method: str, path: str, *, query: dict | None = None, body: Any = None,
              content_type: str = JSON, timeout: float = API_TIMEOUT,
              ) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
        """One request; the response to a 2xx answer, its body not read yet, and its connection; else KubeError."""
        query = {k: v for k, v in (query or {}).items() if v is not None}
        url = self._prefix + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": JSON}
        for auth in self.configuration.auth_settings().values():  # refreshes an expiring token first
            if auth["in"] == "header" and auth["value"]:
                headers[auth["key"]] = auth["value"]
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = content_type
        while True:
            conn, reused = self._connection(timeout)
            try:
                conn.request(method, url, body=data, headers=headers)
                response = conn.getresponse()
                break
            except (http.client.HTTPException, OSError) as exc:
                conn.close()
                if reused and not isinstance(exc, TimeoutError):
                    continue  # the server closed the kept connection meanwhile: again on a new one
                raise KubeError(0, f"cannot reach the Kubernetes API server at {self.host}: {exc}") from None
        if not 200 <= response.status < 300:
            raise KubeError.from_answer(response.status, response.reason, self._read(response, conn))
        return response, conn

    def _connection(self, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        """A kept connection (True), else a new one (False)."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            if self._tls is None:
                return http.client.HTTPConnection(*self._address, timeout=timeout), False
            return TLSConnection(self._address, timeout, self._tls, self._server_name), False
        if conn.timeout != timeout:
            conn.timeout = timeout
            conn.sock.settimeout(timeout)
        return conn, True

    def _read(self, response: http.client.HTTPResponse, conn: http.client.HTTPConnection) -> bytes:
        """The whole body; the connection is then kept for the next request (unless the server closes it)."""
        try:
            data = response.read()
        except (http.client.HTTPException, OSError) as exc:
            conn.close()
            raise KubeError(0, f"incomplete answer from the Kubernetes API server at {self.host}: {exc}") from None
        if response.will_close:
            conn.close()
            return data
        with self._lock:
            if len(self._idle) < self.pool_size:
                self._idle.append(conn)
                return data
        conn.close()
        return data

    def raw(self, method: str, path: str, **kwargs) -> bytes:
        """A request's answer as bytes (e.g. ``/metrics``, which is not JSON)."""
        return self._read(*self._send(method, path, **kwargs))

    def request(self, method: str, path: str, **kwargs) -> Any:
        """A request's JSON answer (None when empty); ``body`` is sent as JSON, or as is when it is bytes."""
        data = self.raw(method, path, **kwargs)
        return json.loads(data) if data else None

    def get(self, path: str, timeout: float = API_TIMEOUT) -> dict | None:
        """The object, or None when it does not exist."""
        try:
            return self.request("GET", path, timeout=timeout)
        except KubeError as e:
            if e.status == 404:
                return None
            raise

    def patch(self, path: str, body: dict, *, strategic: bool = True, timeout: float = API_TIMEOUT) -> dict:
        """A strategic merge patch (built-in kinds), else a JSON merge patch (what custom resources accept)."""
        return self.request("PATCH", path, body=body, content_type=STRATEGIC_MERGE_PATCH if strategic else MERGE_PATCH,
                            timeout=timeout)

    def list(self, path: str, *, query: dict | None = None, limit: int = 500,
             timeout: float = API_TIMEOUT) -> tuple[list[dict], str]:
        """Every item of a collection, page by page, and the list's resourceVersion (where a watch starts)."""
        items: list[dict] = []
        token = None
        while True:
            page = self.request("GET", path, query={**(query or {}), "limit": limit, "continue": token},
                                timeout=timeout)
            items += page.get("items") or []
            token = page["metadata"].get("continue")
            if not token:
                return items, page["metadata"]["resourceVersion"]

    def watch(self, path: str, resource_version: str, *, query: dict | None = None,
              timeout_seconds: int = 240) -> Watch:
        """The changes to a collection after ``resource_version``, until the server ends the watch after
        ``timeout_seconds`` (with bookmarks, so that the next watch resumes from a recent version)."""
        query = {**(query or {}), "watch": "true", "resourceVersion": resource_version, "allowWatchBookmarks": "true",
                 "timeoutSeconds": str(timeout_seconds)}
        response, conn = self._send("GET", path, query=query, timeout=timeout_seconds + 30)
        return Watch(response, conn, resource_version)


def tls_context(configuration) -> ssl.SSLContext:
    """TLS as the kube context says: its CA (else the system's), its client certificate, or no verification."""
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    return context


class TLSConnection(http.client.HTTPSConnection):
    """An HTTPS connection whose server certificate is checked for ``server_name`` (a kube context's
    ``tls-server-name``, else the server's host)."""

    def __init__(self, address: tuple[str, int], timeout: float, tls: ssl.SSLContext, server_name: str):
        super().__init__(*address, timeout=timeout, context=tls)
        self.tls, self.server_name = tls, server_name

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)  # TCP, with TCP_NODELAY
        self.sock = self.tls.wrap_socket(self.sock, server_hostname=self.server_name)


class Watch:
    """One watch request: iterating gives its (type, object) events, bookmarks left out, until the server ends it.

    ``resource_version`` is where the next watch resumes (bookmarks included). An ERROR event raises KubeError with
    its code (410: the version is too old, list again). ``close()``, from any thread, ends the iteration at once.
    """

    def __init__(self, response: http.client.HTTPResponse, conn: http.client.HTTPConnection, resource_version: str):
        self.response, self.conn = response, conn
        self.resource_version = resource_version
        self.closed = False

    def __iter__(self) -> Iterator[tuple[str, dict]]:
        try:
            while line := self.response.readline():
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    raise KubeError(obj.get("code") or 0, obj.get("message") or "watch error", obj.get("details"))
                self.resource_version = (obj.get("metadata") or {}).get("resourceVersion") or self.resource_version
                if kind != "BOOKMARK":
                    yield kind, obj
        except (http.client.HTTPException, OSError, ValueError) as exc:  # broken off, or a line cut short
            if self.closed:  # close() cut it: the watch simply ends
                return
            raise KubeError(0, f"watch ended: {exc}") from None
        finally:
            self.conn.close()

    def close(self) -> None:
        self.closed = True
        sock = self.conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # unblocks the reading thread
            except OSError:
                pass
