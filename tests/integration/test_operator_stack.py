"""The operator against the real stack: kube-apiserver + etcd + kube-controller-manager, the local executor playing
the kubelet, MinIO, and the real runner (`img2img-runner serve`) on the tiny models, in warm pools.

One warm pool (``warm``: the tiny SDXL models, one runner) serves the module; a test that needs another operator
configuration restarts the operator and restores it after. Jobs run in fresh namespaces, created as a user would,
with nothing of ours in them.
"""

from __future__ import annotations

import base64
import io
import json
import random
import re
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import yaml

from img2img.api.webhook_signing import PUBLIC_KEY_CONFIG_MAP
from img2img.local.bootstrap import RUNNER_NAMESPACE, TINY_POOL_MODELS, pool_manifest

pytestmark = pytest.mark.stack

REPO = Path(__file__).resolve().parents[2]
SEED_JOB = REPO / "examples" / "job.yaml"
WARM = "warm"
FAST = {  # the operator, tuned for tests: short back-off, tick and take wait; small runner requests
    "retryBackoff": {"initialSeconds": 1, "maxSeconds": 2},
    "timing": {"tickSeconds": 1},
    "runner": {"resources": {"requests": {"cpu": "100m", "memory": "256Mi"}}},
    "runners": {"leaseSeconds": 10, "heartbeatSeconds": 1, "takeWaitSeconds": 5},
}
# a GPU-less class, so that two runners fit the one-GPU node
CPU_CLASS = {"gpuClasses": {"cpu": {"resources": {"cpu": "100m"}, "maxConcurrent": 2}}, "defaultGpuClass": "cpu"}
# a quick failover, to see a takeover within a bounded time (the local stack's lone operator has a 60 s lease, to
# outlast a loaded machine's stalls), still with room for a loaded machine's slow API calls
ELECTION = {"leaderElection": {"leaseDurationSeconds": 10, "renewDeadlineSeconds": 7, "retryPeriodSeconds": 1}}
LEASE = "img2img-operator"  # the configuration's default leaderElection.leaseName


def deep_merge(*parts: dict) -> dict:
    from img2img.local.components import deep_merge as merge

    out: dict = {}
    for part in parts:
        out = merge(out, part)
    return out


# ---- fixtures -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def warm(stack):
    """The operator with FAST, and pool ``warm`` with one runner holding the tiny SDXL models; its runner's name."""
    stack.stop_operator()
    stack.start_operator(FAST)
    stack.kubectl("apply", "--server-side", "-f", "-",
                  input=pool_manifest(WARM, "local", TINY_POOL_MODELS, min_ready=1, idleSeconds=60))
    name = wait_for("a ready runner in pool warm", lambda: ready_runner(stack, WARM), timeout=600)
    yield name
    stack.stop_operator()
    stack.kubectl("delete", "runnerpools,pods", "--all", "-n", RUNNER_NAMESPACE, "--wait=false", check=False)


@pytest.fixture
def operator(stack, warm):
    """restart(overrides): the operator runs with FAST + overrides until the test ends, then with FAST again."""
    changed = []

    def restart(overrides: dict | None = None) -> None:
        stack.stop_operator()
        stack.start_operator(deep_merge(FAST, overrides or {}))
        changed.append(True)

    yield restart
    if changed:
        stack.stop_operator()
        stack.start_operator(FAST)


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
    """A quick job for the tiny models: SDXL base only, 64x64, 2 steps (``steps`` for a longer one)."""
    return {"api": {"method": "POST", "endpoint": "/sdapi/v1/img2img"},
            "payload": {"init_images": [image or png_b64()], "prompt": "a red circle", "steps": 2, "width": 64,
                        "height": 64, "denoising_strength": 1.0, "seed": 1,
                        "override_settings": {"sd_model_checkpoint": "sd_xl_base_1.0"}, **payload}}


def long_input() -> dict:
    """A job that runs for seconds, step after step: to act on while it runs."""
    return light_input(steps=150, width=256, height=256)


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


def runner_pods(stack, pool: str | None = None) -> list[dict]:
    selector = "app.kubernetes.io/component=runner" + (f",img2img.dev/pool={pool}" if pool else "")
    return stack.get_json("-n", RUNNER_NAMESPACE, "pods", "-l", selector)["items"]


def live(pods: list[dict]) -> list[str]:
    return sorted(p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")
                  and p["status"].get("phase") in ("Pending", "Running"))


def pool_status(stack, pool: str) -> dict:
    return stack.get_json("-n", RUNNER_NAMESPACE, "runnerpool", pool).get("status") or {}


def ready_runner(stack, pool: str) -> str | None:
    """The name of the pool's only live runner once the pool counts it ready."""
    names = live(runner_pods(stack, pool))
    return names[0] if len(names) == 1 and pool_status(stack, pool).get("readyRunners") == 1 else None


def runner_log(stack, runner: str = "*") -> str:
    """What runner pod ``runner`` wrote, or every runner pod the node ran (``*``), those deleted since included:
    the executor keeps a pod's log after the pod is gone (a runner whose lease lapsed is removed, say)."""
    logs = sorted((Path(stack.info.state_dir) / "executor" / "pods").glob(f"{RUNNER_NAMESPACE}_{runner}_*/logs/*"))
    return "".join(f.read_text(errors="replace") for f in logs)


def stopped_at(stack, runner: str, reason: str) -> list[tuple[int, int]]:
    """(step, steps) of every job the runner stopped for ``reason`` (cancelled, deadline)."""
    return [(int(k), int(n)) for k, n in
            re.findall(rf"job stopped \({reason}\) at step (\d+) of (\d+)", runner_log(stack, runner))]


def pods_in(stack, namespace: str) -> list[str]:
    return stack.kubectl("-n", namespace, "get", "pods", "-o", "name").stdout.split()


def runner_url(stack) -> str:
    return f"http://127.0.0.1:{stack.stack.read_state()['ports']['operator_runners']}"


