"""Plain HTTP transfers to presigned URLs: how a pool's runner reads its job and writes its results.

The operator signs, for each assignment, a GET of the job's ``input.json`` and of every ``s3://`` image the job may
read, and a PUT of each output (``img2img.api.protocol``): the runner holds no S3 credentials to tenants' areas.
Transient failures (no connection, a 5xx, 408, 429) are retried with backoff as every S3 call of the runner is
(``storage.with_retries``), then StorageError; any other answer is final: ``Refused``.

Messages name the object (``what``), never the URL: a presigned URL is a credential until it expires.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from typing import Any

from img2img_runner.errors import StorageError
from img2img_runner.storage import transient, with_retries

TIMEOUT = 60.0
_S3_ERROR_CODE = re.compile(rb"<Code>([^<]{1,64})</Code>")


class Refused(StorageError):
    """The server refused the request (a 4xx other than 408/429): the same URL will not work again."""

    def __init__(self, what: str, status: int, code: str | None = None):
        super().__init__(f"{what}: HTTP {status}" + (f" {code}" if code else ""))
        self.status = status


def get(url: str, what: str, *, limit: int | None = None, timeout: float = TIMEOUT) -> bytes:
    """The body; with ``limit``, at most ``limit + 1`` bytes are read (so that the caller can tell it is too long)."""

    def once() -> bytes:
        with _open(urllib.request.Request(url, method="GET"), what, timeout) as response:
            return response.read() if limit is None else response.read(limit + 1)

    return with_retries(what, once)


def put(url: str, data: bytes, what: str, *, content_type: str, timeout: float = TIMEOUT) -> None:
    request = urllib.request.Request(url, data=data, method="PUT", headers={"Content-Type": content_type})

    def once() -> None:
        with _open(request, what, timeout):
            pass

    with_retries(what, once)


def _open(request: urllib.request.Request, what: str, timeout: float) -> Any:
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if transient(exc):
            raise
        with exc:
            found = _S3_ERROR_CODE.search(exc.read(4096) or b"")
        raise Refused(what, exc.code, found.group(1).decode(errors="replace") if found else None) from None
