"""The container launcher on its own: exec, start errors on the status pipe, mount namespace and bind mounts.

Started as the executor starts it (processes.start_launcher, read_start_report), without a pod around it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from img2img.local import executor_sandbox
from img2img.local.executor.processes import read_start_report, start_launcher

SANDBOX = Path(executor_sandbox.__file__)


def launch(tmp_path: Path, argv, *, env=None, mounts=(), mount_namespace=False, workdir=None, host_workdir=False,
           image_paths=()):
    """(exit code, start error report or None, the container's output, the spec file)."""
    spec = {"argv": argv, "env": env or {"PATH": "/usr/bin:/bin"}, "workdir": str(workdir or tmp_path / "work"),
            "workdir_is_host_path": host_workdir, "image_paths": list(image_paths),
            "mounts": list(mounts), "mount_namespace": mount_namespace}
    spec_file, log = tmp_path / "spec.json", tmp_path / "container.log"
    proc, offset, status = start_launcher(spec, spec_file, log, tmp_path)
    report = read_start_report(status)
    code = proc.wait(timeout=30)
    return code, report, log.read_bytes()[offset:].decode(), spec_file


def test_exec_success_closes_the_pipe_without_a_report_and_deletes_the_spec(tmp_path):
    code, report, out, spec_file = launch(tmp_path, ["sh", "-c", 'echo "$GREETING from $(pwd)"; exit 3'],
                                          env={"PATH": "/usr/bin:/bin", "GREETING": "hi"})
    assert report is None
    assert code == 3
    assert out.strip() == f"hi from {tmp_path / 'work'}"
    assert not spec_file.exists()  # it held the container's environment


def test_missing_executable_is_a_start_error(tmp_path):
    code, report, _, _ = launch(tmp_path, ["no-such-binary-xyz"])
    assert code == executor_sandbox.START_ERROR_EXIT
    assert report["reason"] == "StartError"
    assert 'exec: "no-such-binary-xyz": executable file not found in $PATH' in report["message"]


def test_the_executable_is_resolved_with_the_container_path(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "mytool"
    tool.write_text("#!/bin/sh\necho tool-ran\n")
    tool.chmod(0o755)
    code, report, out, _ = launch(tmp_path, ["mytool"], env={"PATH": f"{bindir}:/usr/bin:/bin"})
    assert (code, report, out.strip()) == (0, None, "tool-ran")


mount_ns = pytest.mark.skipif(subprocess.run([sys.executable, "-I", "-S", str(SANDBOX), "--probe"],
                                             capture_output=True).returncode != 0,
                              reason="mount namespaces need root (CAP_SYS_ADMIN)")


@mount_ns
def test_bind_mounts_in_a_private_mount_namespace(tmp_path):
    volume = tmp_path / "vol"
    volume.mkdir()
    (volume / "data.txt").write_text("from the volume")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "token").write_text("t0k3n")
    term = tmp_path / "termination-log"
    term.write_text("")
    target = f"/tmp/img2img-sandbox-test-{os.getpid()}"
    term_target = f"/tmp/img2img-sandbox-test-{os.getpid()}-termlog/termination-log"
    script = (f"cat {target}/data/data.txt; echo; cat {target}/secret/token; echo; "
              f"echo written > {target}/data/out.txt; "
              f"(echo nope > {target}/secret/x) 2>/dev/null || echo read-only; "
              f"echo -n done > {term_target}")
    code, report, out, _ = launch(tmp_path, ["sh", "-c", script], mount_namespace=True, mounts=[
        {"source": str(volume), "target": f"{target}/data"},
        {"source": str(secret), "target": f"{target}/secret", "read_only": True},
        {"source": str(term), "target": term_target},
    ])
    try:
        assert report is None, report
        assert code == 0, out
        assert out.split() == ["from", "the", "volume", "t0k3n", "read-only"]
        assert (volume / "out.txt").read_text() == "written\n"
        assert term.read_text() == "done"
        # the mounts stayed inside the container's namespace
        assert not os.path.exists(f"{target}/data/data.txt")
    finally:
        subprocess.run(["rm", "-rf", target, os.path.dirname(term_target)])


@mount_ns
def test_a_failing_mount_is_a_start_error(tmp_path):
    code, report, _, _ = launch(tmp_path, ["true"], mount_namespace=True,
                                mounts=[{"source": str(tmp_path / "missing"), "target": str(tmp_path / "t")}])
    assert code == executor_sandbox.START_ERROR_EXIT
    assert report["reason"] == "StartError"
    assert f"mount source {tmp_path / 'missing'}: No such file or directory" in report["message"]


@mount_ns
def test_a_mount_may_cover_the_executor_folders_that_later_mounts_and_the_workdir_come_from(tmp_path):
    """An emptyDir on /tmp while the executor's state dir lives in /tmp: sources are held open before mounting."""
    covered = tmp_path / "covered"
    state = covered / "state"
    (state / "work").mkdir(parents=True)
    (state / "emptydir").mkdir()
    term = state / "termination-log"
    term.write_text("")
    script = f"echo here > ./out; echo -n msg > {covered}/dev/termination-log; ls {covered}"
    code, report, out, _ = launch(tmp_path, ["sh", "-c", script], mount_namespace=True, host_workdir=True,
                                  workdir=state / "work", mounts=[
                                      {"source": str(state / "emptydir"), "target": str(covered)},
                                      {"source": str(term), "target": f"{covered}/dev/termination-log"},
                                  ])
    assert report is None, report
    assert code == 0, out
    assert out.split() == ["dev"]  # the container sees the emptyDir, not the state folder under it
    assert (state / "work" / "out").read_text() == "here\n"
    assert term.read_text() == "msg"


def test_the_images_own_files_stay_visible_under_a_volume_that_covers_them(tmp_path):
    """A checkout in /tmp runs a pod with an emptyDir on /tmp: the image's files (its venv, the project) stay, as an
    image's would; the rest of the covered folder is the volume's."""
    if executor_sandbox.probe() != 0:
        pytest.skip("mount namespaces unavailable here")
    tmp = tmp_path / "tmp"
    image = tmp / "checkout" / "venv" / "bin"
    image.mkdir(parents=True)
    tool = image / "tool"
    tool.write_text("#!/bin/sh\necho from-the-image\n")
    tool.chmod(0o755)
    (tmp / "host-only").write_text("x")
    emptydir = tmp_path / "emptydir"
    emptydir.mkdir()
    mounts = [{"source": str(emptydir), "target": str(tmp)}]
    env = {"PATH": f"{image}:/usr/bin:/bin"}

    code, report, out, _ = launch(tmp_path, ["sh", "-c", f"tool; ls {tmp}"], env=env, mount_namespace=True,
                                  mounts=mounts, image_paths=[str(tmp / "checkout"), str(image), "/usr/lib"])
    assert report is None and code == 0, (report, out)
    assert out.split() == ["from-the-image", "checkout"]  # the image's folder, not the host's other files

    code, report, out, _ = launch(tmp_path, ["tool"], env=env, mount_namespace=True, mounts=mounts)
    assert code != 0 and "executable file not found" in report["message"]  # without it: hidden, as before


def test_covered_keeps_the_outermost_existing_paths_under_a_mount(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "c").mkdir()
    paths = [str(tmp_path / "a" / "b"), str(tmp_path / "a"), str(tmp_path / "c"), str(tmp_path / "gone")]
    assert executor_sandbox.covered(paths, [str(tmp_path / "a")]) == [str(tmp_path / "a")]
    assert executor_sandbox.covered(paths, [str(tmp_path)]) == [str(tmp_path / "a"), str(tmp_path / "c")]
    assert executor_sandbox.covered(paths, ["/nowhere"]) == []
