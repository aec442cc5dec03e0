"""The dispatcher against a simulated cluster: admission, retries, and the operator dying at any API call.

The simulation keeps the API's semantics that matter here: resourceVersions and the status patch precondition,
409 on creating an existing pod, watch events delivered in order but late, a kubelet that runs pods. An operator
"process" is a cache + a dispatcher + a client; killing it drops all three (and whatever it was doing), and a new
one starts from a full list, as after a restart.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
from typing import Any

import pytest
from img2img_operator.cache import Cache
from img2img_operator.dispatcher import Dispatcher
from img2img_operator.kube import Conflict, Gone
from img2img_operator.metrics import Metrics
from img2img_operator.placement import PodPlacement
from img2img.api.times import format_time_ms

from operator_samples import T0, config, job_body

SEC = 1000


class Crash(BaseException):
    """The operator process dies here."""


class Cluster:
    """The API server, etcd, the kubelet and S3, as far as the operator can tell."""

    def __init__(self, seed: int = 0):
        self.rv = 100
        self.jobs: dict[tuple[str, str], dict] = {}
        self.pods: dict[tuple[str, str], dict] = {}
        self.s3: dict[str, bytes] = {}
        self.events: list[tuple[str, str | None, dict]] = []  # (kind, type, body): the watch stream
        self.created: dict[str, list[str]] = {}  # job uid → pod names created (successful creates only)
        self.posted: list[tuple[str, str]] = []
        self.writes: dict[str, int] = {}
        self.now = T0
        self.rng = random.Random(seed)
        self.uids = 0

    def _bump(self, body: dict) -> dict:
        self.rv += 1
        body["metadata"]["resourceVersion"] = str(self.rv)
        return body

    def _emit(self, kind: str, type_: str, body: dict) -> None:
        self.events.append((kind, type_, copy.deepcopy(body)))

    def _count(self, what: str) -> None:
        self.writes[what] = self.writes.get(what, 0) + 1

    # ---- users ------------------------------------------------------------------------------------------------
    def submit(self, name: str, **controls: Any) -> str:
        self.uids += 1
        uid = f"uid-{name}-{self.uids}"
        body = job_body(None, name=name, uid=uid, **controls)
        body["metadata"]["creationTimestamp"] = format_time_ms(self.now - self.now % 1000).replace(".000Z", "Z")
        self.jobs[("team-a", name)] = self._bump(body)
        self._emit("job", "ADDED", body)
        return uid

    def delete_job(self, name: str) -> None:
        body = self.jobs.pop(("team-a", name))
        self._emit("job", "DELETED", self._bump(body))

    def job(self, name: str) -> dict:
        return self.jobs[("team-a", name)]

    # ---- the kubelet ------------------------------------------------------------------------------------------
    def kubelet(self, outcome=lambda pod: 0) -> None:
        """Advance every pod one step: Pending → Running → finished (exit code from ``outcome``)."""
        for key, pod in list(self.pods.items()):
            status = pod["status"]
            if pod["metadata"].get("deletionTimestamp"):
                del self.pods[key]
                self._emit("pod", "DELETED", self._bump(pod))
                continue
            if status["phase"] == "Pending":
                status.update(phase="Running", startTime=self._ts(), containerStatuses=[
                    {"name": "runner", "state": {"running": {"startedAt": self._ts()}}}])
            elif status["phase"] == "Running":
                code = outcome(pod)
                env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
                message = None
                if code == 0:
                    result = env["IMG2IMG_OUTPUT"] + "result.json"
                    self.s3[result] = json.dumps({"images": [env["IMG2IMG_OUTPUT"] + "images/0.png"],
                                                  "info": "{}", "parameters": {}}).encode()
                    message = json.dumps({"result": result, "startedAt": self.now - 900,
                                          "modelsLoadedAt": self.now - 600, "finishedAt": self.now - 100,
                                          "modelLoadTime": 300, "error": None})
                if code == "evict":
                    status.update(phase="Failed", reason="Evicted", conditions=[
                        {"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet"}])
                else:
                    status.update(phase="Succeeded" if code == 0 else "Failed", containerStatuses=[
                        {"name": "runner", "state": {"terminated": {
                            "exitCode": code, "startedAt": self._ts(), "finishedAt": self._ts(),
                            **({"message": message} if message else {})}}}])
            else:
                continue
            self._emit("pod", "MODIFIED", self._bump(pod))

    def _ts(self) -> str:
        return format_time_ms(self.now - self.now % 1000).replace(".000Z", "Z")

    def running(self) -> int:
        return sum(1 for p in self.pods.values() if p["status"]["phase"] in ("Pending", "Running"))


class FakeKube:
    """One operator process's client: dies (raises Crash) at its ``crash_at``-th write, and forever after."""

    def __init__(self, cluster: Cluster, crash_at: int | None = None):
        self.c = cluster
        self.calls = 0
        self.crash_at = crash_at
        self.dead = False

    def _call(self) -> None:
        if self.dead:
            raise Crash()
        self.calls += 1
        if self.crash_at is not None and self.calls >= self.crash_at:
            self.dead = True
            raise Crash()

    async def create_pod(self, manifest):
        self._call()
        key = (manifest["metadata"]["namespace"], manifest["metadata"]["name"])
        if key in self.c.pods:
            return copy.deepcopy(self.c.pods[key]), False
        pod = copy.deepcopy(manifest)
        pod["metadata"]["uid"] = f"pod-{manifest['metadata']['name']}-{self.c.rv}"
        pod["metadata"]["creationTimestamp"] = self.c._ts()
        pod["status"] = {"phase": "Pending"}
        self.c.pods[key] = self.c._bump(pod)
        job_uid = pod["metadata"]["ownerReferences"][0]["uid"]
        self.c.created.setdefault(job_uid, []).append(key[1])
        self.c._count("pod_create")
        self.c._emit("pod", "ADDED", pod)
        return copy.deepcopy(pod), True

    async def delete_pod(self, namespace, name, uid, grace):
        self._call()
        pod = self.c.pods.get((namespace, name))
        if pod is None or (uid and pod["metadata"]["uid"] != uid):
            return None
        pod["metadata"]["deletionTimestamp"] = self.c._ts()
        self.c._count("pod_delete")
        self.c._emit("pod", "MODIFIED", self.c._bump(pod))
        return copy.deepcopy(pod)

    async def list_pods(self, namespaces):
        return [copy.deepcopy(p) for p in self.c.pods.values()], self.c.rv

    async def list_jobs(self, namespaces, keep=None):
        return [(keep or (lambda j: j))(copy.deepcopy(j)) for j in self.c.jobs.values()], self.c.rv

    async def read_job(self, namespace, name):
        job = self.c.jobs.get((namespace, name))
        return copy.deepcopy(job) if job else None

    async def patch_job_status(self, namespace, name, status, resource_version, current=None):
        self._call()
        job = self.c.jobs.get((namespace, name))
        if job is None:
            raise Gone(name)
        if resource_version and job["metadata"]["resourceVersion"] != resource_version:
            raise Conflict(name)
        stored = job.setdefault("status", {})
        for key, value in status.items():
            if value is None:
                stored.pop(key, None)
            else:
                stored[key] = copy.deepcopy(value)
        self.c._count("status")
        self.c._emit("job", "MODIFIED", self.c._bump(job))
        return copy.deepcopy(job)

    async def delete_job(self, namespace, name, uid):
        self._call()
        self.c._count("job_delete")
        if (namespace, name) in self.c.jobs:
            self.c.delete_job(name)
        return True

    async def post_event(self, job, type_, reason, message):
        self._call()
        self.c._count("event")
        self.c.posted.append((job["metadata"]["name"], reason))


