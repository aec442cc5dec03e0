"""RunPod request -> Img2ImgJob manifest (used by `img2img submit`).

The manifest carries the request's ``input`` verbatim (its ``webhook`` and ``policy`` as the job's controls), exactly as the user wrote it (``cfg_scale: 7`` stays 7): the
API server and the operator validate the same bytes the user sent, and the ``parameters`` echo shows them.
"""

from __future__ import annotations

import copy
from typing import Any

from img2img import API_GROUP, API_VERSION, KIND
from img2img.api.job import GENERATE_NAME, job_from_data


def to_manifest(data: dict[str, Any], *, name: str | None = None, namespace: str | None = None,
                annotations: dict[str, str] | None = None, allow_private_addresses: bool = False) -> dict[str, Any]:
    """A RunPod request (``{"input": …}``) or an Img2ImgJob manifest -> a manifest dict ready to create.

    Validates first (raises ``JobProblems``; ``allow_private_addresses`` as ``job_from_data``). ``name`` sets
    ``metadata.name``; without it a RunPod request gets ``generateName: img2img-`` and a manifest keeps its own naming.
    """
    loaded = job_from_data(data, allow_private_addresses)
    if loaded.from_runpod_request:
        controls = {k: v for k, v in loaded.job.spec.sent().items() if k != "input"}  # webhook and policy
        manifest = {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND,
                    "metadata": {"generateName": GENERATE_NAME},
                    "spec": {"input": copy.deepcopy(data["input"]), **controls}}
    else:
        manifest = copy.deepcopy(data)
        manifest.pop("status", None)
        manifest.setdefault("metadata", {})
    metadata = manifest["metadata"]
    if name:
        metadata["name"] = name
        metadata.pop("generateName", None)
    if namespace:
        metadata["namespace"] = namespace
    if annotations:
        metadata["annotations"] = {**(metadata.get("annotations") or {}), **annotations}
    return manifest
