"""The images' base images, pinned by digest: ``base-images.lock`` holds one line per Dockerfile (the Dockerfile,
the base image its FROM names, the digest of that image in the registry).

Each Dockerfile takes the digest as a build argument (``FROM <image>@${BASE_DIGEST}``, no default): a build without
it stops at FROM, so no image is ever built on an unpinned base.

    python3 scripts/base_images.py pin                       # ask the registry (docker buildx), write the lock
    python3 scripts/base_images.py build-arg Dockerfile.runner   # BASE_DIGEST=sha256:… for `docker build --build-arg`

``make pin-images`` and ``make images`` run them. A digest is only ever written by ``pin``, from the registry's own
answer: none is typed in by hand.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "base-images.lock"
DOCKERFILES = ("Dockerfile.operator", "Dockerfile.runner")
ARG = "BASE_DIGEST"
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
FROM = re.compile(r"^FROM\s+(?P<image>\S+?)@\$\{" + ARG + r"\}(\s|$)", re.MULTILINE)
HEADER = """\
# The images' base images, pinned by digest: Dockerfile, the base image its FROM names, its digest in the registry.
# Written by `make pin-images` (scripts/base_images.py pin); `make images` passes each digest as BASE_DIGEST.
# A line without a digest is not pinned yet: its image does not build until `make pin-images` has run.
"""


class Unpinned(Exception):
    """A Dockerfile's base has no digest (or the lock names another image): the build must not go on."""


def base_image(dockerfile_text: str) -> str:
    """The image a Dockerfile's FROM names before ``@${BASE_DIGEST}``."""
    found = FROM.findall(dockerfile_text)
    if len(found) != 1:
        raise Unpinned(f"expected one FROM <image>@${{{ARG}}}, found {len(found)}")
    return found[0][0]


def read_lock(text: str) -> dict[str, tuple[str, str | None]]:
    """Dockerfile -> (base image, digest or None)."""
    entries = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if fields:
            entries[fields[0]] = (fields[1], fields[2] if len(fields) > 2 else None)
    return entries


def build_arg(dockerfile: str, dockerfile_text: str, lock_text: str) -> str:
    """``BASE_DIGEST=sha256:…`` for the Dockerfile's base; Unpinned, saying what to do, when there is none."""
    image = base_image(dockerfile_text)
    locked, digest = read_lock(lock_text).get(dockerfile, (None, None))
    if locked != image:
        raise Unpinned(f"{dockerfile} is based on {image}, base-images.lock pins {locked or 'nothing'}: run "
                       "`make pin-images`")
    if digest is None or not DIGEST.match(digest):
        raise Unpinned(f"{dockerfile}: {image} has no digest in base-images.lock: run `make pin-images` (docker "
                       "with access to the registry)")
    return f"{ARG}={digest}"


def registry_digest(image: str) -> str:
    """The digest the registry serves for ``image`` (its manifest list: every platform)."""
    out = subprocess.run(["docker", "buildx", "imagetools", "inspect", image, "--format", "{{.Manifest.Digest}}"],
                         check=True, capture_output=True, text=True).stdout.strip()
    if not DIGEST.match(out):
        raise SystemExit(f"the registry answered {out!r} for {image}, not a sha256 digest")
    return out


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    if command == "pin":
        lines = []
        for dockerfile in DOCKERFILES:
            image = base_image((REPO / dockerfile).read_text())
            lines.append(f"{dockerfile} {image} {registry_digest(image)}")
        LOCK.write_text(HEADER + "\n".join(lines) + "\n")
        print("\n".join(lines))
        return 0
    if command == "build-arg" and len(argv) == 2:
        try:
            print(build_arg(argv[1], (REPO / argv[1]).read_text(), LOCK.read_text()))
        except Unpinned as e:
            print(f"base_images: {e}", file=sys.stderr)
            return 2
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
