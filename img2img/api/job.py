"""The Img2ImgJob resource: ``spec`` = the RunPod ``input`` plus Kubernetes-side controls beside it.

Controls are all optional here; their defaults come from the operator's configuration (Helm values), so one place
decides them. ``load_job`` reads what users hand the CLI: a RunPod request (``{"input": {...}}``) or an Img2ImgJob
manifest, JSON or YAML, and returns the job or every problem with its field path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from img2img import API_GROUP, API_VERSION, KIND
from img2img.api.base import ApiModel
from img2img.api.envelope import RunPodInput, RunPodRequest, WebhookUrl, private_addresses
from img2img.api.errors import PATTERN_MEANINGS, Problem, problems
from img2img.api.images import S3_BUCKET_PATTERN
from img2img.api.limits import MAX_NESTING_DEPTH
from img2img.api.status import JobStatus

API_VERSION_FULL = f"{API_GROUP}/{API_VERSION}"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
PATTERN_MEANINGS[DNS_LABEL] = "a DNS label (lowercase letters, digits and '-', starting and ending alphanumeric)"
PATTERN_MEANINGS[S3_BUCKET_PATTERN] = "an S3 bucket name (3-63 lowercase letters, digits, '.' and '-')"
GENERATE_NAME = "img2img-"
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600  # RunPod's executionTimeout maximum
MAX_RETRIES = 10
MAX_TTL_SECONDS = 365 * 24 * 3600


class OutputLocation(ApiModel):
    """Where the job's images and result.json go: ``s3://<bucket>/<prefix>/<namespace>/<job>/<uid>/``."""

    bucket: str | None = Field(None, max_length=63, pattern=S3_BUCKET_PATTERN)
    prefix: str | None = Field(None, max_length=512, pattern=r"^[^\s]*$", description="key prefix, no spaces")


class Img2ImgJobSpec(ApiModel):
    input: RunPodInput = Field(..., description="the RunPod request's input, verbatim: api and payload")
    priority: int | None = Field(None, ge=-1000, le=1000, description="higher runs first; equal: first come")
    gpuClass: str | None = Field(None, max_length=63, pattern=DNS_LABEL, description="GPU class from the "
                                 "operator configuration")
    timeoutSeconds: int | None = Field(None, ge=1, le=MAX_TIMEOUT_SECONDS, description="run-time limit per "
                                       "attempt; exceeded -> TIMED_OUT")
    retries: int | None = Field(None, ge=0, le=MAX_RETRIES, description="retries after the first attempt, for "
                                "transient failures")
    output: OutputLocation | None = None
    ttlSecondsAfterFinished: int | None = Field(None, ge=0, le=MAX_TTL_SECONDS, description="delete the job "
                                                "this long after it finished")
    cancel: bool | None = Field(None, description="true cancels the job; cannot be undone")
    webhook: WebhookUrl | None = Field(None, description="https URL the job's RunPod status is POSTed to when it "
                                       "ends, signed (Standard Webhooks, ed25519)")


class ObjectMeta(BaseModel):
    # metadata read back from a cluster carries uid, resourceVersion, managedFields…: kept, not checked
    model_config = ConfigDict(extra="allow")

    name: str | None = Field(None, max_length=253)
    generateName: str | None = Field(None, max_length=253)
    namespace: str | None = Field(None, max_length=63)
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class Img2ImgJob(ApiModel):
    apiVersion: Literal[API_VERSION_FULL]  # type: ignore[valid-type]  # a constant: img2img/__init__.py
    kind: Literal[KIND]  # type: ignore[valid-type]
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: Img2ImgJobSpec
    status: JobStatus | None = None

    def manifest(self) -> dict[str, Any]:
        """The job as a manifest to create: spec as sent (values normalized), no status."""
        return {"apiVersion": self.apiVersion, "kind": self.kind,
                "metadata": self.metadata.model_dump(mode="json", exclude_none=True),
                "spec": self.spec.sent()}


class JobProblems(Exception):
    """A job that cannot run, with every problem found."""

    def __init__(self, found: list[Problem]):
        super().__init__("\n".join(str(p) for p in found))
        self.problems = found


@dataclass(frozen=True)
class LoadedJob:
    job: Img2ImgJob
    from_runpod_request: bool  # True: the file was a RunPod request, the manifest was made from it


def parse_document(text: str, source: str = "input") -> Any:
    """JSON or YAML text -> data; malformed text -> JobProblems naming the line and column."""
    stripped = text.lstrip()
    too_deep = Problem("", f"{source}: lists and objects are nested too deeply to read (at most "
                           f"{MAX_NESTING_DEPTH} levels are accepted in a job's values)")
    if stripped.startswith(("{", "[")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise JobProblems([Problem("", f"{source}: not valid JSON: {exc.msg} "
                                           f"(line {exc.lineno}, column {exc.colno})")]) from None
        except RecursionError:  # past Python's recursion limit (~1000 levels)
            raise JobProblems([too_deep]) from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except RecursionError:
        raise JobProblems([too_deep]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        what = getattr(exc, "problem", None) or str(exc)
        raise JobProblems([Problem("", f"{source}: not valid YAML: {what}{where}")]) from None
    if len(documents) != 1:
        raise JobProblems([Problem("", f"{source}: expected one document, found {len(documents)}")])
    return documents[0]


def job_from_data(data: Any, allow_private_addresses: bool = False) -> LoadedJob:
    """A RunPod request or an Img2ImgJob manifest (already parsed) -> the validated job. ``allow_private_addresses``:
    the webhook may be plain http and name a private address (``img2img.api.addresses``)."""
    context = private_addresses(allow_private_addresses)
    if not isinstance(data, dict):
        raise JobProblems([Problem("", "expected an object: a RunPod request {\"input\": …} or an Img2ImgJob "
                                       "manifest")])
    if "input" in data and "spec" not in data and "kind" not in data:
        try:
            request = RunPodRequest.model_validate(data, context=context)
        except ValidationError as exc:
            raise JobProblems(problems(exc)) from None
        spec = Img2ImgJobSpec.model_validate({"input": request.input, **request.job_controls()}, context=context)
        job = Img2ImgJob(apiVersion=API_VERSION_FULL, kind=KIND, metadata=ObjectMeta(generateName=GENERATE_NAME),
                         spec=spec)
        return LoadedJob(job, from_runpod_request=True)
    if "kind" in data or "apiVersion" in data or "spec" in data:
        try:
            return LoadedJob(Img2ImgJob.model_validate(data, context=context), from_runpod_request=False)
        except ValidationError as exc:
            raise JobProblems(problems(exc)) from None
    raise JobProblems([Problem("", "neither a RunPod request ({\"input\": {\"api\": …, \"payload\": …}}) nor an "
                                   f"{KIND} manifest (apiVersion {API_VERSION_FULL}, kind {KIND})")])


def load_job(text: str, source: str = "input") -> LoadedJob:
    """JSON/YAML text of a RunPod request or an Img2ImgJob manifest -> the validated job, or JobProblems."""
    return job_from_data(parse_document(text, source))
