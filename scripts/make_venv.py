"""Make `.venv`: the project installed editable on top of a dependency environment cached by version.

The third-party dependencies (torch alone is gigabytes) live in `~/.cache/img2img-operator/venvs/deps-<hash>`, keyed by
the hash of pyproject's dependency lists, so a fresh clone on a machine that ran before gets its `.venv` in seconds.
`.venv` itself is small: a `.pth` file puts the cached site-packages on its path, and the project is installed editable.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
import tomllib
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXTRAS = ("operator", "runner", "gateway", "dev")


def deps_hash(project: dict) -> str:
    deps = {"dependencies": project["dependencies"], "extras": project["optional-dependencies"], "py": sys.version[:4]}
    return hashlib.sha256(json.dumps(deps, sort_keys=True).encode()).hexdigest()[:12]


def site_packages(env: Path) -> Path:
    return env / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def pip(env: Path, *args: str) -> None:
    subprocess.run([str(env / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", *args], check=True)


def install_deps(project: dict, deps_env: Path) -> None:
    if (deps_env / ".complete").exists():
        return
    print(f"[venv] installing dependencies into {deps_env} (first run for this dependency set)", flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(deps_env)
    self_ref = f"{project['name']}["
    requirements = [d for d in project["dependencies"]]
    for extra in EXTRAS:
        requirements += [d for d in project["optional-dependencies"][extra] if not d.startswith(self_ref)]
    pip(deps_env, "install", "--quiet", "setuptools>=69", "wheel", *requirements)
    (deps_env / ".complete").write_text(json.dumps(requirements))


def main() -> int:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    cache = Path(os.environ.get("IMG2IMG_CACHE_DIR") or Path.home() / ".cache" / "img2img-operator")
    deps_env = cache / "venvs" / f"deps-{deps_hash(project)}"
    started = time.monotonic()
    deps_env.parent.mkdir(parents=True, exist_ok=True)
    # One install at a time per machine: two checkouts (worktrees, CI beside a developer) share the cache, and a
    # second install would wipe the first one's half-written environment.
    with open(deps_env.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        install_deps(project, deps_env)
    local = REPO / ".venv"
    marker = local / ".deps"
    if not (marker.exists() and marker.read_text() == str(deps_env)):
        venv.EnvBuilder(with_pip=True, clear=True).create(local)
        (site_packages(local) / "_img2img_deps.pth").write_text(f"import site; site.addsitedir({str(site_packages(deps_env))!r})\n")
        pip(local, "install", "--quiet", "--no-deps", "--no-build-isolation", "-e", str(REPO))
        marker.write_text(str(deps_env))
    print(f"[venv] ready in {time.monotonic() - started:.0f} s ({deps_env.name})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
