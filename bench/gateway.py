"""The RunPod-compatible gateway: requests/s of `status` and `run`, and the time `runsync` adds to a job.

On the embedded stack, the gateway as `img2img local up` starts it, one endpoint on a fresh namespace:

1. status: `GET /v2/local/status/{id}` of a queued job, `--concurrency` clients at once, `--status-requests` in all
   (answered from the gateway's watch of the jobs: no API request per call);
2. run: `POST /v2/local/run` of a small request (a 64x64 init image, validated and decoded as `img2img validate`
   does), `--run-requests` in all, the operator stopped (each is one create of an Img2ImgJob);
3. runsync: the operator running no-op runners (`bench/noop-image`, as `operator_scale.py`), `--runsync-jobs` jobs
   one after the other; per job, the request's wall time minus the job's own `delayTime + executionTime` = what the
   gateway and the status path add (validation, the create, the operator's final status write, the watch, the answer).

Prints figures; asserts nothing. `--json FILE` writes them for `run_all.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import machine  # noqa: E402
from operator_scale import NOOP_IMAGE, NOOP_REQUESTS, BenchStack  # noqa: E402
from stats import fmt, publish, summary  # noqa: E402


def log(msg: str) -> None:
    print(f"[gateway {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def small_request() -> dict:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(buf, "PNG")
    return {"input": {"api": {"method": "POST", "endpoint": "/sdapi/v1/img2img"},
                      "payload": {"init_images": [base64.b64encode(buf.getvalue()).decode()], "prompt": "bench",
                                  "steps": 2, "width": 64, "height": 64, "seed": 1}}}


async def hammer(method: str, url: str, headers: dict, body: Any, total: int, concurrency: int) -> dict:
    """``total`` requests, ``concurrency`` at a time over kept-alive connections: requests/s and latencies (ms)."""
    import aiohttp

    latencies: list[float] = []
    failures = 0
    queue = iter(range(total))

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        for _ in queue:
            started = time.perf_counter()
            async with session.request(method, url, headers=headers, json=body) as response:
                await response.read()
                if response.status != 200:
                    failures += 1
            latencies.append((time.perf_counter() - started) * 1000)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return {"requests": total, "failures": failures, "concurrency": concurrency, "seconds": seconds,
            "requests_per_s": total / seconds, "latency_ms": summary(latencies)}


def runsync_overhead(base: str, headers: dict, jobs: int) -> dict:
    import requests

    overheads, walls, own = [], [], []
    for _ in range(jobs):
        started = time.perf_counter()
        answer = requests.post(f"{base}/runsync", headers=headers, json=small_request(), timeout=300).json()
        wall = (time.perf_counter() - started) * 1000
        if answer.get("status") != "COMPLETED":
            raise RuntimeError(f"runsync answered {json.dumps(answer)[:300]}")
        job_time = answer["delayTime"] + answer["executionTime"]
        walls.append(wall)
        own.append(job_time)
        overheads.append(wall - job_time)
    return {"jobs": jobs, "overhead_ms": summary(overheads), "wall_ms": summary(walls),
            "delay_plus_execution_ms": summary(own)}


def run(args: argparse.Namespace) -> dict:
    state_dir = Path(tempfile.mkdtemp(prefix="img2img-bench-gateway-"))
    stack = BenchStack(state_dir=state_dir, with_operator=False, with_models=False, with_gateway=False, gpus=8)
    results: dict[str, Any] = {"parameters": vars(args).copy(), "machine": machine.describe()}
    wall = time.monotonic()
    try:
        log(f"starting the stack in {state_dir}")
        info = stack.up()
        namespace = f"bench-gw-{uuid.uuid4().hex[:6]}"
        info.kubectl("create", "namespace", namespace)  # jobs need nothing of ours in their namespace
        access = stack.start_gateway(info, namespace=namespace)
        base = f"{access.base_url}/{access.endpoint_id}"
        headers = {"Authorization": f"Bearer {access.api_key}"}
        import requests

        queued = requests.post(f"{base}/run", headers=headers, json=small_request(), timeout=30).json()["id"]
        log(f"status: {args.status_requests} requests, {args.concurrency} at a time")
        results["status"] = asyncio.run(hammer("GET", f"{base}/status/{queued}", headers, None,
                                               args.status_requests, args.concurrency))
        log(f"run: {args.run_requests} requests, {args.concurrency} at a time")
        results["run"] = asyncio.run(hammer("POST", f"{base}/run", headers, small_request(), args.run_requests,
                                            args.concurrency))
        requests.post(f"{base}/purge-queue", headers=headers, timeout=60)
        log(f"runsync: {args.runsync_jobs} jobs one after the other, no-op runners")
        stack.start_operator(info, {"runner": {"image": NOOP_IMAGE, "resources": {"requests": dict(NOOP_REQUESTS)}},
                                    "gpuClasses": {"local": {"resources": {"nvidia.com/gpu": 1},
                                                             "maxConcurrent": 8}}})
        results["runsync"] = runsync_overhead(base, headers, args.runsync_jobs)
    finally:
        log("stopping the stack")
        try:
            stack.down()
        finally:
            shutil.rmtree(state_dir, ignore_errors=True)
    results["wall_seconds"] = time.monotonic() - wall
    return results


def report(results: dict) -> None:
    for key in ("status", "run"):
        r = results[key]
        print(f"{key}: {r['requests_per_s']:.0f} requests/s ({r['requests']} requests, {r['concurrency']} at a time, "
              f"{r['failures']} not 200); latency {fmt(r['latency_ms'])}")
    r = results["runsync"]
    print(f"runsync: adds {fmt(r['overhead_ms'])} to delayTime + executionTime ({fmt(r['delay_plus_execution_ms'])}) "
          f"over {r['jobs']} jobs")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--status-requests", type=int, default=3000)
    p.add_argument("--run-requests", type=int, default=300)
    p.add_argument("--runsync-jobs", type=int, default=20)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--json", help="write every figure to this file")
    args = p.parse_args(argv)
    return publish(run(args), report, args.json)


if __name__ == "__main__":
    sys.exit(main())
