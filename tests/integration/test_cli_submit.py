"""`img2img submit | status | fetch` against the real stack (kube-apiserver + MinIO), run as users run them: the
console script in a subprocess with the stack's environment.

The operator is not running here: where a test needs a job to progress, it plays the operator's part and writes the
status subresource itself (IN_PROGRESS, then COMPLETED or FAILED with images it put in S3).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_cli_client import noise_png, noise_png_b64  # noqa: E402
from test_cli_validate import JOB_YAML, SEED, img2img_bin  # noqa: E402

pytestmark = pytest.mark.stack

RUNPOD_KEYS = {"id", "status", "delayTime", "executionTime", "output", "error"}


def cli_env(stack, **overrides: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "AWS_", "IMG2IMG_"))}
    env.update(stack.env)
    env["KUBECONFIG"] = str(stack.kubeconfig)
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def cli(stack, *args: str, input: str | None = None, **env: str | None) -> subprocess.CompletedProcess:
    proc = subprocess.run([img2img_bin(), *args], env=cli_env(stack, **env), input=input, capture_output=True,
                          text=True, timeout=300)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc


def seed() -> dict:
    return json.loads(SEED.read_text())


def write(tmp_path: Path, name: str, data: dict | str) -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def get_job(stack, namespace: str, name: str) -> dict:
    return stack.get_json("-n", namespace, "i2i", name)


def jobs_in(stack, namespace: str) -> list[str]:
    return stack.kubectl("-n", namespace, "get", "i2i", "-o", "name").stdout.split()


def uploads_in(stack, namespace: str) -> list[str]:
    listed = stack.s3().list_objects_v2(Bucket=stack.bucket, Prefix=f"uploads/{namespace}/")
    return [o["Key"] for o in listed.get("Contents", [])]


def created_ms(job: dict) -> int:
    moment = datetime.strptime(job["metadata"]["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ")
    return int(moment.replace(tzinfo=timezone.utc).timestamp() * 1000)


def set_status(stack, namespace: str, name: str, status: dict) -> None:
    """Play the operator's part: write the status subresource (a merge patch here; the operator sends a JSON patch)."""
    stack.kubectl("-n", namespace, "patch", "i2i", name, "--subresource=status", "--type=merge",
                  "-p", json.dumps({"status": status}))


# --- submit ------------------------------------------------------------------------------------------------------

def test_submit_creates_a_job_from_a_runpod_request(stack, namespace):
    before = int(time.time() * 1000)
    proc = cli(stack, "submit", str(SEED), "-n", namespace)
    after = int(time.time() * 1000)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["status"] == "IN_QUEUE" and answer["namespace"] == namespace
    name = answer["name"]
    assert name.startswith("img2img-") and len(name) > len("img2img-")  # generated
    assert f"img2imgjob.img2img.dev/{name} created in namespace {namespace}" in proc.stderr

    job = get_job(stack, namespace, name)
    assert answer["id"] == job["metadata"]["uid"]
    assert job["spec"]["input"] == seed()["input"]
    assert set(job["spec"]) == {"input"}  # no controls added: the operator's defaults apply
    stamp = int(job["metadata"]["annotations"]["img2img.dev/submitted-at"])
    assert before <= stamp <= after
    # the stamp is taken before the client's own work (validation, uploads): the operator trusts it within a window
    # before the creation (whose timestamp has whole seconds)
    from img2img_operator.runpod_timings import ANNOTATION_EARLY_MS, CREATION_RESOLUTION_MS

    created = created_ms(job)
    assert created - ANNOTATION_EARLY_MS <= stamp < created + CREATION_RESOLUTION_MS, (
        stamp, job["metadata"]["creationTimestamp"])
    managed = stack.get_json("-n", namespace, "i2i", name, "--show-managed-fields")["metadata"]["managedFields"]
    assert [m["manager"] for m in managed] == ["img2img-cli"]


