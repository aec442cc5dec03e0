"""The operator against the real stack: kube-apiserver + etcd + kube-controller-manager, the local executor playing
the kubelet, the real runner on tiny models, MinIO. Issue 5's "Done when" list, one test per line.

Each test starts the operator it needs (some kill it); jobs run in a fresh namespace.
"""

from __future__ import annotations

import base64
import io
import json
import random
import signal
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.stack

REPO = Path(__file__).resolve().parents[2]
SEED_JOB = REPO / "examples" / "job.yaml"
FAST = {  # the operator, tuned for tests: short back-off and tick, small runner requests (two fit the node)
    "retryBackoff": {"initialSeconds": 1, "maxSeconds": 2},
    "timing": {"tickSeconds": 1, "deadlineGraceSeconds": 5, "cancelGracePeriodSeconds": 2},
    "runner": {"resources": {"requests": {"cpu": "100m", "memory": "256Mi"}}},
}
SLEEPER = {"runner": {"command": ["sleep", "600"]}}  # a runner that runs until killed
RUNNER_SELECTOR = "app.kubernetes.io/managed-by=img2img-operator"


def deep_merge(*parts: dict) -> dict:
    from img2img.local.components import deep_merge as merge

    out: dict = {}
    for part in parts:
        out = merge(out, part)
    return out


@pytest.fixture
def operator(stack):
    """start(overrides) → the operator runs with FAST + overrides; stopped at the end."""
    started = []

    def start(overrides: dict | None = None) -> None:
        stack.stop_operator()
        stack.start_operator(deep_merge(FAST, overrides or {}))
        started.append(True)

    yield start
    if started:
        stack.stop_operator()


# ---- helpers ------------------------------------------------------------------------------------------------------
def png_b64(size: tuple[int, int] = (64, 64), noise: bool = False) -> str:
    from PIL import Image, ImageDraw

    if noise:
        rng = random.Random(5)
        image = Image.frombytes("RGB", size, bytes(rng.getrandbits(8) for _ in range(size[0] * size[1] * 3)))
    else:
        image = Image.new("RGB", size, "white")
        ImageDraw.Draw(image).ellipse((8, 8, size[0] - 8, size[1] - 8), outline="black", width=3)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def light_input(image: str | None = None, **payload) -> dict:
    """A quick job for the tiny models: SDXL base only, 64x64, 2 steps."""
    return {"api": {"method": "POST", "endpoint": "/sdapi/v1/img2img"},
            "payload": {"init_images": [image or png_b64()], "prompt": "a red circle", "steps": 2, "width": 64,
                        "height": 64, "denoising_strength": 0.5, "seed": 1,
                        "override_settings": {"sd_model_checkpoint": "sd_xl_base_1.0"}, **payload}}


def create(stack, namespace: str, name: str, input: dict | None = None, **controls) -> None:
    manifest = {"apiVersion": "img2img.dev/v1alpha1", "kind": "Img2ImgJob",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"input": input or light_input(), **controls}}
    stack.kubectl("create", "-f", "-", input=json.dumps(manifest))


def get(stack, namespace: str, name: str) -> dict:
    return stack.get_json("-n", namespace, "img2imgjob", name)


def status(stack, namespace: str, name: str) -> dict:
    return get(stack, namespace, name).get("status") or {}


