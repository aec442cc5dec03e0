"""The RunPod-compatible gateway on the real stack, driven by the clients users have: the `runpod` Python SDK, plain
HTTP as RunPod's curl examples send it, and the `runpod-sdk` JS SDK (when node and npm are here).

The gateway serves one endpoint ("local") for a fresh namespace. Tests marked ``needs_completed_job`` run jobs to
their end: they start the operator (as on main) and a runner on the tiny models (its GPU class's implicit pool,
scaled from zero), and take a minute or two; the others need no operator (their jobs stay IN_QUEUE, as on a RunPod
endpoint with no worker).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import requests
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from webhook_receiver import Receiver, verify  # noqa: E402

pytestmark = pytest.mark.stack

REPO = Path(__file__).resolve().parents[2]
SEED_REQUEST = REPO / "examples" / "seed-request.json"
JS_SDK = "runpod-sdk@1.1.2"
# the operator as on main, with runner requests small enough for the local node, and quick webhook retries
OPERATOR = {"runner": {"resources": {"requests": {"cpu": "100m", "memory": "256Mi"}}},
            "retryBackoff": {"initialSeconds": 1, "maxSeconds": 2}, "timing": {"tickSeconds": 1},
            "webhooks": {"retryBackoff": {"initialSeconds": 1, "maxSeconds": 2}}}
JOB_SECONDS = 300  # a job on the tiny models, runner start included, on a busy 2-core machine


def png_b64(size: int = 64) -> str:
    from PIL import ImageDraw

    image = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(image).ellipse((8, 8, size - 8, size - 8), outline="black", width=3)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def light_request(**payload) -> dict:
    """A quick job for the tiny models: SDXL base only, 64x64, 2 steps."""
    return {"input": {"api": {"method": "POST", "endpoint": "/sdapi/v1/img2img"},
                      "payload": {"init_images": [png_b64()], "prompt": "a red circle", "steps": 2, "width": 64,
                                  "height": 64, "denoising_strength": 0.5, "seed": 1,
                                  "override_settings": {"sd_model_checkpoint": "sd_xl_base_1.0"}, **payload}}}


def decode_png(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    assert image.format == "PNG"
    return image


@pytest.fixture(scope="module")
def endpoint_namespace(stack):
    name = f"gw-{uuid.uuid4().hex[:8]}"
    stack.kubectl("create", "namespace", name)  # jobs need nothing of ours in their namespace
    yield name
    stack.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def gateway(stack, endpoint_namespace):
    """The gateway of `img2img local up`, its endpoint "local" on the module's namespace."""
    access = stack.stack.start_gateway(stack.info, namespace=endpoint_namespace)
    yield access
    stack.stack.stop("gateway")


@pytest.fixture
def runpod(gateway):
    """The runpod SDK, pointed at the gateway as a user does: base URL and key."""
    import runpod as sdk

    sdk.api_key = gateway.api_key
    sdk.endpoint_url_base = gateway.base_url
    yield sdk
    sdk.api_key = None


@pytest.fixture(scope="module")
def running_operator(stack):
    stack.stop_operator()
    stack.start_operator(OPERATOR)
    yield
    stack.stop_operator()


needs_completed_job = pytest.mark.usefixtures("running_operator")


def cluster_jobs(stack, namespace: str) -> list[dict]:
    return stack.get_json("-n", namespace, "img2imgjobs")["items"]


def http(gateway, method: str, path: str, *, key: str | None = None, bearer: bool = False, **kwargs):
    """A request as RunPod's curl examples send it: `authorization: $RUNPOD_API_KEY` (bare) or with Bearer."""
    key = gateway.api_key if key is None else key
    headers = {"authorization": f"Bearer {key}" if bearer else key, "content-type": "application/json"}
    kwargs.setdefault("timeout", 60)
    return requests.request(method, f"{gateway.base_url}/{gateway.endpoint_id}/{path}", headers=headers, **kwargs)


