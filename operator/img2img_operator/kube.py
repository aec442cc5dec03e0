"""Every call the operator makes to the Kubernetes API, with raw dict bodies in and out, over aiohttp.

The credentials are kopf's (``login``: a ``kopf.ConnectionInfo`` from the service account or the kubeconfig), read
again when the API server answers 401 (a service account's bound token is rotated by the kubelet). No Kubernetes
client library: kubernetes_asyncio's models alone cost the process about 70 MB of memory, and the operator sends and
reads plain JSON.

Writes are idempotent where the API allows: creating a pod whose name is taken creates nothing (409; never an
adoption), deleting one that is gone is a success (404), a status patch carries the resourceVersion it was decided on (409 → decide again).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import aiohttp
import kopf

from img2img import API_GROUP, API_VERSION, KIND, PLURAL
from img2img.api.pool import POOL_PLURAL

from .runner_pods import RUNNER_SELECTOR
from .views import LABEL_LEADER

log = logging.getLogger("img2img_operator.kube")

TIMEOUT = 30  # seconds per API call
WATCH_SECONDS = 300  # a watch request's server-side timeout; the watch then starts again from where it was
LIST_PAGE = 500  # items per list page
WATCH_LINE_LIMIT = 64 * 2**20  # bytes of one watch event (aiohttp's own limit, 128 KiB, is below a job's 1.5 MiB)
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
COMPONENT = "img2img-operator"


class ApiError(Exception):
    """The API server refused a call: the HTTP ``status``, and the ``body`` it answered (its Status, as JSON text)."""

    def __init__(self, status: int | None, body: str):
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


class Conflict(Exception):
    """The object changed since the decision was taken (409)."""


class Gone(Exception):
    """The object no longer exists (404)."""


class Expired(Exception):
    """A watch's resourceVersion is too old (410): list again."""


class Refused(Exception):
    """The API server refuses the write for good (invalid, or too large): the same write would be refused again."""


# What the API server says (HTTP 500) when an object is over etcd's request limit (1.5 MiB by default), in etcd's
# words or its gRPC client's (over 2 MiB).
TOO_LARGE_FOR_ETCD = ("etcdserver: request is too large", "ResourceExhausted")


RESOURCE_VERSION_PATH = "/metadata/resourceVersion"


# What the API server says (422, no cause given) for a JSON patch that does not apply to the object as it is.
PATCH_NOT_APPLIED = "the server rejected our request due to an error in our request"


def patch_not_applied(status: int | None, message: str) -> bool:
    """Whether a JSON patch was refused because it does not apply to the object as stored (a failed ``test``, a
    removed key that is not there), as opposed to an object the patch would make invalid (422 naming its fields)."""
    return status == 422 and message == PATCH_NOT_APPLIED


def refused_for_good(status: int | None, message: str) -> bool:
    """Whether a refused write would be refused again whatever the retries: the object is invalid (422: a schema
    limit such as a field's maxLength), or too large for an API request (413) or for etcd (a 500 naming its limit)."""
    return status in (413, 422) or (status == 500 and any(words in message for words in TOO_LARGE_FOR_ETCD))


def api_message(exc: Exception) -> str:
    """What the API server said: its Status's message, else the body, else the exception."""
    body = getattr(exc, "body", None)
    if isinstance(body, str) and body.startswith("{"):
        try:
            return json.loads(body).get("message") or body
        except ValueError:
            pass
    return str(body or exc)


Login = Callable[[], kopf.ConnectionInfo | None]


@dataclass(frozen=True)
class _Endpoint:
    """Where the API server is and how to show who we are, from one reading of the credentials."""

    server: str
    headers: dict[str, str]
    ssl: ssl.SSLContext
    proxy: str | None

    @classmethod
    def of(cls, info: kopf.ConnectionInfo) -> _Endpoint:
        headers = {**info.as_http_headers(), "Accept": "application/json", "User-Agent": COMPONENT}
        return cls(info.server.rstrip("/"), headers, info.as_ssl_context(), info.proxy_url)