class FakeStaging:
    def __init__(self, cluster: Cluster, kube: FakeKube):
        self.c, self.kube = cluster, kube

    async def stage_input(self, uri, document):
        self.kube._call()
        self.c.s3[uri] = document

    async def read_result(self, uri):
        if self.kube.dead:
            raise Crash()
        return self.c.s3.get(uri)


class Process:
    """One life of the operator: its own cache, dispatcher and client."""

    def __init__(self, cluster: Cluster, cfg, crash_at: int | None = None, lag: int = 0):
        self.c = cluster
        self.kube = FakeKube(cluster, crash_at)
        self.cache = Cache(clock=lambda: cluster.now / 1000)
        staging = FakeStaging(cluster, self.kube)
        placement = PodPlacement(cfg, self.kube, staging, self.cache)
        self.dispatcher = Dispatcher(cfg, self.cache, self.kube, placement, staging, Metrics(),
                                     clock=lambda: cluster.now / 1000)
        self.cursor = len(cluster.events)  # a new watch starts now (after its list)
        self.lag = lag

    async def start(self) -> None:
        await self.dispatcher.resync()

    def deliver(self) -> None:
        """kopf's watch: events in order, the last ``lag`` of them not yet."""
        upto = max(self.cursor, len(self.c.events) - self.lag)
        for kind, type_, body in self.c.events[self.cursor:upto]:
            (self.cache.job_event if kind == "job" else self.cache.pod_event)(type_, body)
        self.cursor = upto

    async def step(self) -> None:
        self.deliver()
        await self.dispatcher.pass_once()


