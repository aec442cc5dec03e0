"""The dispatcher and the runner endpoint against a simulated cluster: pools, admission, leases, retries, and the
operator dying at any API call.

The simulation keeps the semantics that matter here: resourceVersions and the status patch precondition, watch
events delivered in order but late, a kubelet that starts runner pods, and runners (separate processes: they
outlive an operator) that take work, heartbeat, stop when told, upload through the URLs they were given and report.
An operator "process" is a cache + dispatcher + runner endpoint + client; killing it drops all of them (and whatever
they were doing), and a new one starts from full lists, as after a restart.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
from collections import Counter
from typing import Any, Callable

import pytest
from img2img.api.protocol import Done, Heartbeat, TakeRequest
from img2img.api.times import format_time_ms
from img2img.api.webhook_signing import new_secret_key, read_secret_key
from img2img_operator.cache import Cache
from img2img_operator.dispatcher import Dispatcher
from img2img_operator.kube import Conflict, Gone, Refused
from img2img_operator.leases import LeaseTable
from img2img_operator.lifecycle import QUEUED_WRITE_AFTER_MS
from img2img_operator.metrics import Metrics
from img2img_operator.runner_api import RunnerApi
from img2img_operator.runner_pods import made_by_operator
from img2img_operator.runners import Registry
from img2img_operator.webhooks import Webhooks

from operator_samples import T0, config, job_body

SEC = 1000
KEY = b"key"  # the operator's runner-token key
NS = "team-a"
RUNNER_NS = "img2img-system"
HELD = ["sd_xl_base_1.0", "sd_xl_refiner_1.0", "sdxl_vae.safetensors", "diffusers_xl_canny_mid",
        "control_v11p_sd15_canny"]  # what a runner of the seed's models serves (Catalog.servable)


class Crash(BaseException):
    """The operator process dies here."""


class Cluster:
    """The API server, etcd, the kubelet and S3, as far as the operator can tell."""

    def __init__(self, seed: int = 0):
        self.rv = 100
        self.jobs: dict[tuple[str, str], dict] = {}
        self.pods: dict[str, dict] = {}  # runner pods by name
        self.pools: dict[str, dict] = {}
        self.s3: dict[str, bytes] = {}
        self.events: list[tuple[str, str | None, dict]] = []  # (kind, type, body): the watch streams
        self.posted: list[tuple[str, str]] = []
        self.writes: Counter = Counter()
        self.now = T0
        self.rng = random.Random(seed)
        self.uids = 0
        self.crashing: set[str] = set()  # pools whose runners exit before they take
        self.unschedulable: set[str] = set()  # pods the kubelet never starts
        self.no_room: set[str] = set()  # pools whose pods no node fits (the scheduler says so)
        self.signing = new_secret_key()  # the webhook signing key in its Secret

    def _bump(self, body: dict) -> dict:
        self.rv += 1
        body["metadata"]["resourceVersion"] = str(self.rv)
        return body

    def _emit(self, kind: str, type_: str, body: dict) -> None:
        self.events.append((kind, type_, copy.deepcopy(body)))

    def ts(self) -> str:
        return format_time_ms(self.now - self.now % 1000).replace(".000Z", "Z")

    # ---- users ------------------------------------------------------------------------------------------------
    def submit(self, name: str, **controls: Any) -> str:
        self.uids += 1
        uid = f"uid-{name}-{self.uids}"
        body = job_body(None, name=name, uid=uid, **controls)
        body["metadata"]["creationTimestamp"] = self.ts()
        self.jobs[(NS, name)] = self._bump(body)
        self._emit("job", "ADDED", body)
        return uid

    def finish(self, name: str, status: dict) -> None:
        """The job ended (as a runner's report would have it)."""
        job = self.jobs[(NS, name)]
        job["status"] = copy.deepcopy(status)
        self._emit("job", "MODIFIED", self._bump(job))

    def edit(self, name: str, **spec: Any) -> None:
        job = self.jobs[(NS, name)]
        job["spec"].update(spec)
        job["metadata"]["generation"] += 1
        self._emit("job", "MODIFIED", self._bump(job))

    def delete_job(self, name: str) -> None:
        body = self.jobs.pop((NS, name))
        self._emit("job", "DELETED", self._bump(body))

    def job(self, name: str) -> dict:
        return self.jobs[(NS, name)]

    def status(self, name: str) -> dict:
        return self.job(name).get("status") or {}

    def add_pool(self, name: str, **spec: Any) -> None:
        body = {"apiVersion": "img2img.dev/v1alpha1", "kind": "RunnerPool",
                "metadata": {"name": name, "namespace": RUNNER_NS, "uid": f"pool-{name}", "generation": 1},
                "spec": {"gpuClass": "l4", **spec}}
        self.pools[name] = self._bump(body)
        self._emit("pool", "ADDED", body)

    def labelled_pod(self, name: str, runner: dict, phase: str = "Pending") -> None:
        """A pod someone other than the operator made in the runner namespace, copying ``runner``'s labels and spec
        (its environment too: the token of a runner of the operator's)."""
        body = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": RUNNER_NS, "uid": f"pod-{name}",
                             "creationTimestamp": self.ts(), "labels": dict(runner["metadata"]["labels"])},
                "spec": copy.deepcopy(runner["spec"]), "status": {"phase": phase}}
        self.pods[name] = self._bump(body)
        self._emit("pod", "ADDED", body)

    def force_delete_pod(self, name: str) -> None:
        pod = self.pods.pop(name)
        self._emit("pod", "DELETED", self._bump(pod))

    # ---- the kubelet ------------------------------------------------------------------------------------------
    def kubelet(self) -> None:
        """Deleting pods go; Pending pods run (or, in a crashing pool, fail before they take)."""
        for name, pod in list(self.pods.items()):
            if pod["metadata"].get("deletionTimestamp"):
                self.force_delete_pod(name)
            elif pod["metadata"]["labels"]["img2img.dev/pool"] in self.no_room:
                if not pod["status"].get("conditions"):
                    pod["status"]["conditions"] = [{
                        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]
                    self._emit("pod", "MODIFIED", self._bump(pod))
            elif pod["status"]["phase"] == "Pending" and name not in self.unschedulable:
                crash = pod["metadata"]["labels"]["img2img.dev/pool"] in self.crashing
                pod["status"] = {"phase": "Failed", "containerStatuses": [{"name": "runner", "state": {"terminated": {
                    "exitCode": 3, "reason": "Error", "message": "IMG2IMG_POOL_MODELS: unknown model 'x'"}}}]} \
                    if crash else {"phase": "Running"}
                self._emit("pod", "MODIFIED", self._bump(pod))

    def running_pods(self) -> list[str]:
        return [n for n, p in self.pods.items() if p["status"]["phase"] == "Running"
                and not p["metadata"].get("deletionTimestamp")]


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
        name = manifest["metadata"]["name"]
        if name in self.c.pods:
            return None
        pod = copy.deepcopy(manifest)
        pod["metadata"].update(uid=f"pod-{name}", creationTimestamp=self.c.ts())
        pod["status"] = {"phase": "Pending"}
        self.c.pods[name] = self.c._bump(pod)
        self.c.writes["pod_create"] += 1
        self.c._emit("pod", "ADDED", pod)
        return copy.deepcopy(pod)

    async def delete_pod(self, namespace, name, uid, grace):
        self._call()
        pod = self.c.pods.get(name)
        if pod is None or (uid and pod["metadata"]["uid"] != uid):
            return None
        pod["metadata"]["deletionTimestamp"] = self.c.ts()
        self.c.writes["pod_delete"] += 1
        self.c._emit("pod", "MODIFIED", self.c._bump(pod))
        return copy.deepcopy(pod)

    async def list_pods(self, namespace):
        return [copy.deepcopy(p) for p in self.c.pods.values()], self.c.rv

    async def list_pools(self, namespace):
        return [copy.deepcopy(p) for p in self.c.pools.values()], self.c.rv

    async def patch_pool_status(self, namespace, name, status):
        self._call()
        pool = self.c.pools.get(name)
        if pool is None:
            raise Gone(name)
        pool["status"] = copy.deepcopy(dict(status))
        self.c.writes["pool_status"] += 1
        self.c._emit("pool", "MODIFIED", self.c._bump(pool))
        return copy.deepcopy(pool)

    async def list_jobs(self):
        return [copy.deepcopy(j) for j in self.c.jobs.values()], self.c.rv

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
        self.c.writes["status"] += 1
        self.c._emit("job", "MODIFIED", self.c._bump(job))
        return copy.deepcopy(job)

    async def delete_job(self, namespace, name, uid):
        self._call()
        self.c.writes["job_delete"] += 1
        if (namespace, name) in self.c.jobs:
            self.c.delete_job(name)
        return True

    async def post_event(self, job, type_, reason, message):
        self._call()
        self.c.writes["event"] += 1
        self.c.posted.append((job["metadata"]["name"], reason))


class FakeStaging:
    """S3 through the operator's credentials; presigned URLs name the object they grant."""

    def __init__(self, cluster: Cluster, kube: FakeKube):
        self.c, self.kube = cluster, kube

    async def stage_input(self, uri, document):
        self.kube._call()
        self.c.s3[uri] = document

    async def read_result(self, uri):
        if self.kube.dead:
            raise Crash()
        data = self.c.s3.get(uri)
        return None if data is None else (data, len(data))

    def presign_get(self, uri, seconds):
        return f"https://s3.test/get/{uri}"

    def read(self, uri):
        return self.c.s3[uri]

    def presign_put(self, uri, content_type, seconds):
        return f"https://s3.test/put/{uri}?content-type={content_type}"


class Process:
    """One life of the operator."""

    def __init__(self, cluster: Cluster, cfg, crash_at: int | None = None, lag: int = 0):
        self.c = cluster
        self.kube = FakeKube(cluster, crash_at)
        clock = lambda: cluster.now / 1000  # noqa: E731
        self.cache = Cache(clock=clock, is_runner=lambda pod: made_by_operator(pod, KEY))
        staging = FakeStaging(cluster, self.kube)
        leases, registry = LeaseTable(), Registry()
        self.metrics = Metrics()
        self.webhooks = Webhooks(cfg, self.cache, self.kube, staging, self.metrics, read_secret_key(cluster.signing),
                                 clock=clock)
        self.dispatcher = Dispatcher(cfg, self.cache, self.kube, staging, self.metrics, leases, registry,
                                     KEY, self.webhooks, clock=clock, rng=random.Random(cluster.rng.random()))
        self.api = RunnerApi(cfg, self.cache, self.dispatcher, leases, registry, self.kube, staging, self.metrics,
                             KEY, clock=clock, rng=random.Random(cluster.rng.random()))
        self.cursor = len(cluster.events)  # a new watch starts now (after its list)
        self.lag = lag

    async def start(self) -> None:
        """The reflectors' first lists, then the dispatcher starts acting."""
        self.cache.replace_pods(*await self.kube.list_pods(RUNNER_NS))
        self.cache.replace_pools(*await self.kube.list_pools(RUNNER_NS))
        self.cache.replace_jobs(*await self.kube.list_jobs())
        self.dispatcher.adopt_until = self.c.now + int(self.dispatcher.config.runners.lease_seconds * 1000)
        self.dispatcher.synced = True

    def deliver(self) -> None:
        """The watches: events in order, the last ``lag`` of them not yet."""
        upto = max(self.cursor, len(self.c.events) - self.lag)
        feed = {"job": self.cache.job_event, "pod": self.cache.pod_event, "pool": self.cache.pool_event}
        for kind, type_, body in self.c.events[self.cursor:upto]:
            feed[kind](type_, body)
        self.cursor = upto

    async def step(self) -> None:
        """Events in, a pass; once the verdicts it started are in (worker threads), the pass their poke brings."""
        self.deliver()
        self.dispatcher.wake.clear()
        await self.dispatcher.pass_once()
        await validated(self.dispatcher)
        if self.dispatcher.wake.is_set():
            await self.dispatcher.pass_once()


async def validated(dispatcher: Dispatcher) -> None:
    """Wait until the verdicts being reached are in."""
    await asyncio.gather(*dispatcher._validating.values())


class Runner:
    """A runner process: asks for work, works ``steps`` steps (one a tick, a heartbeat each), uploads, reports.
    ``outcome(job name, attempt)``: None = success, else an error code."""

    def __init__(self, cluster: Cluster, name: str, steps: int = 2,
                 outcome: Callable[[str, int], str | None] = lambda name, attempt: None, follow: bool = False):
        self.c, self.name, self.steps, self.outcome = cluster, name, steps, outcome
        self.follow = follow  # asks for its next job in its done (as img2img-runner serve does)
        self.taken = 0  # assignments that came from a take (the others came with the answer to a done)
        self.assignment = None
        self.step = 0
        self.stopped: str | None = None
        self.report: dict | None = None  # an outcome not accepted yet
        self.served: list[tuple[str, int]] = []  # (job, attempt) it worked on
        self.refused: list[str] = []  # leases whose done was refused

    async def tick(self, api: RunnerApi) -> None:
        if self.report is not None:
            await self._report(api)
        elif self.assignment is None:
            self._start(await api.serve_take(TakeRequest(runner=self.name, models=HELD, waitSeconds=0.001)))
            self.taken += self.assignment is not None
        else:
            a = self.assignment
            reply = api.serve_heartbeat(Heartbeat(runner=self.name, lease=a.lease, step=self.step, steps=self.steps))
            if reply.stop == "lost":
                self.assignment = None
            elif reply.stop is not None:
                code = {"cancelled": "CANCELLED", "deadline": "TIMED_OUT"}[reply.stop]
                self.report = {"error": {"code": code, "message": f"stopped at step {self.step}"}}
                await self._report(api)
            elif self.step < self.steps:
                self.step += 1
            else:
                code = self.outcome(a.job.name, a.job.attempt)
                if code is None:
                    uris = a.outputs.imageUris[:1]
                    for url, uri in zip(a.outputs.imageUrls, uris):
                        assert url == f"https://s3.test/put/{uri}?content-type=image/png"
                        self.c.s3[uri] = b"png"
                    assert a.outputs.resultUrl == (f"https://s3.test/put/{a.outputs.resultUri}"
                                                   "?content-type=application/json")
                    self.c.s3[a.outputs.resultUri] = json.dumps({"images": uris, "info": "{}",
                                                                 "parameters": {}}).encode()
                    self.report = {"result": a.outputs.resultUri, "startedAt": self.c.now - 900,
                                   "finishedAt": self.c.now, "modelLoadTime": 0, "error": None}
                else:
                    self.report = {"error": {"code": code, "message": f"{code} happened"}}
                await self._report(api)

    def _start(self, assignment: Any) -> None:
        self.assignment = assignment
        if assignment is not None:
            self.step, self.stopped = 0, None
            self.served.append((assignment.job.name, assignment.job.attempt))

    async def _report(self, api: RunnerApi) -> None:
        a = self.assignment
        reply = await api.serve_done(Done(runner=self.name, lease=a.lease, outcome=self.report,
                                          models=HELD if self.follow else None))
        if reply is None:
            return  # not recorded yet: report again next tick
        if not reply.accepted:
            self.refused.append(a.lease)
        self.report = None
        self._start(reply.assignment)


class Fleet:
    """The runner processes of the cluster's running pods."""

    def __init__(self, cluster: Cluster, **behaviour: Any):
        self.c = cluster
        self.behaviour = behaviour
        self.runners: dict[str, Runner] = {}

    async def tick(self, api: RunnerApi) -> None:
        for name in self.c.running_pods():
            runner = self.runners.setdefault(name, Runner(self.c, name, **self.behaviour))
            await runner.tick(api)

    def served(self) -> Counter:
        return Counter(s for r in self.runners.values() for s in r.served)


CFG = config(gpuClasses={"l4": {"resources": {"nvidia.com/gpu": 1}, "maxConcurrent": 2}},
             retryBackoff={"initialSeconds": 1, "maxSeconds": 2},
             runners={"namespace": RUNNER_NS, "leaseSeconds": 4, "heartbeatSeconds": 1, "takeWaitSeconds": 1,
                      "implicitPool": {"idleSeconds": 5}},
             policy={"default": {"maxRetries": 10}})  # operators killed at random lose attempts


async def drive(cluster: Cluster, cfg, fleet: Fleet, steps: int = 60, crash_every: tuple[int, int] | None = None,
                max_busy: int | None = None, lag: int = 0, until: Callable[[], bool] | None = None) -> int:
    """Operator passes, kubelet and runner ticks; with ``crash_every``, kill the operator after a random number of
    writes. Returns the number of restarts."""
    rng = cluster.rng

    def new_process() -> Process:
        return Process(cluster, cfg, rng.randint(*crash_every) if crash_every else None, lag=lag)

    proc = new_process()
    await proc.start()
    restarts = 0
    for _ in range(steps):
        cluster.now += 500
        try:
            await proc.step()
            cluster.kubelet()
            await fleet.tick(proc.api)
            await proc.step()
        except Crash:
            await asyncio.sleep(0)  # let the dead process's other tasks hit the wall
            restarts += 1
            proc = new_process()
            await proc.start()
            continue
        if max_busy is not None:
            busy = [r for r in fleet.runners.values() if r.assignment is not None]
            assert len(busy) <= max_busy
        if until is not None and until():
            break
    return restarts


def states(cluster: Cluster) -> dict[str, str]:
    return {name: job.get("status", {}).get("status") for (_, name), job in cluster.jobs.items()}


def run(coro):
    return asyncio.run(coro)


# ---- jobs through runners -----------------------------------------------------------------------------------------
def test_a_batch_runs_each_job_once_with_at_most_two_at_a_time_by_priority():
    cluster = Cluster()
    for i, p in enumerate([0, 5, 0, 5, 1, 0]):
        cluster.now += 10
        cluster.submit(f"j{i}", priority=p)
    fleet = Fleet(cluster)
    run(drive(cluster, CFG, fleet, steps=80, max_busy=2))
    assert set(states(cluster).values()) == {"COMPLETED"}
    assert fleet.served() == Counter({(f"j{i}", 1): 1 for i in range(6)})
    starts = sorted(cluster.jobs.values(), key=lambda j: j["status"]["startedAt"])
    assert {j["metadata"]["name"] for j in starts[:2]} == {"j1", "j3"}
    assert len(cluster.pods) <= 2  # the implicit pool's ceiling: the class's maxConcurrent
    for job in cluster.jobs.values():
        s = job["status"]
        assert isinstance(s["delayTime"], int) and isinstance(s["executionTime"], int) and s["attempts"] == 1
        assert s["runnerPod"] in fleet.runners and s["modelLoadTime"] == 0
        assert s["result"].endswith("/attempt-1/result.json") and "progress" not in s


WIDE = config(gpuClasses={"l4": {"resources": {"nvidia.com/gpu": 1}, "maxConcurrent": 10}},
              retryBackoff={"initialSeconds": 1, "maxSeconds": 2},
              runners={"namespace": RUNNER_NS, "leaseSeconds": 4, "heartbeatSeconds": 1, "takeWaitSeconds": 1},
              policy={"default": {"maxRetries": 10}})


@pytest.mark.parametrize("follow", [True, False], ids=["runner asks in done", "runner of an earlier version"])
def test_a_runner_that_asks_in_its_done_gets_its_next_job_there_and_each_job_runs_once(follow):
    cluster = Cluster()
    cluster.add_pool("one", models=["sd_xl_base_1.0"], minReady=1, maxRunners=1)
    fleet = Fleet(cluster, steps=0, follow=follow)
    run(drive(cluster, WIDE, fleet, steps=6))  # the runner is up
    for i in range(4):
        cluster.submit(f"j{i}")
    run(drive(cluster, WIDE, fleet, steps=40))
    assert set(states(cluster).values()) == {"COMPLETED"}
    assert fleet.served() == Counter({(f"j{i}", 1): 1 for i in range(4)})
    (runner,) = fleet.runners.values()
    # asking in done, only the first job came from a take; without models in done (an earlier runner), every one
    assert runner.taken == (1 if follow else 4)
    assert {cluster.status(f"j{i}")["runnerPod"] for i in range(4)} == {runner.name}


def test_happy_path_costs_two_status_writes_and_an_event_per_job_on_a_warm_runner():
    """IN_PROGRESS (the take) and COMPLETED: a job taken at once is never written IN_QUEUE."""
    cluster = Cluster()
    cluster.add_pool("warm", models=["sd_xl_base_1.0"], minReady=1)
    fleet = Fleet(cluster, steps=0)
    run(drive(cluster, CFG, fleet, steps=6))  # the warm runner is up
    assert len(fleet.runners) == 1
    before = Counter(cluster.writes)
    cluster.submit("only")
    run(drive(cluster, CFG, fleet, steps=8))
    assert states(cluster) == {"only": "COMPLETED"}
    writes = cluster.writes - before
    assert writes["status"] == 2 and writes["event"] == 1 and writes["pod_create"] == 0 and writes["pod_delete"] == 0


@pytest.mark.parametrize("seed", range(10))
def test_operator_killed_at_random_points_every_job_ends_right_and_no_attempt_runs_twice(seed):
    cluster = Cluster(seed)
    for i in range(6):
        cluster.now += 10
        cluster.submit(f"j{i}", priority=seed % 3 - i % 2, retries=5)
    fleet = Fleet(cluster)
    restarts = run(drive(cluster, CFG, fleet, steps=300, crash_every=(1, 8), max_busy=2, lag=seed % 3,
                         until=lambda: set(states(cluster).values()) == {"COMPLETED"}))
    assert restarts > 3
    assert set(states(cluster).values()) == {"COMPLETED"}, states(cluster)
    served = fleet.served()
    assert max(served.values()) == 1, "an attempt was handed out twice"
    for job in cluster.jobs.values():
        name, s = job["metadata"]["name"], job["status"]
        assert (name, s["attempts"]) in served and s["result"].endswith(f"/attempt-{s['attempts']}/result.json")
        # an attempt before the last one can only have been lost: its runner never heard of it (the operator died
        # between recording the assignment and answering), or heard nothing for leaseSeconds
        assert s["attempts"] == 1 or s["lastFailure"]["reason"] == "RunnerLost"


@pytest.mark.parametrize("seed", range(5))
def test_operator_killed_at_random_points_while_done_hands_out_the_next_job_no_attempt_runs_twice(seed):
    cluster = Cluster(seed)
    cluster.add_pool("two", models=["sd_xl_base_1.0"], minReady=2, maxRunners=2)
    fleet = Fleet(cluster, follow=True)
    run(drive(cluster, WIDE, fleet, steps=6))  # the runners are up
    for i in range(6):
        cluster.submit(f"j{i}", retries=5)
    restarts = run(drive(cluster, WIDE, fleet, steps=300, crash_every=(2, 12), max_busy=2, lag=seed % 3,
                         until=lambda: set(states(cluster).values()) == {"COMPLETED"}))
    assert restarts > 3
    assert set(states(cluster).values()) == {"COMPLETED"}, states(cluster)
    assert max(fleet.served().values()) == 1, "an attempt was handed out twice"
    assert sum(r.taken for r in fleet.runners.values()) < len(fleet.served())  # some came with a done's answer


def test_a_runner_deleted_mid_job_costs_one_retry_and_the_job_completes_once():
    cluster = Cluster()
    fleet = Fleet(cluster, steps=10)

    async def scenario():
        proc = Process(cluster, CFG)
        await proc.start()
        uid = cluster.submit("lost")
        for _ in range(6):
            cluster.now += 500
            await proc.step()
            cluster.kubelet()
            await fleet.tick(proc.api)
        assert cluster.status("lost")["status"] == "IN_PROGRESS"
        first = cluster.status("lost")["runnerPod"]
        cluster.force_delete_pod(first)  # kubectl delete pod --force --grace-period=0
        for _ in range(30):
            cluster.now += 500
            await proc.step()
            cluster.kubelet()
            await fleet.tick(proc.api)
        return uid, first

    uid, first = run(scenario())
    s = cluster.status("lost")
    assert s["status"] == "COMPLETED" and s["attempts"] == 2 and s["runnerPod"] != first
    assert s["lastFailure"]["reason"] == "RunnerLost" and first in s["lastFailure"]["message"]
    assert ("lost", "Retrying") in cluster.posted and cluster.posted.count(("lost", "Completed")) == 1


def test_a_late_done_of_a_lost_lease_is_refused_and_changes_nothing():
    cluster = Cluster()
    fleet = Fleet(cluster, steps=10)

    async def scenario():
        proc = Process(cluster, CFG)
        await proc.start()
        cluster.submit("late")
        for _ in range(5):
            cluster.now += 500
            await proc.step()
            cluster.kubelet()
            await fleet.tick(proc.api)
        zombie = fleet.runners[cluster.status("late")["runnerPod"]]
        lease = zombie.assignment.lease
        # the zombie goes silent past leaseSeconds: its attempt is lost and retried elsewhere
        del fleet.runners[zombie.name]
        cluster.pods[zombie.name]["status"]["phase"] = "Unknown"  # not running as far as the fleet goes
        for _ in range(40):
            cluster.now += 500
            await proc.step()
            cluster.kubelet()
            await fleet.tick(proc.api)
        s = dict(cluster.status("late"))
        assert s["status"] == "COMPLETED" and s["attempts"] == 2
        writes = Counter(cluster.writes)
        beat = proc.api.serve_heartbeat(Heartbeat(runner=zombie.name, lease=lease, step=3, steps=3))
        reply = await proc.api.serve_done(Done(runner=zombie.name, lease=lease, outcome={
            "result": "s3://img2img/jobs/team-a/late/x/attempt-1/result.json", "error": None}))
        return s, beat, reply, writes

    s, beat, reply, writes = run(scenario())
    assert beat.stop == "lost"
    assert reply is not None and not reply.accepted
    assert cluster.status("late") == s and cluster.writes == writes


def test_transient_failures_end_failed_after_the_retry_limit():
    cluster = Cluster()
    fleet = Fleet(cluster, outcome=lambda name, attempt: "STORAGE")
    cluster.submit("flaky", retries=2)
    run(drive(cluster, CFG, fleet, steps=60))
    s = cluster.status("flaky")
    assert s["status"] == "FAILED" and s["attempts"] == 3
    assert s["error"].startswith("StorageError") and s["error"].endswith("(after 3 attempts)")
    assert fleet.served() == Counter({("flaky", 1): 1, ("flaky", 2): 1, ("flaky", 3): 1})


def test_a_permanent_failure_is_not_retried_and_the_runner_serves_the_next_job():
    cluster = Cluster()
    fleet = Fleet(cluster, outcome=lambda name, attempt: "MODEL" if name == "bad" else None)
    cluster.submit("bad")
    cluster.now += 10
    cluster.submit("good")
    run(drive(cluster, config(**{**CFG.model_dump(by_alias=True), "gpuClasses": {"l4": {"maxConcurrent": 1}}}),
              fleet, steps=30))
    assert states(cluster) == {"bad": "FAILED", "good": "COMPLETED"}
    assert cluster.status("bad")["lastFailure"]["exitCode"] == 3
    assert len(fleet.runners) == 1 and fleet.served() == Counter({("bad", 1): 1, ("good", 1): 1})


def test_cancel_mid_run_stops_the_runner_at_its_next_heartbeat_and_it_serves_the_next_job():
    cluster = Cluster()
    fleet = Fleet(cluster, steps=20)

    async def scenario():
        proc = Process(cluster, CFG)
        await proc.start()
        cluster.submit("c")
        for _ in range(6):
            cluster.now += 500
            await proc.step()
            cluster.kubelet()
            await fleet.tick(proc.api)
        assert cluster.status("c")["status"] == "IN_PROGRESS"
        runner = fleet.runners[cluster.status("c")["runnerPod"]]
        cluster.edit("c", cancel=True)
        await proc.step()
        assert cluster.status("c")["status"] == "CANCELLED"  # at once, before the runner hears of it
        await fleet.tick(proc.api)  # its heartbeat: stop
        assert runner.assignment is None and runner.step < 20
        cluster.submit("next")
        for _ in range(30):
            cluster.now += 500
            await proc.step()
            cluster.kubelet()
            await fleet.tick(proc.api)
        return runner

    runner = run(scenario())
    s = cluster.status("c")
    assert s["status"] == "CANCELLED" and s["observedGeneration"] == 2 and "progress" not in s
    assert cluster.status("next")["status"] == "COMPLETED" and cluster.status("next")["runnerPod"] == runner.name


def test_the_deadline_counts_from_the_assignment_and_stops_the_runner():
    cluster = Cluster()
    fleet = Fleet(cluster, steps=100)
    cluster.submit("slow", timeoutSeconds=3)
    run(drive(cluster, CFG, fleet, steps=20))
    s = cluster.status("slow")
    assert s["status"] == "TIMED_OUT" and s["lastFailure"]["reason"] == "DeadlineExceeded"
    assert all(r.assignment is None for r in fleet.runners.values())  # told to stop, reported, free


def test_deleting_a_job_stops_its_runner():
    cluster = Cluster()
    fleet = Fleet(cluster, steps=50)

    async def scenario():
        proc = Process(cluster, CFG)
        await proc.start()
        cluster.submit("gone")
        for _ in range(6):
            cluster.now += 500
            await proc.step()
            cluster.kubelet()
            await fleet.tick(proc.api)
        runner = fleet.runners[cluster.status("gone")["runnerPod"]]
        cluster.delete_job("gone")
        for _ in range(3):
            cluster.now += 500
            await proc.step()
            await fleet.tick(proc.api)
        return runner, proc

    runner, proc = run(scenario())
    assert runner.assignment is None and list(proc.dispatcher.leases) == []


def test_a_job_in_progress_is_adopted_by_its_runners_heartbeat_after_an_operator_restart():
    cluster = Cluster()
    fleet = Fleet(cluster, steps=8)

    async def scenario():
        proc = Process(cluster, CFG)
        await proc.start()
        cluster.submit("kept")
        for _ in range(6):
            cluster.now += 500
            await proc.step()
            cluster.kubelet()
            await fleet.tick(proc.api)
        assert cluster.status("kept")["status"] == "IN_PROGRESS"
        proc = Process(cluster, CFG)  # the operator restarts; the runner works on
        await proc.start()
        for _ in range(20):
            cluster.now += 500
            await proc.step()
            await fleet.tick(proc.api)

    run(scenario())
    s = cluster.status("kept")
    assert s["status"] == "COMPLETED" and s["attempts"] == 1 and fleet.served() == Counter({("kept", 1): 1})


def test_a_job_in_progress_whose_runner_does_not_come_back_after_a_restart_is_lost_and_retried():
    cluster = Cluster()
    fleet = Fleet(cluster, steps=8)

    async def scenario():
        proc = Process(cluster, CFG)
        await proc.start()
        cluster.submit("orphan")
        for _ in range(6):
            cluster.now += 500
            await proc.step()
            cluster.kubelet()
            await fleet.tick(proc.api)
        silent = cluster.status("orphan")["runnerPod"]
        fleet.runners[silent].tick = lambda api: asyncio.sleep(0)  # hangs, never heartbeats again
        proc = Process(cluster, CFG)
        await proc.start()
        for _ in range(7):  # 3.5 s: within leaseSeconds of the start
            cluster.now += 500
            await proc.step()
        assert cluster.status("orphan")["status"] == "IN_PROGRESS"
        for _ in range(4):
            cluster.now += 500
            await proc.step()
        return silent

    silent = run(scenario())
    s = cluster.status("orphan")
    assert s["status"] == "IN_QUEUE" and s["lastFailure"]["reason"] == "RunnerLost" and silent not in json.dumps(
        {k: v for k, v in s.items() if k != "lastFailure"})


def test_a_runner_that_never_got_an_attempt_and_works_on_another_job_is_kept_and_that_job_completes_once():
    """An operator killed after recording an assignment but before answering the take: the runner never got the job
    and goes on to take another. The lost attempt lapses and is retried; the runner, heartbeating on the other job,
    is not removed (that would stop a healthy job and blame it on a crash)."""
    cluster = Cluster()
    fleet = Fleet(cluster, steps=30)
    one_runner = config(gpuClasses={"l4": {"resources": {"nvidia.com/gpu": 1}, "maxConcurrent": 2}},
                        retryBackoff={"initialSeconds": 1, "maxSeconds": 2},
                        runners={"namespace": RUNNER_NS, "leaseSeconds": 4, "heartbeatSeconds": 1,
                                 "takeWaitSeconds": 1, "implicitPool": {"idleSeconds": 60, "maxRunners": 1}})

    async def scenario():
        proc = Process(cluster, one_runner)
        await proc.start()
        cluster.submit("lost-on-the-way")
        for _ in range(8):
            cluster.now += 500
            await proc.step()
            cluster.kubelet()
            await fleet.tick(proc.api)
        runner = cluster.status("lost-on-the-way")["runnerPod"]
        fleet.runners[runner].assignment = None  # the take's answer never reached it: it asks again
        proc = Process(cluster, one_runner)  # the operator that recorded the assignment is gone
        await proc.start()
        cluster.submit("next")
        for _ in range(80):
            cluster.now += 500
            await proc.step()
            cluster.kubelet()
            await fleet.tick(proc.api)
            if all(cluster.status(n).get("status") == "COMPLETED" for n in ("lost-on-the-way", "next")):
                break
        return runner

    runner = run(scenario())
    nxt, lost = cluster.status("next"), cluster.status("lost-on-the-way")
    assert nxt["status"] == "COMPLETED" and nxt["attempts"] == 1 and nxt["runnerPod"] == runner
    assert lost["status"] == "COMPLETED" and lost["attempts"] == 2 and lost["lastFailure"]["reason"] == "RunnerLost"
    assert runner in cluster.pods  # kept: it never hung


def test_a_stale_decision_is_refused_and_taken_again():
    cluster = Cluster()
    cluster.submit("s")
    cluster.now += QUEUED_WRITE_AFTER_MS  # no runner took it: its IN_QUEUE status is due

    async def scenario():
        proc = Process(cluster, CFG)
        await proc.start()
        # someone else changes the job behind the cache's back (a label edit): the status write gets a 409
        job = cluster.job("s")
        job["metadata"].setdefault("labels", {})["x"] = "y"
        cluster._bump(job)
        await proc.step()  # its verdict, then the decision on it
        assert cluster.writes["status"] == 0
        await proc.dispatcher.pass_once()  # the fresh job was read after the conflict
        assert cluster.writes["status"] == 1

    run(scenario())


def test_an_action_that_fails_backs_off_that_job_only():
    cluster = Cluster()
    cluster.submit("a")
    cluster.submit("b")

    async def scenario():
        proc = Process(cluster, CFG)
        await proc.start()
        staging = proc.dispatcher.staging
        original = staging.stage_input

        async def broken(uri, document):
            if "/a/" in uri:
                raise RuntimeError("S3 unavailable")
            return await original(uri, document)

        staging.stage_input = broken
        await proc.step()
        assert [u for u in cluster.s3 if u.endswith("input.json")] == [u for u in cluster.s3 if "/b/" in u]
        assert "uid-a-1" in proc.dispatcher._errors
        await proc.step()  # within the back-off: not tried again
        staging.stage_input = original
        cluster.now += 2_000
        await proc.step()
        assert sorted(u.split("/")[5] for u in cluster.s3 if u.endswith("input.json")) == ["a", "b"]

    run(scenario())


def test_ttl_deletes_finished_jobs():
    cluster = Cluster()
    cluster.submit("t", ttlSecondsAfterFinished=5)
    run(drive(cluster, CFG, Fleet(cluster), steps=40))
    assert "t" not in states(cluster) and cluster.writes["job_delete"] == 1


def test_an_output_bucket_that_does_not_exist_fails_the_job_instead_of_retrying_forever():
    cluster = Cluster()
    cluster.submit("nobucket", output={"bucket": "no-such-bucket"})
    cfg = config(**{**CFG.model_dump(by_alias=True, exclude_none=True),
                    "s3": {**CFG.s3.model_dump(by_alias=True, exclude_none=True),
                           "allowedOutputLocations": {NS: ["s3://no-such-bucket/jobs"]}}})

    class NoSuchBucket(Exception):
        response = {"Error": {"Code": "NoSuchBucket", "Message": "The specified bucket does not exist"}}

    async def scenario():
        proc = Process(cluster, cfg)
        await proc.start()

        async def refuse(uri, document):
            raise NoSuchBucket("The specified bucket does not exist")

        staging = proc.dispatcher.staging
        staging.put = refuse
        from img2img_operator.staging import Staging

        staging.stage_input = lambda uri, doc: Staging.stage_input(staging, uri, doc)
        await proc.step()

    run(scenario())
    s = cluster.status("nobucket")
    assert s["status"] == "FAILED" and s["lastFailure"]["reason"] == "StagingFailed"
    assert "s3://no-such-bucket/" in s["error"]


def test_a_status_the_api_server_refuses_for_good_ends_the_job_failed_once_instead_of_retrying_forever(monkeypatch):
    cluster = Cluster()
    cluster.submit("huge")
    refusals = []
    write = FakeKube.patch_job_status

    async def refusing(self, namespace, name, status, resource_version, current=None):
        if name == "huge" and "output" in status:  # its COMPLETED status, as etcd answers an object over its limit
            self._call()
            refusals.append(status["status"])
            raise Refused("HTTP 500: etcdserver: request is too large")
        return await write(self, namespace, name, status, resource_version, current)

    monkeypatch.setattr(FakeKube, "patch_job_status", refusing)
    fleet = Fleet(cluster)
    run(drive(cluster, CFG, fleet, steps=30))
    s = cluster.status("huge")
    assert s["status"] == "FAILED" and s["lastFailure"]["reason"] == "StatusRefused" and s["attempts"] == 1
    assert "etcdserver: request is too large" in s["error"] and "/attempt-1/result.json" in s["error"]
    assert refusals == ["COMPLETED"]  # refused once, never written again
    assert not any(r.refused for r in fleet.runners.values())  # the runner's report was accepted: its lease ended
    cluster.submit("next")  # and the slot is free
    run(drive(cluster, CFG, fleet, steps=30, until=lambda: states(cluster).get("next") == "COMPLETED"))
    assert states(cluster)["next"] == "COMPLETED"


def test_finished_jobs_are_passed_over_until_they_change_and_still_counted(monkeypatch):
    from img2img_operator.views import JobView

    cluster = Cluster()
    cluster.submit("a")
    cluster.submit("b")
    built: list[str] = []
    from_body = JobView.from_body.__func__
    monkeypatch.setattr(JobView, "from_body", classmethod(lambda cls, body, *a: built.append(
        body["metadata"]["name"]) or from_body(cls, body, *a)))
    fleet = Fleet(cluster)

    async def scenario() -> None:
        proc = Process(cluster, CFG)
        await proc.start()
        for _ in range(30):
            cluster.now += 500
            await proc.step()
            cluster.kubelet()
            await fleet.tick(proc.api)
        assert set(states(cluster).values()) == {"COMPLETED"}
        for name in list(cluster.pods):  # no runner asks for work any more
            cluster.force_delete_pod(name)
        await proc.step()
        built.clear()
        cluster.now += 500
        await proc.step()
        assert built == []  # settled: no view, no decision
        assert proc.metrics.jobs.labels("COMPLETED", "l4")._value.get() == 2  # yet still counted
        cluster.edit("a", cancel=True)  # a spec change on a finished job: observedGeneration follows
        await proc.step()
        assert set(built) == {"a"} and cluster.status("a")["observedGeneration"] == 2

    run(scenario())


# ---- webhooks -----------------------------------------------------------------------------------------------------
HOOKS_CFG = config(**{**CFG.model_dump(by_alias=True), "webhooks": {
    "allowPrivateAddresses": True, "retryBackoff": {"initialSeconds": 30, "maxSeconds": 60}}})
ENDED = {"status": "COMPLETED", "attempts": 1, "delayTime": 10, "executionTime": 900,
         "completedAt": "2026-01-01T00:00:05.000Z",
         "output": {"images": ["s3://img2img/jobs/0.png"], "info": "{}", "parameters": {"steps": 2}}}


async def settled(check: Callable[[], bool], seconds: float = 10) -> None:
    """Real time for the delivery tasks (a real HTTP receiver) until ``check`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_a_webhook_retry_survives_an_operator_restart_and_a_delivered_one_is_never_sent_again():
    from webhook_receiver import Receiver, verify
    from img2img.api.webhook_signing import public_key_text

    receiver = Receiver(script=[500, 200])
    cluster = Cluster()
    uid = cluster.submit("hooked", webhook=receiver.url)
    cluster.finish("hooked", {**ENDED, "id": uid})

    def record() -> dict:
        return cluster.status("hooked").get("webhook") or {}

    async def scenario():
        first = Process(cluster, HOOKS_CFG)
        await first.start()
        await first.step()
        await settled(lambda: record().get("attempts") == 1)
        assert record()["lastStatusCode"] == 500 and not record()["delivered"]
        assert record()["nextAttemptAt"] == format_time_ms(cluster.now + 30_000)
        first.kube.dead = True  # the operator dies while its retry waits
        await first.webhooks.close()

        second = Process(cluster, HOOKS_CFG)
        await second.start()
        await second.step()
        await asyncio.sleep(0.3)
        assert len(receiver.received) == 1  # the retry waits for its nextAttemptAt, restart or not
        cluster.now += 30_000
        await second.webhooks.close()  # (its wait was measured on the old clock)
        await second.step()
        await settled(lambda: record().get("delivered") is True)
        assert record()["attempts"] == 2 and record()["deliveredAt"] == format_time_ms(cluster.now)

        third = Process(cluster, HOOKS_CFG)
        await third.start()
        await third.step()
        await asyncio.sleep(0.3)
        assert not third.webhooks.tasks

    try:
        run(scenario())
    finally:
        receiver.close()
    assert len(receiver.received) == 2
    public = public_key_text(read_secret_key(cluster.signing))
    ids = set()
    for delivery in receiver.received:
        assert verify(delivery.headers, delivery.body, public, now=int(delivery.headers["webhook-timestamp"]))
        ids.add(delivery.headers["webhook-id"])
        assert json.loads(delivery.body) == {"id": uid, "status": "COMPLETED", "delayTime": 10, "executionTime": 900,
                                             "output": ENDED["output"]}
    assert ids == {uid}  # one delivery, retried: the receiver's idempotency key


def test_a_webhook_to_a_private_address_fails_the_job_naming_the_field_and_nothing_is_sent():
    cluster = Cluster()
    cluster.submit("private", webhook="https://10.0.0.7/hook")

    async def scenario():
        proc = Process(cluster, CFG)  # private addresses not allowed: the default
        await proc.start()
        await proc.step()  # FAILED
        await proc.step()  # its webhook: refused, recorded
        await settled(lambda: "webhook" in cluster.status("private"))

    run(scenario())
    status = cluster.status("private")
    assert status["status"] == "FAILED" and status["lastFailure"]["reason"] == "InvalidSpec"
    assert "spec.webhook: 'https://10.0.0.7/hook' 10.0.0.7 is a private address; refused" in status["error"]
    assert status["webhook"] == {"delivered": False, "attempts": 0, "gaveUp": True,
                                 "lastError": "'https://10.0.0.7/hook' 10.0.0.7 is a private address; refused"}


# ---- pools --------------------------------------------------------------------------------------------------------
def test_a_pool_scales_up_under_a_queue_and_back_down_to_min_ready_after_idle_seconds():
    cluster = Cluster()
    cluster.add_pool("warm", models=["sd_xl_base_1.0"], minReady=1, maxRunners=3, idleSeconds=4)
    fleet = Fleet(cluster, steps=6)
    cfg = config(**{**CFG.model_dump(by_alias=True), "gpuClasses": {"l4": {"maxConcurrent": 3}}})

    async def scenario():
        proc = Process(cluster, cfg)
        await proc.start()
        sizes = []
        for i in range(6):
            cluster.submit(f"q{i}")
        for _ in range(80):
            cluster.now += 500
            await proc.step()
            cluster.kubelet()
            await fleet.tick(proc.api)
            sizes.append(len(cluster.pods))
        return sizes

    sizes = run(scenario())
    assert set(states(cluster).values()) == {"COMPLETED"}
    assert max(sizes) == 3 and sizes[-1] == 1  # up to maxRunners, then down to minReady once idle
    status = cluster.pools["warm"]["status"]
    assert (status["readyRunners"], status["busyRunners"], status["queuedJobs"]) == (1, 0, 0)
    assert {c["type"]: c["status"] for c in status["conditions"]} == {"Ready": "True", "Stalled": "False"}
    assert cluster.writes["pod_delete"] == 2


def test_the_warm_runner_gets_the_job_that_needs_its_models():
    cluster = Cluster()
    cluster.add_pool("sdxl", models=["sd_xl_base_1.0"], minReady=1)
    cluster.add_pool("sd15", models=["v1-5-pruned-emaonly"], minReady=1)

    async def scenario():
        proc = Process(cluster, CFG)
        await proc.start()
        for _ in range(3):
            cluster.now += 500
            await proc.step()
            cluster.kubelet()
        names = {p["metadata"]["labels"]["img2img.dev/pool"]: n for n, p in cluster.pods.items()}
        # both ask for work; the SD 1.5 runner asks first, holding only its own model
        sd15 = Runner(cluster, names["sd15"])
        sdxl = Runner(cluster, names["sdxl"])
        sd15_take = asyncio.create_task(proc.api.serve_take(TakeRequest(
            runner=sd15.name, models=["v1-5-pruned-emaonly"], waitSeconds=0.2)))
        sdxl_take = asyncio.create_task(proc.api.serve_take(TakeRequest(runner=sdxl.name, models=HELD,
                                                                        waitSeconds=0.2)))
        await asyncio.sleep(0.01)
        cluster.submit("x")  # the seed request: SDXL base, refiner, VAE, canny ControlNet
        await proc.step()
        return await sd15_take, await sdxl_take

    sd15_got, sdxl_got = run(scenario())
    assert sd15_got is None and sdxl_got is not None and sdxl_got.job.name == "x"


def test_a_pool_whose_runners_crash_before_taking_is_stalled_and_recreates_them_slower_and_slower():
    cluster = Cluster()
    cluster.add_pool("broken", models=["x"], minReady=1)
    cluster.crashing.add("broken")
    run(drive(cluster, CFG, Fleet(cluster), steps=40))  # 20 s
    created = cluster.writes["pod_create"]
    assert 2 <= created <= 4  # at once, then after 5 s, 10 s (not every pass)
    status = cluster.pools["broken"]["status"]
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "RunnerFailedBeforeTake"
    assert "unknown model 'x'" in stalled["message"]
    assert not cluster.pods  # the failed runners' pods are removed


def test_a_runner_no_node_fits_is_removed_after_max_pending_seconds_and_its_pool_says_why_while_jobs_wait():
    cfg = config(**{**CFG.model_dump(by_alias=True),
                    "runners": {**CFG.model_dump(by_alias=True)["runners"], "maxPendingSeconds": 10}})
    cluster = Cluster()
    cluster.add_pool("big", minReady=1)
    cluster.no_room.add("big")
    cluster.submit("j")
    run(drive(cluster, cfg, Fleet(cluster), steps=16))  # 8 s: within the limit, the runner waits
    (first,) = cluster.pods
    assert cluster.writes["pod_create"] == 1 and ("big", "RunnerNotStarted") not in cluster.posted
    run(drive(cluster, cfg, Fleet(cluster), steps=10))  # 13 s
    assert first not in cluster.pods and ("big", "RunnerNotStarted") in cluster.posted
    stalled = next(c for c in cluster.pools["big"]["status"]["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True", stalled
    assert f"runner {first} ended before it asked for work: removed: still Pending" in stalled["message"]
    assert "(runners.maxPendingSeconds: 10): Unschedulable: 0/3 nodes are available" in stalled["message"]
    assert cluster.status("j")["status"] == "IN_QUEUE"  # the job waits; its deadline has not started


def test_pods_with_the_runner_labels_that_the_operator_did_not_make_are_not_runners():
    """Someone who may create pods in the runner namespace copies a runner's labels and spec: one pod never
    starts, one fails, one runs and asks for work. None is counted by the pool (which makes its own runner), none
    is served a job, none is removed by the operator, and the pool does not stall."""
    cluster = Cluster()
    cluster.add_pool("warm", minReady=1)
    fleet = Fleet(cluster, steps=2)

    async def scenario():
        proc = Process(cluster, CFG)
        await proc.start()
        await proc.step()  # the pool's first runner, whose labels and spec are copied
        (ours,) = cluster.pods
        copied = copy.deepcopy(cluster.pods[ours])
        cluster.force_delete_pod(ours)
        cluster.unschedulable.add("warm-stuck")
        cluster.labelled_pod("warm-stuck", copied)
        cluster.labelled_pod("warm-fails", copied, phase="Failed")
        cluster.labelled_pod("warm-asks", copied, phase="Running")
        cluster.submit("j")
        for _ in range(30):
            cluster.now += 500
            await proc.step()
            cluster.kubelet()
            await fleet.tick(proc.api)
        return ours

    first = run(scenario())
    foreign = {"warm-stuck", "warm-fails", "warm-asks"}
    assert foreign <= set(cluster.pods) and not any(cluster.pods[n]["metadata"].get("deletionTimestamp")
                                                   for n in foreign)
    (runner,) = set(cluster.pods) - foreign
    assert runner != first and cluster.writes["pod_create"] == 2
    assert cluster.status("j")["status"] == "COMPLETED" and cluster.status("j")["runnerPod"] == runner
    assert fleet.served() == Counter({("j", 1): 1}) and not fleet.runners["warm-asks"].served
    status = cluster.pools["warm"]["status"]
    assert (status["readyRunners"], status["startingRunners"]) == (1, 0)
    assert {c["type"]: c["status"] for c in status["conditions"]} == {"Ready": "True", "Stalled": "False"}


def test_a_runner_pool_of_an_unknown_gpu_class_is_stalled_naming_the_field():
    cluster = Cluster()
    cluster.add_pool("typo", gpuClass="h200")
    run(drive(cluster, CFG, Fleet(cluster), steps=3))
    status = cluster.pools["typo"]["status"]
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True" and "spec.gpuClass: 'h200'" in stalled["message"]
    assert not cluster.pods


def test_runners_of_a_removed_pool_go_but_never_a_busy_one():
    cluster = Cluster()
    cluster.add_pool("warm", minReady=2)
    fleet = Fleet(cluster, steps=30)

    async def scenario():
        proc = Process(cluster, CFG)
        await proc.start()
        for _ in range(4):
            cluster.now += 500
            await proc.step()
            cluster.kubelet()
            await fleet.tick(proc.api)
        cluster.submit("busy")
        for _ in range(3):
            cluster.now += 500
            await proc.step()
            await fleet.tick(proc.api)
        busy = cluster.status("busy")["runnerPod"]
        body = cluster.pools.pop("warm")
        cluster._emit("pool", "DELETED", cluster._bump(body))
        for _ in range(3):
            cluster.now += 500
            await proc.step()
            cluster.kubelet()
        return busy

    busy = run(scenario())
    assert busy in cluster.pods and len([p for p in cluster.pods if p.startswith("warm-")]) == 1