# ---- no operator needed --------------------------------------------------------------------------------------------
def test_the_local_stack_exports_what_runpod_clients_read(gateway):
    env = gateway.env()
    assert env["RUNPOD_ENDPOINT_BASE_URL"].endswith("/v2") and env["RUNPOD_ENDPOINT_ID"] == "local"
    assert len(env["RUNPOD_API_KEY"]) >= 32


def test_a_wrong_key_is_refused_as_runpod_refuses_it(runpod, gateway):
    runpod.api_key = "not-the-key"
    endpoint = runpod.Endpoint(gateway.endpoint_id)
    with pytest.raises(RuntimeError, match="401 Unauthorized"):
        endpoint.health()
    with pytest.raises(RuntimeError, match="401 Unauthorized"):
        endpoint.run(light_request())
    refused = http(gateway, "GET", "health", key="not-the-key")
    assert refused.status_code == 401 and refused.json() == {"error": "the API key is not valid"}
    assert http(gateway, "GET", "health", key="").status_code == 401


def test_sdk_run_queues_a_job_kubectl_sees_and_cancel_requests_its_end(runpod, gateway, stack, endpoint_namespace):
    endpoint = runpod.Endpoint(gateway.endpoint_id)
    job = endpoint.run(light_request())
    assert job.status() == "IN_QUEUE"
    [created] = [j for j in cluster_jobs(stack, endpoint_namespace) if j["metadata"]["uid"] == job.job_id]
    assert created["spec"]["input"] == light_request()["input"]  # verbatim
    assert created["metadata"]["labels"]["img2img.dev/endpoint"] == "local"
    assert int(created["metadata"]["annotations"]["img2img.dev/submitted-at"]) > 0
    assert job.cancel() == {"id": job.job_id, "status": "CANCELLED"}
    again = stack.get_json("-n", endpoint_namespace, "img2imgjob", created["metadata"]["name"])
    assert again["spec"]["cancel"] is True


def test_a_job_created_with_kubectl_is_read_through_the_gateway_by_its_uid(runpod, gateway, stack,
                                                                           endpoint_namespace):
    manifest = {"apiVersion": "img2img.dev/v1alpha1", "kind": "Img2ImgJob",
                "metadata": {"name": "from-kubectl", "namespace": endpoint_namespace},
                "spec": light_request()}
    stack.kubectl("create", "-f", "-", input=json.dumps(manifest))
    uid = stack.get_json("-n", endpoint_namespace, "img2imgjob", "from-kubectl")["metadata"]["uid"]
    from runpod.endpoint.runner import Job, RunPodClient

    assert Job(gateway.endpoint_id, uid, RunPodClient()).status() == "IN_QUEUE"
    assert http(gateway, "GET", f"status/{uid}").json() == {"id": uid, "status": "IN_QUEUE"}
    assert http(gateway, "POST", f"status/{uid}").json()["id"] == uid  # POST as the SDK's local server serves it
    stream = http(gateway, "GET", f"stream/{uid}").json()
    assert stream == {"status": "IN_QUEUE", "stream": []}


