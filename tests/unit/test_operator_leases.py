"""leases: a lease and the clock → running, lapsed or done; the table's fencing; adoption after a restart."""

from __future__ import annotations

import random

from img2img_operator.leases import (
    DONE,
    LAPSED,
    PENDING,
    RUNNING,
    Lease,
    LeaseTable,
    adoptable,
    lease_job,
    lease_state,
    new_lease_id,
)

from operator_samples import RUNNER, SEC, T0, UID, job, queued_status, running_status

LEASE_MS = 15 * SEC


def lease(attempt: int = 1, renewed: int = T0, **kw) -> Lease:
    return Lease(f"{UID}.{attempt}.0000abcd", UID, attempt, RUNNER, renewed_ms=renewed, **kw)


def test_a_lease_id_names_its_job_and_attempt():
    lease_id = new_lease_id(UID, 3, random.Random(1))
    assert lease_id.startswith(f"{UID}.3.") and len(lease_id.rsplit(".", 1)[1]) == 8
    assert lease_job(lease_id) == (UID, 3)
    assert new_lease_id(UID, 3, random.Random(2)) != lease_id
    for bad in ("", "uid", "uid.x.abc", "uid.2", ".2.abc"):
        assert lease_job(bad) is None, bad


def test_running_until_no_heartbeat_for_lease_seconds():
    state = lease_state(lease(renewed=T0), T0 + 14_999, LEASE_MS, runner_gone=False, adopt_until=0)
    assert state.kind == RUNNING and state.wake_at == T0 + LEASE_MS
    state = lease_state(lease(renewed=T0), T0 + LEASE_MS, LEASE_MS, runner_gone=False, adopt_until=0)
    assert state.kind == LAPSED and f"no heartbeat from the runner {RUNNER} for 15 s" == state.reason


def test_a_runner_pod_gone_lapses_its_lease_at_once():
    state = lease_state(lease(renewed=T0), T0 + 1, LEASE_MS, runner_gone=True, adopt_until=0)
    assert state.kind == LAPSED and RUNNER in state.reason


def test_done_once_the_runner_reported_even_if_it_went_away_since():
    state = lease_state(lease(outcome={"error": None}), T0 + 99 * SEC, LEASE_MS, runner_gone=True, adopt_until=0)
    assert state.kind == DONE and state.lease.outcome == {"error": None}


def test_no_lease_is_pending_for_lease_seconds_after_the_operators_start_then_lost():
    start = T0
    state = lease_state(None, start + 1, LEASE_MS, runner_gone=False, adopt_until=start + LEASE_MS)
    assert state.kind == PENDING and state.wake_at == start + LEASE_MS
    state = lease_state(None, start + LEASE_MS, LEASE_MS, runner_gone=False, adopt_until=start + LEASE_MS)
    assert state.kind == LAPSED and "since the operator started" in state.reason


def test_the_table_holds_one_current_lease_per_job_and_fences_every_other_id():
    table = LeaseTable()
    first = lease(1)
    table.grant(first)
    assert table.get(first.id) is first and table.of_job(UID) is first
    assert table.get(f"{UID}.1.ffffffff") is None  # same attempt, another grant: not current
    assert not table.end(UID, f"{UID}.1.ffffffff", T0)
    assert table.end(UID, first.id, T0 + 5 * SEC)
    assert table.get(first.id) is None and table.ended_at(UID, 1) == T0 + 5 * SEC and table.ended_at(UID, 2) is None
    second = lease(2)
    table.grant(second)
    assert table.get(first.id) is None and table.get(second.id) is second


def test_a_job_is_claimed_by_one_take_at_a_time_and_held_while_leased():
    table = LeaseTable()
    assert table.claim(UID, "a") and not table.claim(UID, "b")
    assert table.holds(UID) and table.claimers() == {"a"}
    table.unclaim(UID)
    assert not table.holds(UID) and table.claimers() == set()
    table.grant(lease())
    assert table.holds(UID) and not table.claim(UID, "b")


def test_a_lease_of_an_earlier_operator_is_adopted_only_as_the_status_says():
    lease_id = f"{UID}.1.0000abcd"
    assert adoptable(job(running_status(1)), lease_id, RUNNER)
    assert not adoptable(job(running_status(1)), lease_id, "l4-other")  # another runner
    assert not adoptable(job(running_status(2)), lease_id, RUNNER)  # an older attempt
    assert not adoptable(job(queued_status()), lease_id, RUNNER)  # retried since
    assert not adoptable(None, lease_id, RUNNER)  # deleted
    assert not adoptable(job(running_status(1)), "not-a-lease", RUNNER)
    assert not adoptable(job(running_status(1)), f"other-uid.1.0000abcd", RUNNER)


def test_a_runner_heartbeating_or_taking_on_another_job_is_working_elsewhere_and_a_silent_one_is_not():
    table = LeaseTable()
    assert not table.working_elsewhere(RUNNER, UID, T0, LEASE_MS)
    other = Lease(id="other.1.0000abcd", uid="other", attempt=1, runner=RUNNER, renewed_ms=T0)
    table.grant(other)
    assert table.working_elsewhere(RUNNER, UID, T0 + 1 * SEC, LEASE_MS)
    assert not table.working_elsewhere(RUNNER, "other", T0 + 1 * SEC, LEASE_MS)  # its own job is not elsewhere
    assert not table.working_elsewhere("l4-another", UID, T0 + 1 * SEC, LEASE_MS)
    assert not table.working_elsewhere(RUNNER, UID, T0 + LEASE_MS, LEASE_MS)  # that lease lapsed too: silent
    table.end("other", other.id, T0)
    assert table.claim("third", RUNNER) and table.working_elsewhere(RUNNER, UID, T0, LEASE_MS)
