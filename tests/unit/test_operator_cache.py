"""cache: the operator's picture of jobs and runner pods, from watch events, write responses and lists."""

from __future__ import annotations

from img2img_operator.cache import Cache

from operator_samples import CONFIG, UID, job_body, pod_body


class Clock:
    def __init__(self):
        self.t = 1_767_225_600.0

    def __call__(self):
        return self.t


def make():
    changes = []
    clock = Clock()
    return Cache(on_change=lambda: changes.append(1), clock=clock), changes, clock


def test_newest_resource_version_wins():
    cache, changes, _ = make()
    cache.job_event(None, job_body({"status": "IN_QUEUE"}, rv="10"))
    assert cache.put_job(job_body({"status": "IN_PROGRESS"}, rv="12"))  # our write's response
    cache.job_event("MODIFIED", job_body({"status": "IN_QUEUE"}, rv="11"))  # a late event
    (view, pods), = cache.snapshot()
    assert view.state == "IN_PROGRESS" and view.resource_version == "12"
    assert len(changes) == 2


def test_first_sight_is_recorded_only_for_live_additions():
    cache, _, clock = make()
    cache.job_event(None, job_body(None, uid="listed"))
    cache.job_event("ADDED", job_body(None, uid="new"))
    seen = {v.uid: v.first_seen_ms for v, _ in cache.snapshot()}
    assert seen == {"listed": None, "new": int(clock.t * 1000)}


def test_deleted_job_cannot_come_back_from_a_late_event_and_takes_its_tombstones():
    cache, _, _ = make()
    cache.job_event(None, job_body(None, rv="10"))
    cache.pod_event(None, pod_body(1, "Running", rv="11"))
    cache.pod_event("DELETED", pod_body(1, "Running", rv="12"))
    (_, pods), = cache.snapshot()
    assert pods[0].gone
    cache.job_event("DELETED", job_body(None, rv="13"))
    cache.job_event("MODIFIED", job_body(None, rv="12"))
    assert cache.snapshot() == [] and len(cache) == 0


def test_pods_are_grouped_by_their_job_and_a_vanished_pod_stays_as_a_tombstone():
    cache, _, clock = make()
    cache.job_event(None, job_body(None))
    cache.pod_event(None, pod_body(1, "Failed", rv="5"))
    cache.pod_event("ADDED", pod_body(2, "Pending", rv="6"))
    cache.pod_event(None, pod_body(1, "Running", job_uid="other-job", uid="other-pod"))
    (view, pods), = cache.snapshot()
    assert sorted((p.attempt, p.phase, p.gone) for p in pods) == [(1, "Failed", False), (2, "Pending", False)]
    cache.pod_event("DELETED", pod_body(2, "Running", rv="7"))
    cache.pod_event("MODIFIED", pod_body(2, "Running", rv="8"))  # too late: gone is gone
    (view, pods), = cache.snapshot()
    gone = [p for p in pods if p.attempt == 2][0]
    assert gone.gone and gone.gone_ms == int(clock.t * 1000) and gone.phase == "Running"
    assert cache.pod_count() == 2  # pod-uid-1 and the other job's pod


def test_full_list_drops_what_vanished_unless_newer_than_the_list():
    cache, _, _ = make()
    cache.job_event(None, job_body(None, uid="a", name="a", rv="10"))
    cache.job_event(None, job_body(None, uid="b", name="b", rv="30"))
    cache.job_event(None, job_body(None, uid="c", name="c", rv="5"))
    cache.replace_jobs([job_body(None, uid="c", name="c", rv="6")], list_rv=20)
    assert sorted(v.uid for v, _ in cache.snapshot()) == ["b", "c"]  # a vanished; b is newer than the list
    cache.pod_event(None, pod_body(1, "Running", job_uid="c", rv="7"))
    cache.replace_pods([], list_rv=20)
    (_, pods), = [x for x in cache.snapshot() if x[0].uid == "c"]
    assert pods[0].gone


def test_orphans_are_live_pods_of_deleted_jobs():
    cache, _, _ = make()
    cache.job_event(None, job_body(None))
    cache.pod_event(None, pod_body(1, "Running"))
    cache.pod_event(None, pod_body(1, "Running", job_uid="never-seen", uid="p2"))
    assert cache.orphans() == []
    cache.job_event("DELETED", job_body(None, rv="300"))
    assert [p.name for p in cache.orphans()] == ["seed-1"]
    cache.pod_event("MODIFIED", pod_body(1, "Running", rv="301", deleted=1))
    assert cache.orphans() == []


def test_objects_without_identity_are_ignored():
    cache, changes, _ = make()
    cache.job_event(None, {"metadata": {"name": "x"}})
    cache.pod_event(None, {"metadata": {"name": "p", "uid": "u"}})  # no owner, no job label
    assert cache.snapshot() == [] and not changes and UID


def test_a_finished_job_is_kept_without_its_input_and_output_and_its_decisions_still_work():
    from img2img_operator.controls import check_job
    from img2img_operator.lifecycle import DeleteJob, next_step

    cache, _, _ = make()
    running = job_body({"status": "IN_PROGRESS"}, rv="10", ttlSecondsAfterFinished=60)
    running["metadata"]["managedFields"] = [{"manager": "img2img-operator", "fieldsV1": {"f:status": {}}}]
    cache.job_event("MODIFIED", running)
    (view, _), = cache.snapshot()
    assert view.spec["input"]["payload"]  # an active job keeps what its runner needs
    done = job_body({"status": "COMPLETED", "completedAt": "2026-01-01T00:00:05.000Z", "observedGeneration": 1,
                     "output": {"images": ["s3://b/k/0.png"], "info": "{}", "parameters": {"prompt": "x"}}},
                    rv="11", ttlSecondsAfterFinished=60)
    done["metadata"]["managedFields"] = running["metadata"]["managedFields"]
    assert cache.put_job(done)
    (view, _), = cache.snapshot()
    assert "input" not in view.spec and "output" not in view.status and view.status["completedAt"]
    assert view.spec["ttlSecondsAfterFinished"] == 60
    assert "managedFields" not in cache._jobs[view.uid]["metadata"]
    assert done["spec"]["input"] and done["status"]["output"]  # the caller's body is not changed

    config = CONFIG
    checked = check_job(view.state, view.spec, config)
    assert checked.ok and checked.controls.ttl_seconds_after_finished == 60
    decision = next_step(view, [], 1_767_225_600_000 + 3_600_000, config, checked=checked)
    assert [type(a) for a in decision.actions] == [DeleteJob]  # its TTL still applies