def test_curl_style_requests_get_json_answers_and_errors(gateway):
    created = http(gateway, "POST", "run", json=light_request())
    assert created.status_code == 200 and created.json()["status"] == "IN_QUEUE"
    job_id = created.json()["id"]
    status = http(gateway, "GET", f"status/{job_id}", bearer=True)
    assert status.status_code == 200 and status.json() == {"id": job_id, "status": "IN_QUEUE"}

    # runsync answers the job in flight when its wait runs out (no operator here: still queued)
    in_flight = http(gateway, "POST", "runsync?wait=1000", json=light_request())
    assert in_flight.status_code == 200 and in_flight.json()["status"] == "IN_QUEUE"

    bad = light_request(steps=0, sampler_name="Nope")
    refused = http(gateway, "POST", "run", json=bad)
    assert refused.status_code == 400
    assert set(refused.json()["problems"]) >= {"input.payload.steps: must be at least 1"}
    assert any(p.startswith("input.payload.sampler_name: unknown sampler 'Nope'") for p in refused.json()["problems"])

    not_failed = http(gateway, "POST", f"retry/{job_id}")
    assert not_failed.status_code == 400 and "only FAILED or TIMED_OUT" in not_failed.json()["error"]
    assert http(gateway, "GET", "status/no-such-job").status_code == 404
    assert http(gateway, "GET", "status/no-such-job").json()["error"].startswith("no job")
    too_big = http(gateway, "POST", "run", data=b'{"input": "' + b"x" * (10 * 1024 * 1024) + b'"}')
    assert too_big.status_code == 413 and "error" in too_big.json()
    other = requests.get(f"{gateway.base_url}/other-endpoint/health", headers={"authorization": gateway.api_key},
                         timeout=10)
    assert other.status_code == 404


def test_a_large_inline_image_goes_to_s3_before_the_job_is_created(runpod, gateway, stack, endpoint_namespace):
    import random

    rng = random.Random(3)
    noise = Image.frombytes("RGB", (400, 400), bytes(rng.getrandbits(8) for _ in range(400 * 400 * 3)))
    buf = io.BytesIO()
    noise.save(buf, "PNG")
    big = base64.b64encode(buf.getvalue()).decode()
    job = runpod.Endpoint(gateway.endpoint_id).run(light_request(init_images=[big]))
    [created] = [j for j in cluster_jobs(stack, endpoint_namespace) if j["metadata"]["uid"] == job.job_id]
    reference = created["spec"]["input"]["payload"]["init_images"][0]
    assert reference.startswith(f"s3://{stack.bucket}/uploads/{endpoint_namespace}/")
    bucket, _, key = reference[5:].partition("/")
    assert stack.s3().get_object(Bucket=bucket, Key=key)["Body"].read() == buf.getvalue()


def test_discovery_calls_are_answered_from_the_catalog_at_once(runpod, gateway):
    endpoint = runpod.Endpoint(gateway.endpoint_id)
    models = endpoint.run_sync({"input": {"api": {"method": "GET", "endpoint": "/sdapi/v1/sd-models"}}})
    assert "sd_xl_base_1.0" in [m["model_name"] for m in models]
    job = endpoint.run({"input": {"api": {"method": "GET", "endpoint": "controlnet/model_list"}}})
    assert job.status() == "COMPLETED"
    assert "model_list" in job.output()
    refused = http(gateway, "POST", "runsync", json={"input": {"api": {"method": "GET",
                                                                        "endpoint": "/sdapi/v1/progress"}}})
    assert refused.status_code == 400 and refused.json()["problems"][0].startswith("input.api.endpoint: GET")


def test_health_counts_the_endpoints_jobs_and_purge_queue_cancels_the_queued_ones(runpod, gateway, stack,
                                                                                  endpoint_namespace):
    endpoint = runpod.Endpoint(gateway.endpoint_id)
    before = endpoint.health()
    assert set(before) == {"jobs", "workers"}
    assert set(before["workers"]) == {"idle", "initializing", "ready", "running", "throttled"}
    endpoint.run(light_request())
    endpoint.run(light_request())
    # the gateway counts from its watch of the namespace: on a loaded machine the two new jobs arrive a moment later
    deadline = time.monotonic() + 30
    while (after := endpoint.health())["jobs"]["inQueue"] < before["jobs"]["inQueue"] + 2 and \
            time.monotonic() < deadline:
        time.sleep(0.2)
    assert after["jobs"]["inQueue"] == before["jobs"]["inQueue"] + 2
    queued = [j for j in cluster_jobs(stack, endpoint_namespace)
              if not (j.get("status") or {}).get("status") or j["status"]["status"] == "IN_QUEUE"]
    waiting = [j for j in queued if not j["spec"].get("cancel")]
    assert endpoint.purge_queue() == {"removed": len(waiting), "status": "completed"}
    assert all(j["spec"].get("cancel") for j in cluster_jobs(stack, endpoint_namespace)
               if (j.get("status") or {}).get("status", "IN_QUEUE") == "IN_QUEUE")


