"""The CLI's cluster side without a cluster: what goes to S3, the RunPod view, waiting, and one-line errors for a
missing kube context, a missing bucket and malformed requests (the console script in a subprocess)."""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import math
import os
import random
import subprocess

import pytest
from PIL import Image

from img2img.client.errors import ClientError
from img2img.client.kube import Cluster, api_reason, current_cluster
from img2img.client.offload import OFFLOAD_ABOVE_CHARS, plan_offload, upload
from img2img.client.request import prepare
from img2img.client.view import runpod_view
from img2img.client.wait import EXIT_WAIT_TIMEOUT, wait_for
from img2img.api.job import JobProblems
from img2img.kube import KubeError
from test_cli_validate import SEED, img2img_bin


def noise_png(min_bytes: int, seed: int = 0) -> bytes:
    """A PNG of random noise (incompressible) of at least ``min_bytes`` bytes."""
    side = math.ceil(math.sqrt(min_bytes / 3)) + 2
    rng = random.Random(seed)
    image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    data = buf.getvalue()
    assert len(data) >= min_bytes
    return data


def noise_png_b64(min_bytes: int, seed: int = 0) -> str:
    return base64.b64encode(noise_png(min_bytes, seed)).decode()


def seed() -> dict:
    return json.loads(SEED.read_text())


def request_with(images: list[str], unit_image: str | None = None) -> dict:
    request = seed()
    request["input"]["payload"]["init_images"] = images
    request["input"]["payload"]["batch_size"] = max(1, len(images))
    if unit_image is not None:
        request["input"]["payload"]["alwayson_scripts"]["controlnet"]["args"][0]["image"] = unit_image
    return request


# --- the RunPod view ---------------------------------------------------------------------------------------------

def test_runpod_view_keeps_runpod_fields_in_runpod_order():
    status = {"attempts": 1, "error": None, "output": {"images": ["s3://b/k/0.png"], "info": "{}", "parameters": {}},
              "executionTime": 20, "delayTime": 10, "status": "COMPLETED", "id": "u-1", "queuePosition": 0,
              "conditions": [], "runnerPod": "p"}
    view = runpod_view(status, "other-uid")
    assert list(view) == ["id", "status", "delayTime", "executionTime", "output"]
    assert view["id"] == "u-1"


def test_runpod_view_of_a_job_not_yet_seen_by_the_operator():
    assert runpod_view({}, "uid-9") == {"id": "uid-9", "status": "IN_QUEUE"}
    assert runpod_view({}) == {"status": "IN_QUEUE"}


# --- what is offloaded -------------------------------------------------------------------------------------------

def test_small_images_stay_inline_and_large_ones_are_offloaded_largest_first():
    small = "A" * 1000
    big = "B" * (OFFLOAD_ABOVE_CHARS + 1)
    medium1, medium2 = "C" * 200_000, "D" * 150_000
    ref = "s3://bucket-1/some/key.png"

    def paths(payload):
        return [p for _, _, p in plan_offload(payload, "input.payload")]

    assert paths({"init_images": [small, ref]}) == []
    assert paths({"init_images": [small, big]}) == ["input.payload.init_images[1]"]
    # together over the budget: the largest goes, the rest fits
    assert paths({"init_images": [medium2, medium1]}) == ["input.payload.init_images[1]"]
    unit_path = "input.payload.alwayson_scripts.controlnet.args[0].image"
    payload = {"init_images": [small], "alwayson_scripts": {"controlnet": {"args": [{"image": big}]}}}
    assert paths(payload) == [unit_path]
    assert paths({"init_images": [big, big]}) == ["input.payload.init_images[0]", "input.payload.init_images[1]"]
    assert paths({"init_images": [small], "mask": big}) == ["input.payload.mask"]
    assert paths({"init_images": [small], "mask": None}) == []