async def drive(cluster: Cluster, cfg, steps: int = 60, crash_every: tuple[int, int] | None = None,
                outcome=lambda pod: 0, max_running: int | None = None, lag: int = 0) -> int:
    """Run passes and kubelet steps; with ``crash_every``, kill the operator after a random number of writes."""
    rng = cluster.rng

    def new_process() -> Process:
        crash_at = rng.randint(*crash_every) if crash_every else None
        return Process(cluster, cfg, crash_at, lag=lag)

    proc = new_process()
    await proc.start()
    restarts = 0
    for _ in range(steps):
        cluster.now += 500
        try:
            await proc.step()
            await proc.step()
        except Crash:
            await asyncio.sleep(0)  # let the dead process's other tasks hit the wall
            restarts += 1
            proc = new_process()
            await proc.start()
            continue
        if max_running is not None:
            assert cluster.running() <= max_running
        cluster.kubelet(outcome)
    return restarts


CFG = config(gpuClasses={"l4": {"resources": {"nvidia.com/gpu": 1}, "maxConcurrent": 2}},
             retryBackoff={"initialSeconds": 1, "maxSeconds": 2})


def states(cluster: Cluster) -> dict[str, str]:
    return {name: job.get("status", {}).get("status") for (_, name), job in cluster.jobs.items()}


def test_a_batch_runs_each_job_once_with_at_most_two_at_a_time():
    cluster = Cluster()
    for i, p in enumerate([0, 5, 0, 5, 1, 0]):
        cluster.now += 10
        cluster.submit(f"j{i}", priority=p)
    asyncio.run(drive(cluster, CFG, steps=40, max_running=2))
    assert set(states(cluster).values()) == {"COMPLETED"}
    assert all(names == [f"{n}-1"] for n, names in
               ((j["metadata"]["name"], cluster.created[j["metadata"]["uid"]]) for j in cluster.jobs.values()))
    starts = sorted(cluster.jobs.values(), key=lambda j: j["status"]["startedAt"])
    first_two = {j["metadata"]["name"] for j in starts[:2]}
    assert first_two == {"j1", "j3"}
    for job in cluster.jobs.values():
        s = job["status"]
        assert isinstance(s["delayTime"], int) and isinstance(s["executionTime"], int) and s["attempts"] == 1


def test_happy_path_costs_five_api_writes_per_job():
    cluster = Cluster()
    cluster.submit("only")
    asyncio.run(drive(cluster, CFG, steps=10))
    assert states(cluster) == {"only": "COMPLETED"}
    assert cluster.writes == {"status": 3, "pod_create": 1, "event": 1}


@pytest.mark.parametrize("seed", range(12))
def test_operator_killed_at_random_points_every_job_ends_right_and_runs_once(seed):
    cluster = Cluster(seed)
    for i in range(6):
        cluster.now += 10
        cluster.submit(f"j{i}", priority=seed % 3 - i % 2)
    restarts = asyncio.run(drive(cluster, CFG, steps=120, crash_every=(1, 6), max_running=2,
                                 lag=seed % 3))
    assert restarts > 3
    assert set(states(cluster).values()) == {"COMPLETED"}, states(cluster)
    for job in cluster.jobs.values():
        uid, name = job["metadata"]["uid"], job["metadata"]["name"]
        assert cluster.created[uid] == [f"{name}-1"], "ran more than once"
        assert job["status"]["attempts"] == 1 and job["status"]["runnerPod"] == f"{name}-1"


