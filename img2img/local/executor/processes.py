"""Container processes: launched through `executor_sandbox.py`, one process group each, never left behind.

Each container is a process group of its own (new session), killed with the whole group when its main process exits
(as a container's processes die with its init). If the executor dies hard, PR_SET_PDEATHSIG (set by the launcher)
kills the main processes; the next start kills what is left of their process groups (`cleanup_leftovers`, from the
pid files).

When the executor may (root, or enough capabilities: `probe_mount_namespace`), each container runs in its own mount
namespace with its volumes bind-mounted (see volumes.py). Otherwise containers run in the executor's mount namespace:
volumes are *not* mounted, and `IMG2IMG_TERMINATION_LOG` names the termination message file instead.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

SANDBOX = Path(__file__).resolve().parent.parent / "executor_sandbox.py"


class Processes:
    """Every container process group this executor started; `close()` refuses new ones (shutdown)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.procs: dict[int, subprocess.Popen] = {}
        self.closed = False

    def add(self, proc: subprocess.Popen) -> bool:
        with self.lock:
            if self.closed:
                return False
            self.procs[proc.pid] = proc
            return True

    def remove(self, pid: int) -> None:
        with self.lock:
            self.procs.pop(pid, None)

    def close(self) -> None:
        with self.lock:
            self.closed = True

    def kill_all(self) -> None:
        with self.lock:
            pids = list(self.procs)
        for pid in pids:
            kill_group(pid, signal.SIGKILL)


def kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def start_launcher(spec: dict, spec_path: Path, log_path: Path, cwd: Path) -> tuple[subprocess.Popen, int, int]:
    """Start executor_sandbox.py on `spec` (written to `spec_path`) in a new session, its output appended to `log_path`.

    Returns the process, the size of the log before it started (where this run's output begins) and the read end of
    the launcher's status pipe (see read_start_report). Raises OSError when the process cannot start.
    """
    status_r, status_w = os.pipe()
    try:
        fd = os.open(spec_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({**spec, "status_fd": status_w, "parent_pid": os.getpid()}, f)
        with open(log_path, "ab") as logf:
            offset = logf.tell()
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(SANDBOX), str(spec_path)],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, cwd=str(cwd),
                env={"LC_ALL": "C.UTF-8"}, start_new_session=True, pass_fds=(status_w,),
            )
    except OSError:
        os.close(status_r)
        raise
    finally:
        os.close(status_w)
    return proc, offset, status_r


def read_start_report(fd: int) -> dict | None:
    """The launcher's report on its status pipe (closed unread by a successful exec): None once the command runs,
    else {reason, message} of the start error."""
    data = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return {"reason": "StartError", "message": data.decode(errors="replace")}


def wait_container(proc: subprocess.Popen) -> int:
    """Wait for the container's main process without reaping it, kill what is left of its group, then reap it.

    Returns Popen's returncode (negative: killed by that signal).
    """
    try:
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:
        pass
    kill_group(proc.pid, signal.SIGKILL)  # the container's init exited: the rest of the container goes too
    return proc.wait()


def read_tail(path: Path, offset: int, window: int = 64 * 1024) -> bytes:
    """At most the last `window` bytes of `path` written after `offset`."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            start = max(offset, end - window)
            f.seek(start)
            return f.read(end - start)
    except OSError:
        return b""


def probe_mount_namespace(mode: str) -> bool:
    """Whether containers get mount namespaces: `mountNamespace` auto (when the probe succeeds), true, or false."""
    if mode in ("false", "no", "0"):
        return False
    result = subprocess.run([sys.executable, "-I", "-S", str(SANDBOX), "--probe"], capture_output=True, text=True)
    if result.returncode == 0:
        return True
    if mode in ("true", "yes", "1"):
        raise SystemExit(f"mountNamespace: true, but {result.stderr.strip()}")
    log.warning("%s: containers run in the executor's mount namespace; volumes are not mounted and the "
                "termination message file is named by IMG2IMG_TERMINATION_LOG", result.stderr.strip())
    return False


# ---- what a previous executor process left behind -----------------------------------------------------------------
def start_time(pid: int) -> str:
    """/proc/<pid>/stat starttime (clock ticks since boot): with the pid, identifies one process."""
    fields = _stat_fields(pid)
    return fields[19] if len(fields) > 19 else ""


def cleanup_leftovers(pods_dir: Path) -> None:
    """Kill container process groups a previous executor process left behind (it died without cleaning up).

    The pid file (`<pod>/containers/<name>/pid`) holds the main process's pid and start time. A live process with
    that pid but another start time is someone else's; a dead leader whose group still has members is ours (the
    kernel does not reuse a pid while it names a process group).
    """
    for pid_file in pods_dir.glob("*/containers/*/pid"):
        try:
            pid_text, _, started = pid_file.read_text().strip().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            continue
        leader_start = start_time(pid)
        ours = (leader_start == started) if leader_start else bool(_group_members(pid))
        if ours and pid != os.getpgid(0):
            log.warning("killing process group %d left by a previous executor (%s)", pid, pid_file.parent)
            kill_group(pid, signal.SIGKILL)
        try:
            pid_file.unlink()
        except OSError:
            pass


def _stat_fields(pid: int | str) -> list[str]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(entry)
            if len(fields) > 2 and fields[2] == str(pgid):
                members.append(int(entry))
    return members
