"""A pool's runner reads and writes a job's S3 area through MinIO's presigned URLs only (no S3 credentials).

The operator is ``fake_operator.FakeOperator`` (the real runner endpoint is built by another change at the same
time); the presigned URLs are the stack's S3 server's own, signed here as the operator will sign them.
"""

from __future__ import annotations

import copy
import io
import json
import threading
import time
import uuid
from pathlib import Path

import pytest
from PIL import Image

from fake_operator import FakeOperator, token
from img2img.api.image_formats import PNG
from img2img.api.protocol import RESULT_CONTENT_TYPE, Assignment, JobRef, Outputs

pytestmark = [pytest.mark.stack, pytest.mark.models]

RUNNER = "pool-a-s3run"
SEED_REQUEST = Path(__file__).resolve().parents[1] / "data" / "seed_request.json"


def seed_request(init_image: str) -> dict:
    """The seed request (SDXL + refiner + canny ControlNet) at 64x64, 4 steps, its image an s3:// reference."""
    request = copy.deepcopy(json.loads(SEED_REQUEST.read_text())["input"])
    request["payload"].update(init_images=[init_image], width=64, height=64, steps=4, seed=7)
    return request


@pytest.fixture
def worker(stack, monkeypatch):
    """A runner in a thread, without S3 credentials in its environment."""
    from img2img_runner.catalog import Catalog
    from img2img_runner.pipelines import ModelCache
    from img2img_runner.worker import OperatorLink, Worker

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "IMG2IMG_ALLOWED_S3"):
        monkeypatch.delenv(name, raising=False)
    fake = FakeOperator()
    catalog = Catalog.from_file(stack.catalog)
    running = Worker(RUNNER, OperatorLink(fake.url, token(RUNNER)), catalog, ModelCache(catalog))
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    yield fake
    running.stop()
    thread.join(60)
    fake.close()


def assignment(stack, job_input: dict, *, images: list[str], outputs: int, expires: int = 600) -> Assignment:
    """Stage input.json and sign the attempt's URLs as the operator does."""
    s3, bucket = stack.s3(), stack.bucket
    uid = str(uuid.uuid4())
    base = f"jobs/ns/job/{uid}"
    s3.put_object(Bucket=bucket, Key=f"{base}/input.json", Body=json.dumps(
        {"namespace": "ns", "name": "job", "uid": uid, "input": job_input}).encode())

    def sign(method: str, key: str, seconds: int = 600, **params: str) -> str:
        # the stack's client signs as botocore does by default for such an endpoint: SigV2, which covers the
        # Content-Type, so an upload must send the type it was signed for
        return s3.generate_presigned_url(method, Params={"Bucket": bucket, "Key": key, **params}, ExpiresIn=seconds)

    keys = [f"{base}/attempt-1/images/{i}.png" for i in range(outputs)]
    return Assignment(
        lease=f"{uid}.1.{uuid.uuid4().hex[:8]}", job=JobRef(namespace="ns", name="job", uid=uid, attempt=1),
        inputUrl=sign("get_object", f"{base}/input.json"),
        images={ref: sign("get_object", ref.removeprefix(f"s3://{bucket}/")) for ref in images},
        outputs=Outputs(imageUris=[f"s3://{bucket}/{k}" for k in keys],
                        imageUrls=[sign("put_object", k, expires, ContentType=PNG.content_type) for k in keys],
                        resultUri=f"s3://{bucket}/{base}/attempt-1/result.json",
                        resultUrl=sign("put_object", f"{base}/attempt-1/result.json", expires,
                                       ContentType=RESULT_CONTENT_TYPE)),
        submittedAt=int(time.time() * 1000), leaseSeconds=15, heartbeatSeconds=1)


def read(stack, uri: str) -> bytes:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return stack.s3().get_object(Bucket=bucket, Key=key)["Body"].read()


def test_a_job_through_presigned_urls(stack, worker):
    init = f"s3://{stack.bucket}/uploads/ns/init-{uuid.uuid4().hex[:6]}.png"
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 120, 40)).save(buf, "PNG")
    stack.s3().put_object(Bucket=stack.bucket, Key=init.removeprefix(f"s3://{stack.bucket}/"), Body=buf.getvalue())
    # batch_size x n_iter + ControlNet units: the picture and the detect map
    job = worker.queue(assignment(stack, seed_request(init), images=[init], outputs=2))

    outcome = worker.outcome(job)
    assert outcome["error"] is None and outcome["result"] == job.outputs.resultUri
    result = json.loads(read(stack, outcome["result"]))
    assert stack.s3().head_object(Bucket=stack.bucket, Key=job.outputs.imageUris[0].split("/", 3)[3])[
        "ContentType"] == PNG.content_type  # what a browser opening the presigned GET is told
    assert result["images"] == job.outputs.imageUris
    picture = Image.open(io.BytesIO(read(stack, result["images"][0])))
    assert picture.size == (64, 64) and "Seed: 7," in picture.text["parameters"]

    # an upload URL that has expired: a storage failure (retried by the operator), not a crash of the runner
    late = assignment(stack, seed_request(init), images=[init], outputs=2, expires=1)
    time.sleep(2)
    outcome = worker.outcome(worker.queue(late))
    assert outcome["error"]["code"] == "STORAGE" and "HTTP 403" in outcome["error"]["message"]
    assert "X-Amz-Signature" not in outcome["error"]["message"]