def post(stack, path: str, body: dict, token: str) -> tuple[int, dict | None]:
    """A call to the real runner endpoint, as a runner makes it."""
    request = urllib.request.Request(runner_url(stack) + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def pod_env(pod: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}


def metrics(stack) -> dict[str, float]:
    values = {}
    for line in urllib.request.urlopen(stack.operator_metrics_url, timeout=5).read().decode().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


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


def events_of(stack, namespace: str, name: str) -> Counter:
    items = stack.get_json("-n", namespace, "events", "--field-selector", f"involvedObject.name={name}")["items"]
    return Counter(e["reason"] for e in items)


# ---- the tests ----------------------------------------------------------------------------------------------------
def test_seed_job_created_with_kubectl_create_runs_on_the_warm_runner(stack, namespace, warm):
    manifest = yaml.safe_load(SEED_JOB.read_text())
    name = manifest["metadata"]["name"]
    watch = state_watch(stack, namespace, name)
    stack.kubectl("create", "-n", namespace, "-f", str(SEED_JOB))
    final = wait_state(stack, namespace, name, {"COMPLETED", "FAILED", "TIMED_OUT"}, timeout=900)
    assert final["status"] == "COMPLETED", final
    # taken at once by the waiting warm runner: its first status is the take's (no IN_QUEUE write before it)
    assert states(watch.stop()) == ["IN_PROGRESS", "COMPLETED"]

    job = get(stack, namespace, name)
    assert final["id"] == job["metadata"]["uid"]
    # the warm runner: nothing loaded for the job (its SD 1.5 ControlNet runs as the SDXL one the pool holds)
    assert final["runnerPod"] == warm and final["modelLoadTime"] == 0 and final["attempts"] == 1
    for key in ("delayTime", "executionTime"):
        assert isinstance(final[key], int) and final[key] >= 0, key
    images = final["output"]["images"]
    assert len(images) == 2  # the image, then the ControlNet detect map
    area = f"s3://{stack.bucket}/jobs/{namespace}/{name}/{job['metadata']['uid']}/attempt-1/"
    assert all(uri.startswith(area) and s3_exists(stack, uri) for uri in images)
    info = json.loads(final["output"]["info"])
    assert info["all_seeds"] and "infotexts" in info
    assert final["output"]["parameters"]["prompt"] == "an astronaut riding a horse"
    assert final["output"]["parameters"]["init_images"] is None
    assert final["result"] == area + "result.json" and s3_exists(stack, final["result"])
    assert "progress" not in final
    conditions = {c["type"]: c["status"] for c in final["conditions"]}
    assert conditions == {"Ready": "True", "Reconciling": "False", "Stalled": "False"}
    assert final["observedGeneration"] == job["metadata"]["generation"]
    # kopf left nothing on the job: no diff-base annotation, no progress, no finalizer
    assert not job["metadata"].get("finalizers")
    assert not [a for a in job["metadata"].get("annotations") or {} if "kopf" in a or "last-handled" in a]
    assert events_of(stack, namespace, name)["Completed"] == 1
    assert pods_in(stack, namespace) == []  # nothing of ours in the tenant's namespace


def test_warm_jobs_reuse_the_runner_and_load_nothing(stack, namespace, warm):
    before = metrics(stack).get('img2img_assignments_total{pool="warm",warm="true"}', 0)
    created = runner_pods(stack, WARM)[0]["metadata"]["creationTimestamp"]
    for name in ("w1", "w2"):
        create(stack, namespace, name)
        final = wait_state(stack, namespace, name, {"COMPLETED", "FAILED"}, timeout=300)
        assert final["status"] == "COMPLETED", final
        assert final["runnerPod"] == warm and final["modelLoadTime"] == 0 and final["attempts"] == 1
    assert live(runner_pods(stack, WARM)) == [warm]
    assert runner_pods(stack, WARM)[0]["metadata"]["creationTimestamp"] == created
    assert runner_log(stack, warm).count("ready: ") == 1  # its models loaded once, at its start
    assert metrics(stack)['img2img_assignments_total{pool="warm",warm="true"}'] >= before + 2


def test_a_job_in_a_freshly_created_namespace_completes(stack, warm, tmp_path):
    name = f"fresh-{random.randrange(16 ** 6):06x}"
    stack.kubectl("create", "namespace", name)
    try:
        manifest = tmp_path / "job.yaml"
        manifest.write_text(yaml.safe_dump({"apiVersion": "img2img.dev/v1alpha1", "kind": "Img2ImgJob",
                                            "metadata": {"name": "first", "namespace": name},
                                            "spec": {"input": light_input()}}))
        stack.kubectl("create", "-f", str(manifest))
        final = wait_state(stack, name, "first", {"COMPLETED", "FAILED"}, timeout=300)
        assert final["status"] == "COMPLETED", final
        assert pods_in(stack, name) == []
        accounts = stack.kubectl("-n", name, "get", "serviceaccounts", "-o", "name").stdout.split()
        assert accounts == ["serviceaccount/default"]
    finally:
        stack.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_a_runner_deleted_mid_job_costs_one_retry_and_a_late_completion_of_its_lease_is_refused(
        stack, namespace, warm):
    create(stack, namespace, "lost", input=long_input())
    running = wait_for("progress", lambda: (lambda s: s if (s.get("progress") or {}).get("step", 0) >= 1 else None)(
        status(stack, namespace, "lost")), timeout=300, every=0.2)
    first = running["runnerPod"]
    stack.kubectl("-n", RUNNER_NAMESPACE, "delete", "pod", first, "--force", "--grace-period=0")
    final = wait_state(stack, namespace, "lost", {"COMPLETED", "FAILED"}, timeout=600)
    assert final["status"] == "COMPLETED" and final["attempts"] == 2, final
    assert final["lastFailure"]["reason"] == "RunnerLost" and first in final["lastFailure"]["message"]
    second = final["runnerPod"]
    assert second != first and second in live(runner_pods(stack, WARM))  # the pool replaced it
    assert all("/attempt-2/" in uri for uri in final["output"]["images"])
    assert events_of(stack, namespace, "lost")["Completed"] == 1

    # A runner's client by hand, with a real runner's token (from its pod): the lost attempt's late completion.
    pod = next(p for p in runner_pods(stack, WARM) if p["metadata"]["name"] == second)
    token = pod_env(pod)["IMG2IMG_RUNNER_TOKEN"]
    uid = get(stack, namespace, "lost")["metadata"]["uid"]
    before = get(stack, namespace, "lost")
    late = f"{uid}.1.0badc0de"
    code, answer = post(stack, "/runner/v1/done", {"runner": second, "lease": late, "outcome": {
        "result": final["result"].replace("attempt-2", "attempt-1"), "error": None}}, token)
    assert code == 409 and answer["accepted"] is False
    code, answer = post(stack, "/runner/v1/heartbeat", {"runner": second, "lease": late, "step": 150}, token)
    assert code == 200 and answer["stop"] == "lost"
    after = get(stack, namespace, "lost")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]

    # The token is the operator's key over the runner's name: one for a runner that does not exist is refused.
    from img2img.api.protocol import runner_token

    key = base64.b64decode(stack.kubectl("-n", RUNNER_NAMESPACE, "get", "secret", "img2img-runner-token", "-o",
                                         "jsonpath={.data.key}").stdout)
    assert runner_token(key, second) == token
    ghost = "warm-zzzzz"
    code, answer = post(stack, "/runner/v1/take", {"runner": ghost, "models": [], "waitSeconds": 1},
                        runner_token(key, ghost))
    assert code == 401 and answer == {"error": "unknown runner"}


