"""The operator's configuration: one YAML file, rendered by the Helm chart from its values.

The file is found at ``--config PATH`` or ``$IMG2IMG_OPERATOR_CONFIG``. Keys are camelCase, as in Kubernetes
manifests and Helm values; unknown keys are an error (a typo must not silently fall back to a default).

A minimal file::

    s3: {bucket: img2img}
    gpuClasses:
      l4: {resources: {nvidia.com/gpu: 1, memory: 24Gi}, maxConcurrent: 4}
    defaultGpuClass: l4

Everything else has a default documented on its field below.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from img2img import uploads_prefix
from img2img.api.images import S3_BUCKET_PATTERN, plain_key
from img2img.api.job import DNS_LABEL, MAX_RETRIES, MAX_TIMEOUT_SECONDS
from img2img.api.limits import MAX_MEGAPIXEL_STEPS, PRESIGN_MAX_SECONDS
from img2img.api.protocol import MAX_WAIT_SECONDS
from img2img.api.webhook_signing import PUBLIC_KEY_CONFIG_MAP, SIGNING_KEY_SECRET
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

CONFIG_ENV = "IMG2IMG_OPERATOR_CONFIG"

Quantity = int | float | str  # a Kubernetes quantity as YAML gives it: 1, 0.5, "16Gi"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.capitalize() for word in rest)


class _Camel(_Model):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, alias_generator=_camel)


class ResourceRequirements(_Camel):
    """A container's ``resources``: quantities by resource name."""

    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)


class ModelCache(_Camel):
    """Where runners keep downloaded models between jobs. Exactly one source, mounted at ``mountPath``.

    - ``persistentVolumeClaim``: a claim name (ReadWriteMany when several GPU nodes share it);
    - ``hostPath``: a directory on the node (a node-local cache);
    - neither: an ``emptyDir`` (models are fetched again by every pod), bounded by ``sizeLimit``.
    """

    persistent_volume_claim: str | None = None
    host_path: str | None = None
    size_limit: str | None = None
    mount_path: str = "/models"
    read_only: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> ModelCache:
        if self.persistent_volume_claim and self.host_path:
            raise ValueError("set persistentVolumeClaim or hostPath, not both")
        return self

    @property
    def kind(self) -> Literal["persistentVolumeClaim", "hostPath", "emptyDir"]:
        if self.persistent_volume_claim:
            return "persistentVolumeClaim"
        if self.host_path:
            return "hostPath"
        return "emptyDir"


class SecurityContext(_Camel):
    """The runner runs under the "restricted" Pod Security Standard; only the identity is configurable."""

    run_as_user: int = 1000
    run_as_group: int = 1000
    fs_group: int | None = 1000
    read_only_root_filesystem: bool = True


class SecretKeyRef(_Camel):
    name: str
    key: str = "HF_TOKEN"


class RunnerConfig(_Camel):
    """The runner pod: what runs, with which identity, with which volumes."""

    image: str = "ghcr.io/img2img-operator/runner:0.1.0"
    command: list[str] = Field(default_factory=lambda: ["img2img-runner"])
    args: list[str] = Field(default_factory=list)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: list[str] = Field(default_factory=list)
    # The runners' own ServiceAccount: no API rights; its token is never mounted. None = the namespace's default.
    service_account_name: str | None = "img2img-runner"
    # Defaults for every runner; the GPU class's resources are laid over them.
    resources: ResourceRequirements = Field(
        default_factory=lambda: ResourceRequirements(requests={"cpu": "1", "memory": "4Gi"})
    )
    # None = no cache volume (the runner keeps models under /tmp, lost with the pod).
    model_cache: ModelCache | None = None
    # The model catalog: a ConfigMap mounted at catalogPath (key catalogKey), or, without a ConfigMap,
    # a path that already exists in the runner's file system (baked into the image, or a host path locally).
    catalog_config_map: str | None = None
    catalog_key: str = "catalog.yaml"
    catalog_path: str | None = "/etc/img2img/catalog/catalog.yaml"
    # Hosts https:// input images may come from; empty = any public host.
    allowed_hosts: list[str] = Field(default_factory=list)
    # Extra plain environment variables for the runner container.
    env: dict[str, str] = Field(default_factory=dict)
    # A Secret key (in the runner namespace) holding a Hugging Face token, given to runners as HF_TOKEN: for catalog
    # entries naming a gated or private hub repository. None = no token.
    hub_token_secret: SecretKeyRef | None = None
    security_context: SecurityContext = Field(default_factory=SecurityContext)
    tmp_size_limit: str | None = "8Gi"
    termination_grace_period_seconds: int = Field(30, ge=0)
    pod_labels: dict[str, str] = Field(default_factory=dict)
    pod_annotations: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _catalog(self) -> RunnerConfig:
        if self.catalog_config_map and not self.catalog_path:
            raise ValueError("catalogConfigMap needs catalogPath (where to mount it)")
        return self