def wait_for(what: str, check, timeout: float = 240, every: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def wait_state(stack, namespace: str, name: str, states: set[str], timeout: float = 240) -> dict:
    def check():
        s = status(stack, namespace, name)
        return s if s.get("status") in states else None

    try:
        return wait_for(f"{name} in {states}", check, timeout)
    except AssertionError:
        raise AssertionError(f"{name}: {json.dumps(status(stack, namespace, name), indent=1)[:3000]}") from None


def pods(stack, namespace: str) -> list[dict]:
    return stack.get_json("-n", namespace, "pods", "-l", RUNNER_SELECTOR)["items"]


def pod(stack, namespace: str, name: str) -> dict | None:
    found = [p for p in pods(stack, namespace) if p["metadata"]["name"] == name]
    return found[0] if found else None


def runner_starts(stack, namespace: str, job: str) -> list[str]:
    """The executor's folder per pod it ran (<namespace>_<pod>_<uid>): one per runner start."""
    root = Path(stack.info.state_dir) / "executor" / "pods"
    return sorted(p.name for p in root.glob(f"{namespace}_{job}-*_*") if (p / "logs").exists()
                  and any((p / "logs").iterdir()))


class Events:
    """Every watch event of a list call, in the API server's order, from a thread.

    The watch starts at the resourceVersion of a list made here first, so an event that happens before the watch
    has connected is still delivered: nothing to wait for before acting.
    """

    def __init__(self, list_call, *args, until=lambda event: False, **kwargs):
        from kubernetes import watch

        listed = list_call(*args, **kwargs)
        rv = listed["metadata"]["resourceVersion"] if isinstance(listed, dict) else listed.metadata.resource_version
        self.seen: list[tuple[str, dict]] = []  # (ADDED | MODIFIED | DELETED, the object as JSON)
        self._watch = watch.Watch()

        def follow():
            for event in self._watch.stream(list_call, *args, resource_version=rv, timeout_seconds=1200, **kwargs):
                self.seen.append((event["type"], event["raw_object"]))
                if until(event["raw_object"]):
                    break

        self.thread = threading.Thread(target=follow, daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 10) -> list[tuple[str, dict]]:
        self.thread.join(timeout=timeout)
        self._watch.stop()
        return self.seen


def state_watch(stack, namespace: str, name: str) -> Events:
    """The job's events until it has finished."""
    from kubernetes import client

    api = client.CustomObjectsApi(stack.api_client())
    return Events(api.list_namespaced_custom_object, "img2img.dev", "v1alpha1", namespace, "img2imgjobs",
                  field_selector=f"metadata.name={name}",
                  until=lambda job: (job.get("status") or {}).get("status") in
                  ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"))


def states(events: list[tuple[str, dict]]) -> list[str]:
    """Every status.status a job went through, in order (nothing polled in between is missed)."""
    seen: list[str] = []
    for _, job in events:
        state = (job.get("status") or {}).get("status")
        if state and (not seen or seen[-1] != state):
            seen.append(state)
    return seen


def s3_exists(stack, uri: str) -> bool:
    bucket, _, key = uri[5:].partition("/")
    try:
        stack.s3().head_object(Bucket=bucket, Key=key)
        return True
    except Exception:
        return False


# ---- the tests ----------------------------------------------------------------------------------------------------
def test_seed_job_created_with_kubectl_create_runs_to_completed(stack, namespace, operator):
    operator()
    manifest = yaml.safe_load(SEED_JOB.read_text())
    watch = state_watch(stack, namespace, manifest["metadata"]["name"])
    stack.kubectl("create", "-n", namespace, "-f", str(SEED_JOB))
    name = manifest["metadata"]["name"]
    final = wait_state(stack, namespace, name, {"COMPLETED", "FAILED", "TIMED_OUT"}, timeout=600)
    assert final["status"] == "COMPLETED", final
    assert states(watch.stop()) == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]

    job = get(stack, namespace, name)
    assert final["id"] == job["metadata"]["uid"]
    for key in ("delayTime", "executionTime", "modelLoadTime"):
        assert isinstance(final[key], int) and final[key] >= 0, key
    assert final["delayTime"] >= final["modelLoadTime"]
    images = final["output"]["images"]
    assert len(images) == 2  # the image, then the ControlNet detect map
    assert all(uri.startswith(f"s3://{stack.bucket}/jobs/{namespace}/{name}/") and s3_exists(stack, uri)
               for uri in images)
    info = json.loads(final["output"]["info"])
    assert info["all_seeds"] and "infotexts" in info
    assert final["output"]["parameters"]["prompt"] == "an astronaut riding a horse"
    assert final["output"]["parameters"]["init_images"] is None
    assert s3_exists(stack, final["result"])
    assert final["attempts"] == 1 and final["runnerPod"] == f"{name}-1"
    conditions = {c["type"]: c["status"] for c in final["conditions"]}
    assert conditions == {"Ready": "True", "Reconciling": "False", "Stalled": "False"}
    assert final["observedGeneration"] == job["metadata"]["generation"]
    runner = pod(stack, namespace, f"{name}-1")
    assert runner["status"]["phase"] == "Succeeded"
    # kopf left nothing on the job: no diff-base annotation, no progress, no finalizer
    assert not job["metadata"].get("finalizers")
    assert not [a for a in job["metadata"].get("annotations") or {} if "kopf" in a or "last-handled" in a]
    events = stack.get_json("-n", namespace, "events", "--field-selector", f"involvedObject.name={name}")["items"]
    assert "Completed" in {e["reason"] for e in events}


ORDER = ["j1", "j3", "j4", "j0", "j2", "j5"]  # priority 5, 5, 1, 0, 0, 0; then submission order


def runner_story(events: list[tuple[str, dict]]) -> list[tuple[str, str]]:
    """("start", job) when a job's runner pod is created, ("end", job) when it first shows it finished."""
    story: list[tuple[str, str]] = []
    for kind, body in events:
        job = body["metadata"]["labels"]["img2img.dev/job"]
        if kind == "ADDED":
            story.append(("start", job))
        elif (body.get("status") or {}).get("phase") in ("Succeeded", "Failed") and ("end", job) not in story:
            story.append(("end", job))
    return story


def test_two_at_a_time_by_priority_then_submission_with_queue_positions(stack, namespace, operator):
    # Six jobs queued at once (submitted while no operator runs), then the operator: a GPU-less class so that two
    # runners fit the one-GPU node, since the operator's limit is what is tested.
    from kubernetes import client

    stack.stop_operator()
    priorities = [0, 5, 0, 5, 1, 0]
    for i, p in enumerate(priorities):
        create(stack, namespace, f"j{i}", priority=p)
        time.sleep(0.05)
    core = client.CoreV1Api(stack.api_client())
    pod_events = Events(core.list_namespaced_pod, namespace, label_selector=RUNNER_SELECTOR)
    operator({"gpuClasses": {"cpu": {"resources": {"cpu": "100m"}, "maxConcurrent": 2}}, "defaultGpuClass": "cpu",
              "runner": {"command": ["sh", "-c", "sleep 4; exec img2img-runner"]}})

    samples: list[dict[str, dict]] = []

    def all_done():
        snapshot = {j["metadata"]["name"]: j.get("status") or {}
                    for j in stack.get_json("-n", namespace, "img2imgjobs")["items"]}
        samples.append(snapshot)
        running = [n for n, s in snapshot.items() if s.get("runnerPod") and s.get("status") in ("IN_QUEUE", "IN_PROGRESS")]
        assert len(running) <= 2, snapshot
        live = [p for p in pods(stack, namespace) if p["status"].get("phase") in ("Pending", "Running")]
        assert len(live) <= 2
        # positions of the waiting jobs follow priority, then submission order; each job's status is its own
        # object, so while positions move up one write at a time a sample may see two equal or a gap
        position = {n: s["queuePosition"] for n, s in snapshot.items()
                    if s.get("status") == "IN_QUEUE" and not s.get("runnerPod") and s.get("queuePosition")}
        in_order = [position[n] for n in ORDER if n in position]
        assert in_order == sorted(in_order), snapshot
        return all(s.get("status") in ("COMPLETED", "FAILED") for s in snapshot.values()) and len(snapshot) == 6

    wait_for("six jobs done", all_done, timeout=900, every=0.3)
    final = samples[-1]
    assert {s["status"] for s in final.values()} == {"COMPLETED"}
    # The order runners were started in, from the API server's own sequence of pod events (no clocks): a pod is
    # created when a slot frees, i.e. after a runner pod ended. Two slots that free together are filled in one pass,
    # whose two pods are created in either order; a job started a whole slot too early has a runner's end between
    # its pod and the pod of a job ranked before it.
    wait_for("every runner's end on the watch",
             lambda: len([e for e in runner_story(list(pod_events.seen)) if e[0] == "end"]) == 6, timeout=60)
    story = runner_story(pod_events.stop(timeout=0))
    assert sorted(job for what, job in story if what == "start") == sorted(ORDER), story  # one runner each
    start = {job: i for i, (what, job) in enumerate(story) if what == "start"}
    assert {story[0][1], story[1][1]} == {"j1", "j3"} and story[0][0] == story[1][0] == "start", story
    for i, earlier in enumerate(ORDER):
        for later in ORDER[i + 1:]:
            if start[later] < start[earlier]:
                between = story[start[later]:start[earlier]]
                assert not [e for e in between if e[0] == "end"], (earlier, later, story)
    # once settled, the four waiting behind the first two read 1..4
    settled = [{n: s.get("queuePosition") for n, s in snap.items() if s.get("queuePosition")} for snap in samples]
    assert {"j4": 1, "j0": 2, "j2": 3, "j5": 4} in settled


def test_pod_evicted_mid_run_is_retried_and_completes_with_two_attempts(stack, namespace, operator):
    operator({"runner": {"command": ["sh", "-c", "sleep 5; exec img2img-runner"]}})
    create(stack, namespace, "evicted")
    wait_for("pod running", lambda: (pod(stack, namespace, "evicted-1") or {}).get("status", {}).get("phase")
             == "Running")
    stack.kubectl("-n", namespace, "annotate", "pod", "evicted-1", "local.img2img.dev/evict=true")
    final = wait_state(stack, namespace, "evicted", {"COMPLETED", "FAILED"}, timeout=600)
    assert final["status"] == "COMPLETED" and final["attempts"] == 2 and final["runnerPod"] == "evicted-2"
    assert final["lastFailure"]["reason"] == "Evicted"
    assert pod(stack, namespace, "evicted-1")["status"]["reason"] == "Evicted"


def test_job_failing_transiently_ends_failed_after_the_retry_limit(stack, namespace, operator):
    operator({"runner": {"command": ["sh", "-c", "echo 'S3 is down' >&2; exit 5"]}})
    create(stack, namespace, "flaky", retries=2)
    final = wait_state(stack, namespace, "flaky", {"COMPLETED", "FAILED"})
    assert final["status"] == "FAILED" and final["attempts"] == 3
    assert final["lastFailure"]["reason"] == "StorageError" and final["lastFailure"]["exitCode"] == 5
    assert "(after 3 attempts)" in final["error"] and "S3 is down" in final["error"]
    assert sorted(p["metadata"]["name"] for p in pods(stack, namespace)) == ["flaky-1", "flaky-2", "flaky-3"]


def test_unknown_model_ends_failed_at_once_naming_the_model(stack, namespace, operator):
    operator()
    create(stack, namespace, "nomodel", retries=3,
           input=light_input(override_settings={"sd_model_checkpoint": "no_such_model_xl"}))
    final = wait_state(stack, namespace, "nomodel", {"COMPLETED", "FAILED"}, timeout=300)
    assert final["status"] == "FAILED" and final["attempts"] == 1
    assert "no_such_model_xl" in final["error"] and final["lastFailure"]["exitCode"] == 3
    assert [p["metadata"]["name"] for p in pods(stack, namespace)] == ["nomodel-1"]


def test_refused_spec_fails_at_once_with_the_field_named(stack, namespace, operator):
    operator()
    create(stack, namespace, "badclass", gpuClass="h200")
    final = wait_state(stack, namespace, "badclass", {"FAILED"}, timeout=60)
    assert "spec.gpuClass" in final["error"] and final["attempts"] == 0
    assert pods(stack, namespace) == []


def test_deadline_ends_timed_out_and_removes_the_pod(stack, namespace, operator):
    operator(SLEEPER)
    create(stack, namespace, "slow", timeoutSeconds=3)
    final = wait_state(stack, namespace, "slow", {"TIMED_OUT", "FAILED", "COMPLETED"}, timeout=120)
    assert final["status"] == "TIMED_OUT" and final["lastFailure"]["reason"] == "DeadlineExceeded"
    assert final["error"]
    wait_for("pod removed", lambda: pod(stack, namespace, "slow-1") is None, timeout=60)


def test_cancel_ends_cancelled_and_kills_the_process(stack, namespace, operator):
    operator(SLEEPER)
    create(stack, namespace, "cancelme")
    wait_state(stack, namespace, "cancelme", {"IN_PROGRESS"}, timeout=120)
    running = pod(stack, namespace, "cancelme-1")
    pid_file = (Path(stack.info.state_dir) / "executor" / "pods" /
                f"{namespace}_cancelme-1_{running['metadata']['uid']}" / "containers" / "runner" / "pid")
    pid = int(wait_for("runner pid", lambda: pid_file.exists() and pid_file.read_text().split()[0]))
    stack.kubectl("-n", namespace, "patch", "img2imgjob", "cancelme", "--type=merge", "-p", '{"spec":{"cancel":true}}')
    final = wait_state(stack, namespace, "cancelme", {"CANCELLED"}, timeout=60)
    assert final["observedGeneration"] == 2
    wait_for("pod removed", lambda: pod(stack, namespace, "cancelme-1") is None, timeout=60)
    from img2img.local.supervisor import pid_alive

    assert not pid_alive(pid)


def test_deleting_a_job_removes_its_pod(stack, namespace, operator):
    operator(SLEEPER)
    create(stack, namespace, "doomed")
    wait_state(stack, namespace, "doomed", {"IN_PROGRESS"}, timeout=120)
    # The pod's ownerReference would let kube-controller-manager's garbage collector delete it too: take it away,
    # so that only the operator (which knows the pod by its job-uid label) can remove the pod
    stack.kubectl("-n", namespace, "patch", "pod", "doomed-1", "--type=json",
                  "-p", '[{"op": "remove", "path": "/metadata/ownerReferences"}]')
    assert not pod(stack, namespace, "doomed-1")["metadata"].get("ownerReferences")
    stack.kubectl("-n", namespace, "delete", "img2imgjob", "doomed", "--wait=true")
    wait_for("pod removed", lambda: pod(stack, namespace, "doomed-1") is None, timeout=90)


def test_operator_killed_at_random_points_every_job_ends_right_and_ran_once(stack, namespace, operator):
    operator({"gpuClasses": {"cpu": {"resources": {"cpu": "100m"}, "maxConcurrent": 2}}, "defaultGpuClass": "cpu"})
    names = [f"k{i}" for i in range(6)]
    rng = random.Random(11)
    for name in names:
        create(stack, namespace, name, priority=rng.randint(0, 2))
    deadline = time.monotonic() + 900
    kills = 0
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.5, 6))
        stack.stop_operator(signal.SIGKILL)
        kills += 1
        time.sleep(rng.uniform(0, 2))
        operator({"gpuClasses": {"cpu": {"resources": {"cpu": "100m"}, "maxConcurrent": 2}},
                  "defaultGpuClass": "cpu"})
        states = {n: status(stack, namespace, n).get("status") for n in names}
        if all(s == "COMPLETED" for s in states.values()) or kills >= 5:
            break
    for name in names:
        final = wait_state(stack, namespace, name, {"COMPLETED", "FAILED", "TIMED_OUT"}, timeout=600)
        assert final["status"] == "COMPLETED", (name, final)
        assert final["attempts"] == 1 and final["runnerPod"] == f"{name}-1"
        assert len(runner_starts(stack, namespace, name)) == 1, (name, runner_starts(stack, namespace, name))
    assert kills >= 2