def js_sdk() -> Path | None:
    """runpod-sdk from npm in the cache (installed once); None when node or npm is not here."""
    from img2img.local.paths import cache_dir

    if not shutil.which("node") or not shutil.which("npm"):
        return None
    prefix = cache_dir() / "npm" / JS_SDK.replace("@", "-")
    entry = prefix / "node_modules" / "runpod-sdk" / "dist" / "src" / "index.js"
    if not entry.exists():
        prefix.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["npm", "install", "--prefix", str(prefix), "--no-save", "--no-audit", "--no-fund",
                               JS_SDK], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            pytest.fail(f"npm install {JS_SDK} failed:\n{proc.stderr[-2000:]}")
    return entry


JS_RUN_STATUS = """
const {default: runpodSdk} = await import(process.argv[2]);
const request = JSON.parse(await new Promise(r => { let s = ""; process.stdin.on("data", d => s += d);
                                                   process.stdin.on("end", () => r(s)); }));
const runpod = runpodSdk(process.env.RUNPOD_API_KEY, {baseUrl: process.env.RUNPOD_ENDPOINT_BASE_URL});
const endpoint = runpod.endpoint(process.env.RUNPOD_ENDPOINT_ID);
const run = await endpoint.run(request, 30000);
const status = await endpoint.status(run.id, 30000);
const health = await endpoint.health(30000);
console.log(JSON.stringify({run, status, health}));
"""


def test_the_js_sdk_runs_a_job_and_reads_its_status(gateway, tmp_path):
    entry = js_sdk()
    if entry is None:
        pytest.skip("node/npm not installed")
    script = tmp_path / "run_status.mjs"
    script.write_text(JS_RUN_STATUS)
    proc = subprocess.run(["node", str(script), entry.as_uri()], input=json.dumps(light_request()),
                          capture_output=True, text=True, timeout=120, env={**os.environ, **gateway.env()})
    assert proc.returncode == 0, proc.stderr
    answers = json.loads(proc.stdout.strip().splitlines()[-1])
    assert answers["run"]["status"] == "IN_QUEUE" and answers["run"]["id"]
    # the SDK adds started/completed/succeeded from the status it read
    assert answers["status"] == {"id": answers["run"]["id"], "status": "IN_QUEUE", "started": True,
                                 "completed": False, "succeeded": False}
    assert answers["health"]["jobs"]["inQueue"] >= 1


# ---- jobs that complete: the operator and a runner on the tiny models ----------------------------------------------
def callers_bucket(stack) -> tuple[str, dict]:
    """A fresh bucket of the caller's, and the ``s3Config`` that has results copied into it."""
    theirs = f"caller-{uuid.uuid4().hex[:8]}"
    stack.s3().create_bucket(Bucket=theirs)
    env = stack.env
    return theirs, {"accessId": env["AWS_ACCESS_KEY_ID"], "accessSecret": env["AWS_SECRET_ACCESS_KEY"],
                    "bucketName": theirs, "endpointUrl": env["AWS_ENDPOINT_URL"], "objectPath": "results"}


