"""The leader election's I/O: campaign for the Lease, then keep it; the decisions are ``leadership``'s.

Leadership lost (no renewal succeeded for ``renewDeadlineSeconds``, or another replica holds the Lease) ends the
process at once (``os._exit``): every task that could still write (the dispatcher, a take recording an assignment,
a status write) stops with it, and Kubernetes restarts the container, which comes back as a standby with an empty
memory. Stopping each part in place instead would leave a window where some coroutine still writes. A watchdog
thread enforces the deadline even while the event loop is busy: past it, nothing of this process runs on.

A clean shutdown releases the Lease (``release``) once the operator has stopped acting, so that a standby takes
over at its next look instead of after ``leaseDurationSeconds``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from .config import LeaderElection
from .kube import Conflict, Kube
from .leadership import ACQUIRE, FOLLOW, RENEW, Record, Sighting, decide, observe, released

log = logging.getLogger("img2img_operator.elector")

EXIT_LEADERSHIP_LOST = 3


def exit_process(why: str, code: int = EXIT_LEADERSHIP_LOST) -> None:
    """End the process now, from any thread, running nothing else (no cleanup handler: it could still write)."""
    log.critical("%s: exiting, to come back as a standby", why)
    logging.shutdown()
    os._exit(code)


class LeaseLost(Exception):
    """Another replica holds the Lease now."""


class Elector:
    def __init__(self, kube: Kube, config: LeaderElection, namespace: str, identity: str,
                 on_lost: Callable[[str], None] = exit_process, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        self.kube = kube
        self.config = config
        self.namespace = namespace
        self.identity = identity
        self.on_lost = on_lost
        self.clock = clock
        self.wall = wall
        self.holder = ""  # the holder as last read
        self.leading = False
        self._record: Record | None = None  # the Lease as last written or read, and its resourceVersion
        self._version: str | None = None
        self._deadline = 0.0  # monotonic: the leader acts until then unless it renews
        self._stopped = threading.Event()

    # ---- standing by ------------------------------------------------------------------------------------------
    async def campaign(self) -> None:
        """Return once this replica holds the Lease: at once when it is free, expired, or already ours."""
        c = self.config
        seen: Sighting | None = None
        following = None
        while True:
            try:
                lease = await self.kube.read_lease(self.namespace, c.lease_name)
                current = Record.of(lease) if lease is not None else None
                now = self.clock()
                if current is not None:
                    seen = observe(seen, current, now)
                    self.holder = current.holder
                verdict = decide(current, seen, self.identity, now, self.wall(), c.lease_duration_seconds)
                if verdict.action == FOLLOW:
                    if following != current.holder:
                        following = current.holder
                        log.info("standing by: %s leads", following)
                else:
                    assert verdict.record is not None
                    version = (lease.get("metadata") or {}).get("resourceVersion") if lease is not None else None
                    await self._write(verdict.record, version, now)
                    log.info("%s the Lease %s/%s: leading", "acquired" if verdict.action == ACQUIRE else "kept",
                             self.namespace, c.lease_name)
                    self.leading = True
                    threading.Thread(target=self._watchdog, name="leadership watchdog", daemon=True).start()
                    return
            except asyncio.CancelledError:
                raise
            except Conflict:
                pass  # another replica wrote it first: read it again
            except Exception as e:
                log.warning("cannot read or take the Lease %s/%s: %s", self.namespace, c.lease_name, e)
            await asyncio.sleep(c.retry_period_seconds)

    # ---- leading ----------------------------------------------------------------------------------------------
    async def keep(self) -> None:
        """Renew every retry period, forever; leadership lost ends the process (``on_lost``)."""
        while True:
            await asyncio.sleep(self.config.retry_period_seconds)
            try:
                await asyncio.wait_for(self._renew(), max(0.0, self._deadline - self.clock()))
            except asyncio.CancelledError:
                raise
            except LeaseLost as e:
                self.on_lost(f"leadership lost: {e}")
                return
            except Exception as e:
                if self.clock() >= self._deadline:
                    self.on_lost(f"leadership lost: no renewal for {self.config.renew_deadline_seconds:g} s; the "
                                 f"last try: {type(e).__name__}: {e}")
                    return
                log.warning("cannot renew the Lease (%s: %s); trying again", type(e).__name__, e)

    async def _renew(self) -> None:
        now = self.clock()
        assert self._record is not None
        current, version = self._record, self._version
        for _ in range(2):
            verdict = decide(current, None, self.identity, now, self.wall(), self.config.lease_duration_seconds)
            if verdict.action != RENEW or verdict.record is None:
                raise LeaseLost(f"the Lease is held by {current.holder or 'nobody'}")
            try:
                await self._write(verdict.record, version, now)
                return
            except Conflict:  # written by someone else since: whose is it now?
                lease = await self.kube.read_lease(self.namespace, self.config.lease_name)
                if lease is None:
                    raise LeaseLost("the Lease was deleted") from None
                current, version = Record.of(lease), (lease.get("metadata") or {}).get("resourceVersion")
                self.holder = current.holder
        raise Conflict("the Lease keeps changing")

    async def _write(self, record: Record, version: str | None, sent: float) -> None:
        body = await self.kube.write_lease(self.namespace, self.config.lease_name, record.spec(), version)
        self._record, self._version = Record.of(body), (body.get("metadata") or {}).get("resourceVersion")
        self.holder = self._record.holder
        self._deadline = sent + self.config.renew_deadline_seconds

    def _watchdog(self) -> None:
        """Past the deadline, end the process whatever the event loop is doing."""
        while not self._stopped.is_set():
            left = self._deadline - self.clock()
            if left <= 0:
                self.on_lost(f"leadership lost: no renewal for {self.config.renew_deadline_seconds:g} s")
                return
            self._stopped.wait(min(left, self.config.retry_period_seconds))

    async def release(self) -> None:
        """Give the Lease up (the operator has stopped acting): a standby takes over at its next look."""
        if not self.leading or self.clock() >= self._deadline:
            return
        self._stopped.set()
        self.leading = False
        assert self._record is not None
        try:
            await self.kube.write_lease(self.namespace, self.config.lease_name,
                                        released(self._record, self.wall()).spec(), self._version)
            log.info("released the Lease %s/%s", self.namespace, self.config.lease_name)
        except Exception as e:  # the standby takes over when the lease expires
            log.warning("cannot release the Lease: %s", e)

    def describe(self) -> dict[str, Any]:
        return {"role": "leader" if self.leading else "standby", "leader": self.holder or None}