def test_cancel_mid_run_stops_the_runner_within_a_step_and_it_serves_the_next_job(stack, namespace, warm):
    runner = wait_for("the warm runner", lambda: ready_runner(stack, WARM), timeout=600)
    before = len(stopped_at(stack, runner, "cancelled"))
    create(stack, namespace, "cancelme", input=long_input())
    seen = wait_for("progress", lambda: (status(stack, namespace, "cancelme").get("progress") or {}).get("step"),
                    timeout=300, every=0.2)
    stack.kubectl("-n", namespace, "patch", "img2imgjob", "cancelme", "--type=merge", "-p",
                  '{"spec":{"cancel":true}}')
    final = wait_state(stack, namespace, "cancelme", {"CANCELLED", "COMPLETED"}, timeout=60)
    assert final["status"] == "CANCELLED" and final["observedGeneration"] == 2 and "progress" not in final
    stops = wait_for("the runner to stop", lambda: stopped_at(stack, runner, "cancelled")[before:], timeout=60)
    (step, steps), = stops
    assert seen <= step < steps  # stopped early, at a step (not killed)
    wait_for("the runner free again", lambda: pool_status(stack, WARM).get("busyRunners") == 0, timeout=60)
    create(stack, namespace, "next")
    after = wait_state(stack, namespace, "next", {"COMPLETED", "FAILED"}, timeout=300)
    assert after["status"] == "COMPLETED" and after["runnerPod"] == runner and after["modelLoadTime"] == 0


def test_the_deadline_counts_from_the_assignment_and_ends_timed_out(stack, namespace, warm):
    runner = wait_for("the warm runner", lambda: ready_runner(stack, WARM), timeout=600)
    before = len(stopped_at(stack, runner, "deadline"))
    create(stack, namespace, "slow", input=long_input(), timeoutSeconds=3)
    final = wait_state(stack, namespace, "slow", {"TIMED_OUT", "FAILED", "COMPLETED"}, timeout=300)
    assert final["status"] == "TIMED_OUT" and final["lastFailure"]["reason"] == "DeadlineExceeded"
    assert final["error"] and final["runnerPod"] == runner
    from img2img.api.times import parse_time_ms

    assert parse_time_ms(final["completedAt"]) - parse_time_ms(final["startedAt"]) >= 3000
    wait_for("the runner to stop", lambda: stopped_at(stack, runner, "deadline")[before:], timeout=60)


def test_deleting_a_running_job_stops_its_runner(stack, namespace, warm):
    runner = wait_for("the warm runner", lambda: ready_runner(stack, WARM), timeout=600)
    before = len(stopped_at(stack, runner, "cancelled"))
    create(stack, namespace, "doomed", input=long_input())
    wait_state(stack, namespace, "doomed", {"IN_PROGRESS"}, timeout=300)
    stack.kubectl("-n", namespace, "delete", "img2imgjob", "doomed", "--wait=true")
    wait_for("the runner to stop", lambda: len(stopped_at(stack, runner, "cancelled")) > before, timeout=60)
    wait_for("the runner free again", lambda: pool_status(stack, WARM).get("busyRunners") == 0, timeout=60)


def test_unknown_model_ends_failed_at_once_naming_the_model(stack, namespace, warm):
    create(stack, namespace, "nomodel", retries=3,
           input=light_input(override_settings={"sd_model_checkpoint": "no_such_model_xl"}))
    final = wait_state(stack, namespace, "nomodel", {"COMPLETED", "FAILED"}, timeout=300)
    assert final["status"] == "FAILED" and final["attempts"] == 1
    assert "no_such_model_xl" in final["error"] and final["lastFailure"]["exitCode"] == 3


def test_refused_spec_fails_at_once_with_the_field_named(stack, namespace, warm):
    create(stack, namespace, "badclass", gpuClass="h200")
    final = wait_state(stack, namespace, "badclass", {"FAILED"}, timeout=60)
    assert "spec.gpuClass" in final["error"] and final["attempts"] == 0


def test_the_namespace_policy_refuses_priority_1000_a_7_day_timeout_and_10_retries(stack, namespace, warm):
    over = {"priority": {"priority": 1000}, "timeout": {"timeoutSeconds": 7 * 24 * 3600}, "retries": {"retries": 10}}
    for name, controls in over.items():
        create(stack, namespace, name, **controls)
    caps = {"priority": "spec.priority: 1000 is above 100", "timeout": "spec.timeoutSeconds: 604800 is above 21600",
            "retries": "spec.retries: 10 is above 3"}
    for name, words in caps.items():
        final = wait_state(stack, namespace, name, {"FAILED", "COMPLETED"}, timeout=60)
        assert final["status"] == "FAILED" and final["attempts"] == 0, final
        assert final["lastFailure"]["reason"] == "InvalidSpec" and words in final["error"], final["error"]


