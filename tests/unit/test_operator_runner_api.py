"""The runner endpoint over HTTP: who is served (tokens, live runner pods), what each call answers, and what an
assignment grants (presigned URLs for exactly the job's input, the images it may read, its attempt's outputs)."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp.test_utils import TestClient, TestServer
from img2img.api.protocol import DONE, ENV_RUNNER_TOKEN, HEARTBEAT, TAKE, Assignment, runner_token

from test_operator_dispatcher import CFG, Cluster, Process

KEY = b"key"  # the simulated operator's key


def runner_pod(cluster: Cluster, name: str, phase: str = "Running", token: str | None = "signed") -> None:
    """A pod with the runner labels; ``token``: "signed" = the one the operator gives it (its name under KEY), None =
    none (a pod someone else made with the labels), else that token."""
    env = [] if token is None else [{"name": ENV_RUNNER_TOKEN,
                                     "value": runner_token(KEY, name) if token == "signed" else token}]
    body = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "img2img-system", "uid": f"pod-{name}",
                         "labels": {"app.kubernetes.io/managed-by": "img2img-operator",
                                    "app.kubernetes.io/component": "runner", "img2img.dev/pool": "l4"}},
            "spec": {"containers": [{"name": "runner", "env": env}]},
            "status": {"phase": phase}}
    cluster.pods[name] = cluster._bump(body)
    cluster._emit("pod", "ADDED", body)


async def client_of(proc: Process) -> TestClient:
    client = TestClient(TestServer(proc.api.app()))
    await client.start_server()
    return client


def call(proc: Process, path: str, body: dict, token: str | None) -> tuple[int, dict | None]:
    async def go():
        client = await client_of(proc)
        try:
            headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
            response = await client.post(path, data=json.dumps(body), headers=headers)
            text = await response.text()
            return response.status, json.loads(text) if text else None
        finally:
            await client.close()

    return asyncio.run(go())


@pytest.fixture
def proc():
    cluster = Cluster()
    runner_pod(cluster, "l4-aaaaa")
    runner_pod(cluster, "l4-ended", phase="Failed")
    # pods someone else made in the runner namespace with the runner labels: none, or a real runner's token
    runner_pod(cluster, "l4-fake1", token=None)
    runner_pod(cluster, "l4-fake2", token=runner_token(KEY, "l4-aaaaa"))
    process = Process(cluster, CFG)
    asyncio.run(process.start())
    return process


TAKE_BODY = {"runner": "l4-aaaaa", "models": [], "waitSeconds": 0.05}


@pytest.mark.parametrize("case,token,body", [
    ("no token", None, TAKE_BODY),
    ("a token signed with another key", runner_token(b"other", "l4-aaaaa"), TAKE_BODY),
    ("a token of a runner that does not exist", runner_token(KEY, "l4-zzzzz"), {**TAKE_BODY, "runner": "l4-zzzzz"}),
    ("a token of a runner whose pod ended", runner_token(KEY, "l4-ended"), {**TAKE_BODY, "runner": "l4-ended"}),
    ("another runner's token", runner_token(KEY, "l4-ended"), TAKE_BODY),
    ("a token that is not one", "garbage", TAKE_BODY),
    ("the token copied by a labelled pod", runner_token(KEY, "l4-aaaaa"), {**TAKE_BODY, "runner": "l4-fake2"}),
    # even a token signed for its name (which only the key can make) does not make a pod the operator did not
    # create a runner
    ("a labelled pod the operator did not make", runner_token(KEY, "l4-fake1"), {**TAKE_BODY, "runner": "l4-fake1"}),
])
def test_only_live_runner_pods_the_operator_signed_for_are_served(proc, case, token, body):
    for path, message in ((TAKE, body), (HEARTBEAT, {"runner": body["runner"], "lease": "x.1.y"}),
                          (DONE, {"runner": body["runner"], "lease": "x.1.y", "outcome": {}})):
        status, answer = call(proc, path, message, token)
        assert (status, answer) == (401, {"error": "unknown runner"}), (case, path)


def test_a_runner_with_its_token_is_served(proc):
    token = runner_token(KEY, "l4-aaaaa")
    assert call(proc, TAKE, TAKE_BODY, token) == (204, None)  # nothing to do within its wait
    status, answer = call(proc, HEARTBEAT, {"runner": "l4-aaaaa", "lease": "uid-x.1.abcdef01", "step": 1}, token)
    assert status == 200 and answer["stop"] == "lost"  # no such lease
    status, answer = call(proc, DONE, {"runner": "l4-aaaaa", "lease": "uid-x.1.abcdef01", "outcome": {}}, token)
    assert status == 409 and answer["accepted"] is False


def test_a_malformed_message_is_400_and_the_operator_starting_is_503(proc):
    token = runner_token(KEY, "l4-aaaaa")
    status, answer = call(proc, TAKE, {"runner": "l4-aaaaa", "waitSeconds": 999}, token)
    assert status == 400 and "waitSeconds" in answer["error"]
    proc.dispatcher.synced = False
    assert call(proc, TAKE, TAKE_BODY, token)[0] == 503


def test_an_assignment_grants_exactly_the_jobs_reads_and_its_attempts_writes(proc):
    from operator_samples import seed_request

    cluster = proc.c
    request = seed_request()["input"]
    request["payload"]["batch_size"] = 2
    request["payload"]["override_settings"]["samples_format"] = "jpg"
    request["payload"]["init_images"] = ["s3://img2img/uploads/team-a/init.png"]
    cluster.submit("s3job", input=request)
    token = runner_token(KEY, "l4-aaaaa")

    async def go():
        client = await client_of(proc)
        try:
            await proc.step()
            take = asyncio.create_task(client.post(TAKE, data=json.dumps(TAKE_BODY),
                                                   headers={"Authorization": f"Bearer {token}"}))
            response = await take
            return response.status, await response.json()
        finally:
            await client.close()

    status, answer = asyncio.run(go())
    assert status == 200
    a = Assignment.model_validate(answer)
    uid = cluster.job("s3job")["metadata"]["uid"]
    base = f"s3://img2img/jobs/team-a/s3job/{uid}/"
    assert a.job.attempt == 1 and a.lease.startswith(f"{uid}.1.")
    assert a.inputUrl == f"https://s3.test/get/{base}input.json" and base + "input.json" in cluster.s3
    # the image it reads, from the namespace's uploads (a job naming one it may not read never gets here:
    # test_operator_areas)
    assert a.images == {"s3://img2img/uploads/team-a/init.png":
                        "https://s3.test/get/s3://img2img/uploads/team-a/init.png"}
    # batch_size 2 + one ControlNet detect map, as JPEG files: keys and signed content type follow samples_format
    assert a.outputs.imageUris == [f"{base}attempt-1/images/{i}.jpg" for i in range(3)]
    assert a.outputs.imageUrls == [f"https://s3.test/put/{base}attempt-1/images/{i}.jpg?content-type=image/jpeg"
                                   for i in range(3)]
    assert a.outputs.resultUri == f"{base}attempt-1/result.json"
    assert a.outputs.resultUrl == f"https://s3.test/put/{base}attempt-1/result.json?content-type=application/json"
    assert (a.leaseSeconds, a.heartbeatSeconds) == (4, 1)
    status = cluster.status("s3job")
    assert (status["status"], status["attempts"], status["runnerPod"]) == ("IN_PROGRESS", 1, "l4-aaaaa")


def test_a_runners_waiting_take_does_not_hold_the_operators_shutdown():
    """On stop, a take waiting for work (a runner's long poll, up to takeWaitSeconds) answers "no work" at once: the
    stopping leader must release its Lease before the renew deadline, or its standby waits out the lease duration."""
    import socket
    import time

    import aiohttp
    from operator_samples import config

    cluster = Cluster()
    runner_pod(cluster, "l4-aaaaa")
    process = Process(cluster, config(gpuClasses={"l4": {"resources": {"nvidia.com/gpu": 1}}},
                                      runners={"namespace": "img2img-system", "takeWaitSeconds": 30}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def go() -> tuple[int, float]:
        await process.start()
        process.deliver()
        await process.api.start("127.0.0.1", port)
        async with aiohttp.ClientSession() as session:
            take = asyncio.create_task(session.post(
                f"http://127.0.0.1:{port}{TAKE}", data=json.dumps({**TAKE_BODY, "waitSeconds": 30}),
                headers={"Authorization": f"Bearer {runner_token(KEY, 'l4-aaaaa')}"}))
            await asyncio.sleep(0.5)
            assert not take.done()  # no work: it waits
            started = time.monotonic()
            await process.api.stop()
            response = await asyncio.wait_for(take, 10)
            return response.status, time.monotonic() - started

    status, took = asyncio.run(go())
    assert status == 204
    assert took < 2, took
