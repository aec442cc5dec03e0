"""`img2img submit | status | fetch`: the user's side of a job on a cluster (any kube context, any S3).

Submitting validates offline first (every problem named by its field path, nothing uploaded or created), offloads
large inline images to ``s3://$IMG2IMG_BUCKET/uploads/<namespace>/`` so that a job stays far below etcd's object
size limit (docs/large-images.md), and stamps the submission time with millisecond precision in the annotation
``img2img.dev/submitted-at`` (``creationTimestamp`` only has whole seconds).

Every failure the user can cause or fix (no kube context, no bucket, a job that does not exist, the API server or S3
refusing a request) ends as one line on stderr and a non-zero exit code, never a traceback.

Exit codes: 0 success (``--wait``: COMPLETED); 1 the job FAILED / was CANCELLED / TIMED_OUT, or an error;
124 ``--wait`` gave up before the job finished (the job goes on).
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from img2img import API_GROUP, API_VERSION, KIND, PLURAL, split_s3_uri, uploads_prefix

GENERATE_NAME = "img2img-"  # as img2img.api.job.GENERATE_NAME (not imported here: it loads pydantic)

SUBMITTED_AT = f"{API_GROUP}/submitted-at"
# The inline images of a submitted job together stay at or below this many base64 characters: the largest ones go to
# S3 until the rest fits. A job then stays small in etcd, in the API server's watch cache and in every watcher.
OFFLOAD_ABOVE_CHARS = 256 * 1024
BUCKET_ENV = "IMG2IMG_BUCKET"
FIELD_MANAGER = "img2img-cli"
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
RUNPOD_FIELDS = ("id", "status", "delayTime", "executionTime", "output", "error")
EXIT_WAIT_TIMEOUT = 124
POLL_SECONDS = 0.5

T = TypeVar("T")


class ClientError(Exception):
    """A failure the user can act on; its message is one line, printed after ``img2img <command>:``."""


# --- the RunPod view ---------------------------------------------------------------------------------------------

def runpod_view(status: dict, uid: str | None = None) -> dict:
    """The part of ``.status`` a RunPod client reads, in RunPod's key order.

    A job the operator has not written yet is IN_QUEUE with the resource's uid as id, as RunPod answers ``/status``
    right after ``/run``.
    """
    defaults = {"id": uid, "status": "IN_QUEUE"}
    view = {}
    for key in RUNPOD_FIELDS:
        value = status.get(key)
        value = defaults.get(key) if value is None else value
        if value is not None:
            view[key] = value
    return view


# --- reading the request -----------------------------------------------------------------------------------------

def read_text(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ClientError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ClientError(f"{path}: cannot read: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _payload_of(data: Any) -> tuple[dict | None, str]:
    """Where the A1111 payload sits in a parsed request or manifest, and its path prefix as users read it."""
    if not isinstance(data, dict):
        return None, ""
    if "input" in data and "spec" not in data and "kind" not in data:
        inp, prefix = data.get("input"), "input"
    else:
        inp, prefix = (data.get("spec") or {}).get("input") if isinstance(data.get("spec"), dict) else None, \
            "spec.input"
    payload = inp.get("payload") if isinstance(inp, dict) else None
    return (payload if isinstance(payload, dict) else None), f"{prefix}.payload"


def image_slots(payload: dict, prefix: str = "input.payload") -> Iterator[tuple[Any, Any, str]]:
    """Every place a payload carries an image: (container, key, user-facing path)."""
    images = payload.get("init_images")
    if isinstance(images, list):
        for i, _ in enumerate(images):
            yield images, i, f"{prefix}.init_images[{i}]"
    scripts = payload.get("alwayson_scripts")
    controlnet = scripts.get("controlnet") if isinstance(scripts, dict) else None
    units = controlnet.get("args") if isinstance(controlnet, dict) else None
    for j, unit in enumerate(units if isinstance(units, list) else []):
        if isinstance(unit, dict):
            for key in ("image", "input_image"):
                if key in unit:
                    yield unit, key, f"{prefix}.alwayson_scripts.controlnet.args[{j}].{key}"


def _inline(value: Any) -> bool:
    from img2img.api.images import ImageError, is_inline

    if not isinstance(value, str):
        return False
    try:
        return is_inline(value)
    except ImageError:  # a malformed reference: validation names it
        return False


def plan_offload(payload: dict, prefix: str, limit: int = OFFLOAD_ABOVE_CHARS) -> list[tuple[Any, Any, str]]:
    """The image slots to upload: the largest inline images first, until the inline rest is at most ``limit``."""
    slots = [(c, k, p) for c, k, p in image_slots(payload, prefix) if _inline(c[k])]
    total = sum(len(c[k]) for c, k, _ in slots)
    chosen: list[tuple[Any, Any, str]] = []
    for slot in sorted(slots, key=lambda s: len(s[0][s[1]]), reverse=True):
        if total <= limit:
            break
        chosen.append(slot)
        total -= len(slot[0][slot[1]])
    order = {id(s): i for i, s in enumerate(slots)}
    return sorted(chosen, key=lambda s: order[id(s)])


@dataclass(frozen=True)
class Upload:
    path: str  # the field, e.g. input.payload.init_images[0]
    data: bytes
    extension: str
    content_type: str

    def key(self, namespace: str) -> str:
        # content-addressed: the same image submitted twice is stored once
        return f"{uploads_prefix(namespace)}{hashlib.sha256(self.data).hexdigest()}.{self.extension}"


_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "MPO": "image/jpeg", "WEBP": "image/webp",
         "GIF": "image/gif", "BMP": "image/bmp", "TIFF": "image/tiff"}


def _decode_for_upload(value: str, path: str) -> Upload:
    """Check an image that is going to S3 as validation would (base64, decodes, size) and keep its bytes."""
    from img2img.api.images import ImageError, decode_inline, strip_data_uri

    image = decode_inline(value)  # raises ImageError with the reason
    try:
        raw = base64.b64decode(strip_data_uri(value).strip(), validate=False)
    except (binascii.Error, ValueError) as exc:  # decode_inline accepted it, so this is not expected
        raise ImageError(f"not a decodable image (not valid base64: {exc})") from None
    fmt = (image.format or "PNG").upper()
    extension = {"JPEG": "jpg", "MPO": "jpg"}.get(fmt, fmt.lower())
    content_type = _MIME.get(fmt, "application/octet-stream")
    return Upload(path, raw, extension, content_type)


@dataclass
class Prepared:
    """A request made ready to create: validated, with the images still to upload."""

    data: Any  # the parsed request or manifest; offloaded slots hold a placeholder until uploaded
    uploads: list[tuple[Any, Any, Upload]]  # (container, key, upload) in the data
    inline_kept: list[str]  # large images left inline (no bucket), by path

    def manifest(self, name: str | None, namespace: str) -> dict:
        from img2img.api.convert import to_manifest

        return to_manifest(self.data, name=name, namespace=namespace)


PLACEHOLDER_BUCKET = "img2img-upload-pending"


def prepare(text: str, source: str, bucket: str | None) -> Prepared:
    """Parse and validate a request/manifest offline; images to offload are decoded here and replaced by a placeholder.

    Raises ``JobProblems`` with every problem. Without a bucket, large images stay inline when the job still fits
    (``inline_kept``); when it would not, ClientError says to set IMG2IMG_BUCKET.
    """
    from img2img.api.convert import to_manifest
    from img2img.api.errors import Problem
    from img2img.api.images import MAX_INLINE_TOTAL_CHARS, ImageError
    from img2img.api.job import JobProblems, parse_document

    data = parse_document(text, source)
    payload, prefix = _payload_of(data)
    chosen = plan_offload(payload, prefix) if payload is not None else []
    work = copy.deepcopy(data)
    work_payload, _ = _payload_of(work)
    found: list[Problem] = []
    uploads: list[tuple[Any, Any, Upload]] = []
    # the same slots in the working copy, by path
    slots = {p: (c, k) for c, k, p in image_slots(work_payload, prefix)} if work_payload is not None else {}
    for container, key, path in chosen:
        try:
            upload = _decode_for_upload(container[key], path)
        except ImageError as exc:
            found.append(Problem(path, str(exc)))
            upload = None
        wc, wk = slots[path]
        wc[wk] = f"s3://{PLACEHOLDER_BUCKET}/uploads/pending/{len(uploads)}.png"
        if upload:
            uploads.append((wc, wk, upload))
    try:
        to_manifest(work)
    except JobProblems as exc:
        found.extend(exc.problems)
    if found:
        raise JobProblems(list(dict.fromkeys(found)))
    if uploads and not bucket:
        inline = sum(len(c[k]) for c, k, _ in image_slots(payload, prefix) if _inline(c[k]))
        paths = ", ".join(u.path for _, _, u in uploads)
        if inline > MAX_INLINE_TOTAL_CHARS:
            raise ClientError(
                f"{paths}: {inline} characters of inline image data do not fit in a job (at most "
                f"{MAX_INLINE_TOTAL_CHARS}); set {BUCKET_ENV} to the operator's S3 bucket so that img2img submit "
                "uploads large images to s3://<bucket>/uploads/<namespace>/ (or pass s3:// references yourself)")
        return Prepared(data, [], [u.path for _, _, u in uploads])
    return Prepared(work, uploads, [])


# --- the cluster -------------------------------------------------------------------------------------------------

@dataclass
class Cluster:
    api: Any  # kubernetes.client.CustomObjectsApi
    namespace: str  # the context's namespace, or the service account's in a pod
    server: str

    def call(self, what: str, fn: Callable[..., T], *args, **kwargs) -> T:
        """Run one API request; every failure becomes a one-line ClientError."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            raise ClientError(f"{what}: {api_reason(exc)}") from None
        except HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            raise ClientError(f"{what}: cannot reach the Kubernetes API server at {self.server}: "
                              f"{_one_line(reason)}") from None

    def get(self, name: str, namespace: str) -> dict:
        return self.call(f"get {name}", self.api.get_namespaced_custom_object,
                         API_GROUP, API_VERSION, namespace, PLURAL, name)