def test_a_job_nested_3000_levels_deep_fails_naming_the_field_and_the_operator_goes_on(stack, namespace, warm):
    # the API server stores it (its JSON limit is 10 000 levels); Python's json parser needs room to read it back
    deep = light_input()
    deep["payload"]["script_args"] = ["__DEEP__"]
    text = json.dumps({"apiVersion": "img2img.dev/v1alpha1", "kind": "Img2ImgJob",
                       "metadata": {"name": "deep", "namespace": namespace}, "spec": {"input": deep}})
    stack.kubectl("create", "-f", "-", input=text.replace('"__DEEP__"', "[" * 3000 + "]" * 3000))
    create(stack, namespace, "after")
    assert wait_state(stack, namespace, "after", {"COMPLETED", "FAILED"}, timeout=300)["status"] == "COMPLETED"
    deep_status = json.loads(stack.kubectl("get", "i2i", "deep", "-n", namespace, "-o", "jsonpath={.status}").stdout)
    assert deep_status["status"] == "FAILED" and deep_status["lastFailure"]["reason"] == "InvalidSpec"
    assert "spec.input.payload.script_args: is nested more than 16 levels deep" in deep_status["error"]
    stack.kubectl("delete", "i2i", "deep", "-n", namespace)  # other tests' clients list every job


def test_an_image_the_runner_fetches_outside_the_input_budget_fails_as_bad_input_without_a_retry(
        stack, namespace, warm):
    from PIL import Image

    from img2img import uploads_prefix

    buf = io.BytesIO()
    Image.new("L", (64, 262144)).save(buf, "PNG")  # 16 KB; only its header is read
    key = f"{uploads_prefix(namespace)}tall.png"
    stack.s3().put_object(Bucket=stack.bucket, Key=key, Body=buf.getvalue())
    create(stack, namespace, "tall", retries=3, input=light_input(image=f"s3://{stack.bucket}/{key}"))
    final = wait_state(stack, namespace, "tall", {"COMPLETED", "FAILED"}, timeout=300)
    assert final["status"] == "FAILED" and final["attempts"] == 1, final
    assert final["lastFailure"]["exitCode"] == 2  # BAD_INPUT: never retried
    assert "input.payload.init_images[0]" in final["error"] and "aspect ratio of 4096:1" in final["error"]


def test_a_queue_on_a_pool_of_two_by_priority_with_positions_scaling_up_and_back_to_min_ready(
        stack, namespace, operator):
    # Six jobs queued at once (submitted while no operator runs), a pool of at most two runners of a GPU-less
    # class (two fit the one-GPU node) with one kept warm.
    stack.stop_operator()
    stack.kubectl("apply", "--server-side", "-f", "-", input=pool_manifest(
        "burst", "cpu", TINY_POOL_MODELS, min_ready=1, maxRunners=2, idleSeconds=5))
    priorities = [0, 5, 0, 5, 1, 0]
    for i, p in enumerate(priorities):
        create(stack, namespace, f"j{i}", priority=p, input=light_input(steps=8))
        time.sleep(0.05)
    operator(CPU_CLASS)

    samples: list[dict[str, dict]] = []
    sizes: list[int] = []

    def all_done():
        snapshot = {j["metadata"]["name"]: j.get("status") or {}
                    for j in stack.get_json("-n", namespace, "img2imgjobs")["items"]}
        samples.append(snapshot)
        running = [n for n, s in snapshot.items() if s.get("status") == "IN_PROGRESS"]
        assert len(running) <= 2, snapshot
        sizes.append(len(live(runner_pods(stack, "burst"))))
        assert sizes[-1] <= 2
        # positions of the waiting jobs follow priority, then submission order; each job's status is its own
        # object, so while positions move up one write at a time a sample may see two equal or a gap
        position = {n: s["queuePosition"] for n, s in snapshot.items()
                    if s.get("status") == "IN_QUEUE" and s.get("queuePosition")}
        in_order = [position[n] for n in ("j1", "j3", "j4", "j0", "j2", "j5") if n in position]
        assert in_order == sorted(in_order), snapshot
        return all(s.get("status") in ("COMPLETED", "FAILED") for s in snapshot.values()) and len(snapshot) == 6

    wait_for("six jobs done", all_done, timeout=900, every=0.3)
    final = samples[-1]
    assert {s["status"] for s in final.values()} == {"COMPLETED"}
    assert max(sizes) == 2  # scaled up under the queue
    assert len({s["runnerPod"] for s in final.values()}) == 2
    # runners take jobs in queue order; two taking at once may start in either order: compare with a tolerance
    from img2img.api.times import parse_time_ms

    started = {n: parse_time_ms(final[n]["startedAt"]) for n in final}
    order = ["j1", "j3", "j4", "j0", "j2", "j5"]
    for i, earlier in enumerate(order):
        for later in order[i + 1:]:
            assert started[earlier] <= started[later] + 1500, (earlier, later, final)
    settled = [{n: s.get("queuePosition") for n, s in snap.items() if s.get("queuePosition")} for snap in samples]
    assert any(s.get("j5") == 4 for s in settled)  # the last in line once read 4th
    # back to minReady once idle past idleSeconds
    wait_for("the pool back to one runner", lambda: len(live(runner_pods(stack, "burst"))) == 1, timeout=120)
    wait_for("its status", lambda: (lambda s: s.get("readyRunners") == 1 and s.get("busyRunners") == 0)(
        pool_status(stack, "burst")), timeout=60)
    stack.kubectl("-n", RUNNER_NAMESPACE, "delete", "runnerpool", "burst")


