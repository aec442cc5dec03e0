"""The job's S3 area: the operator writes input.json when it reaches a valid job's verdict (``verdicts``),
presigns the runner's reads and writes, reads result.json when the runner is done (and the images a webhook
carries). Runners hold no credentials to it.

Keys (docs/architecture.md, "Operator → runner"): ``s3://<bucket>/<prefix>/<namespace>/<job>/<uid>/input.json``;
each attempt's results under ``…/<uid>/attempt-<n>/`` (``images/<i>.png``, or the extension of the job's
``samples_format``; ``result.json``), so that a late upload of a lost attempt never overwrites a newer one's.

boto3 is synchronous: every call that reaches S3 runs in a worker thread, so the event loop (watches, probes, the
runner endpoint) never blocks on it. Presigning is local computation.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Iterator
from typing import Any

from img2img import split_s3_uri

from .config import OperatorConfig, S3Config
from .controls import Controls
from .report import RESULT_MAX_BYTES
from .runpod_timings import submitted_at_ms
from .views import JobView

# S3 errors that another try will not cure: the job cannot be staged where its output should go.
PERMANENT_S3_ERRORS = {"NoSuchBucket", "AccessDenied", "InvalidBucketName", "AllAccessDisabled", "InvalidAccessKeyId",
                       "SignatureDoesNotMatch", "AccountProblem"}


DELETE_BATCH = 1000  # S3's most keys in one DeleteObjects


class StagingRefused(Exception):
    """Staging failed for a reason that will not pass by itself (the job ends FAILED)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def job_location(job: JobView, controls: Controls, config: OperatorConfig) -> str:
    """``s3://bucket/prefix/namespace/job/uid/``: where the job is staged and its results land."""
    return config.s3.job_prefix(job.namespace, job.name, job.uid, controls.output_bucket, controls.output_prefix)


def input_uri(job: JobView, controls: Controls, config: OperatorConfig) -> str:
    return job_location(job, controls, config) + "input.json"


def attempt_outputs(location: str, attempt: int, images: int, extension: str) -> tuple[list[str], str]:
    """The URIs attempt ``attempt`` uploads to: ``images`` image keys (``images/<i>.<extension>``), and
    result.json."""
    base = f"{location}attempt-{attempt}/"
    return [f"{base}images/{i}.{extension}" for i in range(images)], result_uri(location, attempt)


def result_uri(location: str, attempt: int) -> str:
    """The attempt's result.json: the only one the operator reads for it, whatever its runner says."""
    return f"{location}attempt-{attempt}/result.json"


def input_document(job: JobView, spec_input: Any) -> bytes:
    """input.json (docs/architecture.md) of the job's ``spec_input`` (the cache keeps no input: the dispatcher
    passes it as it reached the verdict): deterministic bytes, so staging it again writes the same object."""
    doc = {"namespace": job.namespace, "name": job.name, "uid": job.uid, "input": spec_input,
           "submittedAt": submitted_at_ms(job)}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def batches(keys: Iterable[str], size: int = DELETE_BATCH) -> Iterator[list[str]]:
    batch: list[str] = []
    for key in keys:
        batch.append(key)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class Staging:
    def __init__(self, config: S3Config, client: Any = None):
        self.config = config
        self._client = client

    def _s3(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3",
                endpoint_url=self.config.endpoint or None,
                region_name=self.config.region or None,
                config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30),
            )
        return self._client

    async def put(self, uri: str, data: bytes, content_type: str = "application/json") -> None:
        bucket, key = split_s3_uri(uri)
        await asyncio.to_thread(self._s3().put_object, Bucket=bucket, Key=key, Body=data, ContentType=content_type)

    def read(self, uri: str) -> bytes:
        """The object's bytes (blocking: in a worker thread)."""
        bucket, key = split_s3_uri(uri)
        return self._s3().get_object(Bucket=bucket, Key=key)["Body"].read()

    async def get(self, uri: str, limit: int) -> tuple[bytes, int] | None:
        """The object's first ``limit`` + 1 bytes (at most) and its size; None if it does not exist. Other errors
        (S3 down, no access) raise."""
        bucket, key = split_s3_uri(uri)

        def read() -> tuple[bytes, int] | None:
            s3 = self._s3()
            try:
                answer = s3.get_object(Bucket=bucket, Key=key)
            except s3.exceptions.NoSuchKey:
                return None
            body = answer["Body"]
            try:
                data = body.read(limit + 1)
            finally:
                body.close()
            return data, max(len(data), int(answer.get("ContentLength") or 0))

        return await asyncio.to_thread(read)

    async def stage_input(self, uri: str, document: bytes) -> None:
        """Write input.json; StagingRefused when S3 refuses it for good (no such bucket, no access)."""
        try:
            await self.put(uri, document)
        except Exception as e:
            code = (getattr(e, "response", None) or {}).get("Error", {}).get("Code")
            if code in PERMANENT_S3_ERRORS:
                raise StagingRefused("StagingFailed", f"cannot write {uri}: {code}: {e}") from e
            raise

    async def read_result(self, uri: str) -> tuple[bytes, int] | None:
        """result.json, read up to ``report.RESULT_MAX_BYTES``, and its size."""
        return await self.get(uri, RESULT_MAX_BYTES)

    def presign_get(self, uri: str, seconds: int) -> str:
        bucket, key = split_s3_uri(uri)
        return self._s3().generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                                 ExpiresIn=seconds)

    def presign_put(self, uri: str, content_type: str, seconds: int) -> str:
        """A PUT signed for ``content_type``: the signature may cover the header (S3's query-string SigV2 does), so
        the uploader must send exactly that type (``img2img.api.protocol``'s upload types)."""
        bucket, key = split_s3_uri(uri)
        return self._s3().generate_presigned_url(
            "put_object", Params={"Bucket": bucket, "Key": key, "ContentType": content_type}, ExpiresIn=seconds)

    def keys_under(self, uri: str) -> Iterator[str]:
        """Every key under the s3:// prefix ``uri`` (blocking: in a worker thread); none when the bucket does not
        exist."""
        bucket, prefix = split_s3_uri(uri, need_key=False)
        s3 = self._s3()
        try:
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for listed in page.get("Contents") or []:
                    yield listed["Key"]
        except s3.exceptions.NoSuchBucket:
            return

    def delete_keys(self, bucket: str, keys: Iterable[str]) -> None:
        """Delete ``keys`` of ``bucket`` (blocking: in a worker thread), up to 1000 in one DeleteObjects; an error
        naming the first key S3 did not delete, if any."""
        s3 = self._s3()
        for batch in batches(keys):
            answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
            errors = answer.get("Errors") or []
            if errors:
                first = errors[0]
                raise RuntimeError(f"S3 did not delete {len(errors)} of {len(batch)} objects, e.g. "
                                   f"{first.get('Key')}: {first.get('Code')}: {first.get('Message')}")
