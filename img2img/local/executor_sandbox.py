"""The container launcher of the local executor: sets up one container process, then execs its command.

Run by the executor as `python -I -S .../executor_sandbox.py SPEC.json` in a new session (its own process group).
What it does, in order (the part a container runtime does between "create" and "start"):

1. `prctl(PR_SET_PDEATHSIG, SIGKILL)`: the container dies if the executor dies (survives the exec).
2. If the spec names one (`netns`: a pod with a network of its own, see executor/pod_network.py), join that network
   namespace.
3. If the spec asks for it: open every mount source (O_PATH), `unshare(CLONE_NEWNS)`, make `/` recursively private,
   then bind-mount every volume onto its mountPath (sorted by depth; targets created when missing; read-only
   remounts) — so the process sees `/dev/termination-log`, emptyDirs, Secrets... exactly where a container would.
4. chdir to the working directory (created when missing, as runc does).
5. Resolve the executable with the container's PATH and `execve` it with the container's environment.

Failures before the exec (a mount, an executable not found) are reported as JSON on the `status_fd` pipe and the
launcher exits 128: the executor turns that into the runtime's `StartError`. The pipe is close-on-exec, so a
successful exec closes it without data — the executor waits for that before it reports the container running.

Only the standard library: this module is imported in a fresh interpreter for every container start.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import signal
import sys
import tempfile

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
PR_SET_PDEATHSIG = 1
START_ERROR_EXIT = 128

_libc = None


def libc():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    return _libc


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare_mounts() -> None:
    _check(libc().unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(libc().mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / rprivate")


def bind_mount(source: str, target: str, read_only: bool = False, label: str | None = None) -> None:
    _check(libc().mount(source.encode(), target.encode(), None, MS_BIND | MS_REC, None),
           f"bind mount {label or source} on {target}")
    if read_only:
        _check(libc().mount(b"none", target.encode(), None, MS_BIND | MS_REMOUNT | MS_RDONLY, None),
               f"read-only remount of {target}")


def open_source(path: str) -> int:
    try:
        return os.open(path, os.O_PATH)
    except OSError as e:
        raise OSError(e.errno, f"mount source {path}: {os.strerror(e.errno or 0)}") from None


def ensure_target(target: str, is_dir: bool) -> None:
    """Create the mount point (a directory, or an empty file for a file source) when missing."""
    if os.path.lexists(target):
        return
    if is_dir:
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target) or "/", exist_ok=True)
        with open(target, "a"):
            pass


def covered(paths: list[str], targets: list[str]) -> list[str]:
    """The existing ``paths`` that a mount on one of ``targets`` would hide, outermost only."""
    def under(path: str, top: str) -> bool:
        top = top.rstrip("/") or "/"
        return path == top or path.startswith(top if top == "/" else top + "/")

    hit = sorted({os.path.normpath(p) for p in paths if os.path.isdir(p) and any(under(p, t) for t in targets)})
    return [p for p in hit if not any(q != p and under(p, q) for q in hit)]


def resolve_executable(name: str, path: str) -> str | None:
    if "/" in name:
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    return shutil.which(name, path=path)


def probe() -> int:
    """Exit 0 when mount namespaces + bind mounts work here (root, or enough capabilities)."""
    try:
        unshare_mounts()
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            bind_mount(a, b, read_only=True)
            libc().umount2(b.encode(), 2)
        return 0
    except OSError as e:
        print(f"mount namespaces unavailable: {e}", file=sys.stderr)
        return 1


def _report(fd: int | None, reason: str, message: str) -> None:
    if fd is None:
        return
    try:
        os.write(fd, json.dumps({"reason": reason, "message": message}).encode())
    except OSError:
        pass


def launch(spec: dict) -> int:
    fd = spec.get("status_fd")
    try:
        libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != spec.get("parent_pid", os.getppid()):
            return START_ERROR_EXIT  # the executor died while we were starting
        if spec.get("netns"):
            netns_fd = os.open(spec["netns"], os.O_RDONLY)
            _check(libc().setns(netns_fd, CLONE_NEWNET), f"setns({spec['netns']})")
            os.close(netns_fd)
        workdir = spec["workdir"]
        # The executor's own folders (mount sources, the default working dir) may lie under a mountPath (an emptyDir
        # on /tmp while the state dir is in /tmp): hold them by file descriptor before anything is mounted.
        workdir_fd = None
        if spec.get("workdir_is_host_path"):
            os.makedirs(workdir, exist_ok=True)
            workdir_fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)  # fchdir works across namespaces
        if spec.get("mount_namespace"):
            mounts = sorted(spec.get("mounts") or [], key=lambda m: m["target"].rstrip("/").count("/"))
            unshare_mounts()
            # (opened after unshare: a bind mount's source must belong to the caller's mount namespace)
            sources = [(m, open_source(m["source"]), os.path.isdir(m["source"])) for m in mounts]
            hidden = [(p, open_source(p)) for p in covered(spec.get("image_paths") or [], [m["target"] for m in mounts])]
            for m, fd_source, is_dir in sources:
                ensure_target(m["target"], is_dir)
                bind_mount(f"/proc/self/fd/{fd_source}", m["target"], bool(m.get("read_only")), label=m["source"])
                os.close(fd_source)
            # the image's own files stay visible: in a real container a volume covers only the image's copy of
            # that folder, and here the "image" is this host's folders
            for path, fd_source in hidden:
                ensure_target(path, True)
                bind_mount(f"/proc/self/fd/{fd_source}", path, False, label=path)
                os.close(fd_source)
        if workdir_fd is not None:
            os.fchdir(workdir_fd)
            os.close(workdir_fd)
        else:
            os.makedirs(workdir, exist_ok=True)  # a container's workingDir, seen through its mounts
            os.chdir(workdir)
    except OSError as e:
        _report(fd, "StartError", "failed to create containerd task: failed to create shim task: OCI runtime create "
                f"failed: runc create failed: unable to start container process: error during container init: {e}: "
                "unknown")
        return START_ERROR_EXIT
    argv = spec["argv"]
    env = spec["env"]
    path = resolve_executable(argv[0], env.get("PATH", os.defpath))
    if path is None:
        _report(fd, "StartError", "failed to create containerd task: failed to create shim task: OCI runtime create "
                "failed: runc create failed: unable to start container process: error during container init: "
                f"exec: \"{argv[0]}\": executable file not found in $PATH: unknown")
        return START_ERROR_EXIT
    if fd is not None:
        os.set_inheritable(fd, False)  # closes on a successful exec: "started"
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # the interpreter ignores these; a container does not
        signal.signal(sig, signal.SIG_DFL)
    try:
        os.execve(path, argv, env)
    except OSError as e:
        _report(fd, "StartError", "failed to create containerd task: failed to create shim task: OCI runtime create "
                "failed: runc create failed: unable to start container process: error during container init: "
                f"exec: \"{argv[0]}\": {e.strerror.lower() if e.strerror else e}: unknown")
        return START_ERROR_EXIT
    return START_ERROR_EXIT  # pragma: no cover - execve does not return


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--probe":
        return probe()
    with open(argv[0]) as f:
        spec = json.load(f)
    try:
        os.unlink(argv[0])  # it holds the container's environment (Secrets): read once, then gone
    except OSError:
        pass
    return launch(spec)


if __name__ == "__main__":
    sys.exit(main())
