"""Leases: one per attempt of a job on a runner. A lease and the clock say whether the attempt runs, lapsed or is
done. Pure (the table is memory, no I/O).

- A lease is granted when a runner takes a job, once the assignment is recorded in the job's status (``attempts``,
  ``runnerPod``, ``startedAt``). Its id is ``<job uid>.<attempt>.<8 random hex>``.
- The runner's heartbeats renew it; its ``done`` ends it with the outcome.
- It lapses when no heartbeat renews it for ``runners.leaseSeconds``, or when its runner's pod is gone: the attempt
  is lost (``RunnerLost``) and retried per the job's policy.
- Fencing: only the job's current lease counts. The table holds at most one lease per job; a heartbeat or done for
  any other lease id changes nothing.
- The table lives in the operator's memory. After a restart, a runner that heartbeats (or reports) a lease whose job
  is still IN_PROGRESS with that attempt on that runner is adopted (``adoptable``); a job IN_PROGRESS whose runner
  has not come back within ``leaseSeconds`` of the operator's start is lost.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from img2img.api.status import JobState

from .views import JobView

RUNNING = "running"
LAPSED = "lapsed"
DONE = "done"
PENDING = "pending"  # the job runs on a runner, and this operator has not heard from it yet (just started)


@dataclass
class Lease:
    id: str
    uid: str
    attempt: int
    runner: str
    renewed_ms: int  # the last heartbeat (or the grant)
    pool: str = ""
    warm: bool = False  # the runner held every model the job needs
    step: int | None = None
    steps: int | None = None
    outcome: Mapping[str, Any] | None = None  # the runner's done
    written_ms: int | None = None  # the operator's last status write for this attempt (progress: at most 1/s)


def new_lease_id(uid: str, attempt: int, rng: random.Random) -> str:
    return f"{uid}.{attempt}.{rng.getrandbits(32):08x}"


def lease_job(lease_id: str) -> tuple[str, int] | None:
    """(job uid, attempt) a lease id names; None when it is not one."""
    uid, _, rest = lease_id.partition(".")
    attempt, _, tail = rest.partition(".")
    if not uid or not attempt.isdigit() or not tail:
        return None
    return uid, int(attempt)


def adoptable(job: JobView | None, lease_id: str, runner: str) -> bool:
    """Whether ``lease_id`` on ``runner`` is the attempt the job's status says runs (a lease granted by an earlier
    operator process): IN_PROGRESS, that attempt, that runner."""
    named = lease_job(lease_id)
    return (job is not None and named is not None and named[0] == job.uid and named[1] == job.attempts
            and job.state == JobState.IN_PROGRESS.value and job.status.get("runnerPod") == runner)


@dataclass(frozen=True)
class LeaseState:
    """The attempt as its lease tells it."""

    kind: str  # RUNNING, LAPSED, DONE or PENDING
    lease: Lease | None = None
    reason: str = ""  # why it lapsed
    wake_at: int | None = None  # ms: look again then (the lease expires, the adoption window closes)


def lease_state(lease: Lease | None, now: int, lease_ms: int, runner_gone: bool, adopt_until: int) -> LeaseState:
    """The state of a job's attempt on its runner. ``runner_gone``: the runner's pod no longer exists (or ended);
    ``adopt_until``: the operator's start + leaseSeconds (until then a missing lease may still be adopted)."""
    if lease is None:
        if now < adopt_until:
            return LeaseState(PENDING, wake_at=adopt_until)
        return LeaseState(LAPSED, reason="its runner has not reported since the operator started")
    if lease.outcome is not None:
        return LeaseState(DONE, lease)
    if runner_gone:
        return LeaseState(LAPSED, lease, f"the runner pod {lease.runner} is gone")
    expires = lease.renewed_ms + lease_ms
    if now >= expires:
        return LeaseState(LAPSED, lease, f"no heartbeat from the runner {lease.runner} for "
                                         f"{(now - lease.renewed_ms) / 1000:.0f} s")
    return LeaseState(RUNNING, lease, wake_at=expires)


class LeaseTable:
    """The current lease of each job, the jobs being claimed by a take, and when each job's last attempt ended."""

    def __init__(self) -> None:
        self._by_uid: dict[str, Lease] = {}
        self._claims: dict[str, str] = {}  # uid → the runner taking it
        self._ended: dict[str, tuple[int, int]] = {}  # uid → (attempt, ms)

    # a take claims a job while it records the assignment: no other take, and no admission, counts it as free
    def claim(self, uid: str, runner: str) -> bool:
        if uid in self._claims or uid in self._by_uid:
            return False
        self._claims[uid] = runner
        return True

    def unclaim(self, uid: str) -> None:
        self._claims.pop(uid, None)

    def claimers(self) -> set[str]:
        """The runners whose take is recording an assignment (busy from now on, unless it fails)."""
        return set(self._claims.values())

    def holds(self, uid: str) -> bool:
        """The job is being taken, or an attempt of it holds a runner."""
        return uid in self._claims or uid in self._by_uid

    def grant(self, lease: Lease) -> None:
        self._by_uid[lease.uid] = lease

    def of_job(self, uid: str) -> Lease | None:
        return self._by_uid.get(uid)

    def get(self, lease_id: str) -> Lease | None:
        """The lease with this id, if it is its job's current one."""
        named = lease_job(lease_id)
        lease = self._by_uid.get(named[0]) if named else None
        return lease if lease is not None and lease.id == lease_id else None

    def end(self, uid: str, lease_id: str, now: int) -> bool:
        """The attempt is over (its end recorded in the job's status): the lease goes. False if it was not current."""
        lease = self._by_uid.get(uid)
        if lease is None or lease.id != lease_id:
            return False
        del self._by_uid[uid]
        self._ended[uid] = (lease.attempt, now)
        return True

    def working_elsewhere(self, runner: str, uid: str, now: int, lease_ms: int) -> bool:
        """Whether ``runner`` is taking, or heartbeating on, a job other than ``uid``: alive and on its way, so a
        lapsed lease of ``uid`` on it was lost in transit (an operator killed before answering its take), not a
        runner that hangs."""
        if any(r == runner and u != uid for u, r in self._claims.items()):
            return True
        return any(lease.runner == runner and lease.uid != uid and lease.outcome is None
                   and now < lease.renewed_ms + lease_ms for lease in self._by_uid.values())

    def ended_at(self, uid: str, attempt: int) -> int | None:
        """When attempt ``attempt`` of the job ended, if this process saw it end."""
        ended = self._ended.get(uid)
        return ended[1] if ended is not None and ended[0] == attempt else None

    def forget(self, uid: str) -> None:
        """The job is gone for good."""
        self._ended.pop(uid, None)

    def __iter__(self) -> Iterator[Lease]:
        return iter(list(self._by_uid.values()))