def test_operator_killed_at_random_points_every_job_ends_right_and_no_attempt_runs_twice(
        stack, namespace, operator):
    names = [f"k{i}" for i in range(6)]
    rng = random.Random(11)
    for name in names:
        create(stack, namespace, name, priority=rng.randint(0, 2), input=light_input(steps=30))
    deadline = time.monotonic() + 900
    kills = 0
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.5, 6))
        stack.stop_operator(signal.SIGKILL)
        kills += 1
        time.sleep(rng.uniform(0, 2))
        operator()
        now = {n: status(stack, namespace, n).get("status") for n in names}
        if all(s == "COMPLETED" for s in now.values()) or kills >= 5:
            break
    uids = {}
    for name in names:
        final = wait_state(stack, namespace, name, {"COMPLETED", "FAILED", "TIMED_OUT"}, timeout=600)
        assert final["status"] == "COMPLETED", (name, final)
        # a later attempt only when an earlier one was lost (an operator killed between recording an assignment
        # and answering the runner, or killed longer than the runner retries its report)
        assert final["attempts"] == 1 or final["lastFailure"]["reason"] == "RunnerLost", (name, final)
        uids[get(stack, namespace, name)["metadata"]["uid"]] = name
    # what every runner pod wrote, those removed since included: the runner of a lost attempt is removed (and
    # replaced), and it may have run other jobs before
    assigned = Counter(re.findall(r"assigned \(lease ([0-9a-f-]+)\.(\d+)\.", runner_log(stack)))
    taken = {uid for uid, _ in assigned}
    assert taken >= set(uids), [name for uid, name in uids.items() if uid not in taken]
    assert max(n for (uid, _), n in assigned.items() if uid in uids) == 1, "an attempt was handed out twice"
    assert kills >= 2


def lease_spec(stack) -> dict:
    proc = stack.kubectl("-n", RUNNER_NAMESPACE, "get", "lease", LEASE, "-o", "json", check=False)
    return json.loads(proc.stdout)["spec"] if proc.returncode == 0 else {}


def healthz(stack, replica: str) -> dict:
    with urllib.request.urlopen(f"{stack.operator_url(replica)}/healthz", timeout=5) as response:
        return json.loads(response.read())["dispatcher"]


def test_two_replicas_one_leads_and_the_standby_takes_over_when_the_leader_is_killed_mid_batch(
        stack, namespace, operator):
    """Two operator processes on one cluster, as the chart's two replicas: only the Lease's holder acts; SIGKILL it
    in the middle of a batch and the other takes over within the lease duration; every job completes, no attempt
    runs twice, and the GPU class's maxConcurrent holds at every poll of the API server."""
    from img2img.local.supervisor import pid_alive

    operator(deep_merge(CPU_CLASS, ELECTION))  # replica "operator" (A): it leads
    standby = "operator-b"
    config = deep_merge(FAST, CPU_CLASS, ELECTION)
    # three runners for a class of at most two jobs at once: a second replica admitting on its own would show
    stack.kubectl("apply", "--server-side", "-f", "-", input=pool_manifest(
        "ha", "cpu", TINY_POOL_MODELS, min_ready=1, buffer=1, maxRunners=3, idleSeconds=30))
    public_key = ("-n", RUNNER_NAMESPACE, "configmap", PUBLIC_KEY_CONFIG_MAP)
    published = stack.get_json(*public_key)["data"]  # by the leader, as it started leading
    stack.kubectl("delete", *public_key)
    try:
        stack.start_operator(config, name=standby)
        assert lease_spec(stack)["holderIdentity"] == "operator"
        # kopf keeps a probe's answer for 10 s: the first one may predate the replica's first look at the Lease
        wait_for("the standby to see the leader",
                 lambda: healthz(stack, standby) == {"role": "standby", "leader": "operator"}, timeout=30)
        wait_for("the leader to say so", lambda: healthz(stack, "operator")["role"] == "leader", timeout=30)
        # a standby writes nothing, the webhook public key included (the leader publishes it as it starts leading)
        assert stack.kubectl("get", *public_key, check=False).returncode != 0
        names = [f"h{i}" for i in range(8)]
        for name in names:
            create(stack, namespace, name, input=light_input(steps=40))
        limit = CPU_CLASS["gpuClasses"]["cpu"]["maxConcurrent"]

        def poll() -> dict[str, str]:
            states = {j["metadata"]["name"]: (j.get("status") or {}).get("status")
                      for j in stack.get_json("-n", namespace, "img2imgjobs")["items"]}
            assert sum(s == "IN_PROGRESS" for s in states.values()) <= limit, states
            return states

        wait_for("a job completed and more running or waiting", lambda: (lambda s: "COMPLETED" in s.values() and (
            sum(v in ("IN_QUEUE", "IN_PROGRESS") for v in s.values()) >= 3))(poll()), timeout=600, every=0.3)
        writers = {e.get("reportingInstance") for e in stack.get_json("-n", namespace, "events")["items"]}
        assert writers == {"operator"}, writers  # the standby wrote nothing
        stack.stop_operator(signal.SIGKILL)
        killed = time.monotonic()
        wait_for("the standby to take the Lease", lambda: lease_spec(stack).get("holderIdentity") == standby,
                 timeout=60, every=0.2)
        took = time.monotonic() - killed
        election = ELECTION["leaderElection"]
        # the lease runs out leaseDurationSeconds after the standby last saw it renewed (within a retry period of
        # the kill), and the standby looks every retryPeriodSeconds; plus room for this loaded machine's polling
        assert took <= election["leaseDurationSeconds"] + 2 * election["retryPeriodSeconds"] + 5, took
        wait_for("every job done", lambda: all(s in ("COMPLETED", "FAILED") for s in poll().values()),
                 timeout=600, every=0.3)
        assert healthz(stack, standby)["role"] == "leader"
        assert stack.get_json(*public_key)["data"] == published  # the same key, published by the new leader
        uids = {}
        for name in names:
            final = status(stack, namespace, name)
            assert final["status"] == "COMPLETED", (name, final)
            # a later attempt only when an earlier one was lost (the runner's report did not outlast the failover)
            assert final["attempts"] == 1 or final["lastFailure"]["reason"] == "RunnerLost", (name, final)
            uids[get(stack, namespace, name)["metadata"]["uid"]] = name
        logs = runner_log(stack)  # every runner pod the node ran: one retired or scaled down since included
        assigned = Counter(re.findall(r"assigned \(lease ([0-9a-f-]+)\.(\d+)\.", logs))
        assert {uid for uid, _ in assigned} >= set(uids)
        assert max(n for (uid, _), n in assigned.items() if uid in uids) == 1, "an attempt was handed out twice"
        writers = {e.get("reportingInstance") for e in stack.get_json("-n", namespace, "events")["items"]}
        assert standby in writers

        # Leadership lost: someone else holds the Lease now. The leader stops at its next renewal: the process ends
        # (Kubernetes would restart it as a standby).
        pid = stack.stack.read_state()["pids"][standby]
        stack.kubectl("-n", RUNNER_NAMESPACE, "patch", "lease", LEASE, "--type=merge", "-p",
                      json.dumps({"spec": {"holderIdentity": "intruder"}}))
        wait_for("the former leader to exit", lambda: not pid_alive(pid), timeout=30, every=0.2)
        log = (Path(stack.info.state_dir) / "logs" / f"{standby}.log").read_text(errors="replace")
        assert "leadership lost: the Lease is held by intruder" in log
    finally:
        stack.stop_operator(name=standby)
        stack.kubectl("-n", RUNNER_NAMESPACE, "delete", "lease", LEASE, "--ignore-not-found")  # A leads at once
        stack.kubectl("-n", RUNNER_NAMESPACE, "delete", "runnerpool", "ha", "--ignore-not-found")


