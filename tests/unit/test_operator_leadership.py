"""leadership: who leads, given the Lease as read, what this replica saw of it, and its clock (client-go's rules)."""

from __future__ import annotations

from img2img_operator.leadership import ACQUIRE, FOLLOW, RENEW, Record, Sighting, decide, observe, released

WALL = 1_767_225_600.25  # 2026-01-01T00:00:00.25Z
STAMP = "2026-01-01T00:00:00.250000Z"


def held_by(holder: str, duration: int = 15, transitions: int = 3, renewed: str = "2026-01-01T00:00:00.000000Z"):
    return Record(holder, duration, "2025-12-31T23:00:00.000000Z", renewed, transitions)


def test_no_lease_yet_the_first_replica_creates_it_and_leads():
    verdict = decide(None, None, "op-a", now=100.0, wall=WALL, duration_seconds=15)
    assert verdict.action == ACQUIRE
    assert verdict.record == Record("op-a", 15, STAMP, STAMP, 0)
    assert verdict.record.spec() == {"holderIdentity": "op-a", "leaseDurationSeconds": 15, "acquireTime": STAMP,
                                     "renewTime": STAMP, "leaseTransitions": 0}


def test_a_standby_follows_a_held_lease_until_it_has_not_changed_for_its_duration():
    lease = held_by("op-a")
    seen = observe(None, lease, now=100.0)
    assert decide(lease, seen, "op-b", 114.9, WALL, 15).action == FOLLOW
    assert decide(lease, seen, "op-b", 114.9, WALL, 15).expires_at == 115.0
    taken = decide(lease, observe(seen, lease, 115.0), "op-b", now=115.0, wall=WALL, duration_seconds=15)
    assert taken.action == ACQUIRE
    assert taken.record == Record("op-b", 15, STAMP, STAMP, 4)  # a new holder: one more transition


def test_a_renewal_seen_restarts_the_count():
    lease = held_by("op-a")
    seen = observe(None, lease, now=100.0)
    renewed = held_by("op-a", renewed="2026-01-01T00:00:10.000000Z")
    seen = observe(seen, renewed, now=110.0)
    assert seen == Sighting(renewed, 110.0)
    assert decide(renewed, seen, "op-b", now=120.0, wall=WALL, duration_seconds=15).action == FOLLOW
    assert decide(renewed, seen, "op-b", now=125.0, wall=WALL, duration_seconds=15).action == ACQUIRE


def test_the_standby_counts_on_its_own_clock_never_from_the_renew_time_written_by_another_node():
    # renewTime says an hour ago (the leader's clock is behind): the lease is still fresh to one that just saw it
    stale_clock = held_by("op-a", renewed="2025-12-31T23:00:00.000000Z")
    seen = observe(None, stale_clock, now=500.0)
    assert decide(stale_clock, seen, "op-b", now=500.0, wall=WALL, duration_seconds=15).action == FOLLOW
    # a restarted standby has seen nothing yet: it waits a whole duration from its first read too
    assert decide(stale_clock, None, "op-b", now=500.0, wall=WALL, duration_seconds=15).action == FOLLOW


def test_the_holders_duration_counts_not_the_standbys_own():
    lease = held_by("op-a", duration=40)
    seen = observe(None, lease, now=0.0)
    assert decide(lease, seen, "op-b", now=30.0, wall=WALL, duration_seconds=15).action == FOLLOW
    assert decide(lease, seen, "op-b", now=40.0, wall=WALL, duration_seconds=15).action == ACQUIRE


def test_the_holder_renews_keeping_when_it_acquired_and_the_transitions():
    lease = held_by("op-a", transitions=7)
    verdict = decide(lease, None, "op-a", now=1.0, wall=WALL, duration_seconds=15)
    assert verdict.action == RENEW
    assert verdict.record == Record("op-a", 15, "2025-12-31T23:00:00.000000Z", STAMP, 7)


def test_a_restarted_leader_finds_its_own_name_and_leads_again_at_once():
    lease = held_by("op-a")
    seen = observe(None, lease, now=3.0)  # it restarted and reads the lease for the first time
    assert decide(lease, seen, "op-a", now=3.0, wall=WALL, duration_seconds=15).action == RENEW


def test_a_released_lease_is_taken_at_once():
    lease = released(held_by("op-a", transitions=2), WALL)
    assert lease == Record("", 1, STAMP, STAMP, 2)
    assert "holderIdentity" not in lease.spec()
    seen = observe(None, lease, now=50.0)
    taken = decide(lease, seen, "op-b", now=50.0, wall=WALL, duration_seconds=15)
    assert taken.action == ACQUIRE and taken.record == Record("op-b", 15, STAMP, STAMP, 3)


def test_the_lease_object_reads_back_into_the_record_it_was_written_from():
    record = Record("op-a", 15, STAMP, STAMP, 2)
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "x"},
             "spec": record.spec()}
    assert Record.of(lease) == record
    assert Record.of({"metadata": {"name": "x"}, "spec": {}}) == Record()
