"""img2img_operator.kube's client against a real HTTP server (aiohttp's): kopf's credentials, read again on 401;
refusals with their status; watches with events larger than aiohttp's line limit; the reflector's paged list and
watch."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import kopf
import pytest
from aiohttp import web
from img2img_operator.kube import ApiError, Expired, Kube, api_message

PODS = "/api/v1/namespaces/ns/pods"


async def serving(handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                  scenario: Callable[[str], Awaitable[None]]) -> None:
    """Run ``scenario(server_url)`` while ``handler`` answers every request."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        await scenario(f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


def token_file_login(server: str, token_file: Path, calls: list[str]) -> Callable[[], kopf.ConnectionInfo]:
    """Like kopf's service-account login: the token file read at each call."""
    def login() -> kopf.ConnectionInfo:
        calls.append(token_file.read_text())
        return kopf.ConnectionInfo(server=server, token=token_file.read_text())
    return login


def test_a_rotated_token_is_read_again_on_401_and_the_call_made_once_more(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("first")
    accepted = {"Bearer first"}
    seen: list[str | None] = []
    logins: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") not in accepted:
            return web.json_response({"kind": "Status", "code": 401, "message": "Unauthorized"}, status=401)
        return web.json_response({"kind": "PodList", "items": []})

    async def scenario(server: str) -> None:
        kube = Kube(token_file_login(server, token_file, logins))
        try:
            assert await kube.request("GET", PODS) == {"kind": "PodList", "items": []}
            token_file.write_text("second")  # the kubelet rotates the bound token; the old one expires
            accepted.clear()
            accepted.add("Bearer second")
            assert (await kube.request("GET", PODS))["kind"] == "PodList"
            assert await kube.request("GET", PODS)  # the new token is kept: no reading per call
            accepted.clear()  # the credentials are refused for good: one more try, then the 401
            with pytest.raises(ApiError) as refused:
                await kube.request("GET", PODS)
            assert refused.value.status == 401 and api_message(refused.value) == "Unauthorized"
        finally:
            await kube.close()

    asyncio.run(serving(handler, scenario))
    assert logins == ["first", "second", "second"]  # at the first call, then at each 401
    assert seen == ["Bearer first", "Bearer first", "Bearer second", "Bearer second",
                    "Bearer second", "Bearer second"]


def test_refusals_carry_the_status_and_the_servers_message_and_bodies_go_as_json(tmp_path):
    received: list[tuple[str, str | None, dict]] = []

    async def handler(request: web.Request) -> web.Response:
        received.append((request.method, request.headers.get("Content-Type"), await request.json()))
        if request.method == "POST":
            return web.json_response({"kind": "Status", "code": 409, "message": 'pods "p" already exists'},
                                     status=409)
        return web.json_response({"kind": "Status", "code": 422, "message": "spec.x: Invalid value"}, status=422)

    async def scenario(server: str) -> None:
        kube = Kube(lambda: kopf.ConnectionInfo(server=server, token="t"))
        try:
            manifest = {"metadata": {"name": "p", "namespace": "ns"}, "spec": {}}
            assert await kube.create_pod(manifest) is None  # a pod of that name exists: nothing made
            with pytest.raises(ApiError) as refused:
                await kube.request("PATCH", f"{PODS}/p", body={"spec": {"x": None}},
                                   content_type="application/merge-patch+json")
            assert refused.value.status == 422 and api_message(refused.value) == "spec.x: Invalid value"
        finally:
            await kube.close()

    asyncio.run(serving(handler, scenario))
    assert received == [
        ("POST", "application/json", {"metadata": {"name": "p", "namespace": "ns"}, "spec": {}}),
        ("PATCH", "application/merge-patch+json", {"spec": {"x": None}}),
    ]


def pod(name: str, rv: int, size: int = 0) -> dict:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": str(rv)},
            "spec": {"blob": "x" * size}}


