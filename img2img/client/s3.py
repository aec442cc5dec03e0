"""The object store side of the CLI: a client from the environment, and S3 failures as one-line errors."""

from __future__ import annotations

from typing import Callable, TypeVar

from img2img import split_s3_uri
from img2img.client.errors import ClientError, one_line

T = TypeVar("T")


def s3_client():
    import boto3

    return boto3.client("s3")  # AWS_ENDPOINT_URL, AWS_REGION and the credentials come from the environment


def s3_call(what: str, fn: Callable[..., T], *args, **kwargs) -> T:
    """Run one S3 request; every failure becomes a one-line ClientError."""
    from botocore.exceptions import BotoCoreError, ClientError as BotoClientError

    try:
        return fn(*args, **kwargs)
    except BotoClientError as exc:
        error = exc.response.get("Error") or {}
        code, message = error.get("Code", "?"), error.get("Message") or ""
        raise ClientError(f"{what}: S3 refused ({code}{': ' + message if message else ''})") from None
    except BotoCoreError as exc:
        raise ClientError(f"{what}: S3: {one_line(exc)}") from None


def split_for_download(uri: str) -> tuple[str, str]:
    """(bucket, key) of an output image's URI; ClientError when it is not one."""
    try:
        return split_s3_uri(uri)
    except ValueError as exc:
        raise ClientError(f"{exc}; cannot download it") from None