def test_prepare_sets_large_images_aside_and_validates_the_rest(tmp_path):
    raw = noise_png(400_000)
    request = request_with([base64.b64encode(raw).decode()])
    prepared = prepare(json.dumps(request), "req.json", "bucket-1")
    assert [u.path for _, _, u in prepared.uploads] == ["input.payload.init_images[0]"]
    item = prepared.uploads[0][2]
    assert item.data == raw and item.extension == "png" and item.content_type == "image/png"
    assert item.key("ns1") == f"uploads/ns1/{hashlib.sha256(raw).hexdigest()}.png"

    class FakeS3:
        def __init__(self):
            self.objects = {}

        def put_object(self, Bucket, Key, Body, ContentType):
            self.objects[(Bucket, Key)] = (Body, ContentType)

    s3 = FakeS3()
    lines = upload(prepared.uploads, "bucket-1", "ns1", s3)
    key = item.key("ns1")
    assert s3.objects == {("bucket-1", key): (raw, "image/png")}
    assert lines == [f"input.payload.init_images[0]: {len(raw)} bytes uploaded to s3://bucket-1/{key}"]
    manifest = prepared.manifest("job-1", "ns1")
    assert manifest["spec"]["input"]["payload"]["init_images"] == [f"s3://bucket-1/{key}"]
    assert manifest["metadata"] == {"name": "job-1", "namespace": "ns1"}
    # everything else is the request's input verbatim
    expected = copy.deepcopy(request["input"])
    expected["payload"]["init_images"] = [f"s3://bucket-1/{key}"]
    assert manifest["spec"]["input"] == expected


def test_prepare_reports_a_bad_large_image_with_the_other_problems():
    request = request_with(["QUJD" * 100_000])  # valid base64, not an image
    request["input"]["payload"]["steps"] = 0
    with pytest.raises(JobProblems) as caught:
        prepare(json.dumps(request), "req.json", "bucket-1")
    found = [str(p) for p in caught.value.problems]
    assert any(p.startswith("input.payload.init_images[0]: not a decodable image") for p in found), found
    assert "input.payload.steps: must be at least 1" in found


def test_without_a_bucket_a_large_image_stays_inline_while_the_job_fits():
    request = request_with([noise_png_b64(400_000)])
    prepared = prepare(json.dumps(request), "req.json", None)
    assert prepared.uploads == [] and prepared.inline_kept == ["input.payload.init_images[0]"]
    manifest = prepared.manifest(None, "ns1")
    assert manifest["spec"]["input"]["payload"]["init_images"] == request["input"]["payload"]["init_images"]


def test_without_a_bucket_an_image_too_large_for_a_job_is_refused_naming_the_variable():
    request = request_with([noise_png_b64(1_200_000)])
    with pytest.raises(ClientError, match="set IMG2IMG_BUCKET"):
        prepare(json.dumps(request), "req.json", None)


def test_a_manifest_is_prepared_under_spec_paths():
    job = {"apiVersion": "img2img.dev/v1alpha1", "kind": "Img2ImgJob", "metadata": {"name": "m1"},
           "spec": {"input": request_with([noise_png_b64(300_000)])["input"], "priority": 3}}
    prepared = prepare(json.dumps(job), "job.json", "bucket-1")
    assert [u.path for _, _, u in prepared.uploads] == ["spec.input.payload.init_images[0]"]
    upload(prepared.uploads, "bucket-1", "ns1", type("S3", (), {"put_object": lambda self, **kw: None})())
    manifest = prepared.manifest(None, "ns1")
    assert manifest["metadata"]["name"] == "m1" and manifest["spec"]["priority"] == 3
    assert manifest["spec"]["input"]["payload"]["init_images"][0].startswith("s3://bucket-1/uploads/ns1/")


# --- waiting -----------------------------------------------------------------------------------------------------

class FakeCluster(Cluster):
    def __init__(self, statuses: list[dict | Exception]):
        self.namespace = "default"
        self.statuses = statuses

    def get(self, name, namespace):
        item = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if isinstance(item, Exception):
            raise item
        return {"metadata": {"name": name, "uid": "uid-1"}, "status": item}