def test_job_with_a_1_mb_inline_image_echoed_by_include_init_images_completes_its_answer_in_result_json(
        stack, namespace, warm):
    image = png_b64((590, 590), noise=True)
    assert 1_000_000 <= len(base64.b64decode(image)) < 1_100_000
    create(stack, namespace, "big", input=light_input(image=image, include_init_images=True))
    final = wait_state(stack, namespace, "big", {"COMPLETED", "FAILED"}, timeout=600)
    assert final["status"] == "COMPLETED", final
    # A1111 echoes the megabyte of init_images: with the job's own megabyte, more than etcd stores. The status
    # leaves the echo out and says so; result.json has the whole answer.
    output = final["output"]
    assert output["omitted"] == ["parameters.init_images"] and output["parameters"]["init_images"] is None
    assert output["parameters"]["include_init_images"] is True and json.loads(output["info"])["all_seeds"]
    bucket, _, key = final["result"].removeprefix("s3://").partition("/")
    answer = json.loads(stack.s3().get_object(Bucket=bucket, Key=key)["Body"].read())
    assert answer["parameters"]["init_images"] == [image]
    job = get(stack, namespace, "big")
    assert sum(len(v) for v in (job["metadata"].get("annotations") or {}).values()) < 10_000


def test_an_inpainting_job_reads_its_mask_from_s3_and_keeps_every_unmasked_pixel(stack, namespace, warm):
    from PIL import Image

    from img2img import uploads_prefix

    mask = Image.new("L", (64, 64))
    mask.paste(255, (16, 16, 48, 48))
    buf = io.BytesIO()
    mask.save(buf, "PNG")
    key = f"{uploads_prefix(namespace)}mask.png"  # the tenant's upload area: the operator presigns the runner's read
    stack.s3().put_object(Bucket=stack.bucket, Key=key, Body=buf.getvalue())
    init = png_b64()
    create(stack, namespace, "inpaint", input=light_input(image=init, mask=f"s3://{stack.bucket}/{key}", mask_blur=0))
    final = wait_state(stack, namespace, "inpaint", {"COMPLETED", "FAILED"}, timeout=300)
    assert final["status"] == "COMPLETED", final
    [uri] = final["output"]["images"]
    bucket, _, image_key = uri.removeprefix("s3://").partition("/")
    out = Image.open(io.BytesIO(stack.s3().get_object(Bucket=bucket, Key=image_key)["Body"].read())).convert("RGB")
    before = Image.open(io.BytesIO(base64.b64decode(init))).convert("RGB")
    outside = [(x, y) for x in range(64) for y in range(64) if not (16 <= x < 48 and 16 <= y < 48)]
    assert all(out.getpixel(p) == before.getpixel(p) for p in outside)
    assert "Inpaint area: Only masked" in json.loads(final["output"]["info"])["infotexts"][0]
    assert final["output"]["parameters"]["mask"] is None


def test_a_lora_job_runs_on_the_warm_pool_runner_and_names_its_lora(stack, namespace, warm):
    """LoRA end to end: the tag parsed from the prompt, the catalog's tiny_lora loaded on the pool's runner, its hash
    in the infotext as A1111 writes it; the prompt in info keeps the tag as sent."""
    create(stack, namespace, "lora", input=light_input(prompt="a red circle <lora:tiny_lora:0.8>"))
    final = wait_state(stack, namespace, "lora", {"COMPLETED", "FAILED"}, timeout=300)
    assert final["status"] == "COMPLETED", final
    info = json.loads(final["output"]["info"])
    assert 'Lora hashes: "tiny_lora: ' in info["infotexts"][0] and "<lora:tiny_lora:0.8>" in info["prompt"]
    create(stack, namespace, "unknown-lora", input=light_input(prompt="a red circle <lora:nope:1>"))
    refused = wait_state(stack, namespace, "unknown-lora", {"COMPLETED", "FAILED"}, timeout=120)
    assert refused["status"] == "FAILED" and "nope" in refused["error"] and refused["attempts"] == 1, refused