def test_the_reflector_lists_in_pages_then_follows_the_watch_with_events_of_any_size():
    """Pages read in order from their continue tokens, each item trimmed as its page comes; the watch from the
    list's version, with an event of 1 MB (aiohttp's own line limit is 128 KiB); an expired version lists again."""
    pages = {None: ([pod("a", 7), pod("b", 8)], "p2"), "p2": ([pod("c", 9)], None)}
    queries: list[dict[str, str]] = []
    big = pod("d", 12, size=2**20)

    async def handler(request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        queries.append(query)
        lists = sum("watch" not in q for q in queries)
        if query.get("watch") != "true":
            items, token = pages[query.get("continue")]
            version = "10" if lists <= 2 else "20"  # the second list (two pages) comes after the watch expired
            meta = {"resourceVersion": version if "continue" not in query else "11", "continue": token}
            return web.json_response({"kind": "PodList", "metadata": meta, "items": items})
        response = web.StreamResponse()
        await response.prepare(request)
        if query["resourceVersion"] == "10":
            for event in [{"type": "ADDED", "object": big},
                          {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "13"}}}]:
                await response.write(json.dumps(event).encode() + b"\n")
        elif query["resourceVersion"] == "13":  # the watch again from the bookmark's version: too old by now
            expired = {"kind": "Status", "code": 410, "message": "too old resource version: 13 (20)"}
            await response.write(json.dumps({"type": "ERROR", "object": expired}).encode() + b"\n")
        await response.write_eof()
        return response

    replaced: list[tuple[list[str], int | None]] = []
    events: list[tuple[str, str, int]] = []

    async def scenario(server: str) -> None:
        kube = Kube(lambda: kopf.ConnectionInfo(server=server, token="t"))
        listed = asyncio.Event()

        def replace(items: list, rv: int | None) -> None:
            replaced.append((items, rv))

        try:
            task = asyncio.create_task(kube.reflect(
                PODS, {"labelSelector": "app=x"}, replace,
                lambda kind, obj: events.append((kind, obj["metadata"]["name"], len(obj["spec"]["blob"]))),
                relist_seconds=300, keep=lambda item: item["metadata"]["name"], listed=listed))
            await asyncio.wait_for(listed.wait(), 5)
            await asyncio.wait_for(_until(lambda: queries[-1].get("resourceVersion") == "20"), 10)
            task.cancel()
        finally:
            await kube.close()

    asyncio.run(serving(handler, scenario))
    assert replaced == [(["a", "b", "c"], 10), (["a", "b", "c"], 20)]
    assert events == [("ADDED", "d", 2**20)]
    lists = [q for q in queries if "watch" not in q]
    assert [q.get("continue") for q in lists[:2]] == [None, "p2"] and all(q["limit"] == "500" for q in lists)
    watches = [q for q in queries if "watch" in q]
    assert [w["resourceVersion"] for w in watches][:3] == ["10", "13", "20"]  # from the list, the bookmark, the list
    assert all(q["labelSelector"] == "app=x" for q in queries)


def test_a_watch_from_an_expired_version_says_so():
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"kind": "Status", "code": 410, "message": "too old"}, status=410)

    async def scenario(server: str) -> None:
        kube = Kube(lambda: kopf.ConnectionInfo(server=server, token="t"))
        try:
            with pytest.raises(Expired):
                async for _ in kube.watch(PODS, {}, 5):
                    pass
        finally:
            await kube.close()

    asyncio.run(serving(handler, scenario))


def test_the_reflector_lists_again_every_relist_period_even_while_nothing_happens():
    """``timing.resyncSeconds`` is kept: the watch asks the server to end it by then, and the list comes again."""
    queries: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        queries.append(dict(request.query))
        if request.query.get("watch") != "true":
            return web.json_response({"kind": "PodList", "metadata": {"resourceVersion": "10"}, "items": []})
        response = web.StreamResponse()
        await response.prepare(request)
        await asyncio.sleep(int(request.query["timeoutSeconds"]))  # a quiet watch, ended by the server on time
        await response.write_eof()
        return response

    lists: list[int | None] = []

    async def scenario(server: str) -> None:
        kube = Kube(lambda: kopf.ConnectionInfo(server=server, token="t"))
        try:
            task = asyncio.create_task(kube.reflect(PODS, {}, lambda items, rv: lists.append(rv),
                                                    lambda kind, obj: None, relist_seconds=1))
            await asyncio.wait_for(_until(lambda: len(lists) >= 2), 10)
            task.cancel()
        finally:
            await kube.close()

    asyncio.run(serving(handler, scenario))
    assert [q["timeoutSeconds"] for q in queries if "watch" in q][:1] == ["1"]


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)
