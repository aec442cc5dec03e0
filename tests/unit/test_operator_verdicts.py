"""Verdicts: each job generation checked once, off the event loop, its input staged then and not kept; after a
restart, a job already queued at its generation is not image-decoded again. Against the simulated cluster of
test_operator_dispatcher."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter

import pytest
from img2img.api import images

from api_samples import png_b64, seed_request
from img2img_operator.lifecycle import QUEUED_WRITE_AFTER_MS
from test_operator_dispatcher import CFG, NS, Cluster, Fleet, Process, run, validated

INPUT_JSON = "s3://img2img/jobs/{ns}/{name}/{uid}/input.json"


def input_with(image: str) -> dict:
    return seed_request(image)["input"]


def offered(proc: Process, cluster: Cluster) -> set[str]:
    """The names of the jobs offered to runners: their verdict is in and they are staged."""
    uids = {c.uid for offers in proc.dispatcher._offers.values() for c in offers}
    return {name for (_, name), body in cluster.jobs.items() if body["metadata"]["uid"] in uids}


def input_json(cluster: Cluster, name: str) -> str:
    uid = cluster.job(name)["metadata"]["uid"]
    return INPUT_JSON.format(ns=NS, name=name, uid=uid)


@pytest.fixture
def decodes(monkeypatch) -> Counter:
    """The inline images decoded (by their base64 text), through the real decoder."""
    seen: Counter = Counter()
    decode = images.decode_inline

    def counting(value: str):
        seen[value] += 1
        return decode(value)

    monkeypatch.setattr(images, "decode_inline", counting)
    return seen


def test_a_pass_runs_while_a_slow_validation_is_under_way(monkeypatch):
    cluster = Cluster()
    cluster.submit("slow")  # an inline image: decoded
    cluster.submit("quick", input=input_with("s3://img2img/uploads/team-a/init.png"))  # nothing to decode
    gate = threading.Event()
    decode = images.decode_inline

    def held_decode(value: str):
        assert gate.wait(10), "the event loop never went on while an image was being decoded"
        return decode(value)

    monkeypatch.setattr(images, "decode_inline", held_decode)

    async def scenario():
        proc = Process(cluster, CFG)
        await proc.start()
        await proc.dispatcher.pass_once()  # both validations start; neither job is decided yet
        assert cluster.writes["status"] == 0
        for _ in range(500):  # the quick one's verdict comes in while the slow one decodes
            if not any(key[0] == cluster.job("quick")["metadata"]["uid"] for key in proc.dispatcher._validating):
                break
            await asyncio.sleep(0.01)
        await asyncio.wait_for(proc.dispatcher.pass_once(), 5)
        assert offered(proc, cluster) == {"quick"}
        assert not gate.is_set()  # the slow decode is still under way, and the pass did not wait for it
        gate.set()
        await validated(proc.dispatcher)
        await proc.dispatcher.pass_once()
        assert offered(proc, cluster) == {"quick", "slow"}

    run(scenario())


def test_an_image_that_does_not_decode_fails_the_job_naming_the_field_and_nothing_is_staged():
    cluster = Cluster()
    broken = input_with("data:image/png;base64," + png_b64()[:40])
    cluster.submit("broken", input=broken)

    async def scenario():
        proc = Process(cluster, CFG)
        await proc.start()
        await proc.step()

    run(scenario())
    status = cluster.status("broken")
    assert status["status"] == "FAILED" and status["lastFailure"]["reason"] == "InvalidSpec"
    assert status["error"].startswith("spec.input.payload.init_images[0]: not a decodable image")
    assert not [uri for uri in cluster.s3 if uri.endswith("input.json")]


def test_a_staged_jobs_input_is_kept_in_s3_only_and_read_again_when_it_was_not_held():
    cluster = Cluster()
    cluster.submit("held")
    reads = []

    async def scenario():
        proc = Process(cluster, CFG)
        await proc.start()
        await proc.step()
        assert proc.dispatcher.verdicts.held_bytes == 0
        proc.dispatcher.verdicts.budget = 0  # from now on, no input arriving is held: it is read again
        read_job = proc.kube.read_job

        async def counted(namespace, name):
            reads.append(name)
            return await read_job(namespace, name)

        proc.kube.read_job = counted
        cluster.submit("read-again", input=input_with(png_b64(32, 32)))
        await proc.step()
        await proc.step()  # its own status write, as the watch brings it back
        for name in ("held", "read-again"):
            uid = cluster.job(name)["metadata"]["uid"]
            assert "input" not in proc.cache.job(uid)["spec"], name
        assert proc.dispatcher.verdicts.held_bytes == 0
        assert offered(proc, cluster) == {"held", "read-again"}

    run(scenario())
    assert reads == ["read-again"]
    for name in ("held", "read-again"):
        staged = json.loads(cluster.s3[input_json(cluster, name)])
        assert staged["input"] == cluster.job(name)["spec"]["input"]


def test_after_a_restart_a_job_queued_at_its_generation_is_not_decoded_or_staged_again(decodes):
    cluster = Cluster()
    kept_image, edited_image = png_b64(48, 48), png_b64(40, 40)
    cluster.submit("kept", input=input_with(kept_image))
    cluster.submit("edited", input=input_with(edited_image))

    async def scenario():
        first = Process(cluster, CFG)
        await first.start()
        await first.step()
        assert decodes == Counter({kept_image: 1, edited_image: 1})
        cluster.now += QUEUED_WRITE_AFTER_MS  # no runner took them: their IN_QUEUE status is written
        await first.step()
        assert {cluster.status(n)["status"] for n in ("kept", "edited")} == {"IN_QUEUE"}

        # the operator dies; meanwhile a user edits one job (a new generation); staged inputs are cleared to see
        # which ones are written again
        cluster.edit("edited", priority=3)
        staged = {name: cluster.s3.pop(input_json(cluster, name)) for name in ("kept", "edited")}
        decodes.clear()
        second = Process(cluster, CFG)
        await second.start()
        await second.step()
        assert decodes == Counter({edited_image: 1})  # the new generation only
        assert input_json(cluster, "kept") not in cluster.s3
        assert cluster.s3[input_json(cluster, "edited")] == staged["edited"]
        assert cluster.status("edited")["observedGeneration"] == 2

        # what the kept job's check derived without decoding (its needs: models, outputs) still runs it
        fleet = Fleet(cluster)
        for _ in range(30):
            cluster.now += 500
            await second.step()
            cluster.kubelet()
            await fleet.tick(second.api)
            await second.step()
            if {cluster.status(n)["status"] for n in ("kept", "edited")} == {"COMPLETED"}:
                break
        assert {cluster.status(n)["status"] for n in ("kept", "edited")} == {"COMPLETED"}
        assert decodes == Counter({edited_image: 1})

    run(scenario())