def test_evicted_pod_is_retried_and_the_job_completes_with_two_attempts():
    cluster = Cluster()
    uid = cluster.submit("evicted")
    evictions = {"n": 0}

    def outcome(pod):
        if pod["metadata"]["name"] == "evicted-1" and not evictions["n"]:
            evictions["n"] += 1
            return "evict"
        return 0

    asyncio.run(drive(cluster, CFG, steps=20, outcome=outcome))
    status = cluster.job("evicted")["status"]
    assert status["status"] == "COMPLETED" and status["attempts"] == 2 and status["runnerPod"] == "evicted-2"
    assert status["lastFailure"]["reason"] == "Evicted"
    assert cluster.created[uid] == ["evicted-1", "evicted-2"]
    assert ("evicted", "Retrying") in cluster.posted


def test_transient_failures_end_failed_after_the_retry_limit():
    cluster = Cluster()
    uid = cluster.submit("flaky", retries=2)
    asyncio.run(drive(cluster, CFG, steps=40, outcome=lambda pod: 5))
    status = cluster.job("flaky")["status"]
    assert status["status"] == "FAILED" and status["attempts"] == 3
    assert status["error"].startswith("StorageError") and status["error"].endswith("(after 3 attempts)")
    assert cluster.created[uid] == ["flaky-1", "flaky-2", "flaky-3"]


def test_permanent_failure_is_not_retried():
    cluster = Cluster()
    uid = cluster.submit("bad")
    asyncio.run(drive(cluster, CFG, steps=10, outcome=lambda pod: 3))
    assert cluster.job("bad")["status"]["status"] == "FAILED"
    assert cluster.created[uid] == ["bad-1"]


def test_cancel_removes_the_running_pod():
    cluster = Cluster()
    cluster.submit("c")

    async def scenario():
        proc = Process(cluster, CFG)
        await proc.start()
        await proc.step()
        cluster.kubelet()
        await proc.step()
        assert cluster.pods[("team-a", "c-1")]["status"]["phase"] == "Running"
        assert cluster.job("c")["status"]["status"] == "IN_PROGRESS"
        job = cluster.job("c")
        job["spec"]["cancel"] = True
        job["metadata"]["generation"] = 2
        cluster._emit("job", "MODIFIED", cluster._bump(job))
        await proc.step()
        assert cluster.pods[("team-a", "c-1")]["metadata"].get("deletionTimestamp")
        cluster.kubelet()
        await proc.step()

    asyncio.run(scenario())
    status = cluster.job("c")["status"]
    assert status["status"] == "CANCELLED" and status["observedGeneration"] == 2
    assert ("team-a", "c-1") not in cluster.pods


def test_deleting_a_job_stops_its_pod():
    cluster = Cluster()
    cluster.submit("gone")

    async def scenario():
        proc = Process(cluster, CFG)
        await proc.start()
        await proc.step()
        cluster.kubelet()
        assert cluster.pods[("team-a", "gone-1")]["status"]["phase"] == "Running"
        cluster.delete_job("gone")
        await proc.step()
        assert cluster.pods[("team-a", "gone-1")]["metadata"].get("deletionTimestamp")

    asyncio.run(scenario())


def test_a_stale_decision_is_refused_and_taken_again():
    cluster = Cluster()
    cluster.submit("s")

    async def scenario():
        proc = Process(cluster, CFG)
        await proc.start()
        # someone else changes the job behind the cache's back (a label edit): the status write gets a 409
        job = cluster.job("s")
        job["metadata"].setdefault("labels", {})["x"] = "y"
        cluster._bump(job)
        await proc.dispatcher.pass_once()
        assert cluster.writes.get("status") is None and not cluster.created
        await proc.dispatcher.pass_once()  # the fresh job was read after the conflict
        assert cluster.writes["status"] == 1 and cluster.created

    asyncio.run(scenario())