def test_a_job_with_samples_format_jpg_stores_and_fetches_jpeg_files(stack, namespace, warm, tmp_path):
    from PIL import ExifTags, Image

    from test_cli_submit import cli

    options = {"sd_model_checkpoint": "sd_xl_base_1.0", "samples_format": "jpg", "jpeg_quality": 90}
    create(stack, namespace, "jpeg", input=light_input(override_settings=options))
    final = wait_state(stack, namespace, "jpeg", {"COMPLETED", "FAILED"}, timeout=300)
    assert final["status"] == "COMPLETED", final
    [uri] = final["output"]["images"]
    assert uri.endswith("/attempt-1/images/0.jpg")
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    stored = stack.s3().get_object(Bucket=bucket, Key=key)
    data = stored["Body"].read()
    assert stored["ContentType"] == "image/jpeg" and data.startswith(b"\xff\xd8\xff")
    # the infotext as A1111 puts it into a JPEG: the EXIF UserComment, UNICODE (UTF-16 big-endian)
    comment = Image.open(io.BytesIO(data)).getexif().get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.UserComment]
    assert comment.startswith(b"UNICODE\0") and comment[8:].decode("utf-16-be").startswith("a red circle\nSteps: 2")
    proc = cli(stack, "fetch", "jpeg", "-n", namespace, "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(tmp_path / "0.jpg")] and (tmp_path / "0.jpg").read_bytes() == data


def test_metrics_endpoint_reports_the_jobs_and_runners_just_seen(stack, namespace, warm):
    create(stack, namespace, "m1")
    create(stack, namespace, "m2", gpuClass="nope")
    wait_state(stack, namespace, "m1", {"COMPLETED"}, timeout=300)
    wait_state(stack, namespace, "m2", {"FAILED"}, timeout=60)
    values = metrics(stack)
    assert values['img2img_jobs_finished_total{state="COMPLETED"}'] >= 1
    assert values['img2img_jobs_finished_total{state="FAILED"}'] >= 1
    assert values['img2img_job_failures_total{reason="InvalidSpec"}'] >= 1
    assert values['img2img_job_delay_seconds_count{warm="true"}'] >= 1
    assert values["img2img_job_execution_seconds_count"] >= 1
    assert values['img2img_assignments_total{pool="warm",warm="true"}'] >= 1
    assert values['img2img_runners{pool="warm",state="idle"}'] + values.get(
        'img2img_runners{pool="warm",state="busy"}', 0) >= 1
    assert 'img2img_jobs_waiting{pool="warm"}' in values
    assert any(k.startswith("img2img_jobs{") and 'state="COMPLETED"' in k and v >= 1 for k, v in values.items())


def test_the_operators_list_reads_every_page_and_trims_each(stack, namespace, monkeypatch):
    """The job reflector's list comes in pages, read in order, each from the previous page's continue token; each
    page's jobs are trimmed as the page arrives, before the next page is asked for; the operator's client logs in
    with kopf's kubeconfig login."""
    import asyncio
    import functools

    import kopf
    from img2img_operator import kube as kube_module
    from img2img_operator.cache import kept_of_job
    from img2img_operator.main import login

    for i in range(7):
        create(stack, namespace, f"p{i}")
    monkeypatch.setattr(kube_module, "LIST_PAGE", 3)
    monkeypatch.setenv("KUBECONFIG", str(stack.kubeconfig))
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
        kube = kube_module.Kube(functools.partial(login, kopf.OperatorSettings()))
        lists: list[tuple] = []
        listed = asyncio.Event()
        reflector = asyncio.create_task(kube.reflect(
            kube.jobs_path(namespace), {}, lambda items, rv: lists.append((items, rv)), lambda *_: None,
            relist_seconds=300, keep=keep, listed=listed))
        try:
            await asyncio.wait_for(listed.wait(), 30)
        finally:
            reflector.cancel()
            await kube.close()
        return lists[0]

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
    assert all("managedFields" not in i["metadata"] for i in items)
    assert rv == int(versions[0])  # the pages are one snapshot: its version is the first page's


def test_a_status_patch_decided_on_a_stale_view_is_a_conflict_not_a_refusal(stack, namespace, monkeypatch):
    """A status write decided on an older version of the job (here: removing a key the job no longer has) is a
    conflict, decided again on a fresh read; the API server refuses such a patch with 422 like an invalid object, and
    a refusal for good would end the job FAILED (StatusRefused)."""
    import asyncio
    import functools

    import kopf
    from img2img_operator import kube as kube_module
    from img2img_operator.main import login

    create(stack, namespace, "stale")
    seen = get(stack, namespace, "stale")
    stack.kubectl("annotate", "-n", namespace, "img2imgjob", "stale", "moved=yes")  # the job moves on
    monkeypatch.setenv("KUBECONFIG", str(stack.kubeconfig))

    async def write(resource_version):
        kube = kube_module.Kube(functools.partial(login, kopf.OperatorSettings()))
        try:
            await kube.patch_job_status(namespace, "stale", {"gone": None}, resource_version, {"gone": 1})
        finally:
            await kube.close()

    with pytest.raises(kube_module.Conflict):
        asyncio.run(write(seen["metadata"]["resourceVersion"]))
    # on the job as it is, the same patch does not apply: refused for good (read again if the operator moved it)
    for _ in range(10):
        try:
            asyncio.run(write(get(stack, namespace, "stale")["metadata"]["resourceVersion"]))
        except kube_module.Conflict:
            continue
        except kube_module.Refused:
            break
    else:
        pytest.fail("a patch that does not apply to the current job was never refused")


# ---- tenancy: one namespace cannot write, read or impersonate for another (docs/security.md) ------------------------
def s3_keys(stack, prefix: str) -> list[str]:
    listed = stack.s3().list_objects_v2(Bucket=stack.bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents") or [])


def test_a_job_cannot_write_into_or_read_from_another_namespaces_area(stack, namespace, warm):
    other = f"t-{random.randrange(16 ** 8):08x}"  # team B: its area jobs/<other>/, one result already there
    theirs = f"jobs/{other}/theirs/0b5f3c1e/attempt-1/images/0.png"
    stack.s3().put_object(Bucket=stack.bucket, Key=theirs, Body=base64.b64decode(png_b64()), ContentType="image/png")
    create(stack, namespace, "into-b", output={"prefix": f"jobs/{other}"})
    create(stack, namespace, "into-root", output={"prefix": ""})  # its keys would be <namespace>/…: anyone's area
    create(stack, namespace, "read-b", input=light_input(image=f"s3://{stack.bucket}/{theirs}"))
    refusals = {
        "into-b": f"spec.output.prefix: s3://{stack.bucket}/jobs/{other} is not an output location of namespace "
                  f"'{namespace}'",
        "into-root": f"spec.output.prefix: s3://{stack.bucket} is not an output location of namespace '{namespace}'",
        "read-b": f"spec.input.payload.init_images[0]: s3://{stack.bucket}/{theirs}: namespace '{namespace}' may not "
                  "read it",
    }
    for name, refusal in refusals.items():
        final = wait_state(stack, namespace, name, {"FAILED", "COMPLETED"}, timeout=60)
        assert final["status"] == "FAILED" and final["attempts"] == 0, final  # refused before any runner saw it
        assert final["lastFailure"]["reason"] == "InvalidSpec" and refusal in final["error"], final["error"]
    assert s3_keys(stack, f"jobs/{other}/") == [theirs]  # nothing written in B's area
    assert s3_keys(stack, f"{namespace}/") == [] and s3_keys(stack, f"jobs/{namespace}/") == []  # nor staged anywhere


def test_a_pod_with_the_runner_labels_that_the_operator_did_not_make_gets_nothing(stack, namespace, warm):
    from img2img.api.protocol import runner_token

    # the pool's runner now: an earlier test may have had the first one replaced (a lost attempt retires its runner)
    runner = wait_for("a ready runner in pool warm", lambda: ready_runner(stack, WARM), timeout=300)
    real = next(p for p in runner_pods(stack, WARM) if p["metadata"]["name"] == runner)
    key = base64.b64decode(stack.kubectl("-n", RUNNER_NAMESPACE, "get", "secret", "img2img-runner-token", "-o",
                                         "jsonpath={.data.key}").stdout)
    fake = "warm-fake1"
    spec = {k: v for k, v in real["spec"].items() if k not in ("nodeName", "serviceAccountName", "serviceAccount")}
    spec["nodeSelector"] = {"img2img.test/no-such-node": "true"}  # stays Pending: a runner "starting" for the pool
    # a tenant's pod in its own namespace, and the same in the runner namespace (where a tenant has no rights; the
    # test, with an admin's, plays one that had them): the runner's labels and spec, its token copied
    for ns in (namespace, RUNNER_NAMESPACE):
        stack.kubectl("create", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Pod", "spec": spec,
            "metadata": {"name": fake, "namespace": ns, "labels": real["metadata"]["labels"]}}))
    try:
        create(stack, namespace, "job")
        final = wait_state(stack, namespace, "job", {"COMPLETED", "FAILED"}, timeout=300)
        assert final["status"] == "COMPLETED" and final["runnerPod"] == runner, final
        uid = get(stack, namespace, "job")["metadata"]["uid"]
        before = get(stack, namespace, "job")["metadata"]["resourceVersion"]
        # it cannot take work nor report for a job: not with the copied token, not with one signed for its own name
        # (which would need the operator's key)
        for token in (pod_env(real)["IMG2IMG_RUNNER_TOKEN"], runner_token(key, fake)):
            for path, body in (("/runner/v1/take", {"runner": fake, "models": [], "waitSeconds": 1}),
                               ("/runner/v1/heartbeat", {"runner": fake, "lease": f"{uid}.1.0badc0de"}),
                               ("/runner/v1/done", {"runner": fake, "lease": f"{uid}.1.0badc0de",
                                                    "outcome": {"result": final["result"], "error": None}})):
                assert post(stack, path, body, token) == (401, {"error": "unknown runner"}), (path, token[:20])
        assert get(stack, namespace, "job")["metadata"]["resourceVersion"] == before
        # the pool counts only its own runner, and the operator leaves the pod alone (it is not its to remove)
        status = pool_status(stack, WARM)
        assert (status["readyRunners"], status["startingRunners"]) == (1, 0), status
        stalled = {c["type"]: c for c in status["conditions"]}["Stalled"]
        assert stalled["status"] == "False" and fake not in stalled.get("message", ""), stalled
        assert f"pod/{fake}" in pods_in(stack, RUNNER_NAMESPACE)
        assert not stack.get_json("-n", RUNNER_NAMESPACE, "pod", fake)["metadata"].get("deletionTimestamp")
    finally:
        for ns in (namespace, RUNNER_NAMESPACE):
            stack.kubectl("-n", ns, "delete", "pod", fake, "--force", "--grace-period=0", check=False)


