"""The RunnerPool resource: warm runners of one GPU class that load their models once and serve jobs one at a time.

A pool lives in the operator's runner namespace. Its runners are long-lived pods the operator creates and removes;
they ask the operator for work (``img2img.api.protocol``). Sizing, per pool:

- ``minReady``: runners kept with their models loaded even when nothing is queued (the warm floor);
- ``buffer``: idle runners kept above current demand, so that a burst starts warm;
- ``maxRunners``: the ceiling (default: the GPU class's ``maxConcurrent``);
- ``idleSeconds``: how long a runner above the floor may stay idle before it is removed (never a busy one).

A GPU class without a pool has an implicit one: no models preloaded, ``minReady: 0`` (scale from zero).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from img2img import API_GROUP, API_VERSION
from img2img.api.base import ApiModel
from img2img.api.errors import Refusals
from img2img.api.job import DNS_LABEL, ObjectMeta
from img2img.api.status import Condition, StatusModel

POOL_KIND = "RunnerPool"
POOL_PLURAL = "runnerpools"
POOL_SHORT_NAMES = ["rp"]
POOL_API_VERSION = f"{API_GROUP}/{API_VERSION}"
DEFAULT_IDLE_SECONDS = 300
MAX_POOL_RUNNERS = 1000
MODEL_NAME_MAX = 256


class RunnerPoolSpec(ApiModel):
    gpuClass: str = Field(..., max_length=63, pattern=DNS_LABEL, description="GPU class from the operator "
                          "configuration: resources, node selector and tolerations of the runners")
    models: list[Annotated[str, Field(min_length=1, max_length=MODEL_NAME_MAX)]] = Field(
        default_factory=list, max_length=32, description="catalog names the runners load at start (checkpoint, "
        "refiner, VAE, ControlNets, LoRAs)")
    minReady: int = Field(0, ge=0, le=MAX_POOL_RUNNERS, description="runners kept warm even with no work")
    buffer: int = Field(0, ge=0, le=MAX_POOL_RUNNERS, description="idle runners kept above current demand")
    maxRunners: int | None = Field(None, ge=1, le=MAX_POOL_RUNNERS, description="at most this many runners "
                                   "(default: the GPU class's maxConcurrent)")
    idleSeconds: int = Field(DEFAULT_IDLE_SECONDS, ge=0, le=7 * 24 * 3600, description="an idle runner above "
                             "minReady is removed after this long")

    @model_validator(mode="after")
    def _floor_under_ceiling(self) -> RunnerPoolSpec:
        if self.maxRunners is not None and self.minReady > self.maxRunners:
            found = Refusals("RunnerPoolSpec")
            found.add("minReady", f"must not be above maxRunners ({self.minReady} > {self.maxRunners})", self.minReady)
            found.raise_any()
        return self


class RunnerPoolStatus(StatusModel):
    readyRunners: int = Field(0, ge=0, description="runners with their models loaded (idle or busy)")
    busyRunners: int = Field(0, ge=0, description="runners working on a job")
    startingRunners: int = Field(0, ge=0, description="runners starting or loading their models")
    queuedJobs: int = Field(0, ge=0, description="jobs of this pool waiting for a runner")
    conditions: list[Condition] = Field(default_factory=list, max_length=16, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})
    observedGeneration: int | None = Field(None, ge=0)


class RunnerPool(ApiModel):
    apiVersion: Literal[POOL_API_VERSION]  # type: ignore[valid-type]
    kind: Literal[POOL_KIND]  # type: ignore[valid-type]
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: RunnerPoolSpec
    status: RunnerPoolStatus | None = None
