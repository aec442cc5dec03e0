"""The runner pod's entrypoint (``img2img-runner``) as the operator starts it, against the stack's real S3 server.

The job is staged as the operator stages it (docs/architecture.md, "Operator -> runner"): ``input.json`` under
``s3://<bucket>/jobs/<namespace>/<job>/<uid>/``; the runner writes ``images/<n>.png`` and ``result.json`` beside it,
its termination message to ``$IMG2IMG_TERMINATION_LOG``, and exits with the code of the outcome.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from PIL import Image, ImageDraw

pytestmark = [pytest.mark.stack, pytest.mark.models]

REPO = Path(__file__).resolve().parents[2]
RUNNER = Path(sys.executable).with_name("img2img-runner")


# --- requests ------------------------------------------------------------------------------------------------


def picture(width: int = 64, height: int = 64) -> Image.Image:
    """Hard edges, so the canny detect map is not blank."""
    image = Image.new("RGB", (width, height), (200, 220, 235))
    draw = ImageDraw.Draw(image)
    draw.rectangle((width // 5, height // 4, width * 3 // 5, height * 3 // 4), fill=(150, 90, 40))
    draw.ellipse((width // 2, height // 8, width * 9 // 10, height // 2), fill=(240, 240, 90))
    return image


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def seed_input(**changes) -> dict:
    """The seed request (SDXL + refiner + canny ControlNet) at 64x64 with few steps; ``changes`` go into the payload."""
    request = copy.deepcopy(json.loads((REPO / "tests" / "data" / "seed_request.json").read_text())["input"])
    payload = request["payload"]
    payload.update(init_images=[base64.b64encode(png(picture())).decode()], width=64, height=64, steps=6, seed=7)
    payload.update(changes)
    return request


# --- staging and running -----------------------------------------------------------------------------------


@dataclass
class Job:
    namespace: str
    name: str
    uid: str
    bucket: str

    @property
    def key(self) -> str:
        return f"jobs/{self.namespace}/{self.name}/{self.uid}"

    @property
    def prefix(self) -> str:
        return f"s3://{self.bucket}/{self.key}/"

    @property
    def input_uri(self) -> str:
        return self.prefix + "input.json"

    @property
    def uploads(self) -> str:
        return f"s3://{self.bucket}/uploads/{self.namespace}/"


@dataclass
class Outcome:
    code: int
    message: dict  # the termination message
    stdout: str
    stderr: str
    seconds: float


def new_job(stack) -> Job:
    return Job(namespace=f"ns-{uuid.uuid4().hex[:6]}", name="job-1", uid=str(uuid.uuid4()), bucket=stack.bucket)


def stage(stack, job_input: dict | None, *, raw: bytes | None = None, job: Job | None = None) -> Job:
    """input.json as the operator writes it."""
    job = job or new_job(stack)
    body = raw if raw is not None else json.dumps({
        "namespace": job.namespace, "name": job.name, "uid": job.uid, "input": job_input,
        "submittedAt": int(time.time() * 1000)}).encode()
    stack.s3().put_object(Bucket=job.bucket, Key=f"{job.key}/input.json", Body=body)
    return job


def run_runner(stack, job: Job, tmp_path: Path, **env: str) -> Outcome:
    termination = tmp_path / f"termination-{uuid.uuid4().hex[:6]}"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("IMG2IMG_", "AWS_"))}
    full_env.update(stack.env)
    full_env.update({
        "IMG2IMG_JOB_INPUT": job.input_uri,
        "IMG2IMG_ALLOWED_S3": json.dumps([job.uploads]),
        "IMG2IMG_TERMINATION_LOG": str(termination),
        "IMG2IMG_ATTEMPT": "1",
        "IMG2IMG_S3_ATTEMPTS": "3",  # backoff 0.5 s, then 1 s
        "IMG2IMG_FETCH_TIMEOUT": "3",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "IMG2IMG_TORCH_THREADS": "1",
    })
    full_env.update(env)
    started = time.monotonic()
    proc = subprocess.run([str(RUNNER)], env=full_env, capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - started
    message = json.loads(termination.read_text())
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == message  # also printed, for `kubectl logs`
    return Outcome(proc.returncode, message, proc.stdout, proc.stderr, seconds)


def read(stack, uri: str) -> bytes:
    parts = urlsplit(uri)
    return stack.s3().get_object(Bucket=parts.netloc, Key=parts.path.lstrip("/"))["Body"].read()


def keys_under(stack, job: Job) -> list[str]:
    listed = stack.s3().list_objects_v2(Bucket=job.bucket, Prefix=job.key + "/").get("Contents", [])
    return sorted(obj["Key"][len(job.key) + 1:] for obj in listed)


# --- success -------------------------------------------------------------------------------------------------


def test_a_staged_job_writes_its_images_and_result_beside_its_input(stack, tmp_path):
    job = new_job(stack)
    init_key = f"uploads/{job.namespace}/init.png"  # where `img2img submit` offloads a large image
    stack.s3().put_object(Bucket=job.bucket, Key=init_key, Body=png(picture()))
    stage(stack, seed_input(init_images=[f"s3://{job.bucket}/{init_key}"]), job=job)

    outcome = run_runner(stack, job, tmp_path)

    assert outcome.code == 0, outcome.stderr[-3000:]
    assert keys_under(stack, job) == ["images/0.png", "images/1.png", "input.json", "result.json"]

    message = outcome.message
    assert message["result"] == job.prefix + "result.json" and message["error"] is None
    assert message["startedAt"] <= message["modelsLoadedAt"] <= message["finishedAt"]
    for duration in ("modelLoadTime", "inferenceTime", "uploadTime"):
        assert isinstance(message[duration], int) and message[duration] >= 0
    assert message["modelLoadTime"] == message["modelsLoadedAt"] - message["startedAt"]
    assert len(json.dumps(message).encode()) < 4096

    result = json.loads(read(stack, message["result"]))
    assert {"images", "info", "parameters", "timings", "presigned"} <= set(result)
    assert result["images"] == [job.prefix + "images/0.png", job.prefix + "images/1.png"]
    assert result["presigned"] is None
    assert result["parameters"]["init_images"] is None and result["parameters"]["steps"] == 6
    info = json.loads(result["info"])
    assert info["all_seeds"] == [7] and "diffusers_xl_canny_mid" in info["extra_generation_params"][
        "ControlNet 0 substitute"]

    picture_png, detect_png = (Image.open(io.BytesIO(read(stack, uri))) for uri in result["images"])
    assert picture_png.format == "PNG" and picture_png.size == detect_png.size == (64, 64)
    assert picture_png.text["parameters"] == info["infotexts"][0] and "Seed: 7," in info["infotexts"][0]
    assert "parameters" not in detect_png.text
    # the log is structured and names the job
    logged = [json.loads(line) for line in outcome.stderr.splitlines() if line.startswith("{")]
    assert any(e.get("namespace") == job.namespace and e.get("job") == job.name for e in logged)


# --- storage -------------------------------------------------------------------------------------------------


class FlakyS3:
    """A TCP front for the S3 server whose first ``failures`` connections fail the way an outage does (an HTTP 503
    answer, or the connection dropped once the request is in); later connections are piped through."""

    def __init__(self, endpoint: str, failures: int, mode: str):
        parts = urlsplit(endpoint)
        self.target = (parts.hostname, parts.port)
        self.failures, self.mode, self.failed = failures, mode, 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            if self.failed < self.failures:
                self.failed += 1
                self._fail(conn)
            else:
                upstream = socket.create_connection(self.target)
                for a, b in ((conn, upstream), (upstream, conn)):
                    threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _fail(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            if self.mode == "503":
                body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>ServiceUnavailable</Code>'
                        b"<Message>Service is unavailable</Message></Error>")
                conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n"
                             b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.server.close()


@pytest.mark.parametrize("mode", ["503", "dropped"])
def test_a_short_storage_outage_is_retried_and_the_job_completes(stack, tmp_path, mode):
    job = stage(stack, seed_input(alwayson_scripts={}, refiner_checkpoint=None))
    flaky = FlakyS3(stack.env["AWS_ENDPOINT_URL"], failures=2, mode=mode)
    try:
        outcome = run_runner(stack, job, tmp_path, AWS_ENDPOINT_URL=flaky.endpoint)
    finally:
        flaky.close()

    assert outcome.code == 0, outcome.stderr[-3000:]
    assert flaky.failed == 2
    retries = [json.loads(line)["msg"] for line in outcome.stderr.splitlines() if "retrying" in line]
    assert len(retries) == 2 and all(job.input_uri in r for r in retries)
    assert keys_under(stack, job) == ["images/0.png", "input.json", "result.json"]


def test_storage_that_stays_down_is_retried_then_exit_5(stack, tmp_path):
    job = stage(stack, seed_input())
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]

    outcome = run_runner(stack, job, tmp_path, AWS_ENDPOINT_URL=f"http://127.0.0.1:{closed}")

    assert outcome.code == 5
    error = outcome.message["error"]
    assert error["code"] == "STORAGE"
    assert job.input_uri in error["message"] and "after 3 attempts" in error["message"]
    assert outcome.seconds >= 1.5  # 0.5 s, then 1 s of backoff
    assert outcome.message["result"] is None and outcome.message["modelsLoadedAt"] is None


def test_a_missing_output_bucket_is_a_storage_failure_naming_it(stack, tmp_path):
    job = stage(stack, seed_input(alwayson_scripts={}, refiner_checkpoint=None))

    outcome = run_runner(stack, job, tmp_path, IMG2IMG_OUTPUT="s3://no-such-bucket-here/out/")

    assert outcome.code == 5, outcome.stderr[-3000:]
    error = outcome.message["error"]
    assert error["code"] == "STORAGE" and "no-such-bucket-here" in error["message"]
    assert "NoSuchBucket" in error["message"]
    assert outcome.message["modelsLoadedAt"] is not None and outcome.message["result"] is None
    assert keys_under(stack, job) == ["input.json"]  # no result.json: nothing claims completion


def test_presigned_urls_download_the_images_until_they_expire(stack, tmp_path):
    job = stage(stack, seed_input(alwayson_scripts={}, refiner_checkpoint=None))
    before = time.time()

    outcome = run_runner(stack, job, tmp_path, IMG2IMG_PRESIGN_EXPIRY="600")

    assert outcome.code == 0, outcome.stderr[-3000:]
    result = json.loads(read(stack, outcome.message["result"]))
    (url,) = result["presigned"]
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=600" in url
    with urllib.request.urlopen(url, timeout=10) as answer:  # no credentials: the URL is the permission
        assert answer.read() == read(stack, result["images"][0])
    expires = datetime.fromisoformat(result["presignedExpiresAt"].replace("Z", "+00:00")).timestamp()
    assert before + 590 <= expires <= time.time() + 600


# --- the job's own failures ----------------------------------------------------------------------------------


def test_bad_input_exits_2_naming_the_field(stack, tmp_path):
    outcome = run_runner(stack, stage(stack, seed_input(steps=0)), tmp_path)

    assert outcome.code == 2
    assert outcome.message["error"]["code"] == "BAD_INPUT"
    assert outcome.message["error"]["field"] == "input.payload.steps"
    assert "Traceback" not in outcome.stderr


def test_input_that_is_not_json_exits_2(stack, tmp_path):
    outcome = run_runner(stack, stage(stack, None, raw=b"{not json"), tmp_path)

    assert outcome.code == 2 and "not JSON" in outcome.message["error"]["message"]


def test_an_unknown_model_exits_3_naming_it(stack, tmp_path):
    job = stage(stack, seed_input(override_settings={"sd_model_checkpoint": "dreamy_v9"}))

    outcome = run_runner(stack, job, tmp_path)

    assert outcome.code == 3
    error = outcome.message["error"]
    assert error["code"] == "MODEL" and "dreamy_v9" in error["message"]
    assert outcome.message["modelsLoadedAt"] is None


@dataclass
class Connections:
    env: dict[str, str]  # for the runner: Python's audit hook writes every socket.connect to the log
    log: Path

    def hosts(self) -> set[str]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return {json.loads(line)[0] for line in lines}


@pytest.fixture
def connections(tmp_path) -> Connections:
    """Every address the runner process connects to, whether or not anything answers there."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import json, os, sys\n"
        "def _connect(event, args, log=os.environ['IMG2IMG_TEST_CONNECTIONS']):\n"
        "    if event == 'socket.connect' and isinstance(args[1], tuple):\n"
        "        with open(log, 'a') as f:\n"
        "            f.write(json.dumps(list(args[1][:2])) + '\\n')\n"
        "sys.addaudithook(_connect)\n")
    log = tmp_path / "connections.jsonl"
    return Connections({"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
                        "IMG2IMG_TEST_CONNECTIONS": str(log)}, log)


