"""One thread per pod bound to this node: from admission to its terminal status (and its deletion).

The worker runs the pod's containers (containers.py), kills the pod when the kubelet would (kills.py: deletion with
its grace period — SIGTERM, grace, SIGKILL, then DELETE with grace 0 —, eviction, `activeDeadlineSeconds`, node
shutdown) and PATCHes `pods/{name}/status` with kubelet semantics (pod_status.py) whenever it changes. A terminal
status is retried until the API server has it: the operator waits for it.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import TYPE_CHECKING

from img2img.api.times import parse_rfc3339
from img2img.kube import API_TIMEOUT, KubeError, pod_path
from img2img.local.executor.containers import PodContainers
from img2img.local.executor.kills import MIN_KILL_GRACE, active_deadline, kill_decision, kill_outcome
from img2img.local.executor.kube_time import utcnow
from img2img.local.executor.pod_status import (
    TERMINAL_PHASES, PodView, build_pod_status, mark_unknown, pod_phase, rejected_status,
)

if TYPE_CHECKING:
    from img2img.local.executor.kubelet import Kubelet

log = logging.getLogger(__name__)

SHUTDOWN_API_TIMEOUT = 2.0  # at node shutdown a status write must not hold up the others


class PodWorker:
    """Runs one pod bound to this node from admission to its terminal status (and its deletion)."""

    def __init__(self, kubelet: Kubelet, pod: dict, rejected: tuple[str, str] | None = None):
        self.kubelet = kubelet
        meta = pod["metadata"]
        self.uid, self.ns, self.name = meta["uid"], meta["namespace"], meta["name"]
        self.key = f"{self.ns}/{self.name}"
        self.pod = pod
        self.rejected = rejected
        self.wake = threading.Event()
        self.removed = False
        self.shutdown = False
        self.terminal = False  # no longer holds node resources
        self.done = False
        self.dir = kubelet.pod_dir(meta)
        self.containers: PodContainers | None = None  # once admitted
        self.start_time = utcnow()  # the pod's startTime once admitted
        self.last_status: dict | None = None
        self.last_patch_error = ""
        self.conditions = list((pod.get("status") or {}).get("conditions") or [])
        self.phase_override = self.reason = self.message = self.disruption = None
        self.thread = threading.Thread(target=self.run, name=f"pod-{self.key}", daemon=True)

    # -- called from the controller thread
    def update(self, pod: dict) -> None:
        self.pod = pod
        self.wake.set()

    def remove(self) -> None:
        self.removed = True
        self.wake.set()

    def request_shutdown(self) -> None:
        self.shutdown = True
        self.wake.set()

    def start(self) -> None:
        self.thread.start()

    # -- the worker thread
    def run(self) -> None:
        try:
            self._run()
        except Exception:  # noqa: BLE001
            log.exception("pod %s: worker failed; killing its containers", self.key)
            if self.containers is not None:
                self.containers.kill()
        finally:
            self.terminal = True
            self.done = True
            self.kubelet.notify()

    def _event(self, etype: str, reason: str, message: str, container: str | None = None) -> None:
        self.kubelet.events.emit(self.pod, etype, reason, message, container=container)

    def _run(self) -> None:
        status = self.pod.get("status") or {}
        now = utcnow()
        if self.rejected:
            self._reject(now)
            return
        self.start_time = parse_rfc3339(status.get("startTime")) or now
        self.containers = PodContainers(self.kubelet, self.pod, self.dir, self._event, self.wake)
        self.containers.recover(status)
        for d in ("logs", "containers", "work", "volumes"):
            (self.dir / d).mkdir(parents=True, exist_ok=True)
        log.info("pod %s: admitted (uid %s, restartPolicy %s)", self.key, self.uid, self.containers.restart_policy)
        self._sync_status()
        while True:
            now = utcnow()
            kill = kill_decision(self.pod, now, self.start_time, shutdown=self.shutdown, removed=self.removed,
                                 shutdown_grace=self.kubelet.cfg.shutdown_grace_seconds)
            if kill:
                self._terminate(*kill)
                return
            self.containers.step(self.pod, now)
            if self._finished():
                self.terminal = True
                self._flush_final_status()
                log.info("pod %s: %s", self.key, self._phase())
                return
            self._sync_status()
            self.wake.wait(self._next_timeout(now))
            self.wake.clear()

    def _reject(self, now: dt.datetime) -> None:
        """Admission said no: the pod fails before anything runs."""
        reason, message = self.rejected
        log.warning("pod %s: rejected by admission: %s", self.key, message)
        self._event("Warning", reason, message)
        attempt = 0
        while not self._patch_status(rejected_status(reason, message, self.kubelet.cfg.host_ip, now)):
            attempt += 1
            if self.removed or (self.shutdown and attempt >= 2):
                return
            self.wake.wait(min(2.0 * attempt, 10.0))
            self.wake.clear()

    def _next_timeout(self, now: dt.datetime) -> float:
        timeout = 1.0
        deadline = active_deadline(self.pod, self.start_time)
        if deadline is not None:
            timeout = min(timeout, max((deadline - now).total_seconds(), 0.01))
        return timeout

    def _phase(self) -> str:
        c = self.containers
        return self.phase_override or pod_phase(c.restart_policy, c.init_runs, c.runs, self.terminal)

    def _finished(self) -> bool:
        # OnFailure/Always containers waiting for a restart keep the pod alive (phase says Running then).
        return not self.containers.running and self._phase() in TERMINAL_PHASES

    # -- status
    def _view(self) -> PodView:
        c, cfg = self.containers, self.kubelet.cfg
        return PodView(
            restart_policy=c.restart_policy, init_runs=c.init_runs, runs=c.runs,
            host_ip=cfg.host_ip, pod_ip=cfg.pod_ip if c.sandbox_ready or self.terminal else None,
            start_time=self.start_time, sandbox_ready=c.sandbox_ready and not self.terminal,
            terminal=self.terminal, phase_override=self.phase_override, reason=self.reason, message=self.message,
            disruption=self.disruption,
        )

    def _sync_status(self, timeout: float = API_TIMEOUT) -> bool:
        """PATCH the status when it changed; False when that failed."""
        if self.removed:
            return True
        status = build_pod_status(self._view(), self.conditions, utcnow())
        if status == self.last_status:
            return True
        if self._patch_status(status, timeout):
            self.last_status = status
            self.conditions = status["conditions"]
            return True
        return False

    def _flush_final_status(self, timeout: float = API_TIMEOUT) -> None:
        """The terminal status must reach the API server (the operator waits for it): retry like a status manager."""
        attempt = 0
        while not self._sync_status(timeout):
            attempt += 1
            if self.shutdown and attempt >= 2:
                log.warning("pod %s: terminal status not written before shutdown", self.key)
                return
            self.wake.wait(min(2.0 * attempt, 10.0))
            self.wake.clear()

    def _patch_status(self, status: dict, timeout: float = API_TIMEOUT) -> bool:
        try:
            self.kubelet.kube.patch(pod_path(self.ns, self.name, "status"),
                                    {"metadata": {"uid": self.uid}, "status": status}, timeout=timeout)
            self.last_patch_error = ""
            return True
        except KubeError as e:
            if e.status in (404, 409):
                log.info("pod %s: gone while writing its status", self.key)
                self.removed = True
                return False
            error = str(e)
        except Exception as e:  # noqa: BLE001 - API down: retried on the next loop
            error = str(e)
        if error != self.last_patch_error:  # retried every loop: say it once
            log.warning("pod %s: status update failed (retrying): %s", self.key, error)
            self.last_patch_error = error
        return False

    # -- killing
    def _terminate(self, why: str, grace: float) -> None:
        log.info("pod %s: terminating (%s, grace %.0f s)", self.key, why, grace)
        outcome = kill_outcome(why, self.pod)
        if outcome is not None:
            self.phase_override, self.reason, self.message = "Failed", outcome.reason, outcome.message
            self.disruption = outcome.disruption
            if outcome.event_type:
                self._event(outcome.event_type, outcome.reason, outcome.message)
        c = self.containers
        grace = max(grace, MIN_KILL_GRACE)
        started = time.monotonic()
        deadline = started + grace
        c.collect_exits()
        c.signal_stop()
        while c.running and time.monotonic() < deadline:
            self.wake.wait(min(0.2, max(deadline - time.monotonic(), 0.01)))
            self.wake.clear()
            c.collect_exits()
            if why == "delete":  # a second, shorter delete (e.g. --grace-period=0 --force) shortens the wait
                newer = float(self.pod["metadata"].get("deletionGracePeriodSeconds") or 0)
                deadline = min(deadline, started + max(newer, MIN_KILL_GRACE))
            if self.removed:
                deadline = min(deadline, started + MIN_KILL_GRACE)
        c.kill()
        end = time.monotonic() + 10
        while c.running and time.monotonic() < end:
            self.wake.wait(0.1)
            self.wake.clear()
            c.collect_exits()
        mark_unknown(c.init_runs + c.runs)
        self.terminal = True
        self._flush_final_status(SHUTDOWN_API_TIMEOUT if why == "shutdown" else API_TIMEOUT)
        log.info("pod %s: %s%s", self.key, self._phase(), f" ({self.reason})" if self.reason else "")
        if why == "delete" and not self.removed:
            self.kubelet.finalize_deletion(self.ns, self.name, self.uid)