# ---- cleanup: a deleted job's S3 area goes with it (docs/storage.md) -------------------------------------------------
def test_a_deleted_jobs_objects_are_deleted_even_while_no_operator_ran_and_another_jobs_stay(stack, namespace, warm):
    for name in ("kept", "gone", "gone-while-down"):
        create(stack, namespace, name)
    areas = {}
    for name in ("kept", "gone", "gone-while-down"):
        final = wait_state(stack, namespace, name, {"COMPLETED", "FAILED"})
        assert final["status"] == "COMPLETED", final
        areas[name] = f"jobs/{namespace}/{name}/{get(stack, namespace, name)['metadata']['uid']}/"
    kept = s3_keys(stack, areas["kept"])
    assert [k[len(areas["kept"]):] for k in kept] == ["attempt-1/images/0.png", "attempt-1/result.json", "input.json"]

    stack.kubectl("delete", "i2i", "gone", "-n", namespace)
    wait_for("the deleted job's area to be empty", lambda: s3_keys(stack, areas["gone"]) == [], timeout=60)
    assert s3_keys(stack, areas["kept"]) == kept

    stack.stop_operator()  # deleted while no operator runs: the next leader's sweep finds it
    try:
        stack.kubectl("delete", "i2i", "gone-while-down", "-n", namespace)
        assert len(s3_keys(stack, areas["gone-while-down"])) == 3
    finally:
        stack.start_operator(FAST)
    wait_for("the area of the job deleted while no operator ran to be empty",
             lambda: s3_keys(stack, areas["gone-while-down"]) == [], timeout=60)
    assert s3_keys(stack, areas["kept"]) == kept