class S3Config(_Camel):
    """Where jobs are staged and results land: ``s3://<bucket>/<prefix>/<namespace>/<job>/<uid>/``.

    A namespace's *area* under a location ``s3://bucket/prefix`` is ``s3://bucket/prefix/<namespace>/``: the
    namespace always comes first beneath the location, so two namespaces never share one. A job writes only under an
    output location its namespace may use (``output_refusal``) and reads only its areas, its uploads and the
    configured extra prefixes (``allowed_reads``).
    """

    bucket: str
    prefix: str = "jobs"
    endpoint: str | None = None  # None = AWS; set for MinIO, Ceph, R2, …
    region: str | None = None
    # The Secret (keys AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) the chart gives the operator its own S3 credentials
    # from (the operator reads them from its environment). None = a cloud identity (IRSA, workload identity).
    # Runners never get credentials to the job areas: each assignment carries presigned URLs.
    credentials_secret: str | None = None
    # s3:// prefixes a job may read input images from, by namespace ("*" = every namespace). A namespace's own
    # areas and its uploads area are always allowed.
    allowed_read_prefixes: dict[str, list[str]] = Field(default_factory=dict)
    # Output locations (s3://bucket/prefix) a job's spec.output may name, by namespace ("*" = every namespace).
    # s3://<bucket>/<prefix>, where a job without spec.output goes, is always allowed. Locations may not nest.
    allowed_output_locations: dict[str, list[str]] = Field(default_factory=dict)
    # Lifetime of the presigned result URLs the operator adds to a completed job's status.output; 0 = none.
    presign_expiry_seconds: int = Field(0, ge=0, le=PRESIGN_MAX_SECONDS)
    # What becomes of a job's objects (input.json, every attempt's images and result.json: its area
    # <location>/<namespace>/<job>/<uid>/, under s3.prefix or its spec.output location) once the job is deleted, by a
    # user or at ttlSecondsAfterFinished: Delete (the operator removes them: it made them, and deleting a job is how
    # a user says it is done with it) or Retain (kept; a bucket lifecycle rule may expire them: docs/storage.md).
    reclaim_policy: Literal["Delete", "Retain"] = "Delete"

    @model_validator(mode="after")
    def _areas_apart(self) -> S3Config:
        """Every location's areas are ``<location>/<namespace>/``: a location inside another one (or inside the
        uploads area, ``uploads/<namespace>/``) would put its keys into some namespace's area there."""
        for namespace, entries in self.allowed_output_locations.items():
            if namespace != "*" and not re.fullmatch(DNS_LABEL, namespace):
                raise ValueError(f"allowedOutputLocations: {namespace!r} is not a namespace name (a DNS label) or '*'")
            for entry in entries:
                if location_of(entry) is None:
                    raise ValueError(f"allowedOutputLocations.{namespace}: {entry!r} is not an s3://bucket[/prefix] "
                                     "location (a prefix of plain key segments)")
        if not _plain_prefix(self.prefix):
            raise ValueError(f"prefix: {self.prefix!r} is not a key prefix (plain key segments, no white space)")
        roots = {self.default_location: "s3.prefix", f"s3://{self.bucket}/{UPLOADS}": "the uploads area"}
        for namespace, entries in self.allowed_output_locations.items():
            roots.update({location_of(e): f"allowedOutputLocations.{namespace}" for e in entries
                          if location_of(e) not in roots})
        for inner, where in roots.items():
            for outer, other in roots.items():
                if inner != outer and inner.startswith(outer + "/"):
                    raise ValueError(f"{where}: {inner} lies inside {outer} ({other}), where every namespace has "
                                     f"its own area ({outer}/<namespace>/): its keys would land in one of them")
        return self

    @property
    def default_location(self) -> str:
        """Where jobs without ``spec.output`` go."""
        return _location(self.bucket, self.prefix)

    def job_prefix(self, namespace: str, name: str, uid: str, bucket: str | None = None,
                   prefix: str | None = None) -> str:
        """``s3://bucket/prefix/namespace/name/uid/`` for one job (the job's own output location if it has one)."""
        location = _location(bucket or self.bucket, self.prefix if prefix is None else prefix)
        return f"{location}/{namespace}/{name}/{uid}/"

    def output_locations(self, namespace: str) -> list[str]:
        """The locations a job of ``namespace`` may write under: the default one, then the configured ones."""
        extra = self.allowed_output_locations.get("*", []) + self.allowed_output_locations.get(namespace, [])
        return list(dict.fromkeys([self.default_location, *(str(location_of(e)) for e in extra)]))

    def output_refusal(self, namespace: str, bucket: str | None, prefix: str | None) -> tuple[str, str] | None:
        """(field, reason) when a job of ``namespace`` may not write under ``spec.output`` (bucket, prefix); None
        when it may. The one rule for where results land: the operator checks every job with it."""
        allowed = self.output_locations(namespace)
        bucket, prefix = bucket or self.bucket, self.prefix if prefix is None else prefix
        wanted = _location(bucket, prefix)
        if _plain_prefix(prefix) and wanted in allowed:
            return None
        buckets = {a[5:].partition("/")[0] for a in allowed}
        field = "spec.output.prefix" if bucket in buckets else "spec.output.bucket"
        return field, (f"{wanted} is not an output location of namespace {namespace!r}; it may use "
                       f"{', '.join(allowed)} (the operator's s3.allowedOutputLocations)")

    def allowed_reads(self, namespace: str) -> list[str]:
        """The namespace's areas under every output location it may use, its uploads area (where `img2img submit`
        offloads large inline images), and the configured extra prefixes."""
        areas = [f"{location}/{namespace}/" for location in self.output_locations(namespace)]
        uploads = f"s3://{self.bucket}/{uploads_prefix(namespace)}"
        extra = self.allowed_read_prefixes.get("*", []) + self.allowed_read_prefixes.get(namespace, [])
        return list(dict.fromkeys([*areas, uploads, *extra]))


