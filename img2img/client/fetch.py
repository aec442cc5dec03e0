"""`img2img fetch`: download a job's result images from S3 into a folder."""

from __future__ import annotations

import sys
from pathlib import Path

from img2img.client.errors import ClientError, fail
from img2img.client.kube import current_cluster
from img2img.client.s3 import s3_call, s3_client, split_for_download
from img2img.client.view import out


def fetch_command(name: str, output: Path, *, namespace: str | None) -> int:
    try:
        cluster = current_cluster()
        job = cluster.find_job(name, namespace or cluster.namespace)
        status = job.get("status") or {}
        images = (status.get("output") or {}).get("images") or []
        state = status.get("status") or "IN_QUEUE"
        if not images:
            why = f": {status['error']}" if status.get("error") else ""
            raise ClientError(f"{name}: no images (the job is {state}{why})")
        targets = local_files(images, output)
        try:
            output.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ClientError(f"{output}: cannot create the folder: {exc.strerror or exc}") from None
        s3 = s3_client()
        for uri, target in zip(images, targets):
            bucket, key = split_for_download(uri)
            try:
                s3_call(f"download {uri}", s3.download_file, bucket, key, str(target))
            except OSError as exc:
                raise ClientError(f"{target}: cannot write: {exc.strerror or exc}") from None
            out(str(target))
        if state != "COMPLETED":
            print(f"img2img fetch: note: the job is {state}", file=sys.stderr)
        return 0
    except ClientError as exc:
        return fail("fetch", exc)


def local_files(images: list[str], output: Path) -> list[Path]:
    """A local file per image: the key's file name (0.png, 1.png…), numbered when names repeat."""
    names = [Path(split_for_download(uri)[1]).name for uri in images]
    if len(set(names)) != len(names):
        names = [f"{i}-{n}" for i, n in enumerate(names)]
    return [output / n for n in names]
