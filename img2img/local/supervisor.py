"""Processes of the local stack: each started in its own session, its pid and ports kept in ``<state>/state.json``.

A component already running is kept (so `up` is idempotent); stopping signals the whole process group, so nothing a
component started outlives it. Every process logs to ``<state>/logs/<component>.log``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def wait_until(what: str, check: Callable[[], bool], timeout: float, log_file: Path | None = None) -> None:
    """Poll ``check`` (an exception counts as not yet) until true; else RuntimeError with the log's tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    tail = ""
    if log_file and log_file.exists():
        tail = "\n" + "\n".join(log_file.read_text(errors="replace").splitlines()[-30:])
    raise RuntimeError(f"{what} did not become ready within {timeout:.0f} s{tail}")


@dataclass
class Supervisor:
    state_dir: Path

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        self.logs = self.state_dir / "logs"
        self.state_file = self.state_dir / "state.json"

    def read_state(self) -> dict:
        """``{"ports": {name: port}, "pids": {component: pid}}``."""
        if self.state_file.exists():
            return json.loads(self.state_file.read_text())
        return {"ports": {}, "pids": {}}

    def save_state(self, state: dict) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(state, indent=2))

    def assign_ports(self, state: dict, names: tuple[str, ...]) -> dict[str, int]:
        """A free port for each name that has none yet; kept across runs."""
        ports = state.setdefault("ports", {})
        for name in names:
            if name not in ports:
                ports[name] = free_port()
        return ports

    def running(self, state: dict, name: str) -> bool:
        pid = state.get("pids", {}).get(name)
        return bool(pid) and pid_alive(pid)

    def spawn(self, state: dict, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        """Start a component unless it runs already; ``env`` is added to this process's environment."""
        if self.running(state, name):
            return
        self.logs.mkdir(parents=True, exist_ok=True)
        log_file = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen(
            argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=self.state_dir,
            start_new_session=True,  # its own process group: `stop` kills it and all its children
        )
        state.setdefault("pids", {})[name] = proc.pid
        self.save_state(state)

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        """Stop one component and everything it started (its process group); SIGKILL after ``timeout``."""
        state = self.read_state()
        pid = state.get("pids", {}).get(name)
        if pid and pid_alive(pid):
            signal_group(pid, sig)
            deadline = time.monotonic() + timeout
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if pid_alive(pid):
                signal_group(pid, signal.SIGKILL)
                while pid_alive(pid):
                    time.sleep(0.05)
        state.get("pids", {}).pop(name, None)
        self.save_state(state)

    def stop_all(self, names: tuple[str, ...]) -> None:
        """Stop the components in this order; RuntimeError when one of the stack's ports still listens after."""
        for name in names:
            self.stop(name)
        busy = [p for p in self.read_state().get("ports", {}).values() if listening(p)]
        if busy:
            raise RuntimeError(f"ports still listening after down: {busy}")