@needs_completed_job
def test_run_sync_answers_the_finished_job_with_base64_pngs_also_copied_to_the_callers_bucket(
        runpod, gateway, stack, endpoint_namespace):
    s3 = stack.s3()
    env = stack.env
    theirs, s3_config = callers_bucket(stack)
    endpoint = runpod.Endpoint(gateway.endpoint_id)
    output = endpoint.run_sync({**light_request(), "s3Config": s3_config}, timeout=JOB_SECONDS)
    assert set(output) == {"images", "info", "parameters"}
    [image] = output["images"]
    assert decode_png(image).size == (64, 64)
    assert json.loads(output["info"])["seed"] == 1
    assert output["parameters"]["init_images"] is None and output["parameters"]["steps"] == 2
    [copied] = s3.list_objects_v2(Bucket=theirs)["Contents"]
    assert copied["Key"].startswith("results/") and copied["Key"].endswith(".png")
    assert s3.get_object(Bucket=theirs, Key=copied["Key"])["Body"].read() == base64.b64decode(image)
    [job] = [j for j in cluster_jobs(stack, endpoint_namespace)
             if (j["metadata"].get("annotations") or {}).get("img2img.dev/s3config-copy")]
    assert job["metadata"]["annotations"]["img2img.dev/s3config-copy"] == f"s3://{theirs}/{copied['Key']}"
    assert "accessSecret" not in json.dumps(job) and env["AWS_SECRET_ACCESS_KEY"] not in json.dumps(job["spec"])


@needs_completed_job
def test_run_sync_answers_in_the_jobs_samples_format_and_copies_it_with_its_content_type(runpod, gateway, stack):
    theirs, s3_config = callers_bucket(stack)
    options = {"sd_model_checkpoint": "sd_xl_base_1.0", "samples_format": "webp", "webp_lossless": True}
    output = runpod.Endpoint(gateway.endpoint_id).run_sync(
        {**light_request(override_settings=options), "s3Config": s3_config}, timeout=JOB_SECONDS)
    [image] = output["images"]
    data = base64.b64decode(image)
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    assert Image.open(io.BytesIO(data)).size == (64, 64)
    [copied] = stack.s3().list_objects_v2(Bucket=theirs)["Contents"]
    assert copied["Key"].endswith(".webp")
    stored = stack.s3().get_object(Bucket=theirs, Key=copied["Key"])
    assert stored["ContentType"] == "image/webp" and stored["Body"].read() == data


@needs_completed_job
def test_run_then_status_then_output_as_the_sdk_polls_with_presigned_urls(runpod, gateway):
    endpoint = runpod.Endpoint(gateway.endpoint_id)
    job = endpoint.run({**light_request(), "outputMode": "presigned"})
    output = job.output(timeout=JOB_SECONDS)
    assert job.status() == "COMPLETED"
    [url] = output["images"]
    assert url.startswith("http") and "X-Amz-Signature" in url
    with urllib.request.urlopen(url, timeout=10) as response:  # no key needed: the URL is signed
        assert Image.open(io.BytesIO(response.read())).size == (64, 64)
    answer = http(gateway, "GET", f"status/{job.job_id}").json()
    assert answer["status"] == "COMPLETED" and answer["delayTime"] >= 0 and answer["executionTime"] > 0
    assert http(gateway, "GET", f"stream/{job.job_id}").json()["status"] == "COMPLETED"


@needs_completed_job
def test_a_failed_job_is_retried_under_the_same_id(runpod, gateway):
    endpoint = runpod.Endpoint(gateway.endpoint_id)
    failing = light_request(override_settings={"sd_model_checkpoint": "no_such_model"})
    job = endpoint.run(failing)
    assert job.output(timeout=JOB_SECONDS) is None and job.status() == "FAILED"
    assert "no_such_model" in http(gateway, "GET", f"status/{job.job_id}").json()["error"]
    retried = http(gateway, "POST", f"retry/{job.job_id}")
    assert retried.json() == {"id": job.job_id, "status": "IN_QUEUE"}
    assert http(gateway, "GET", f"status/{job.job_id}").json()["status"] in ("IN_QUEUE", "IN_PROGRESS", "FAILED")
    assert endpoint.health()["jobs"]["retried"] >= 1
    # status-sync (the JS SDK's long poll) answers once the retry has ended
    again = http(gateway, "GET", f"status-sync/{job.job_id}?wait=300000", timeout=JOB_SECONDS + 10).json()
    assert again["id"] == job.job_id and again["status"] == "FAILED"