def connect() -> Cluster:
    """The current kube context (``$KUBECONFIG`` or ~/.kube/config), else the pod's service account."""
    from kubernetes import client, config

    logging.getLogger("urllib3").setLevel(logging.ERROR)  # no "Retrying (…)" lines: our error says it once
    try:
        config.load_kube_config()
        _, context = config.list_kube_config_contexts()
        namespace = (context.get("context") or {}).get("namespace") or "default"
    except config.ConfigException as kube_exc:
        try:
            config.load_incluster_config()
            namespace = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text().strip()
        except (config.ConfigException, OSError):
            where = os.environ.get("KUBECONFIG") or "~/.kube/config"
            raise ClientError(f"no Kubernetes context ({where}: {_one_line(kube_exc)}); set KUBECONFIG or select a "
                              "context with `kubectl config use-context`; for the embedded stack: "
                              'eval "$(img2img local up)"') from None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ClientError(f"cannot load the kubeconfig: {_one_line(exc)}") from None
    api_client = client.ApiClient()
    return Cluster(client.CustomObjectsApi(api_client), namespace, api_client.configuration.host)


def api_reason(exc) -> str:
    """What the API server said, in one line (422: every field with its reason)."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    if not isinstance(body, dict):
        body = {}
    message = body.get("message") or exc.reason or f"HTTP {exc.status}"
    details = body.get("details") or {}
    if exc.status == 404 and not details.get("name") and "namespaces" not in message:
        return (f"the {KIND} resource ({PLURAL}.{API_GROUP}) is not installed in this cluster; install the CRD "
                "(kubectl apply --server-side -f crds/, or the Helm chart)")
    if exc.status == 401:
        return "unauthorized: the kube context's credentials were refused"
    return _one_line(message)


def _one_line(value: Any) -> str:
    return " ".join(str(value).split())


# --- S3 ----------------------------------------------------------------------------------------------------------

def s3_client():
    import boto3

    return boto3.client("s3")  # AWS_ENDPOINT_URL, AWS_REGION and the credentials come from the environment


def _s3_call(what: str, fn: Callable[..., T], *args, **kwargs) -> T:
    from botocore.exceptions import BotoCoreError, ClientError as BotoClientError

    try:
        return fn(*args, **kwargs)
    except BotoClientError as exc:
        error = exc.response.get("Error") or {}
        code, message = error.get("Code", "?"), error.get("Message") or ""
        raise ClientError(f"{what}: S3 refused ({code}{': ' + message if message else ''})") from None
    except BotoCoreError as exc:
        raise ClientError(f"{what}: S3: {_one_line(exc)}") from None


def upload(prepared: Prepared, bucket: str, namespace: str, s3=None) -> list[str]:
    """Upload the images ``prepare`` set aside; their fields then hold ``s3://bucket/uploads/<namespace>/…``."""
    done = []
    for container, key, item in prepared.uploads:
        s3 = s3 or s3_client()
        object_key = item.key(namespace)
        _s3_call(f"{item.path}: upload to s3://{bucket}/{object_key}", s3.put_object, Bucket=bucket, Key=object_key,
                 Body=item.data, ContentType=item.content_type)
        container[key] = f"s3://{bucket}/{object_key}"
        done.append(f"{item.path}: {len(item.data)} bytes uploaded to s3://{bucket}/{object_key}")
    return done


