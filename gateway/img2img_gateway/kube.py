"""Every call the gateway makes to the Kubernetes API (kubernetes_asyncio), with plain dicts in and out.

What it needs, and its RBAC grants nothing more: Img2ImgJobs in the endpoints' namespaces (get, list, watch,
create, patch: ``spec.cancel`` and an annotation), RunnerPools in the runner namespace (get, list: health's workers), its key
Secrets by name in its own namespace (get), and the operator's webhook public key ConfigMap there (get).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any, AsyncIterator

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from img2img import API_GROUP, API_VERSION, PLURAL
from img2img.api.pool import POOL_PLURAL
from img2img.kube_async import connect  # noqa: F401 - re-exported for main

log = logging.getLogger("img2img_gateway.kube")

TIMEOUT = 30  # seconds per API call
WATCH_SECONDS = 300  # a watch is renewed after this long (the server ends it anyway)
MERGE_PATCH = "application/merge-patch+json"
FIELD_MANAGER = "img2img-gateway"


class Kube:
    def __init__(self, api: client.ApiClient):
        self.api = api
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    async def close(self) -> None:
        await self.api.close()

    # ---- jobs ---------------------------------------------------------------------------------------------------
    async def list_jobs(self, namespace: str) -> tuple[list[dict[str, Any]], str]:
        """Every job of the namespace, and the list's resourceVersion to watch from."""
        items: list[dict[str, Any]] = []
        token = None
        while True:
            page = await self.custom.list_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, PLURAL, limit=500, _continue=token, _request_timeout=TIMEOUT)
            items += page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items, page["metadata"]["resourceVersion"]

    async def watch_jobs(self, namespace: str, resource_version: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(event type, job) from ``resource_version`` on, until the server ends the watch; ApiException 410 when
        that version is too old (list again)."""
        stream = watch.Watch()
        async with stream.stream(self.custom.list_namespaced_custom_object, API_GROUP, API_VERSION, namespace,
                                 PLURAL, resource_version=resource_version, allow_watch_bookmarks=True,
                                 timeout_seconds=WATCH_SECONDS) as events:
            async for event in events:
                kind, obj = event["type"], event["object"]
                if kind == "ERROR":
                    raise ApiException(status=obj.get("code") or 500, reason=obj.get("message"))
                yield kind, obj

    async def get_job(self, namespace: str, name: str) -> dict[str, Any]:
        return await self.custom.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name,
                                                              _request_timeout=TIMEOUT)

    async def create_job(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return await self.custom.create_namespaced_custom_object(
            API_GROUP, API_VERSION, manifest["metadata"]["namespace"], PLURAL, manifest,
            field_manager=FIELD_MANAGER, _request_timeout=TIMEOUT)

    async def cancel_job(self, namespace: str, name: str) -> dict[str, Any]:
        return await self.custom.patch_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, PLURAL, name, {"spec": {"cancel": True}},
            field_manager=FIELD_MANAGER, _content_type=MERGE_PATCH, _request_timeout=TIMEOUT)

    async def annotate_job(self, namespace: str, name: str, annotations: dict[str, str]) -> dict[str, Any]:
        return await self.custom.patch_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, PLURAL, name, {"metadata": {"annotations": annotations}},
            field_manager=FIELD_MANAGER, _content_type=MERGE_PATCH, _request_timeout=TIMEOUT)

    # ---- pools and keys -----------------------------------------------------------------------------------------
    async def list_pools(self, namespace: str) -> list[dict[str, Any]]:
        """The RunnerPools of the runner namespace; none where the CRD is not installed (404) or not readable."""
        for attempt in range(5):
            try:
                page = await self.custom.list_namespaced_custom_object(API_GROUP, API_VERSION, namespace,
                                                                       POOL_PLURAL, _request_timeout=TIMEOUT)
                return page.get("items") or []
            except ApiException as exc:
                if exc.status in (403, 404):
                    return []
                # 429 "storage is (re)initializing": the API server's cache of a resource nobody read before
                if exc.status not in (429, 503) or attempt == 4:
                    raise
                await asyncio.sleep(0.2 * 2 ** attempt)
        return []

    async def read_secret_value(self, namespace: str, name: str, key: str) -> str | None:
        """A Secret's value under ``key``, stripped; None when the Secret or the key is not there."""
        try:
            secret = await self.core.read_namespaced_secret(name, namespace, _request_timeout=TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        value = (secret.data or {}).get(key)
        return base64.b64decode(value).decode().strip() if value else None

    async def read_config_map_value(self, namespace: str, name: str, key: str) -> str | None:
        """A ConfigMap's value under ``key``, stripped; None when the ConfigMap or the key is not there."""
        try:
            config_map = await self.core.read_namespaced_config_map(name, namespace, _request_timeout=TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        value = (config_map.data or {}).get(key)
        return value.strip() if value else None
