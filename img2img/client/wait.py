"""`img2img submit --wait`: follow a job until it ends, progress on stderr, the final status on stdout."""

from __future__ import annotations

import sys
import time

from img2img.api.status import TERMINAL
from img2img.client.errors import ClientError
from img2img.client.kube import Cluster
from img2img.client.view import print_status

TERMINAL_STATES = frozenset(state.value for state in TERMINAL)
EXIT_WAIT_TIMEOUT = 124
POLL_SECONDS = 0.5
SLOWER_AFTER_SECONDS = 30  # a job still running by then polls half as often


def progress_line(job: str, status: dict) -> str:
    """``<job>: <state> (<what else a user waits on>)``."""
    state = status.get("status") or "IN_QUEUE"
    extra = []
    if status.get("queuePosition") is not None and state == "IN_QUEUE":
        extra.append(f"queue position {status['queuePosition']}")
    if status.get("attempts"):
        extra.append(f"attempt {status['attempts']}")
    if status.get("runnerPod") and state in ("IN_PROGRESS", "COMPLETED"):
        extra.append(f"runner {status['runnerPod']}")
    progress = status.get("progress")
    if state == "IN_PROGRESS" and isinstance(progress, dict) and progress.get("steps"):
        extra.append(f"step {progress.get('step')}/{progress['steps']}")
    load = status.get("modelLoadTime")
    if state == "COMPLETED" and isinstance(load, int):
        extra.append("warm: no model loaded" if load == 0 else f"models loaded in {load} ms")
    if status.get("error") and state in TERMINAL_STATES:
        extra.append(status["error"])
    return f"{job}: {state}" + (f" ({', '.join(extra)})" if extra else "")


def wait_for(cluster: Cluster, namespace: str, job: str, timeout: float, poll: float = POLL_SECONDS) -> int:
    """Follow the job until it ends: progress lines on stderr, the final RunPod-shaped status JSON on stdout.

    Returns 0 when it COMPLETED, 1 when it ended otherwise, ``EXIT_WAIT_TIMEOUT`` when ``timeout`` ran out first.
    """
    started = time.monotonic()
    deadline = started + timeout
    last_line = None
    obj: dict = {}
    trouble = None
    try:
        while True:
            try:
                obj = cluster.get(job, namespace)
                trouble = None
            except ClientError as exc:
                if "not found" in str(exc):
                    raise ClientError(f"{job} was deleted while waiting") from None
                if trouble is None:  # a transient failure (API server restarting): keep trying until the deadline
                    print(f"{job}: {exc} (retrying)", file=sys.stderr)
                trouble = exc
            status = obj.get("status") or {}
            line = progress_line(job, status)
            if obj and line != last_line:
                print(line, file=sys.stderr)
                last_line = line
            state = status.get("status")
            if state in TERMINAL_STATES:
                print_status(obj)
                return 0 if state == "COMPLETED" else 1
            if time.monotonic() >= deadline:
                break
            elapsed = time.monotonic() - started
            interval = poll if elapsed < SLOWER_AFTER_SECONDS else 2 * poll
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
    except KeyboardInterrupt:
        print(f"\n{job}: stopped waiting; the job goes on (img2img status {job} -n {namespace})", file=sys.stderr)
        raise
    if trouble is not None and not obj:
        raise trouble
    print(f"{job}: still {(obj.get('status') or {}).get('status') or 'IN_QUEUE'} after {timeout:g} s; the job goes "
          f"on (img2img status {job} -n {namespace})", file=sys.stderr)
    print_status(obj)
    return EXIT_WAIT_TIMEOUT