def test_wait_prints_progress_then_the_runpod_json(capsys):
    running = {"status": "IN_PROGRESS", "attempts": 1, "runnerPod": "tiny-sdxl-ab12c"}
    cluster = FakeCluster([{}, {"status": "IN_QUEUE", "queuePosition": 2}, running,
                           {**running, "progress": {"step": 3, "steps": 20}},
                           ClientError("get j: cannot reach the Kubernetes API server"),
                           {"status": "COMPLETED", "id": "uid-1", "delayTime": 5, "executionTime": 7,
                            "output": {"images": ["s3://b-1/x/0.png"], "info": "{}", "parameters": {}},
                            "attempts": 1, "runnerPod": "tiny-sdxl-ab12c", "modelLoadTime": 0}])
    assert wait_for(cluster, "default", "j", timeout=30, poll=0.01) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"id": "uid-1", "status": "COMPLETED", "delayTime": 5, "executionTime": 7,
                               "output": {"images": ["s3://b-1/x/0.png"], "info": "{}", "parameters": {}}}
    lines = err.splitlines()
    assert lines[0] == "j: IN_QUEUE"
    assert lines[1] == "j: IN_QUEUE (queue position 2)"
    assert lines[2] == "j: IN_PROGRESS (attempt 1, runner tiny-sdxl-ab12c)"
    assert lines[3] == "j: IN_PROGRESS (attempt 1, runner tiny-sdxl-ab12c, step 3/20)"
    assert "retrying" in lines[4]
    assert lines[-1] == "j: COMPLETED (attempt 1, runner tiny-sdxl-ab12c, warm: no model loaded)"


@pytest.mark.parametrize("state", ["FAILED", "CANCELLED", "TIMED_OUT"])
def test_wait_exits_1_when_the_job_did_not_complete(capsys, state):
    cluster = FakeCluster([{"status": state, "id": "uid-1", "error": "CUDA out of memory"}])
    assert wait_for(cluster, "default", "j", timeout=30, poll=0.01) == 1
    out, err = capsys.readouterr()
    assert json.loads(out) == {"id": "uid-1", "status": state, "error": "CUDA out of memory"}
    assert f"j: {state} (CUDA out of memory)" in err


def test_wait_gives_up_after_the_timeout_with_the_current_status(capsys):
    cluster = FakeCluster([{"status": "IN_PROGRESS"}])
    assert wait_for(cluster, "default", "j", timeout=0.05, poll=0.01) == EXIT_WAIT_TIMEOUT
    out, err = capsys.readouterr()
    assert json.loads(out)["status"] == "IN_PROGRESS"
    assert "still IN_PROGRESS" in err and "the job goes on" in err


def test_wait_reports_a_deleted_job():
    cluster = FakeCluster([{"status": "IN_QUEUE"}, ClientError('get j: img2imgjobs.img2img.dev "j" not found')])
    with pytest.raises(ClientError, match="deleted while waiting"):
        wait_for(cluster, "default", "j", timeout=5, poll=0.01)


# --- one-line errors from the console script ---------------------------------------------------------------------

def cli(*args: str, env: dict | None = None, input: str | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "AWS_", "IMG2IMG_"))}
    proc = subprocess.run([img2img_bin(), *args], env={**base, **(env or {})}, input=input, capture_output=True,
                          text=True, timeout=120)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc


@pytest.mark.parametrize("args", [["status", "j1"], ["fetch", "j1", "-o", "out"], ["submit", str(SEED)]])
def test_no_kube_context_is_one_line(tmp_path, args):
    proc = cli(*args, env={"KUBECONFIG": str(tmp_path / "missing"), "HOME": str(tmp_path)})
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"img2img {args[0]}: no Kubernetes context") and "KUBECONFIG" in proc.stderr
    assert proc.stdout == ""