def test_job_with_a_1_mb_inline_image_completes(stack, namespace, operator):
    operator()
    image = png_b64((590, 590), noise=True)
    assert 1_000_000 <= len(base64.b64decode(image)) < 1_100_000
    create(stack, namespace, "big", input=light_input(image=image))
    final = wait_state(stack, namespace, "big", {"COMPLETED", "FAILED"}, timeout=600)
    assert final["status"] == "COMPLETED", final
    job = get(stack, namespace, "big")
    assert sum(len(v) for v in (job["metadata"].get("annotations") or {}).values()) < 10_000


def test_metrics_endpoint_reports_the_jobs_just_run(stack, namespace, operator):
    operator()
    create(stack, namespace, "m1")
    create(stack, namespace, "m2", gpuClass="nope")
    wait_state(stack, namespace, "m1", {"COMPLETED"}, timeout=300)
    wait_state(stack, namespace, "m2", {"FAILED"}, timeout=60)
    text = urllib.request.urlopen(stack.operator_metrics_url, timeout=5).read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    assert values['img2img_jobs_finished_total{state="COMPLETED"}'] >= 1
    assert values['img2img_jobs_finished_total{state="FAILED"}'] >= 1
    assert values['img2img_job_failures_total{reason="InvalidSpec"}'] >= 1
    assert values["img2img_job_delay_seconds_count"] >= 1 and values["img2img_job_execution_seconds_count"] >= 1
    assert values['img2img_api_writes_total{kind="pod_create"}'] >= 1
    assert any(k.startswith("img2img_jobs{") and 'state="COMPLETED"' in k and v >= 1 for k, v in values.items())