UPLOADS = uploads_prefix("").strip("/")  # the uploads area's root: uploads/<namespace>/ beneath it


def _location(bucket: str, prefix: str) -> str:
    """``s3://bucket/prefix`` without slashes at the prefix's ends (``s3://bucket`` for an empty prefix)."""
    prefix = prefix.strip("/")
    return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"


def _plain_prefix(prefix: str) -> bool:
    """A key prefix of plain segments (no empty, ``.`` or ``..`` one within it, no white space); "" is one."""
    prefix = prefix.strip("/")
    return not prefix or (plain_key(prefix) and not re.search(r"\s", prefix))


def location_of(text: str) -> str | None:
    """``s3://bucket[/prefix]`` in the form ``_location`` gives; None when it is not one (a bad bucket name, a
    prefix that is not plain)."""
    if not text.startswith("s3://"):
        return None
    bucket, _, prefix = text[5:].partition("/")
    if not re.fullmatch(S3_BUCKET_PATTERN, bucket) or not _plain_prefix(prefix):
        return None
    return _location(bucket, prefix)


class Toleration(_Camel):
    key: str | None = None
    operator: Literal["Equal", "Exists"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class GpuClass(_Camel):
    """A kind of GPU node: what a runner asks for and where it may land."""

    # Laid over runner.resources as both requests and limits (GPUs must not be overcommitted).
    resources: dict[str, Quantity] = Field(default_factory=lambda: {"nvidia.com/gpu": 1})
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    priority_class_name: str | None = None
    max_concurrent: int | None = Field(None, ge=0)  # None = no limit of its own


class QueueConfig(_Camel):
    """Admission limits on top of the GPU classes' own; None = no limit. Per namespace: ``policy``."""

    max_concurrent: int | None = Field(None, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and "maxConcurrentPerNamespace" in data:
            raise ValueError("maxConcurrentPerNamespace moved to policy.default.maxConcurrent (and per namespace: "
                             "policy.namespaces.<namespace>.maxConcurrent)")
        return data


class NamespacePolicy(_Camel):
    """What the jobs of one namespace may ask for; None = no cap of the policy's own. A job over a cap ends FAILED
    (InvalidSpec), naming the field and the cap; ``maxConcurrent`` jobs of the namespace run at once, the others
    wait in the queue. The defaults suit a cluster shared by tenants."""

    max_priority: int | None = Field(100, ge=-1000, le=1000)
    max_timeout_seconds: int | None = Field(6 * 3600, ge=1, le=MAX_TIMEOUT_SECONDS)
    max_retries: int | None = Field(3, ge=0, le=MAX_RETRIES)
    max_concurrent: int | None = Field(8, ge=0)
    # width x height x steps x images / 10^6 (img2img.api.limits.Compute); the API's own ceiling is the most
    max_megapixel_steps: float | None = Field(2000, gt=0, le=MAX_MEGAPIXEL_STEPS)


class Policy(_Camel):
    """Caps per namespace: ``default`` for every namespace; an entry of ``namespaces`` replaces the keys it sets."""

    default: NamespacePolicy = Field(default_factory=NamespacePolicy)
    namespaces: dict[str, NamespacePolicy] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _namespace_names(self) -> Policy:
        bad = [name for name in self.namespaces if not re.fullmatch(DNS_LABEL, name)]
        if bad:
            raise ValueError(f"namespaces: {', '.join(map(repr, bad))} is not a namespace name (a DNS label)")
        return self

    def of(self, namespace: str) -> NamespacePolicy:
        override = self.namespaces.get(namespace)
        if override is None:
            return self.default
        return self.default.model_copy(update=override.model_dump(exclude_unset=True))


class JobDefaults(_Camel):
    """Values for the job controls a job leaves out."""

    priority: int = 0
    timeout_seconds: int = Field(3600, ge=1)
    retries: int = Field(2, ge=0)
    ttl_seconds_after_finished: int | None = Field(None, ge=0)  # None = keep finished jobs


class RetryBackoff(_Camel):
    """Delay before attempt n+1: initialSeconds · 2^(n−1), at most maxSeconds."""

    initial_seconds: float = Field(10, ge=0)
    max_seconds: float = Field(300, ge=0)

    def delay(self, failed_attempt: int) -> float:
        return min(self.max_seconds, self.initial_seconds * 2 ** max(0, failed_attempt - 1))


class Waits(_Camel):
    """How often the operator looks at the jobs on its own (the configuration key is ``timing``)."""

    tick_seconds: float = Field(10, gt=0)  # the dispatcher looks at every job at least this often
    resync_seconds: float = Field(300, gt=0)  # full re-list of jobs, runner pods and pools, healing missed events


class LeaderElection(_Camel):
    """Several replicas, one acting: the leader holds a coordination.k8s.io/v1 Lease in the runner namespace
    (``leadership``; docs/ha.md). The others stand by: they neither write nor serve runners until they lead."""

    lease_name: str = Field("img2img-operator", max_length=63, pattern=DNS_LABEL)
    # a standby takes over once the leader has not renewed for this long
    lease_duration_seconds: int = Field(15, ge=1)
    # the leader stops acting (the process exits) once it has not renewed for this long: before any standby may
    # take over, so it must be below leaseDurationSeconds
    renew_deadline_seconds: float = Field(10, gt=0)
    retry_period_seconds: float = Field(2, gt=0)  # how often the Lease is read or renewed
    # The leader labels its own pod img2img.dev/leader=true (and removes the label from the others): the runner
    # endpoint's Service selects it, so runners reach the leader only. For an operator that runs in a pod (POD_NAME).
    label_pod: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> LeaderElection:
        if not self.lease_duration_seconds > self.renew_deadline_seconds > self.retry_period_seconds:
            raise ValueError(f"need leaseDurationSeconds ({self.lease_duration_seconds:g}) > renewDeadlineSeconds "
                             f"({self.renew_deadline_seconds:g}) > retryPeriodSeconds "
                             f"({self.retry_period_seconds:g}): a leader must stop before a standby may take over")
        return self


class LoggingConfig(_Camel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"


class ImplicitPool(_Camel):
    """The pool of a GPU class that no RunnerPool names: nothing preloaded, no warm floor (scaled from zero)."""

    idle_seconds: int = Field(60, ge=0)  # an idle runner is removed after this long
    max_runners: int = Field(8, ge=1)  # the ceiling when the GPU class has no maxConcurrent


def _pod_namespace() -> str:
    return os.environ.get("POD_NAMESPACE") or "img2img-system"


class RunnersConfig(_Camel):
    """Warm runner pools: where the runner pods live and how they reach the operator (img2img.api.protocol)."""

    # RunnerPools are read and runner pods created here only (default: the operator's own namespace).
    namespace: str = Field(default_factory=_pod_namespace, max_length=63, pattern=DNS_LABEL)
    # The URL runners call: in a cluster the chart's Service (http://<release>-runners.<ns>.svc:8081).
    # None = http://127.0.0.1:<port> (the local stack, where runners run on the operator's machine).
    operator_url: str | None = Field(None, max_length=2048, pattern=r"^https?://[^\s/]+(/\S*)?$")
    port: int = Field(8081, ge=1, le=65535)  # the runner endpoint's listen port
    # The Secret (key "key") holding the key that signs runner tokens; the operator creates it when missing.
    token_secret: str = Field("img2img-runner-token", min_length=1, max_length=253)
    lease_seconds: float = Field(15, gt=0)  # a lease not renewed for this long lapses: the attempt is lost
    heartbeat_seconds: float = Field(3, gt=0)  # how often a working runner renews its lease
    take_wait_seconds: float = Field(25, gt=0, le=MAX_WAIT_SECONDS)  # how long a take waits for work
    # A runner pod that is still Pending (not scheduled: no node fits; or pulling its image) or Unknown (its node lost)
    # this long after its creation, never having asked for work, is removed: a Warning event on its pool and the pool's
    # Stalled condition say why, the pool makes the next one after a back-off, and jobs stay queued (their deadline
    # starts at assignment). Long enough for a cluster autoscaler to add a GPU node and pull the image; None = no limit.
    max_pending_seconds: int | None = Field(900, ge=1)
    # A Secret (keys AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) in the runner namespace with read access to the
    # model store, for catalogs that read models from S3. None = no S3 credentials in runner pods.
    model_store_secret: str | None = Field(None, min_length=1, max_length=253)
    implicit_pool: ImplicitPool = Field(default_factory=ImplicitPool)

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> RunnersConfig:
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError(f"heartbeatSeconds ({self.heartbeat_seconds:g}) must be below leaseSeconds "
                             f"({self.lease_seconds:g}): a lease would lapse between two heartbeats")
        return self

    @property
    def url(self) -> str:
        return self.operator_url or f"http://127.0.0.1:{self.port}"


class WebhooksConfig(_Camel):
    """The POST of a job's RunPod status to its ``spec.webhook`` when it ends (``webhooks``, ``deliveries``).

    Attempt n+1 follows a failed attempt n after ``retryBackoff.delay(n)`` (10 s, 20 s, 40 s, … at most 10 min: RunPod
    waits 10 s between its tries); after ``maxAttempts`` (8 by default: about 20 minutes) the delivery is given up.
    """

    # The Secret (key "signingKey": whsk_…, Standard Webhooks' ed25519 key) in the operator's namespace that signs
    # every delivery; created when missing. The public key (whpk_…) is published in the ConfigMap
    # publicKeyConfigMap (key "publicKey") beside it: the gateway serves it, receivers verify with it.
    namespace: str = Field(default_factory=_pod_namespace, max_length=63, pattern=DNS_LABEL)
    signing_key_secret: str = Field(SIGNING_KEY_SECRET, min_length=1, max_length=253)
    public_key_config_map: str = Field(PUBLIC_KEY_CONFIG_MAP, min_length=1, max_length=253)
    # true: a webhook may be plain http and reach private and loopback addresses (a receiver inside the cluster, the
    # local stack's); false: https to public addresses only, the rule image fetches follow.
    allow_private_addresses: bool = False
    max_attempts: int = Field(8, ge=1, le=100)
    retry_backoff: RetryBackoff = Field(default_factory=lambda: RetryBackoff(initial_seconds=10, max_seconds=600))
    timeout_seconds: float = Field(30, gt=0, le=300)  # one attempt, connection to answer
    # Lifetime of the image URLs a webhook carries for a job whose output mode is "presigned" (a gateway request's).
    presign_expiry_seconds: int = Field(3600, ge=60, le=7 * 24 * 3600)


class OperatorConfig(_Camel):
    """The whole configuration file."""

    namespaces: list[str] = Field(default_factory=list)  # empty = every namespace
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    runners: RunnersConfig = Field(default_factory=RunnersConfig)
    s3: S3Config
    gpu_classes: dict[str, GpuClass] = Field(default_factory=lambda: {"default": GpuClass()})
    default_gpu_class: str | None = None  # None = the only class, if there is exactly one
    queue: QueueConfig = Field(default_factory=QueueConfig)
    policy: Policy = Field(default_factory=Policy)
    defaults: JobDefaults = Field(default_factory=JobDefaults)
    retry_backoff: RetryBackoff = Field(default_factory=RetryBackoff)
    timing: Waits = Field(default_factory=Waits)
    leader_election: LeaderElection = Field(default_factory=LeaderElection)
    webhooks: WebhooksConfig = Field(default_factory=WebhooksConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    metrics_port: int | None = Field(9090, ge=0, le=65535)  # None = no metrics endpoint
    health_port: int = Field(8080, ge=0, le=65535)  # /healthz (kopf's liveness endpoint)
    dispatch_concurrency: int = Field(16, ge=1)  # jobs acted on at once by the dispatcher

    @model_validator(mode="after")
    def _gpu_classes(self) -> OperatorConfig:
        if not self.gpu_classes:
            raise ValueError("gpuClasses: at least one GPU class is needed")
        if self.default_gpu_class is not None and self.default_gpu_class not in self.gpu_classes:
            raise ValueError(
                f"defaultGpuClass: {self.default_gpu_class!r} is not one of gpuClasses ({', '.join(self.gpu_classes)})"
            )
        if self.default_gpu_class is None and len(self.gpu_classes) > 1:
            raise ValueError("defaultGpuClass: needed when there is more than one GPU class")
        return self

    @model_validator(mode="after")
    def _defaults_within_policy(self) -> OperatorConfig:
        """A job that leaves a control out gets the default: no namespace's cap may refuse that."""
        d = self.defaults
        for where, caps in [("policy.default", self.policy.default),
                            *((f"policy.namespaces.{n}", self.policy.of(n)) for n in self.policy.namespaces)]:
            for cap, default, key in ((caps.max_priority, d.priority, "Priority"),
                                      (caps.max_timeout_seconds, d.timeout_seconds, "TimeoutSeconds"),
                                      (caps.max_retries, d.retries, "Retries")):
                if cap is not None and default > cap:
                    raise ValueError(f"{where}.max{key}: {cap} is below defaults.{key[0].lower() + key[1:]} "
                                     f"({default}): every job that leaves it out would be refused")
        return self

    @property
    def default_class(self) -> str:
        return self.default_gpu_class or next(iter(self.gpu_classes))

    @property
    def all_namespaces(self) -> bool:
        return not self.namespaces


class ConfigError(Exception):
    """The configuration file is missing or wrong; the message names the file and every bad key."""


def parse_config(data: Any, source: str = "<config>") -> OperatorConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return OperatorConfig.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            problems.append(f"  {where}: {err['msg']}")
        raise ConfigError(f"{source}: invalid operator configuration\n" + "\n".join(problems)) from None


def load_config(path: str | os.PathLike | None = None) -> OperatorConfig:
    """Load the file at ``path``, else at ``$IMG2IMG_OPERATOR_CONFIG``."""
    path = path or os.environ.get(CONFIG_ENV)
    if not path:
        raise ConfigError(f"no configuration: pass --config PATH or set ${CONFIG_ENV}")
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the operator configuration: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    return parse_config(data, str(p))