@needs_completed_job
def test_a_txt2img_job_with_the_hires_fix_runs_through_run_and_the_operator(runpod, gateway, stack,
                                                                            endpoint_namespace):
    body = {"input": {"api": {"method": "POST", "endpoint": "/sdapi/v1/txt2img"},
                      "payload": {"prompt": "a lighthouse at dusk", "steps": 3, "width": 64, "height": 64, "seed": 5,
                                  "enable_hr": True, "hr_scale": 1.5, "hr_second_pass_steps": 2,
                                  "override_settings": {"sd_model_checkpoint": "sd_xl_base_1.0"}}}}
    job = runpod.Endpoint(gateway.endpoint_id).run(body)
    output = job.output(timeout=JOB_SECONDS)
    assert job.status() == "COMPLETED"
    [image] = output["images"]
    assert decode_png(image).size == (96, 96)  # 64 x 1.5, the second pass's size
    info = json.loads(output["info"])
    assert (info["width"], info["height"], info["seed"]) == (64, 64, 5)
    assert "Hires upscale: 1.5, Hires steps: 2" in info["infotexts"][0]
    assert output["parameters"]["enable_hr"] is True and "init_images" not in output["parameters"]
    [stored] = [j for j in cluster_jobs(stack, endpoint_namespace) if j["metadata"]["uid"] == job.job_id]
    assert stored["spec"]["input"]["api"]["endpoint"] == "/sdapi/v1/txt2img"
    assert stored["status"]["status"] == "COMPLETED"


def test_the_webhook_gets_the_runpod_status_signed_and_is_retried_after_a_500(runpod, gateway, stack,
                                                                                endpoint_namespace):
    receiver = Receiver(script=[500, 200])  # the local stack lets the operator reach loopback (allowPrivateAddresses)
    try:
        job = runpod.Endpoint(gateway.endpoint_id).run({**light_request(), "webhook": receiver.url})
        assert job.output(timeout=JOB_SECONDS) is not None
        deadline = time.monotonic() + 60
        while len(receiver.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        receiver.close()
    first, second = receiver.received
    assert (first.answered, second.answered) == (500, 200)
    # the body is what /status answers: RunPod's status object, images as base64 PNGs (the endpoint's output mode)
    status = http(gateway, "GET", f"status/{job.job_id}").json()
    sent = json.loads(second.body)
    assert sent == status and first.body == second.body
    assert sent["id"] == job.job_id and sent["status"] == "COMPLETED" and sent["executionTime"] > 0
    assert decode_png(sent["output"]["images"][0]).size == (64, 64)
    # signed as Standard Webhooks' v1a, with the key the gateway publishes; one id for the delivery and its retry
    deadline = time.monotonic() + 45  # the gateway reads the operator's key with its API keys (keyRefreshSeconds)
    while (published := requests.get(f"{gateway.base_url}/webhook-public-key", timeout=10)).status_code == 503 \
            and time.monotonic() < deadline:
        time.sleep(1)
    public = published.json()["publicKey"]
    assert public == stack.get_json("-n", "img2img-system", "configmap", "img2img-webhook-public-key")["data"][
        "publicKey"]
    for delivery in (first, second):
        assert delivery.headers["content-type"] == "application/json"
        assert verify(delivery.headers, delivery.body, public)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert int(second.headers["webhook-timestamp"]) > int(first.headers["webhook-timestamp"])  # a 1 s back-off
    # the delivery is recorded in the job's status
    [created] = [j for j in cluster_jobs(stack, endpoint_namespace) if j["metadata"]["uid"] == job.job_id]
    record = created["status"]["webhook"]
    assert record["delivered"] is True and record["attempts"] == 2 and record["lastStatusCode"] == 200
    assert record["deliveredAt"] >= created["status"]["completedAt"] and "nextAttemptAt" not in record