def test_a_kubeconfig_without_a_current_context_is_one_line(tmp_path):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    proc = cli("status", "j1", env={"KUBECONFIG": str(kubeconfig)})
    assert proc.returncode == 1 and "no Kubernetes context" in proc.stderr and "current-context" in proc.stderr


def test_an_unreachable_api_server_is_one_line(tmp_path):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n")
    proc = cli("status", "j1", env={"KUBECONFIG": str(kubeconfig)})
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "cannot reach the Kubernetes API server at https://127.0.0.1:9" in proc.stderr


def test_submit_without_a_bucket_when_offloading_is_needed_says_to_set_it(tmp_path):
    path = tmp_path / "big.json"
    path.write_text(json.dumps(request_with([noise_png_b64(1_200_000)])))
    proc = cli("submit", str(path), env={"KUBECONFIG": str(tmp_path / "missing")})
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "img2img submit: input.payload.init_images[0]:" in proc.stderr and "set IMG2IMG_BUCKET" in proc.stderr


def test_submit_with_an_invalid_bucket_name_is_one_line(tmp_path):
    proc = cli("submit", str(SEED), env={"IMG2IMG_BUCKET": "Not_A_Bucket"})
    assert proc.returncode == 1 and "IMG2IMG_BUCKET='Not_A_Bucket' is not a valid S3 bucket name" in proc.stderr


def test_submit_of_a_malformed_request_names_the_fields_before_touching_a_cluster(tmp_path):
    request = seed()
    request["input"]["payload"].update(steps=0, sampler_name="Euler Z")
    proc = cli("submit", "-", input=json.dumps(request), env={"KUBECONFIG": str(tmp_path / "missing")})
    assert proc.returncode == 1
    assert "input.payload.steps: must be at least 1" in proc.stderr
    assert "input.payload.sampler_name: unknown sampler" in proc.stderr
    assert "nothing submitted" in proc.stderr and "Kubernetes" not in proc.stderr


def test_submit_of_a_missing_file_is_one_line(tmp_path):
    proc = cli("submit", str(tmp_path / "nope.json"))
    assert proc.returncode == 1 and proc.stderr.strip() == f"img2img submit: {tmp_path / 'nope.json'}: cannot read: " \
                                                           "No such file or directory"


def test_the_cluster_is_the_given_kubeconfigs_with_its_contexts_namespace(tmp_path):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u, namespace: team-a}}]\n")
    cluster = current_cluster(str(kubeconfig))
    assert cluster.kube.host == "https://127.0.0.1:9" and cluster.namespace == "team-a"
    with pytest.raises(ClientError, match=f"no Kubernetes context \\({tmp_path / 'missing'}: "):
        current_cluster(str(tmp_path / "missing"))


def test_api_server_refusals_are_one_line():
    def refusal(status: int, body: dict | None, reason: str = "") -> KubeError:
        return KubeError.from_answer(status, reason, json.dumps(body).encode() if body is not None else b"")

    missing_crd = refusal(404, {"kind": "Status", "message": "the server could not find the requested resource",
                                "reason": "NotFound", "details": {}})
    assert "Img2ImgJob resource (img2imgjobs.img2img.dev) is not installed" in api_reason(missing_crd)
    missing_job = refusal(404, {"message": 'img2imgjobs.img2img.dev "j" not found', "reason": "NotFound",
                                "details": {"name": "j", "group": "img2img.dev", "kind": "img2imgjobs"}})
    assert api_reason(missing_job) == 'img2imgjobs.img2img.dev "j" not found'
    invalid = refusal(422, {"message": 'Img2ImgJob.img2img.dev "j" is invalid: [spec.input.payload.steps: Invalid '
                                       'value: 0: must be\n at least 1, metadata.name: Invalid value]'})
    assert "\n" not in api_reason(invalid) and "spec.input.payload.steps" in api_reason(invalid)
    assert "credentials were refused" in api_reason(refusal(401, None, "Unauthorized"))
    assert api_reason(refusal(500, None, "Internal Server Error")) == "Internal Server Error"
