"""Image references and the executor's image table: which local environment stands in for an image."""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Mapping


def normalize_image(ref: str) -> str:
    """docker.io/library/busybox:latest style, as containerd reports it."""
    name = ref
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif not ("." in first or ":" in first or first == "localhost"):
        name = f"docker.io/{name}"
    last = name.rsplit("/", 1)[-1]
    if "@" not in last and ":" not in last:
        name += ":latest"
    return name


def match_image(image: str, table: Mapping[str, Mapping]) -> Mapping | None:
    """The first table entry whose fnmatch pattern matches the image as written or normalized."""
    candidates = (image, normalize_image(image))
    for pattern, entry in table.items():
        if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
            return entry
    return None


def image_id(image: str) -> str:
    normalized = normalize_image(image)
    repo = normalized.split("@", 1)[0]
    last = repo.rsplit("/", 1)
    if ":" in last[-1]:
        repo = repo[: repo.rfind(":")]
    return f"{repo}@sha256:{hashlib.sha256(normalized.encode()).hexdigest()}"


def image_pull_error(image: str) -> str:
    ref = normalize_image(image)
    return (f"rpc error: code = NotFound desc = failed to pull and unpack image \"{ref}\": failed to resolve "
            f"reference \"{ref}\": {ref}: not found (local executor: no entry of its image table matches {image!r})")