def offload_large_images(payload: dict, namespace: str, bucket: str, s3=None,
                         prefix: str = "input.payload") -> list[str]:
    """Upload the payload's large inline images (see ``plan_offload``) and reference them instead; returns the paths.

    Raises ImageError for an image that does not decode.
    """
    items = [(c, k, _decode_for_upload(c[k], p)) for c, k, p in plan_offload(payload, prefix)]
    upload(Prepared(None, items, []), bucket, namespace, s3)
    return [item.path for _, _, item in items]


# --- commands ----------------------------------------------------------------------------------------------------

def _out(text: str) -> None:
    """A line on stdout; a reader that stopped early (`| head`) is not an error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - no second error when Python flushes at exit


def _fail(command: str, exc: ClientError) -> int:
    print(f"img2img {command}: {exc}", file=sys.stderr)
    return 1


def submit_command(path: str, *, name: str | None, namespace: str | None, wait: bool, timeout: float) -> int:
    from img2img.api.job import JobProblems

    try:
        bucket = _bucket_from_env()
        try:
            prepared = prepare(read_text(path), path, bucket)
        except JobProblems as exc:
            return _problems(path, exc)
        cluster = connect()
        namespace = _namespace(prepared.data, namespace, cluster.namespace)
        for field in prepared.inline_kept:
            print(f"{field}: large inline image kept in the job ({BUCKET_ENV} is not set, so it is not offloaded "
                  "to S3)", file=sys.stderr)
        for line in upload(prepared, bucket, namespace) if prepared.uploads else ():
            print(line, file=sys.stderr)
        try:
            manifest = prepared.manifest(name, namespace)
        except JobProblems as exc:  # not expected: the request was validated with placeholders for the uploads
            return _problems(path, exc)
        metadata = manifest["metadata"]
        if not metadata.get("name") and not metadata.get("generateName"):
            metadata["generateName"] = GENERATE_NAME
        metadata["annotations"] = {**(metadata.get("annotations") or {}), SUBMITTED_AT: str(int(time.time() * 1000))}
        created = cluster.call(
            f"create {metadata.get('name') or 'job'} in namespace {namespace}",
            cluster.api.create_namespaced_custom_object, API_GROUP, API_VERSION, namespace, PLURAL, manifest,
            field_manager=FIELD_MANAGER, field_validation="Strict")
        job, uid = created["metadata"]["name"], created["metadata"]["uid"]
        print(f"img2imgjob.{API_GROUP}/{job} created in namespace {namespace}", file=sys.stderr)
        if not wait:
            _out(json.dumps({"id": uid, "status": "IN_QUEUE", "name": job, "namespace": namespace}))
            return 0
        return wait_for(cluster, namespace, job, timeout)
    except ClientError as exc:
        return _fail("submit", exc)


def _problems(path: str, exc) -> int:
    for problem in exc.problems:
        print(problem, file=sys.stderr)
    print(f"img2img submit: {path}: {len(exc.problems)} problem(s); nothing submitted", file=sys.stderr)
    return 1


def _bucket_from_env() -> str | None:
    from img2img.api.images import S3_BUCKET_PATTERN
    import re

    bucket = os.environ.get(BUCKET_ENV, "").strip() or None
    if bucket and not re.match(S3_BUCKET_PATTERN, bucket):
        raise ClientError(f"{BUCKET_ENV}={bucket!r} is not a valid S3 bucket name")
    return bucket


def _namespace(data: Any, flag: str | None, default: str) -> str:
    meta = data.get("metadata") if isinstance(data, dict) else None
    own = meta.get("namespace") if isinstance(meta, dict) else None
    if flag and own and flag != own:
        raise ClientError(f"the manifest's namespace {own!r} does not match -n {flag!r}")
    return flag or own or default


def _progress(job: str, status: dict) -> str:
    state = status.get("status") or "IN_QUEUE"
    extra = []
    if status.get("queuePosition") is not None and state == "IN_QUEUE":
        extra.append(f"queue position {status['queuePosition']}")
    if status.get("attempts"):
        extra.append(f"attempt {status['attempts']}")
    if status.get("runnerPod") and state == "IN_PROGRESS":
        extra.append(f"pod {status['runnerPod']}")
    if status.get("error") and state in TERMINAL:
        extra.append(status["error"])
    return f"{job}: {state}" + (f" ({', '.join(extra)})" if extra else "")


def wait_for(cluster: Cluster, namespace: str, job: str, timeout: float, poll: float = POLL_SECONDS) -> int:
    """Follow the job until it ends: progress lines on stderr, the final RunPod-shaped status JSON on stdout."""
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
            line = _progress(job, status)
            if obj and line != last_line:
                print(line, file=sys.stderr)
                last_line = line
            state = status.get("status")
            if state in TERMINAL:
                _out(json.dumps(runpod_view(status, obj["metadata"].get("uid")), indent=2))
                return 0 if state == "COMPLETED" else 1
            if time.monotonic() >= deadline:
                break
            elapsed = time.monotonic() - started
            time.sleep(min(poll if elapsed < 30 else 2 * poll, max(0.0, deadline - time.monotonic())))
    except KeyboardInterrupt:
        print(f"\n{job}: stopped waiting; the job goes on (img2img status {job} -n {namespace})", file=sys.stderr)
        raise
    if trouble is not None and not obj:
        raise trouble
    print(f"{job}: still {(obj.get('status') or {}).get('status') or 'IN_QUEUE'} after {timeout:g} s; the job goes "
          f"on (img2img status {job} -n {namespace})", file=sys.stderr)
    _out(json.dumps(runpod_view(obj.get("status") or {}, (obj.get("metadata") or {}).get("uid")), indent=2))
    return EXIT_WAIT_TIMEOUT


def _get_job(cluster: Cluster, name: str, namespace: str) -> dict:
    try:
        return cluster.get(name, namespace)
    except ClientError as exc:
        if "not found" in str(exc) and "not installed" not in str(exc):
            raise ClientError(f"{KIND} {name!r} not found in namespace {namespace!r}") from None
        raise


def status_command(name: str, *, namespace: str | None) -> int:
    try:
        cluster = connect()
        job = _get_job(cluster, name, namespace or cluster.namespace)
    except ClientError as exc:
        return _fail("status", exc)
    _out(json.dumps(runpod_view(job.get("status") or {}, job["metadata"].get("uid")), indent=2))
    return 0


def fetch_command(name: str, output: Path, *, namespace: str | None) -> int:
    try:
        cluster = connect()
        job = _get_job(cluster, name, namespace or cluster.namespace)
        status = job.get("status") or {}
        images = (status.get("output") or {}).get("images") or []
        state = status.get("status") or "IN_QUEUE"
        if not images:
            why = f": {status['error']}" if status.get("error") else ""
            raise ClientError(f"{name}: no images (the job is {state}{why})")
        targets = _targets(images, output)
        try:
            output.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ClientError(f"{output}: cannot create the folder: {exc.strerror or exc}") from None
        s3 = s3_client()
        for uri, target in zip(images, targets):
            bucket, key = _split_s3(uri)
            try:
                _s3_call(f"download {uri}", s3.download_file, bucket, key, str(target))
            except OSError as exc:
                raise ClientError(f"{target}: cannot write: {exc.strerror or exc}") from None
            _out(str(target))
        if state != "COMPLETED":
            print(f"img2img fetch: note: the job is {state}", file=sys.stderr)
        return 0
    except ClientError as exc:
        return _fail("fetch", exc)


def _split_s3(uri: str) -> tuple[str, str]:
    try:
        return split_s3_uri(uri)
    except ValueError as exc:
        raise ClientError(f"{exc}; cannot download it") from None


def _targets(images: list[str], output: Path) -> list[Path]:
    """A local file per image: the key's file name (0.png, 1.png…), numbered when names repeat."""
    names = [Path(_split_s3(uri)[1]).name for uri in images]
    if len(set(names)) != len(names):
        names = [f"{i}-{n}" for i, n in enumerate(names)]
    return [output / n for n in names]