@pytest.fixture
def listener():
    """A TCP port on loopback that counts the connections it gets."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    seen: list[int] = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                seen.append(1)
                conn.close()
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], seen
    stop.set()
    thread.join()
    server.close()


@pytest.mark.parametrize("image, field, reason", [
    ("https://169.254.169.254/latest/meta-data/iam/", "init_images[0]", "link-local"),
    ("https://[::ffff:169.254.169.254]/latest/meta-data/", "init_images[0]", "link-local"),
    ("https://10.20.30.40/cat.png", "init_images[0]", "private address"),
    ("http://example.com/cat.png", "init_images[0]", "plain http:// is not accepted"),
    ("unit:https://169.254.169.254/latest/meta-data/", "alwayson_scripts.controlnet.args[0].image", "link-local"),
])
def test_a_reference_to_a_forbidden_address_exits_2_before_anything_loads(stack, tmp_path, connections, image, field,
                                                                          reason):
    if image.startswith("unit:"):
        request = seed_input()
        request["payload"]["alwayson_scripts"]["controlnet"]["args"][0]["image"] = image[5:]
    else:
        request = seed_input(init_images=[image])

    outcome = run_runner(stack, stage(stack, request), tmp_path, **connections.env)

    assert outcome.code == 2, outcome.stderr[-3000:]
    error = outcome.message["error"]
    assert error["field"] == f"input.payload.{field}" and reason in error["message"]
    assert outcome.message["modelsLoadedAt"] is None
    # refused, not tried: the runner connected to S3 (for its input.json) and nowhere else
    hosts = connections.hosts()
    assert hosts and hosts <= {"127.0.0.1", "::1", "localhost"}, hosts


def test_a_loopback_image_url_is_refused_and_the_port_sees_no_connection(stack, tmp_path, listener):
    port, seen = listener
    outcome = run_runner(stack, stage(stack, seed_input(init_images=[f"https://127.0.0.1:{port}/cat.png"])), tmp_path)

    assert outcome.code == 2 and "loopback" in outcome.message["error"]["message"]
    time.sleep(0.3)
    assert seen == []


def test_an_s3_image_outside_the_allowed_prefixes_is_refused_though_it_exists(stack, tmp_path):
    other = f"jobs/someone-else/{uuid.uuid4().hex[:6]}/secret.png"
    stack.s3().put_object(Bucket=stack.bucket, Key=other, Body=png(picture()))  # readable with the runner's keys
    job = stage(stack, seed_input(init_images=[f"s3://{stack.bucket}/{other}"]))

    outcome = run_runner(stack, job, tmp_path)

    assert outcome.code == 2
    error = outcome.message["error"]
    assert error["field"] == "input.payload.init_images[0]"
    assert "may not read" in error["message"] and job.uploads in error["message"]
    assert keys_under(stack, job) == ["input.json"]
