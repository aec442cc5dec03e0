"""One pod's containers on this node: started in order, restarted as the restart policy says, reaped when they exit.

The image picks a local environment from the `images` table (fnmatch patterns, first match wins, see config.py); an
image matching no pattern cannot be pulled (`ErrImagePull`, then `ImagePullBackOff`, retried with the kubelet's
back-off). A container without `command` gets `CreateContainerError` (there is no image entrypoint here); a missing
Secret or ConfigMap key `CreateContainerConfigError` (env.py). Each container is one process started by
`executor_sandbox.py` (processes.py) with its volumes (volumes.py); stdout and stderr go to `logs/<container>.log` in
the pod's folder, all restarts appended (what `kubectl logs` would show).

The container's termination message file (bind-mounted on `terminationMessagePath`, or named by
`IMG2IMG_TERMINATION_LOG` without mount namespaces) becomes the terminated state's `message` (≤ 4096 bytes;
`FallbackToLogsOnError`: the last 80 lines / 2048 bytes of the log on failure).

Restart policy: `Never` and `OnFailure`/`Always` (restart with the kubelet's CrashLoopBackOff: immediately, then
10 s doubling to 300 s; `restartCount`, `lastState`). Init containers run in order before the others (native
sidecars are not supported). Not emulated: probes (a container is ready once started), lifecycle hooks, resource
limits (no OOMKilled), securityContext, ports, ephemeral containers, image pulls.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import secrets
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from img2img.local.executor.env import EnvError, container_argv, container_env, image_env
from img2img.local.executor.exits import (
    MAX_TERMINATION_MESSAGE, backoff_delay, exit_code_of, should_restart, termination_message,
)
from img2img.local.executor.images import image_id, image_pull_error, match_image
from img2img.local.executor.kube_time import utcnow
from img2img.local.executor.pod_network import has_own_network
from img2img.local.executor.pod_status import ContainerRun, recover_runs
from img2img.local.executor.processes import (
    kill_group, read_start_report, read_tail, start_launcher, start_time, wait_container,
)
from img2img.local.executor.volumes import VolumeError, container_mounts, prepare_volumes

if TYPE_CHECKING:
    from img2img.local.executor.kubelet import Kubelet

log = logging.getLogger(__name__)

Emit = Callable[..., None]  # (type, reason, message, container) -> an Event about the pod


@dataclass
class Running:
    proc: subprocess.Popen
    log_offset: int
    termination_file: Path
    policy: str


class PodContainers:
    """The containers of one admitted pod, and their processes. `init_runs` and `runs` are what its status shows."""

    def __init__(self, kubelet: Kubelet, pod: dict, pod_dir: Path, event: Emit, wake: threading.Event):
        meta, spec = pod["metadata"], pod["spec"]
        self.kubelet = kubelet
        self.uid, self.ns, self.name = meta["uid"], meta["namespace"], meta["name"]
        self.key = f"{self.ns}/{self.name}"
        self.dir = pod_dir
        self.event = event
        self.wake = wake  # set when a container exits
        self.restart_policy = spec.get("restartPolicy") or "Always"
        self.init_specs = list(spec.get("initContainers") or [])
        self.specs = list(spec.get("containers") or [])
        default_reason = "PodInitializing" if self.init_specs else "ContainerCreating"
        self.init_runs = [ContainerRun(c["name"], c.get("image", ""), reason=default_reason) for c in self.init_specs]
        self.runs = [ContainerRun(c["name"], c.get("image", ""), reason=default_reason) for c in self.specs]
        self.running: dict[str, Running] = {}
        self.exits: dict[str, tuple[int, dt.datetime]] = {}
        self.exits_lock = threading.Lock()
        self.retry: dict[str, dict] = {}  # container -> {at, show_backoff_at, failures, error, restart}
        self.volumes: dict[str, tuple[str, bool]] | None = None  # name -> (host path, read-only)
        self.volume_retry_at: dt.datetime | None = None
        self.last_mount_error = ""
        self.sandbox_ready = False
        self.netns: str | None = None  # the pod's network namespace, when it has one (pod_network.py)

    def recover(self, status: dict) -> None:
        """Containers the API shows as started, which this (new) executor process cannot have: they are gone."""
        if recover_runs(self.init_runs + self.runs, status, self.restart_policy):
            log.warning("pod %s: its containers ran under a previous executor process; they are gone", self.key)
            self.sandbox_ready = True

    # -- starting
    def step(self, pod: dict, now: dt.datetime) -> None:
        """Reap what exited, then start (or restart) what the pod needs next: init containers one by one, then all."""
        self.collect_exits()
        if self.volumes is None and not self._prepare_volumes(pod, now):
            return
        for c, r in zip(self.init_specs, self.init_runs, strict=True):
            if r.state == "terminated":
                if r.exit_code == 0:
                    continue
                if should_restart("OnFailure" if self.restart_policy == "Always" else self.restart_policy,
                                  r.exit_code):
                    self._crash_loop(r, now)
                return
            if r.state == "running":
                return
            self._try_start(pod, c, r, now)
            return
        for r in self.runs:  # the init containers are done
            if r.state == "waiting" and r.reason == "PodInitializing":
                r.reason = "ContainerCreating"
        for c, r in zip(self.specs, self.runs, strict=True):
            if r.state == "running":
                continue
            if r.state == "terminated":
                if should_restart(self.restart_policy, r.exit_code or 0):
                    self._crash_loop(r, now)
                continue
            self._try_start(pod, c, r, now)

    def _prepare_volumes(self, pod: dict, now: dt.datetime) -> bool:
        if self.volume_retry_at and now < self.volume_retry_at:
            return False
        cfg = self.kubelet.cfg
        try:
            if has_own_network(pod):
                self.netns = self.kubelet.networks.create(self.uid)
        except OSError as e:
            return self._sandbox_failed("FailedCreatePodSandBox",
                                        f"Failed to create pod sandbox: setting up its network namespace: {e}", now)
        try:
            self.volumes = prepare_volumes(pod, self.dir / "volumes", kube=self.kubelet.kube,
                                           pvc_root=cfg.state_dir / "pvc", pod_ip=cfg.pod_ip, host_ip=cfg.host_ip,
                                           node_allocatable=self.kubelet.node.allocatable)
        except VolumeError as e:
            return self._sandbox_failed("FailedMount", str(e), now)
        self.sandbox_ready = True
        return True

    def _sandbox_failed(self, reason: str, msg: str, now: dt.datetime) -> bool:
        """The pod's sandbox could not be set up: a Warning event (once per distinct message), retried in 2 s."""
        if msg != self.last_mount_error:
            log.warning("pod %s: %s", self.key, msg)
            self.event("Warning", reason, msg)
            self.last_mount_error = msg
        self.volume_retry_at = now + dt.timedelta(seconds=2)
        return False

    def _crash_loop(self, r: ContainerRun, now: dt.datetime) -> None:
        """A terminated container that the restart policy restarts: back-off first (the first restart is at once)."""
        delay = 0.0 if r.restart_count == 0 else backoff_delay(r.restart_count)
        r.last_state = r.terminated_dict()
        r.state, r.exit_code = "waiting", None
        r.reason = "CrashLoopBackOff"
        r.message = f"back-off {int(delay)}s restarting failed container={r.name} pod={self.name}_{self.ns}({self.uid})"
        self.retry[r.name] = {"at": now + dt.timedelta(seconds=delay), "restart": True}
        if delay:
            self.event("Warning", "BackOff", f"Back-off restarting failed container {r.name} in pod "
                       f"{self.name}_{self.ns}({self.uid})", r.name)

    def _try_start(self, pod: dict, c: dict, r: ContainerRun, now: dt.datetime) -> None:
        retry = self.retry.get(r.name) or {}
        if retry.get("at") and now < retry["at"]:
            if r.reason == "ErrImagePull" and now >= retry.get("show_backoff_at", now):
                r.reason = "ImagePullBackOff"
                r.message = f'Back-off pulling image "{r.image}": ErrImagePull: {retry.get("error", "")}'
                self.event("Normal", "BackOff", f'Back-off pulling image "{r.image}"', r.name)
                self.event("Warning", "Failed", "Error: ImagePullBackOff", r.name)
            return
        restart = bool(retry.get("restart"))
        entry = match_image(r.image, self.kubelet.cfg.images)
        if entry is None:
            failures = int(retry.get("failures", 0)) + 1
            err = image_pull_error(r.image)
            if failures == 1:
                log.warning("pod %s: container %s: image %r matches no entry of the image table", self.key, r.name,
                            r.image)
            self.event("Normal", "Pulling", f'Pulling image "{r.image}"', r.name)
            self.event("Warning", "Failed", f'Failed to pull image "{r.image}": {err}', r.name)
            self.event("Warning", "Failed", "Error: ErrImagePull", r.name)
            r.reason, r.message = "ErrImagePull", err
            self.retry[r.name] = {"at": now + dt.timedelta(seconds=backoff_delay(failures)), "failures": failures,
                                  "error": err, "show_backoff_at": now + dt.timedelta(seconds=1), "restart": restart}
            return
        try:
            env = self._container_env(pod, c, entry)
        except EnvError as e:
            self._waiting_error(r, "CreateContainerConfigError", str(e), now, 2.0, restart)
            return
        argv = container_argv(c, env)
        if argv is None:
            cid = hashlib.sha256(f"{self.uid}/{r.name}/{r.restart_count}".encode()).hexdigest()
            self._waiting_error(r, "CreateContainerError", f'failed to generate container "{cid}" spec: failed to '
                                "generate spec: no command specified", now, 10.0, restart)
            return
        if restart:
            r.restart_count += 1
        self.retry.pop(r.name, None)
        self._spawn(c, r, argv, env, entry)

    def _waiting_error(self, r: ContainerRun, reason: str, message: str, now: dt.datetime, delay: float,
                       restart: bool) -> None:
        if (r.reason, r.message) != (reason, message):
            log.warning("pod %s: container %s: %s: %s", self.key, r.name, reason, message)
            self.event("Warning", "Failed", f"Error: {message}", r.name)
        r.state, r.reason, r.message = "waiting", reason, message
        self.retry[r.name] = {"at": now + dt.timedelta(seconds=delay), "restart": restart}

    def _container_env(self, pod: dict, c: dict, entry: dict) -> dict[str, str]:
        kubelet, cfg = self.kubelet, self.kubelet.cfg
        cache: dict[tuple[str, str, str], dict | None] = {}

        def getter(kind: str):
            def get(ns: str, name: str):
                k = (kind, ns, name)
                if k not in cache:
                    cache[k] = kubelet.kube.get(f"/api/v1/namespaces/{ns}/{kind}/{name}")
                return cache[k]
            return get

        env = container_env(pod, c, get_secret=getter("secrets"), get_configmap=getter("configmaps"),
                            service_env=kubelet.service_env, pod_ip=cfg.pod_ip, host_ip=cfg.host_ip,
                            node_alloc=kubelet.node.allocatable())
        return {**image_env(entry, self.name, os.environ), **env}

    def _spawn(self, c: dict, r: ContainerRun, argv: list[str], env: dict[str, str], entry: dict) -> None:
        now = utcnow()
        cid = secrets.token_hex(32)
        cdir = self.dir / "containers" / r.name
        cdir.mkdir(parents=True, exist_ok=True)
        term_file = cdir / "termination-log"
        term_file.write_bytes(b"")
        term_file.chmod(0o666)
        mounts = []
        if self.kubelet.mount_namespace:
            mounts = container_mounts(c, self.volumes or {}, term_file)
            hosts = cdir / "hosts"  # the Services' names (pod_network.py)
            hosts.write_text(self.kubelet.networks.hosts())
            mounts.append({"source": str(hosts), "target": "/etc/hosts", "read_only": True})
        else:
            env = {**env, "IMG2IMG_TERMINATION_LOG": str(term_file)}
            if c.get("volumeMounts"):
                log.warning("pod %s: container %s: no mount namespace here: its volumeMounts are not applied",
                            self.key, r.name)
        spec = {"argv": argv, "env": env, "workdir": c.get("workingDir") or str(self.dir / "work"),
                "workdir_is_host_path": not c.get("workingDir"), "mounts": mounts,
                "image_paths": entry.get("paths", []), "mount_namespace": self.kubelet.mount_namespace,
                "netns": self.netns}
        try:
            proc, offset, status_r = start_launcher(spec, cdir / f"launch-{cid[:12]}.json",
                                                    self.dir / "logs" / f"{r.name}.log", self.dir)
        except OSError as e:
            self._waiting_error(r, "CreateContainerError", f"failed to start the container process: {e}", now, 10.0,
                                False)
            return
        processes = self.kubelet.processes
        if not processes.add(proc):  # shutting down
            kill_group(proc.pid, signal.SIGKILL)
            proc.wait()
            os.close(status_r)
            return
        report = read_start_report(status_r)
        r.container_id = f"containerd://{cid}"
        r.image_id = image_id(r.image)
        r.started_at = utcnow()
        if report:
            proc.wait()
            kill_group(proc.pid, signal.SIGKILL)
            processes.remove(proc.pid)
            r.state, r.reason, r.message = "terminated", report.get("reason", "StartError"), report.get("message", "")
            r.exit_code = 128
            r.finished_at = utcnow()
            log.warning("pod %s: container %s: %s", self.key, r.name, r.message)
            self.event("Warning", "Failed", f"Error: {r.message}", r.name)
            return
        r.state, r.reason, r.message, r.exit_code, r.finished_at = "running", "", "", None, None
        self.running[r.name] = Running(proc, offset, term_file, c.get("terminationMessagePolicy") or "File")
        (cdir / "pid").write_text(f"{proc.pid} {start_time(proc.pid)}\n")
        log.info("pod %s: container %s started: pid %d, image %s, argv %s", self.key, r.name, proc.pid, r.image,
                 json.dumps(argv)[:300])
        self.event("Normal", "Pulled", f'Container image "{r.image}" already present on machine', r.name)
        self.event("Normal", "Created", f"Created container: {r.name}", r.name)
        self.event("Normal", "Started", f"Started container {r.name}", r.name)
        threading.Thread(target=self._wait, args=(r.name, proc), name=f"wait-{proc.pid}", daemon=True).start()

    # -- exits
    def _wait(self, name: str, proc: subprocess.Popen) -> None:
        rc = wait_container(proc)
        self.kubelet.processes.remove(proc.pid)
        try:
            (self.dir / "containers" / name / "pid").unlink()
        except OSError:
            pass
        with self.exits_lock:
            self.exits[name] = (rc, utcnow())
        self.wake.set()

    def collect_exits(self) -> None:
        """Turn the exits reported since the last call into terminated states (exit code, termination message)."""
        with self.exits_lock:
            exits, self.exits = self.exits, {}
        for name, (rc, finished) in exits.items():
            running = self.running.pop(name, None)
            run = next((r for r in self.init_runs + self.runs if r.name == name), None)
            if running is None or run is None:
                continue
            code = exit_code_of(rc)
            try:
                content = running.termination_file.read_bytes()[:MAX_TERMINATION_MESSAGE]
            except OSError:
                content = b""
            tail = b""
            if not content and code != 0 and running.policy == "FallbackToLogsOnError":
                tail = read_tail(self.dir / "logs" / f"{name}.log", running.log_offset)
            run.state, run.exit_code, run.finished_at = "terminated", code, finished
            run.reason = "Completed" if code == 0 else "Error"
            run.message = termination_message(content, running.policy, code, tail)
            log.info("pod %s: container %s exited with code %d", self.key, name, code)

    # -- killing
    def signal_stop(self) -> None:
        """SIGTERM to every running container's main process (the runtime signals the container's init only)."""
        for name, running in self.running.items():
            self.event("Normal", "Killing", f"Stopping container {name}", name)
            try:
                os.kill(running.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGKILL to the process group of every running container."""
        for running in list(self.running.values()):
            kill_group(running.proc.pid, signal.SIGKILL)