def test_the_operators_list_reads_every_page_and_trims_each(stack, namespace, monkeypatch):
    """The resync list comes in pages, read in order, each from the previous page's continue token; each page's
    jobs are trimmed as the page arrives, before the next page is asked for."""
    import asyncio

    from img2img_operator import kube as kube_module
    from img2img_operator.cache import kept_of_job
    from kubernetes_asyncio import client as aclient, config as aconfig

    for i in range(7):
        create(stack, namespace, f"p{i}")
    monkeypatch.setattr(kube_module, "LIST_PAGE", 3)
    log: list[tuple] = []  # what the list did, in order
    versions: list[str] = []  # each page's list resourceVersion
    request = kube_module.Kube.request

    async def logged(self, method, path, **kw):
        query = kw.get("query") or {}
        log.append(("ask", query.get("limit"), query.get("continue")))
        assert len(log) < 30, log  # a list that never ends
        data = await request(self, method, path, **kw)
        names = [item["metadata"]["name"] for item in data.get("items") or []]
        assert all("managedFields" in item["metadata"] for item in data["items"])  # the API sends them
        log.append(("page", names, (data.get("metadata") or {}).get("continue") or None))
        versions.append(data["metadata"]["resourceVersion"])
        return data

    def keep(item):
        log.append(("trim", item["metadata"]["name"]))
        return kept_of_job(item)

    monkeypatch.setattr(kube_module.Kube, "request", logged)

    async def listing():
        configuration = aclient.Configuration()
        await aconfig.load_kube_config(config_file=str(stack.kubeconfig), client_configuration=configuration)
        api = aclient.ApiClient(configuration)
        try:
            return await kube_module.Kube(api).list_jobs([namespace], keep=keep)
        finally:
            await api.close()

    items, rv = asyncio.run(listing())
    first, second, third = (entry for entry in log if entry[0] == "page")
    assert [first[1], second[1], third[1]] == [["p0", "p1", "p2"], ["p3", "p4", "p5"], ["p6"]]  # names in key order
    assert first[2] and second[2] and third[2] is None
    assert log == [
        ("ask", 3, None), first, ("trim", "p0"), ("trim", "p1"), ("trim", "p2"),
        ("ask", 3, first[2]), second, ("trim", "p3"), ("trim", "p4"), ("trim", "p5"),
        ("ask", 3, second[2]), third, ("trim", "p6"),
    ]
    assert [i["metadata"]["name"] for i in items] == [f"p{i}" for i in range(7)]
    assert all(i["kind"] == "Img2ImgJob" and "managedFields" not in i["metadata"] for i in items)
    assert rv == int(versions[0])  # the pages are one snapshot: its version is the first page's
