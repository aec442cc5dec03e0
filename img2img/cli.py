"""The `img2img` command: validate, run, submit, status, fetch, and the local stack.

Each subcommand imports its implementation lazily, so `img2img validate` never pays for torch or kopf.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _validate(args) -> int:
    from img2img.api.validate import validate_command

    return validate_command(args.file, sys.stdout, sys.stderr,
                            catalog=args.catalog or os.environ.get("IMG2IMG_CATALOG"))


def _run(args) -> int:
    from img2img_runner.local_run import run_command

    catalog = args.catalog or os.environ.get("IMG2IMG_CATALOG")
    if not catalog:
        print("img2img run: no model catalog: pass --catalog or set IMG2IMG_CATALOG", file=sys.stderr)
        return 2
    return run_command(args.file, Path(args.output), Path(catalog))


def _submit(args) -> int:
    from img2img.client.submit import submit_command

    return submit_command(args.file, name=args.name, namespace=args.namespace, wait=args.wait, timeout=args.timeout)


def _status(args) -> int:
    from img2img.client.status import status_command

    return status_command(args.name, namespace=args.namespace)


def _fetch(args) -> int:
    from img2img.client.fetch import fetch_command

    return fetch_command(args.name, Path(args.output), namespace=args.namespace)


def _local(args) -> int:
    from img2img.local.binaries import log
    from img2img.local.paths import default_state_dir
    from img2img.local.stack import Stack

    state_dir = args.state_dir or default_state_dir()
    if args.action == "env":
        sys.stdout.write((state_dir / "env.sh").read_text())
        return 0
    stack = Stack(state_dir=state_dir, with_operator=not args.no_operator, with_models=not args.no_models,
                  with_gateway=not args.no_gateway, gpus=args.gpus)
    if args.action == "down":
        stack.down()
        log("stopped; no process of the stack is left")
        return 0
    started = time.monotonic()
    info = stack.up()
    log(f"up in {time.monotonic() - started:.1f} s; logs in {stack.logs}")
    sys.stdout.write(info.export_lines())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="img2img", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check a RunPod request or an Img2ImgJob manifest offline")
    p.add_argument("file", help="JSON request ({'input': {...}}) or Img2ImgJob manifest (YAML/JSON); '-' for stdin")
    p.add_argument("--catalog", help="model catalog file whose names the job's models must be (default: "
                                     "$IMG2IMG_CATALOG; none: models are not checked)")
    p.set_defaults(func=_validate)

    p = sub.add_parser("run", help="execute a job in-process, without a cluster")
    p.add_argument("file")
    p.add_argument("-o", "--output", default="out", help="folder for the images (default: ./out)")
    p.add_argument("--catalog", help="model catalog file (default: $IMG2IMG_CATALOG)")
    p.set_defaults(func=_run)

    p = sub.add_parser(
        "submit", help="create an Img2ImgJob in the current kube context",
        description="Validate FILE offline, upload large inline images to s3://$IMG2IMG_BUCKET/uploads/<namespace>/ "
                    "(docs/large-images.md), and create the Img2ImgJob in the current kube context ($KUBECONFIG).",
        epilog="exit codes: 0 created (--wait: COMPLETED); 1 invalid request, error, or (--wait) the job FAILED, was "
               "CANCELLED or TIMED_OUT; 124 --wait timed out (the job goes on)")
    p.add_argument("file", help="JSON request ({'input': {...}}) or Img2ImgJob manifest (YAML/JSON); '-' for stdin")
    p.add_argument("--name", help="job name (default: the manifest's, else generated: img2img-xxxxx)")
    p.add_argument("-n", "--namespace", default=None, help="default: the manifest's, else the context's")
    p.add_argument("--wait", action="store_true",
                   help="follow the job (progress on stderr) and print its final RunPod-shaped status on stdout")
    p.add_argument("--timeout", type=float, default=1800, help="seconds --wait waits (default 1800)")
    p.set_defaults(func=_submit)

    p = sub.add_parser("status", help="print a job's RunPod-shaped status")
    p.add_argument("name")
    p.add_argument("-n", "--namespace", default=None, help="default: the context's namespace")
    p.set_defaults(func=_status)

    p = sub.add_parser("fetch", help="download a job's result images from S3")
    p.add_argument("name")
    p.add_argument("-o", "--output", default="out", help="folder for the images (default: ./out)")
    p.add_argument("-n", "--namespace", default=None, help="default: the context's namespace")
    p.set_defaults(func=_fetch)

    p = sub.add_parser("local", help="start or stop the embedded stack (etcd, kube-apiserver, S3, executor, operator, "
                                     "gateway)",
                       description="up: start the embedded stack (idempotent) and print its `export` lines (kubectl, "
                                   "S3, and RUNPOD_ENDPOINT_BASE_URL, RUNPOD_API_KEY, RUNPOD_ENDPOINT_ID for RunPod "
                                   "clients); down: stop all of it; env: print the `export` lines of a running stack.")
    p.add_argument("action", choices=["up", "down", "env"])
    p.add_argument("--state-dir", type=Path, default=None,
                   help="where its data, logs and env.sh live (default: $IMG2IMG_STATE_DIR, else "
                        "~/.local/state/img2img-operator/local)")
    p.add_argument("--no-operator", action="store_true", help="start everything but the operator")
    p.add_argument("--no-models", action="store_true", help="do not build the tiny models (no torch needed)")
    p.add_argument("--no-gateway", action="store_true", help="start everything but the RunPod-compatible gateway")
    p.add_argument("--gpus", type=int, default=1, help="nvidia.com/gpu capacity of the local node")
    p.set_defaults(func=_local)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
