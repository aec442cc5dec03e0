"""The job's S3 area: the operator writes input.json before the pod exists and reads result.json after it ends.

boto3 is synchronous; every call runs in a worker thread so the event loop (watches, probes) never blocks on S3.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from img2img import split_s3_uri

from .config import S3Config


def input_document(namespace: str, name: str, uid: str, spec_input: Any, submitted_ms: int) -> bytes:
    """input.json (docs/architecture.md): deterministic bytes, so staging it again writes the same object."""
    doc = {"namespace": namespace, "name": name, "uid": uid, "input": spec_input, "submittedAt": submitted_ms}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


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

    async def get(self, uri: str) -> bytes | None:
        """The object's bytes; None if it does not exist. Other errors (S3 down, no access) raise."""
        bucket, key = split_s3_uri(uri)

        def read() -> bytes | None:
            s3 = self._s3()
            try:
                return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            except s3.exceptions.NoSuchKey:
                return None

        return await asyncio.to_thread(read)

    async def stage_input(self, uri: str, document: bytes) -> None:
        await self.put(uri, document)

    async def read_result(self, uri: str) -> bytes | None:
        return await self.get(uri)