def test_submit_with_a_name_and_the_default_namespace_of_the_context(stack, namespace, tmp_path):
    # the context's namespace when -n is not given
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(stack.kubeconfig.read_text())
    env = cli_env(stack, KUBECONFIG=str(kubeconfig))
    subprocess.run(["kubectl", "config", "set-context", "--current", f"--namespace={namespace}"], env=env,
                   check=True, capture_output=True)
    proc = cli(stack, "submit", str(SEED), "--name", "named-job", KUBECONFIG=str(kubeconfig))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["name"] == "named-job"
    assert get_job(stack, namespace, "named-job")["spec"]["input"] == seed()["input"]
    # the same name again: the API server's refusal, in one line
    again = cli(stack, "submit", str(SEED), "--name", "named-job", KUBECONFIG=str(kubeconfig))
    assert again.returncode == 1 and again.stderr.strip().splitlines()[-1].startswith("img2img submit: create")
    assert "already exists" in again.stderr


def test_a_large_inline_image_is_offloaded_to_s3(stack, namespace, tmp_path):
    raw = noise_png(1_000_000)
    request = seed()
    request["input"]["payload"]["init_images"] = [base64.b64encode(raw).decode()]
    proc = cli(stack, "submit", write(tmp_path, "big.json", request), "-n", namespace, "--name", "big")
    assert proc.returncode == 0, proc.stderr
    job = get_job(stack, namespace, "big")
    (ref,) = job["spec"]["input"]["payload"]["init_images"]
    prefix = f"s3://{stack.bucket}/uploads/{namespace}/"
    assert ref.startswith(prefix), ref
    assert f"input.payload.init_images[0]: {len(raw)} bytes uploaded to {ref}" in proc.stderr
    stored = stack.s3().get_object(Bucket=stack.bucket, Key=ref.removeprefix(f"s3://{stack.bucket}/"))
    assert stored["Body"].read() == raw
    assert stored["ContentType"] == "image/png"
    # everything else is the request as sent; the stored job is small
    request["input"]["payload"]["init_images"] = [ref]
    assert job["spec"]["input"] == request["input"]
    assert len(json.dumps(job)) < 20_000


def test_without_a_bucket_a_fitting_large_image_stays_inline(stack, namespace, tmp_path):
    request = seed()
    request["input"]["payload"]["init_images"] = [noise_png_b64(400_000, seed=1)]
    proc = cli(stack, "submit", write(tmp_path, "mid.json", request), "-n", namespace, "--name", "mid",
               IMG2IMG_BUCKET=None)
    assert proc.returncode == 0, proc.stderr
    assert "input.payload.init_images[0]: large inline image kept in the job (IMG2IMG_BUCKET is not set" \
        in proc.stderr
    assert get_job(stack, namespace, "mid")["spec"]["input"] == request["input"]
    assert uploads_in(stack, namespace) == []


def test_submit_a_manifest_yaml(stack, namespace, tmp_path):
    proc = cli(stack, "submit", str(JOB_YAML), "-n", namespace)
    assert proc.returncode == 0, proc.stderr
    manifest = yaml.safe_load(JOB_YAML.read_text())
    name = manifest["metadata"]["name"]
    assert json.loads(proc.stdout)["name"] == name
    assert get_job(stack, namespace, name)["spec"] == manifest["spec"]
    # a manifest with a large image and controls, from stdin, renamed: offloaded under spec's own path
    manifest["metadata"] = {"name": "ignored", "labels": {"team": "a"}}
    manifest["spec"]["priority"] = 7
    manifest["spec"]["input"]["payload"]["init_images"] = [noise_png_b64(300_000, seed=2)]
    proc = cli(stack, "submit", "-", "-n", namespace, "--name", "from-stdin", input=yaml.safe_dump(manifest))
    assert proc.returncode == 0, proc.stderr
    assert "spec.input.payload.init_images[0]:" in proc.stderr and "uploaded to s3://" in proc.stderr
    job = get_job(stack, namespace, "from-stdin")
    assert job["metadata"]["labels"] == {"team": "a"} and job["spec"]["priority"] == 7
    assert job["spec"]["input"]["payload"]["init_images"][0].startswith(f"s3://{stack.bucket}/uploads/{namespace}/")


def test_a_manifest_namespace_conflicting_with_n_is_refused(stack, namespace, tmp_path):
    manifest = yaml.safe_load(JOB_YAML.read_text())
    manifest["metadata"]["namespace"] = "elsewhere"
    proc = cli(stack, "submit", write(tmp_path, "job.json", manifest), "-n", namespace)
    assert proc.returncode == 1 and "namespace 'elsewhere' does not match -n" in proc.stderr
    assert jobs_in(stack, namespace) == []