def test_an_action_that_fails_backs_off_that_job_only():
    cluster = Cluster()
    cluster.submit("a")
    cluster.submit("b")

    async def scenario():
        proc = Process(cluster, CFG)
        await proc.start()
        original = proc.kube.create_pod

        async def broken(manifest):
            if manifest["metadata"]["name"] == "a-1":
                raise RuntimeError("API unavailable")
            return await original(manifest)

        proc.kube.create_pod = broken
        await proc.step()
        assert [n for names in cluster.created.values() for n in names] == ["b-1"]
        assert "uid-a-1" in proc.dispatcher._errors
        await proc.step()  # within the back-off: not tried again
        proc.kube.create_pod = original
        cluster.now += 2_000
        await proc.step()
        assert sorted(n for names in cluster.created.values() for n in names) == ["a-1", "b-1"]

    asyncio.run(scenario())


def test_ttl_deletes_finished_jobs():
    cluster = Cluster()
    cluster.submit("t", ttlSecondsAfterFinished=5)
    asyncio.run(drive(cluster, CFG, steps=40))
    assert "t" not in states(cluster) and cluster.writes["job_delete"] == 1


def test_an_output_bucket_that_does_not_exist_fails_the_job_instead_of_retrying_forever():
    cluster = Cluster()
    cluster.submit("nobucket", output={"bucket": "no-such-bucket"})

    class NoSuchBucket(Exception):
        response = {"Error": {"Code": "NoSuchBucket", "Message": "The specified bucket does not exist"}}

    async def scenario():
        proc = Process(cluster, CFG)
        await proc.start()

        async def refuse(uri, document):
            raise NoSuchBucket("The specified bucket does not exist")

        proc.dispatcher.placement.staging.stage_input = refuse
        await proc.step()

    asyncio.run(scenario())
    status = cluster.job("nobucket")["status"]
    assert status["status"] == "FAILED" and status["lastFailure"]["reason"] == "StagingFailed"
    assert "s3://no-such-bucket/" in status["error"] and not cluster.created


def test_a_pod_the_api_server_refuses_fails_the_job():
    cluster = Cluster()
    cluster.submit("refused")

    class Invalid(Exception):
        status = 422
        body = json.dumps({"message": 'Pod "refused-1" is invalid: spec.containers[0].image: Required value'})

    async def scenario():
        proc = Process(cluster, CFG)
        await proc.start()

        async def refuse(manifest):
            raise Invalid()

        proc.kube.create_pod = refuse
        await proc.step()

    asyncio.run(scenario())
    status = cluster.job("refused")["status"]
    assert status["status"] == "FAILED" and status["lastFailure"]["reason"] == "PodRejected"
    assert "spec.containers[0].image" in status["error"]


def test_finished_jobs_are_passed_over_until_they_change_and_still_counted(monkeypatch):
    from img2img_operator.views import JobView

    cluster = Cluster()
    cluster.submit("a")
    cluster.submit("b")
    built: list[str] = []
    from_body = JobView.from_body.__func__
    monkeypatch.setattr(JobView, "from_body", classmethod(lambda cls, body, *a: built.append(
        body["metadata"]["name"]) or from_body(cls, body, *a)))

    async def scenario() -> None:
        proc = Process(cluster, CFG)
        await proc.start()
        for _ in range(20):
            cluster.now += 500
            await proc.step()
            await proc.step()
            cluster.kubelet()
        assert set(states(cluster).values()) == {"COMPLETED"}
        built.clear()
        cluster.now += 500
        await proc.step()
        assert built == []  # settled: no view, no decision
        gauge = proc.dispatcher.metrics.jobs.labels("COMPLETED", "l4")._value.get()
        assert gauge == 2  # yet still counted
        job = cluster.job("a")  # a spec change (cancel) on a finished job: observedGeneration follows
        job["spec"]["cancel"] = True
        job["metadata"]["generation"] = 2
        cluster._emit("job", "MODIFIED", cluster._bump(job))
        await proc.step()
        assert set(built) == {"a"} and cluster.job("a")["status"]["observedGeneration"] == 2

    asyncio.run(scenario())
