"""A job's spec, checked with the shared API models, its controls with the configuration's defaults, and what it
needs of a runner. Pure.

A spec the models refuse, that names a GPU class the configuration does not have, that asks for more than its
namespace's policy allows (``config.NamespacePolicy``), or that writes or reads outside its namespace's S3 areas
(``area_problems``) cannot run: the job ends FAILED at once, its error naming every bad field
(``spec.input.payload.steps: must be at least 1``, ``spec.priority: 1000 is above 100, …``, ``spec.output.prefix:
s3://img2img/jobs/team-b is not an output location of namespace 'team-a'; …``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from img2img.api.envelope import private_addresses
from img2img.api.errors import Problem, problems
from img2img.api.image_formats import ImageFormat
from img2img.api.images import IMAGES_DECODED, S3Ref, plain_key, s3_allowed
from img2img.api.job import Img2ImgJobSpec
from img2img.api.needs import output_image_bound, required_models, s3_image_fields, s3_images
from img2img.api.payload import ProcessingPayload

from .config import NamespacePolicy, OperatorConfig


@dataclass(frozen=True)
class Controls:
    """The Kubernetes-side controls of a job, defaults applied."""

    priority: int
    gpu_class: str
    timeout_seconds: int
    retries: int
    ttl_seconds_after_finished: int | None
    cancel: bool = False
    output_bucket: str | None = None
    output_prefix: str | None = None


@dataclass(frozen=True)
class Needs:
    """What a job needs of a runner (``img2img.api.needs``)."""

    models: frozenset[str]  # model keys: the runner is warm for the job when it serves them all
    images: int  # at most this many images come back (upload URLs to sign)
    image_format: ImageFormat  # what they are uploaded as (key extension, content type the URLs are signed for)
    reads: tuple[S3Ref, ...]  # the s3:// images it reads (GET URLs to sign, when the namespace may read them)


@dataclass(frozen=True)
class Checked:
    """The outcome of checking a spec: controls, the problems that stop it from running (if any), and for a valid
    spec what it needs of a runner."""

    controls: Controls
    problems: tuple[Problem, ...] = ()
    needs: Needs | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def describe(self) -> str:
        return "; ".join(str(p) for p in self.problems)


def _int(value: Any, default: int | None) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return default
    return value


def controls_from(spec: Mapping[str, Any], config: OperatorConfig) -> Controls:
    """Controls from a raw spec, leniently (wrong types fall back to defaults): usable even for a refused job."""
    d = config.defaults
    output = spec.get("output") if isinstance(spec.get("output"), Mapping) else {}
    gpu_class = spec.get("gpuClass") if isinstance(spec.get("gpuClass"), str) else None
    return Controls(
        priority=_int(spec.get("priority"), d.priority),
        gpu_class=gpu_class or config.default_class,
        timeout_seconds=_int(spec.get("timeoutSeconds"), d.timeout_seconds),
        retries=_int(spec.get("retries"), d.retries),
        ttl_seconds_after_finished=_int(spec.get("ttlSecondsAfterFinished"), d.ttl_seconds_after_finished),
        cancel=spec.get("cancel") is True,
        output_bucket=output.get("bucket") or None,
        output_prefix=output.get("prefix") if isinstance(output.get("prefix"), str) else None,
    )


def check_spec(spec: Mapping[str, Any], namespace: str, config: OperatorConfig,
               decode_images: bool = True) -> Checked:
    """Validate ``spec`` with the shared models, the configuration (GPU classes; whether a webhook may reach a
    private address), ``namespace``'s policy and its S3 areas. ``decode_images``: False when an earlier check of
    this very spec decoded its inline images (their sizes are still checked, their pixels not decoded again)."""
    controls = controls_from(spec, config)
    found: list[Problem] = []
    needs = None
    try:
        context = {**private_addresses(config.webhooks.allow_private_addresses), IMAGES_DECODED: not decode_images}
        payload = Img2ImgJobSpec.model_validate(dict(spec), context=context).input.payload
        needs = Needs(required_models(payload, None), output_image_bound(payload), payload.image_encoding.format,
                      tuple(s3_images(payload)))
        found += policy_problems(controls, payload, config.policy.of(namespace), namespace)
        found += area_problems(controls, payload, namespace, config)
    except ValidationError as exc:
        found += problems(exc, "spec")
    if controls.gpu_class not in config.gpu_classes:
        known = ", ".join(sorted(config.gpu_classes))
        found.append(Problem("spec.gpuClass", f"unknown GPU class {controls.gpu_class!r} (known: {known})"))
    return Checked(controls, tuple(found), needs if not found else None)


def policy_problems(controls: Controls, payload: ProcessingPayload, caps: NamespacePolicy,
                    namespace: str) -> list[Problem]:
    """What a valid job asks for beyond its namespace's caps (the defaults of left-out controls are within them:
    the configuration is checked for that)."""
    found = []
    for path, value, cap, what in (
            ("spec.priority", controls.priority, caps.max_priority, "the highest priority"),
            ("spec.timeoutSeconds", controls.timeout_seconds, caps.max_timeout_seconds, "the longest timeout"),
            ("spec.retries", controls.retries, caps.max_retries, "the most retries")):
        if cap is not None and value > cap:
            found.append(Problem(path, f"{value} is above {cap}, {what} a job of namespace {namespace!r} may ask "
                                       "for (the operator's policy)"))
    if caps.max_megapixel_steps is not None:
        too_much = payload.compute.refusal(caps.max_megapixel_steps, f"the most a job of namespace {namespace!r} "
                                                                     "may ask for (the operator's policy)")
        if too_much:
            found.append(Problem("spec.input.payload", too_much))
    return found


def area_problems(controls: Controls, payload: ProcessingPayload, namespace: str, config: OperatorConfig
                  ) -> list[Problem]:
    """Where a valid job would write or read outside its namespace's S3 areas: an output location the namespace may
    not use (``S3Config.output_refusal``), an ``s3://`` image it may not read (``S3Config.allowed_reads``)."""
    found = []
    refused = config.s3.output_refusal(namespace, controls.output_bucket, controls.output_prefix)
    if refused is not None:
        found.append(Problem(*refused))
    allowed = config.s3.allowed_reads(namespace)
    for field, ref in s3_image_fields(payload):
        if not plain_key(ref.key) or not s3_allowed(ref, allowed):
            found.append(Problem(f"spec.{field}", f"{ref}: namespace {namespace!r} may not read it; it may read "
                                                  f"{', '.join(allowed)} (the operator's s3.allowedReadPrefixes)"))
    return found
