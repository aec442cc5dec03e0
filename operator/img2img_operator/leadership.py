"""Leader election over a ``coordination.k8s.io/v1`` Lease: which replica acts, and when a standby takes over. Pure.

The semantics are client-go's (``k8s.io/client-go/tools/leaderelection``), so ``kubectl get lease`` reads as it
does for kube-controller-manager:

- ``holderIdentity``: the leader's pod name; ``acquireTime``: when it took the lease; ``renewTime``: its last
  renewal; ``leaseTransitions``: how many times the holder changed; ``leaseDurationSeconds``: how long the holder's
  renewal is good for.
- Every replica looks at the Lease every ``retryPeriodSeconds``. A standby takes the lease over once the record has
  not changed for the record's ``leaseDurationSeconds``, counted on the standby's own clock from when it first saw
  that record (``Sighting``): clocks of different nodes are never compared.
- The leader renews every ``retryPeriodSeconds``; once no renewal has succeeded for ``renewDeadlineSeconds``
  (counted from when the last good renewal was sent), it has lost the lease and must stop acting. Since
  renewDeadline < leaseDuration, it has stopped before any standby may take over.
- A replica that finds its own identity in the record (its container restarted) leads again at once.
- A leader shutting down cleanly releases the lease (an empty holder): a standby takes it at the next look.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

ACQUIRE, RENEW, FOLLOW = "acquire", "renew", "follow"


def micro_time(wall: float) -> str:
    """A metav1.MicroTime, as the Lease's times are written."""
    return datetime.fromtimestamp(wall, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Record:
    """The Lease's spec."""

    holder: str = ""
    duration_seconds: int = 0
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    @classmethod
    def of(cls, lease: Mapping[str, Any]) -> Record:
        spec = lease.get("spec") or {}
        return cls(holder=spec.get("holderIdentity") or "", duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
                   acquire_time=spec.get("acquireTime"), renew_time=spec.get("renewTime"),
                   transitions=int(spec.get("leaseTransitions") or 0))

    def spec(self) -> dict[str, Any]:
        spec = {"holderIdentity": self.holder or None, "leaseDurationSeconds": self.duration_seconds,
                "acquireTime": self.acquire_time, "renewTime": self.renew_time, "leaseTransitions": self.transitions}
        return {k: v for k, v in spec.items() if v is not None}


@dataclass(frozen=True)
class Sighting:
    """A record as this replica saw it, and since when (its monotonic clock, seconds) it has seen it unchanged."""

    record: Record
    since: float


def observe(previous: Sighting | None, record: Record, now: float) -> Sighting:
    """The sighting after reading ``record`` at ``now``: the same one while the record does not change."""
    if previous is not None and previous.record == record:
        return previous
    return Sighting(record, now)


@dataclass(frozen=True)
class Verdict:
    action: str  # ACQUIRE (write ``record``: this replica leads once it is written), RENEW (the same), FOLLOW
    record: Record | None = None
    expires_at: float | None = None  # FOLLOW: when the holder's lease runs out, unless renewed (monotonic)


def decide(current: Record | None, seen: Sighting | None, me: str, now: float, wall: float,
           duration_seconds: int) -> Verdict:
    """What this replica (``me``) does with the Lease as it reads it now. ``current`` None: there is no Lease yet;
    ``seen``: ``observe``'s sighting of ``current``; ``wall``: the wall clock, for the times written."""
    stamp = micro_time(wall)
    if current is not None and current.holder == me:
        return Verdict(RENEW, replace(current, duration_seconds=duration_seconds, renew_time=stamp,
                                      acquire_time=current.acquire_time or stamp))
    if current is not None and current.holder:
        since = seen.since if seen is not None and seen.record == current else now
        expires = since + current.duration_seconds
        if now < expires:
            return Verdict(FOLLOW, expires_at=expires)
    transitions = 0 if current is None else current.transitions + 1
    return Verdict(ACQUIRE, Record(me, duration_seconds, stamp, stamp, transitions))


def released(current: Record, wall: float) -> Record:
    """The record a leader leaves when it shuts down cleanly: no holder, so a standby takes over at once."""
    stamp = micro_time(wall)
    return replace(current, holder="", duration_seconds=1, acquire_time=stamp, renew_time=stamp)

