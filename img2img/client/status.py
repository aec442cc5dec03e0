"""`img2img status`: a job's RunPod-shaped status."""

from __future__ import annotations

from img2img.client.errors import ClientError, fail
from img2img.client.kube import current_cluster
from img2img.client.view import print_status


def status_command(name: str, *, namespace: str | None) -> int:
    try:
        cluster = current_cluster()
        job = cluster.find_job(name, namespace or cluster.namespace)
    except ClientError as exc:
        return fail("status", exc)
    print_status(job)
    return 0