class Kube:
    """The operator's API client: ``login`` gives the credentials (kopf's login handlers), read at the first call
    and again whenever the API server answers 401."""

    def __init__(self, login: Login):
        self._login = login
        self._endpoint: _Endpoint | None = None
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self.instance = os.environ.get("POD_NAME") or socket.gethostname()

    async def close(self) -> None:
        await self._session.close()

    def _read_credentials(self) -> _Endpoint:
        info = self._login()
        if info is None:
            raise RuntimeError("no Kubernetes credentials: neither a service account nor a kubeconfig")
        self._endpoint = _Endpoint.of(info)
        return self._endpoint

    async def _send(self, method: str, path: str, query: Mapping[str, Any] | None, body: Any, content_type: str,
                    timeout: float) -> aiohttp.ClientResponse:
        """The response (to be read and released by the caller). When the API server no longer accepts the
        credentials (401: a rotated service-account token), they are read again and the call made once more."""
        params = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in (query or {}).items()
                  if v is not None}
        data = None if body is None else json.dumps(body).encode()

        async def send(endpoint: _Endpoint) -> aiohttp.ClientResponse:
            headers = {**endpoint.headers, "Content-Type": content_type} if data is not None else endpoint.headers
            return await self._session.request(method, endpoint.server + path, params=params, data=data,
                                               headers=headers, ssl=endpoint.ssl, proxy=endpoint.proxy,
                                               timeout=aiohttp.ClientTimeout(total=timeout))

        response = await send(self._endpoint or self._read_credentials())
        if response.status == 401:
            response.release()
            log.info("the API server refused the credentials (401): reading them again")
            response = await send(self._read_credentials())
        return response

    async def request(self, method: str, path: str, *, body: Any = None, query: Mapping[str, Any] | None = None,
                      content_type: str = "application/json") -> dict[str, Any]:
        """One API call; its JSON answer as a dict; ApiError (``.status``) when the API server refuses it."""
        response = await self._send(method, path, query, body, content_type, TIMEOUT)
        async with response:
            text = await response.read()
            if response.status >= 400:
                raise ApiError(response.status, text.decode(errors="replace"))
            return json.loads(text) if text else {}

    async def _read(self, path: str) -> dict[str, Any] | None:
        """The object at ``path``; None when there is none (404)."""
        try:
            return await self.request("GET", path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def watch(self, path: str, query: Mapping[str, Any], resource_version: int | None,
                    seconds: int = WATCH_SECONDS) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(type, object) of each event after ``resource_version``, until the server ends the watch after
        ``seconds`` (bookmarks move the version on). Raises Expired when the version is too old: list again."""
        params = {**query, "watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": seconds,
                  "resourceVersion": str(resource_version) if resource_version is not None else None}
        response = await self._send("GET", path, params, None, "application/json", seconds + 30)
        async with response:
            if response.status != 200:
                text = await response.text()
                if response.status == 410:
                    raise Expired(text)
                raise ApiError(response.status, text)
            while True:
                line = await response.content.readuntil(b"\n", max_size=WATCH_LINE_LIMIT)
                if not line:
                    return
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Expired(obj.get("message") or "too old resource version")
                    raise ApiError(obj.get("code"), json.dumps(obj))
                yield kind, obj

    async def reflect(self, path: str, query: Mapping[str, Any],
                      replace: Callable[[list[dict[str, Any]], int | None], None],
                      event: Callable[[str, dict[str, Any]], None], *, relist_seconds: float,
                      keep: Callable[[Any], Any] | None = None, listed: asyncio.Event | None = None) -> None:
        """Keep a cache in step with a collection, forever: list it (``replace(items, resourceVersion)``, each
        item trimmed by ``keep`` page by page; ``listed`` set), then follow its watch (``event(type, object)``);
        list again when the watch's version expires, when a call fails, and every ``relist_seconds`` (healing
        whatever an event handler missed)."""
        delay = 1.0
        while True:
            try:
                items, rv = await self._list(path, query, keep)
                replace(items, rv)
                del items  # the cache holds what it keeps: not a second copy of the list during the watch
                if listed is not None:
                    listed.set()
                delay = 1.0
                relist_at = time.monotonic() + relist_seconds
                while (left := relist_at - time.monotonic()) > 0:
                    async for kind, obj in self.watch(path, query, rv, min(WATCH_SECONDS, max(1, round(left)))):
                        rv = _rv({"metadata": obj.get("metadata")}) or rv
                        if kind != "BOOKMARK":
                            event(kind, obj)
            except asyncio.CancelledError:
                raise
            except Expired:
                continue
            except Exception as e:
                log.warning("watching %s failed (%s: %s); listing again in %.0f s", path, type(e).__name__, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)

    # ---- runner pods and pools (the runner namespace) ---------------------------------------------------------
    async def create_pod(self, manifest: Mapping[str, Any]) -> dict[str, Any] | None:
        """Create the pod: its body, or None when a pod of that name exists already. That one is not adopted here:
        it is a runner only if the operator made it (``runner_pods.made_by_operator``), which the cache decides
        when the watch brings it."""
        ns = manifest["metadata"]["namespace"]
        try:
            return await self.request("POST", f"/api/v1/namespaces/{ns}/pods", body=dict(manifest))
        except ApiError as e:
            if e.status != 409:
                raise
        return None

    async def delete_pod(self, namespace: str, name: str, uid: str | None, grace_seconds: int) -> dict | None:
        """Delete the pod (only that uid, if given): the pod as it is now being deleted; None if already gone."""
        body: dict[str, Any] = {"gracePeriodSeconds": grace_seconds, "propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            data = await self.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", body=body)
            return data if data.get("kind") == "Pod" else None
        except ApiError as e:
            if e.status in (404, 409):  # gone, or a newer pod of that name (precondition failed)
                return None
            raise

    async def _list(self, path: str, query: Mapping[str, Any], keep: Callable[[Any], Any] | None
                    ) -> tuple[list[dict[str, Any]], int | None]:
        """Every item, in pages of LIST_PAGE, with the list's resourceVersion; ``keep`` trims each page's items
        before the next page is read (with thousands of jobs present, a whole list is what sets the operator's peak
        memory)."""
        items: list[Any] = []
        rv: int | None = None
        token: str | None = None
        first = True
        while first or token:
            data = await self.request("GET", path, query={**query, "limit": LIST_PAGE, "continue": token})
            page = data.pop("items", None) or []
            items += [keep(item) for item in page] if keep else page
            if first:
                rv = _rv(data)  # every page of a list is one snapshot: the first page's version
            first = False
            token = (data.get("metadata") or {}).get("continue") or None
        return items, rv

    @staticmethod
    def pods_path(namespace: str) -> str:
        return f"/api/v1/namespaces/{namespace}/pods"

    @staticmethod
    def pools_path(namespace: str, name: str | None = None, sub: str | None = None) -> str:
        path = f"/apis/{API_GROUP}/{API_VERSION}/namespaces/{namespace}/{POOL_PLURAL}"
        return path + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")

    POD_QUERY = {"labelSelector": RUNNER_SELECTOR}

    async def patch_pool_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        """Set a RunnerPool's status (a merge patch of the whole status: the operator is its one writer)."""
        try:
            return await self.request("PATCH", self.pools_path(namespace, name, "status"),
                                      body={"status": dict(status)}, content_type=MERGE_PATCH)
        except ApiError as e:
            if e.status == 404:
                raise Gone(f"{namespace}/{name}") from None
            raise

    # ---- leader election (the runner namespace) -----------------------------------------------------------------
    @staticmethod
    def _lease_path(namespace: str, name: str | None = None) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases" + (f"/{name}" if name else "")

    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._read(self._lease_path(namespace, name))

    async def write_lease(self, namespace: str, name: str, spec: Mapping[str, Any], resource_version: str | None
                          ) -> dict[str, Any]:
        """Create the Lease (``resource_version`` None), or replace it on the condition that it is still as read:
        Conflict when another replica wrote it first."""
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": dict(spec),
                "metadata": {"name": name, "namespace": namespace, "resourceVersion": resource_version,
                             "labels": {"app.kubernetes.io/managed-by": COMPONENT}}}
        try:
            if resource_version is None:
                return await self.request("POST", self._lease_path(namespace), body=body)
            return await self.request("PUT", self._lease_path(namespace, name), body=body)
        except ApiError as e:
            if e.status == 409:
                raise Conflict(f"Lease {namespace}/{name} changed since resourceVersion {resource_version}") from None
            raise

    async def label_leader(self, namespace: str, pod: str) -> None:
        """Label ``pod`` the leader, and no other pod of the namespace."""
        found = await self.request("GET", self.pods_path(namespace), query={"labelSelector": f"{LABEL_LEADER}=true"})
        others = [name for item in found.get("items") or []
                  if (name := (item.get("metadata") or {}).get("name")) and name != pod]
        for name, value in [*((name, None) for name in others), (pod, "true")]:
            try:
                await self.request("PATCH", f"{self.pods_path(namespace)}/{name}", content_type=MERGE_PATCH,
                                   body={"metadata": {"labels": {LABEL_LEADER: value}}})
            except ApiError as e:
                if e.status != 404 or name == pod:  # a former leader's pod may be gone already
                    raise

    # ---- the operator's keys: the runner token key, the webhook signing key ------------------------------------
    async def secret_entry(self, namespace: str, name: str, entry: str, new_value: Callable[[], bytes]) -> bytes:
        """Entry ``entry`` of Secret ``name``; the Secret is created with ``new_value()`` when missing (by whichever
        replica comes first: the others read it)."""
        path = f"/api/v1/namespaces/{namespace}/secrets"
        for _ in range(3):
            try:
                secret = await self.request("GET", f"{path}/{name}")
                return base64.b64decode((secret.get("data") or {})[entry])
            except ApiError as e:
                if e.status != 404:
                    raise
            except KeyError:
                raise RuntimeError(f"Secret {namespace}/{name} has no key {entry!r}") from None
            body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                    "metadata": {"name": name, "namespace": namespace,
                                 "labels": {"app.kubernetes.io/managed-by": COMPONENT}},
                    "data": {entry: base64.b64encode(new_value()).decode()}}
            try:
                await self.request("POST", path, body=body)
            except ApiError as e:
                if e.status != 409:
                    raise
        raise RuntimeError(f"cannot read or create the Secret {namespace}/{name}")

    async def publish(self, namespace: str, name: str, data: Mapping[str, str]) -> None:
        """ConfigMap ``name`` holding ``data``: created, or its data replaced (a merge patch) when it exists."""
        path = f"/api/v1/namespaces/{namespace}/configmaps"
        try:
            await self.request("PATCH", f"{path}/{name}", body={"data": dict(data)}, content_type=MERGE_PATCH)
            return
        except ApiError as e:
            if e.status != 404:
                raise
        body = {"apiVersion": "v1", "kind": "ConfigMap", "data": dict(data),
                "metadata": {"name": name, "namespace": namespace,
                             "labels": {"app.kubernetes.io/managed-by": COMPONENT}}}
        try:
            await self.request("POST", path, body=body)
        except ApiError as e:
            if e.status != 409:  # made meanwhile by another replica, with the same key
                raise

    # ---- jobs -------------------------------------------------------------------------------------------------
    @staticmethod
    def jobs_path(namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/apis/{API_GROUP}/{API_VERSION}"
        path = f"{base}/namespaces/{namespace}/{PLURAL}" if namespace else f"{base}/{PLURAL}"
        if name:
            path += f"/{name}"
        if sub:
            path += f"/{sub}"
        return path

    async def read_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._read(self.jobs_path(namespace, name))

    async def patch_job_status(self, namespace: str, name: str, status: Mapping[str, Any],
                               resource_version: str | None, current: Mapping[str, Any] | None = None
                               ) -> dict[str, Any]:
        """Patch ``.status`` through the status subresource, on the condition the job is still as seen.

        A JSON patch, not a merge patch: in a merge patch null means "remove", and the status must be able to hold
        nulls the runner wrote (``output.parameters.init_images: null``). ``status`` names the top-level keys to
        set (None = remove); ``current`` is the status they apply to.
        """
        ops = status_json_patch(status, current, resource_version)
        try:
            return await self.request("PATCH", self.jobs_path(namespace, name, "status"), body=ops,
                                      content_type=JSON_PATCH)
        except ApiError as e:
            moved = e.status == 409 or (patch_not_applied(e.status, api_message(e))
                                        and await self._moved(namespace, name, resource_version))
            if moved:
                raise Conflict(f"{namespace}/{name} changed since resourceVersion {resource_version}") from None
            if e.status == 404:
                raise Gone(f"{namespace}/{name}") from None
            if refused_for_good(e.status, api_message(e)):
                raise Refused(f"HTTP {e.status}: {api_message(e)}") from None
            raise

    async def _moved(self, namespace: str, name: str, resource_version: str | None) -> bool:
        """Whether the job is no longer at ``resource_version`` (a patch that did not apply was decided on an older
        version of it: decide again), else the patch itself is wrong for it (refused for good)."""
        if not resource_version:
            return False
        current = await self.read_job(namespace, name)
        return current is None or (current.get("metadata") or {}).get("resourceVersion") != resource_version

    async def delete_job(self, namespace: str, name: str, uid: str) -> bool:
        body = {"propagationPolicy": "Background", "preconditions": {"uid": uid}}
        try:
            await self.request("DELETE", self.jobs_path(namespace, name), body=body)
            return True
        except ApiError as e:
            if e.status in (404, 409):
                return False
            raise

    # ---- events -----------------------------------------------------------------------------------------------
    async def post_event(self, job: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event on the job (or on the object ``job`` names by ``apiVersion`` and ``kind``: a RunnerPool).
        Best effort: events are a convenience, the status is the record."""
        meta = job.get("metadata") or {}
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name')}.", "namespace": meta.get("namespace")},
            "involvedObject": {
                "apiVersion": job.get("apiVersion") or f"{API_GROUP}/{API_VERSION}",
                "kind": job.get("kind") or KIND,
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": f"{API_GROUP}/operator",
            "reportingInstance": self.instance[:128],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self.request("POST", f"/api/v1/namespaces/{meta.get('namespace')}/events", body=event)


def status_json_patch(status: Mapping[str, Any], current: Mapping[str, Any] | None,
                      resource_version: str | None) -> list[dict[str, Any]]:
    """JSON patch operations setting (or removing, for None) top-level status keys, on the condition the job is
    still at the resourceVersion decided on: a ``test`` of it first (a stale view fails there, not half-way, say on
    removing a key the job no longer has), and replacing it with that value (the API server answers 409 if the job
    moves while the patch is applied). A patch that does not apply is a 422 like an invalid object:
    ``patch_job_status`` tells them apart."""
    ops: list[dict[str, Any]] = []
    if resource_version:
        ops.append({"op": "test", "path": RESOURCE_VERSION_PATH, "value": resource_version})
        ops.append({"op": "replace", "path": RESOURCE_VERSION_PATH, "value": resource_version})
    if not current:
        ops.append({"op": "add", "path": "/status", "value": {k: v for k, v in status.items() if v is not None}})
        return ops
    for key, value in status.items():
        path = "/status/" + key.replace("~", "~0").replace("/", "~1")
        if value is None:
            if key in current:
                ops.append({"op": "remove", "path": path})
        else:
            ops.append({"op": "add", "path": path, "value": value})
    return ops


def _rv(data: Mapping[str, Any]) -> int | None:
    try:
        return int((data.get("metadata") or {}).get("resourceVersion"))
    except (TypeError, ValueError):
        return None