def test_a_malformed_request_names_the_fields_and_creates_nothing(stack, namespace, tmp_path):
    request = seed()
    request["input"]["payload"].update(steps=0, denoising_strength=2,
                                       init_images=[noise_png_b64(500_000, seed=3)[:-10] + "!!!!"])
    proc = cli(stack, "submit", write(tmp_path, "bad.json", request), "-n", namespace)
    assert proc.returncode == 1
    for path in ("input.payload.init_images[0]", "input.payload.steps", "input.payload.denoising_strength"):
        assert f"\n{path}: " in "\n" + proc.stderr, (path, proc.stderr)
    assert "nothing submitted" in proc.stderr
    assert jobs_in(stack, namespace) == [] and uploads_in(stack, namespace) == []


def test_a_missing_namespace_is_one_line(stack):
    proc = cli(stack, "submit", str(SEED), "-n", "no-such-namespace")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert 'namespaces "no-such-namespace" not found' in proc.stderr


# --- wait, status, fetch (the test plays the operator) -----------------------------------------------------------

class Follower:
    """`img2img submit --wait` in the background, its stderr read line by line as it comes."""

    def __init__(self, stack, *args: str):
        self.proc = subprocess.Popen([img2img_bin(), *args], env=cli_env(stack), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for_line(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None or any(text in line for line in self.lines), self.lines
            assert time.monotonic() < deadline, f"no line with {text!r}: {self.lines}"
            time.sleep(0.05)

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        out = self.proc.stdout.read()
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=5)
        return code, out


def put_images(stack, namespace: str, name: str, uid: str, count: int = 2) -> tuple[list[str], list[bytes]]:
    uris, blobs = [], []
    for i in range(count):
        data = noise_png(20_000, seed=10 + i)
        key = f"jobs/{namespace}/{name}/{uid}/attempt-1/images/{i}.png"  # where attempt 1 uploads
        stack.s3().put_object(Bucket=stack.bucket, Key=key, Body=data)
        uris.append(f"s3://{stack.bucket}/{key}")
        blobs.append(data)
    return uris, blobs


def test_submit_wait_status_and_fetch_of_a_completed_job(stack, namespace, tmp_path):
    follower = Follower(stack, "submit", str(SEED), "-n", namespace, "--name", "waited", "--wait")
    follower.wait_for_line(f"img2imgjob.img2img.dev/waited created in namespace {namespace}")
    uid = get_job(stack, namespace, "waited")["metadata"]["uid"]
    follower.wait_for_line("waited: IN_QUEUE")

    # before the job has images: status is RunPod's IN_QUEUE answer, fetch has nothing to fetch
    proc = cli(stack, "status", "waited", "-n", namespace)
    assert proc.returncode == 0 and json.loads(proc.stdout) == {"id": uid, "status": "IN_QUEUE"}
    proc = cli(stack, "fetch", "waited", "-n", namespace, "-o", str(tmp_path / "early"))
    assert proc.returncode == 1 and "waited: no images (the job is IN_QUEUE)" in proc.stderr
    assert not (tmp_path / "early").exists()

    set_status(stack, namespace, "waited", {"id": uid, "status": "IN_PROGRESS", "attempts": 1,
                                            "runnerPod": "tiny-sdxl-ab12c", "progress": {"step": 2, "steps": 8}})
    follower.wait_for_line("waited: IN_PROGRESS (attempt 1, runner tiny-sdxl-ab12c, step 2/8)")
    uris, blobs = put_images(stack, namespace, "waited", uid)
    output = {"images": uris, "info": json.dumps({"seed": 42, "all_seeds": [42]}),
              "parameters": {"steps": 30, "prompt": "an astronaut riding a horse"}}
    set_status(stack, namespace, "waited", {"status": "COMPLETED", "delayTime": 1200, "executionTime": 3400,
                                            "output": output, "queuePosition": 0, "modelLoadTime": 0,
                                            "progress": None, "completedAt": "2026-01-01T00:00:05.123Z"})
    code, out = follower.finish()
    assert code == 0, follower.lines
    final = json.loads(out)
    expected = {"id": uid, "status": "COMPLETED", "delayTime": 1200, "executionTime": 3400, "output": output}
    assert final == expected and set(final) <= RUNPOD_KEYS
    assert follower.lines[-1] == "waited: COMPLETED (attempt 1, runner tiny-sdxl-ab12c, warm: no model loaded)"

    proc = cli(stack, "status", "waited", "-n", namespace)
    assert proc.returncode == 0 and json.loads(proc.stdout) == expected
    assert list(json.loads(proc.stdout)) == ["id", "status", "delayTime", "executionTime", "output"]

    out_dir = tmp_path / "out"
    proc = cli(stack, "fetch", "waited", "-n", namespace, "-o", str(out_dir))
    assert proc.returncode == 0, proc.stderr
    written = [Path(line) for line in proc.stdout.split()]
    assert written == [out_dir / "0.png", out_dir / "1.png"]
    assert [p.read_bytes() for p in written] == blobs


def test_submit_wait_exits_1_when_the_job_fails(stack, namespace):
    follower = Follower(stack, "submit", str(SEED), "-n", namespace, "--name", "doomed", "--wait")
    follower.wait_for_line("doomed: IN_QUEUE")
    uid = get_job(stack, namespace, "doomed")["metadata"]["uid"]
    set_status(stack, namespace, "doomed", {"id": uid, "status": "IN_PROGRESS", "attempts": 1})
    follower.wait_for_line("doomed: IN_PROGRESS")
    set_status(stack, namespace, "doomed", {"status": "FAILED", "delayTime": 10, "executionTime": 20,
                                            "error": "input.payload.alwayson_scripts.controlnet.args[0].model: "
                                                     "unknown model 'x'",
                                            "lastFailure": {"reason": "BAD_INPUT", "exitCode": 3}})
    code, out = follower.finish()
    assert code == 1
    final = json.loads(out)
    assert final["status"] == "FAILED" and final["id"] == uid and "unknown model 'x'" in final["error"]
    assert set(final) <= RUNPOD_KEYS
    assert any(line.startswith("doomed: FAILED (attempt 1, input.payload") for line in follower.lines)


def test_submit_wait_gives_up_after_its_timeout(stack, namespace):
    proc = cli(stack, "submit", str(SEED), "-n", namespace, "--name", "slow", "--wait", "--timeout", "1")
    assert proc.returncode == 124
    assert json.loads(proc.stdout)["status"] == "IN_QUEUE"
    assert "slow: still IN_QUEUE after 1 s; the job goes on" in proc.stderr
    assert jobs_in(stack, namespace) == ["img2imgjob.img2img.dev/slow"]


@pytest.mark.parametrize("command", [["status"], ["fetch", "-o", "out"]])
def test_a_job_that_does_not_exist_is_one_line(stack, namespace, command):
    proc = cli(stack, command[0], "ghost", *command[1:], "-n", namespace)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == f"img2img {command[0]}: Img2ImgJob 'ghost' not found in namespace '{namespace}'\n"


# --- large images and kubectl ------------------------------------------------------------------------------------

def test_client_side_apply_of_a_1mb_inline_job_fails_on_the_annotation_limit(stack, namespace):
    # `kubectl create` and `kubectl apply --server-side` of the same job succeed: tests/integration/test_crd_api.py
    # (test_a_1mb_inline_image_fits_with_create_and_server_side_apply). Client-side apply copies the whole object
    # into the last-applied-configuration annotation, which is limited to 256 KiB.
    job = yaml.safe_load(JOB_YAML.read_text())
    job["metadata"]["name"] = "csa"
    job["spec"]["input"]["payload"]["init_images"] = [noise_png_b64(1_000_000, seed=4)]
    for args in (["apply"], ["create", "--save-config"]):  # the same annotation either way
        proc = stack.kubectl("-n", namespace, *args, "-f", "-", input=json.dumps(job), check=False)
        assert proc.returncode != 0
        assert "metadata.annotations: Too long: " in proc.stderr and "262144" in proc.stderr, proc.stderr
    assert jobs_in(stack, namespace) == []
    # the documented way in works, and applying the same file again is a no-op (docs/large-images.md)
    for _ in range(2):
        stack.kubectl("-n", namespace, "apply", "--server-side", "-f", "-", input=json.dumps(job))
    assert jobs_in(stack, namespace) == ["img2imgjob.img2img.dev/csa"]
