"""The gateway's S3 calls (boto3, in worker threads): result images as base64 or presigned URLs, the upload of
large inline images (as ``img2img submit`` does), and the copy of results to a caller's bucket (``s3Config``).

Base64 answers are kept in memory (least recently used first out, ``imageCacheBytes`` in all): a client polling a
finished job's status does not read its images from S3 again and again.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

from img2img import split_s3_uri
from img2img.api.answer import OutputMode, output_images
from img2img.api.image_formats import content_type_of
from img2img.client.offload import upload
from img2img.client.errors import ClientError
from img2img.client.s3 import s3_call
from img2img_gateway.config import S3
from img2img_gateway.submission import S3Config, Submission


def boto_client(s3: S3 | None = None, **credentials: Any):
    """A boto3 S3 client; presigned URLs in Signature Version 4 (what every S3 today takes)."""
    import boto3
    from botocore.config import Config

    kwargs = {k: v for k, v in (("endpoint_url", s3 and s3.endpoint), ("region_name", s3 and s3.region)) if v}
    config = Config(signature_version="s3v4", retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5,
                    read_timeout=30)
    return boto3.client("s3", config=config, **kwargs, **credentials)


def check_public(url: str) -> None:
    """ClientError unless every address of the URL's host is public (the image fetches' rule)."""
    import socket
    from urllib.parse import urlsplit

    from img2img.api.addresses import address_refusal

    parts = urlsplit(url)
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ClientError(f"s3Config.endpointUrl: cannot resolve {parts.hostname!r} ({exc})") from None
    for address in {info[4][0] for info in infos}:
        why = address_refusal(address)
        if why:
            raise ClientError(f"s3Config.endpointUrl: {parts.hostname!r} resolves to {address}, {why}; refused")


class Objects:
    def __init__(self, s3: S3, presign_seconds: int, cache_bytes: int, client=None):
        self.config = s3
        self.client = client or boto_client(s3)
        self.presign_seconds = presign_seconds
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[tuple[str, ...], list[str]] = OrderedDict()
        self._cached = 0

    async def images(self, uris: list[str], mode: OutputMode) -> list[str]:
        """The output images as the answer carries them (``ClientError`` when S3 refuses)."""
        if mode is OutputMode.S3 or not uris:
            return list(uris)
        key = tuple(uris)
        if mode is OutputMode.BASE64 and key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        images = await asyncio.to_thread(output_images, uris, mode, self._read, self._presign)
        if mode is OutputMode.BASE64:
            self._remember(key, images)
        return images

    def _read(self, uri: str) -> bytes:
        bucket, key = split_s3_uri(uri)
        return s3_call(f"read {uri}", self.client.get_object, Bucket=bucket, Key=key)["Body"].read()

    def _presign(self, uri: str) -> str:
        bucket, key = split_s3_uri(uri)
        return s3_call(f"presign {uri}", self.client.generate_presigned_url, "get_object",
                       Params={"Bucket": bucket, "Key": key}, ExpiresIn=self.presign_seconds)

    def _remember(self, key: tuple[str, ...], encoded: list[str]) -> None:
        size = sum(len(e) for e in encoded)
        if size > self.cache_bytes:
            return
        self._cache[key] = encoded
        self._cached += size
        while self._cached > self.cache_bytes:
            _, dropped = self._cache.popitem(last=False)
            self._cached -= sum(len(e) for e in dropped)

    async def upload_inline_images(self, submission: Submission) -> None:
        """The large inline images of a request into ``s3://<bucket>/uploads/<namespace>/`` (their fields then
        hold the references), as ``img2img submit`` uploads them."""
        prepared = submission.prepared
        if prepared.uploads:
            await asyncio.to_thread(upload, prepared.uploads, self.config.bucket, submission.namespace, self.client)

    async def copy_results(self, uris: list[str], target: S3Config, job_id: str, allow_private: bool) -> list[str]:
        """Each result image into the caller's bucket at ``<objectPath>/<job id>/<file>``; their s3:// URIs.
        Unless ``allow_private``, every address the endpoint's name resolves to must be public."""
        def copy() -> list[str]:
            if not allow_private:
                check_public(target.endpointUrl)
            theirs = boto_client(endpoint_url=target.endpointUrl, aws_access_key_id=target.accessId,
                                 aws_secret_access_key=target.accessSecret)
            prefix = f"{target.objectPath.strip('/')}/" if target.objectPath and target.objectPath.strip("/") else ""
            copied = []
            for uri in uris:
                bucket, key = split_s3_uri(uri)
                data = s3_call(f"read {uri}", self.client.get_object, Bucket=bucket, Key=key)["Body"].read()
                their_key = f"{prefix}{job_id}/{key.rsplit('/', 1)[-1]}"
                s3_call(f"write s3://{target.bucketName}/{their_key}", theirs.put_object, Bucket=target.bucketName,
                        Key=their_key, Body=data, ContentType=content_type_of(key))
                copied.append(f"s3://{target.bucketName}/{their_key}")
            return copied

        return await asyncio.to_thread(copy)
