"""The gateway's configuration: one YAML file (the chart renders it from its values), found at ``--config PATH`` or
``$IMG2IMG_GATEWAY_CONFIG``. Keys are camelCase; unknown keys are an error naming them. A minimal file::

    s3: {bucket: img2img}
    endpoints:
      sdxl: {namespace: team-a}                 # RunPod endpoint id -> the namespace its jobs live in
    keys:
      - {secret: team-a-runpod-key, endpoints: [sdxl]}

An endpoint is a view of one namespace: its jobs (any job there, kubectl's too) and the job controls its requests
get by default (``jobDefaults``: GPU class, priority, timeout, retries, TTL, output location), and how answers carry
images (``output``). A key is a Secret in the gateway's namespace (its value under ``secretKey``), valid for the
endpoints listed (``["*"]``: every one), with its own rate limit.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from img2img.api.answer import OutputMode
from img2img.api.errors import problems
from img2img.api.images import S3_BUCKET_PATTERN
from img2img.api.job import DNS_LABEL, Img2ImgJobSpec
from img2img.api.limits import PRESIGN_MAX_SECONDS
from img2img.api.webhook_signing import PUBLIC_KEY_CONFIG_MAP

CONFIG_ENV = "IMG2IMG_GATEWAY_CONFIG"
ENDPOINT_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
ALL_ENDPOINTS = "*"
DEFAULT_NAMESPACE = "img2img-system"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# The job controls an endpoint may default, with the constraints the job's own fields have.
DEFAULTABLE = ("gpuClass", "priority", "timeoutSeconds", "retries", "ttlSecondsAfterFinished", "output")
JobDefaults = create_model(  # type: ignore[call-overload]
    "JobDefaults", __base__=_Model,
    **{name: (Img2ImgJobSpec.model_fields[name].annotation, Img2ImgJobSpec.model_fields[name])
       for name in DEFAULTABLE})


class Endpoint(_Model):
    namespace: str = Field(..., max_length=63, pattern=DNS_LABEL)
    jobDefaults: JobDefaults = Field(default_factory=JobDefaults)  # type: ignore[valid-type]
    output: OutputMode = OutputMode.BASE64

    def defaults(self) -> dict[str, Any]:
        return self.jobDefaults.model_dump(mode="json", exclude_none=True)


class RateLimit(_Model):
    """A token bucket per key: ``requestsPerSecond`` on average, ``burst`` at once."""

    requestsPerSecond: float = Field(..., gt=0)
    burst: int = Field(..., ge=1)


class KeyRef(_Model):
    secret: str = Field(..., max_length=253, description="a Secret in the gateway's namespace")
    secretKey: str = Field("key", max_length=253, description="the Secret's data key holding the API key")
    endpoints: list[str] = Field(..., min_length=1, description="endpoint ids this key may use; ['*']: all")
    rateLimit: RateLimit | None = None


class S3(_Model):
    """The job bucket: the gateway reads result images from it and offloads large inline images into it.
    Credentials come from the environment (AWS_ACCESS_KEY_ID… or a cloud identity), as for boto3."""

    bucket: str = Field(..., pattern=S3_BUCKET_PATTERN)
    endpoint: str | None = None
    region: str | None = None


class GatewayConfig(_Model):
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=0, le=65535)
    namespace: str = Field(default_factory=lambda: os.environ.get("POD_NAMESPACE") or DEFAULT_NAMESPACE,
                           description="where the key Secrets are: the gateway's own namespace")
    runnerNamespace: str = Field(DEFAULT_NAMESPACE, description="where the RunnerPools are (health's workers)")
    catalogPath: str | None = Field(None, description="the model catalog, for the A1111 discovery calls")
    s3: S3
    presignExpirySeconds: int = Field(3600, ge=60, le=PRESIGN_MAX_SECONDS)
    endpoints: dict[str, Endpoint] = Field(..., min_length=1)
    keys: list[KeyRef] = Field(default_factory=list)
    keyRefreshSeconds: float = Field(30, gt=0, description="how often key Secrets are read again (rotation)")
    imageCacheBytes: int = Field(64 * 1024 * 1024, ge=0, description="base64 answers kept in memory")
    allowPrivateAddresses: bool = Field(False, description="a request's s3Config.endpointUrl and webhook may be plain "
                                        "http and a private or loopback address (inside the cluster); off: https to "
                                        "public addresses only, the image fetches' rule")
    webhookPublicKeyConfigMap: str = Field(PUBLIC_KEY_CONFIG_MAP, min_length=1, max_length=253,
                                           description="the ConfigMap in the gateway's namespace where the operator "
                                           "publishes the key its webhooks are signed with (served at "
                                           "/v2/webhook-public-key)")

    @model_validator(mode="after")
    def _references(self) -> GatewayConfig:
        for endpoint_id in self.endpoints:
            if not re.match(ENDPOINT_ID, endpoint_id):
                raise ValueError(f"endpoints: {endpoint_id!r} is not an endpoint id (letters, digits, '-' and '_')")
        for i, key in enumerate(self.keys):
            unknown = [e for e in key.endpoints if e != ALL_ENDPOINTS and e not in self.endpoints]
            if unknown:
                raise ValueError(f"keys[{i}].endpoints: {', '.join(map(repr, unknown))} not in endpoints "
                                 f"({', '.join(self.endpoints)})")
        return self

    @property
    def namespaces(self) -> list[str]:
        """The namespaces the endpoints read and write jobs in."""
        return sorted({e.namespace for e in self.endpoints.values()})


class ConfigError(Exception):
    """The configuration file is missing or wrong; the message names the file and every bad key."""


def parse_config(data: Any, source: str = "<config>") -> GatewayConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        lines = "\n".join(f"  {p}" for p in problems(exc))
        raise ConfigError(f"{source}: invalid gateway configuration\n{lines}") from None


def load_config(path: str | os.PathLike | None = None) -> GatewayConfig:
    path = path or os.environ.get(CONFIG_ENV)
    if not path:
        raise ConfigError(f"no configuration: pass --config PATH or set ${CONFIG_ENV}")
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the gateway configuration: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(data, str(path))
