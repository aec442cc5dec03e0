"""cache: the operator's picture of jobs, runner pods and pools, from watch events, write responses and lists."""

from __future__ import annotations

import json

from img2img_operator.cache import Cache

from operator_samples import CONFIG, UID, job_body, runner_pod_body


class Clock:
    def __init__(self):
        self.t = 1_767_225_600.0

    def __call__(self):
        return self.t


def make():
    changes = []
    clock = Clock()
    return Cache(on_change=lambda: changes.append(1), clock=clock), changes, clock


def pool_body(name: str, rv: str) -> dict:
    return {"apiVersion": "img2img.dev/v1alpha1", "kind": "RunnerPool",
            "metadata": {"name": name, "namespace": "img2img-system", "resourceVersion": rv},
            "spec": {"gpuClass": "l4"}}


def test_newest_resource_version_wins():
    cache, changes, _ = make()
    cache.job_event(None, job_body({"status": "IN_QUEUE"}, rv="10"))
    assert cache.put_job(job_body({"status": "IN_PROGRESS"}, rv="12"))  # our write's response
    cache.job_event("MODIFIED", job_body({"status": "IN_QUEUE"}, rv="11"))  # a late event
    (view,) = cache.snapshot()
    assert view.state == "IN_PROGRESS" and view.resource_version == "12"
    assert len(changes) == 2 and cache.take_changed() == {UID} and cache.take_changed() == set()


def test_a_view_read_again_follows_every_change_of_the_job():
    cache, _, _ = make()
    cache.job_event("ADDED", job_body(None, rv="10"))
    assert cache.job_view(UID).state is None and cache.snapshot()[0].state is None
    cache.job_event("MODIFIED", job_body({"status": "IN_QUEUE"}, rv="11"))
    assert cache.job_view(UID).state == "IN_QUEUE" and cache.snapshot()[0].resource_version == "11"
    assert cache.put_job(job_body({"status": "IN_PROGRESS", "attempts": 1}, rv="12"))
    assert cache.job_view(UID).attempts == 1
    cache.job_event("DELETED", job_body({"status": "IN_PROGRESS"}, rv="13"))
    assert cache.job_view(UID) is None and cache.snapshot() == []


def test_first_sight_is_recorded_only_for_live_additions():
    cache, _, clock = make()
    cache.job_event(None, job_body(None, uid="listed"))
    cache.job_event("ADDED", job_body(None, uid="new"))
    seen = {v.uid: v.first_seen_ms for v in cache.snapshot()}
    assert seen == {"listed": None, "new": int(clock.t * 1000)}


def test_deleted_objects_cannot_come_back_from_a_late_event():
    cache, _, _ = make()
    cache.job_event(None, job_body(None, rv="10"))
    cache.job_event("DELETED", job_body(None, rv="13"))
    cache.job_event("MODIFIED", job_body(None, rv="12"))
    assert cache.snapshot() == [] and len(cache) == 0 and UID in cache.take_changed()
    cache.pod_event(None, runner_pod_body("l4-aaaaa", rv="20"))
    cache.pod_event("DELETED", runner_pod_body("l4-aaaaa", rv="22"))
    cache.put_pod(runner_pod_body("l4-aaaaa", rv="21"))  # a write's response, older than the deletion
    assert cache.pod("l4-aaaaa") is None and cache.pod_count() == 0
    cache.put_pod(runner_pod_body("l4-aaaaa", "Pending", rv="30"))  # a new pod of that name
    assert cache.pod("l4-aaaaa").phase == "Pending"


def test_runner_pods_and_pools_by_name():
    cache, changes, _ = make()
    cache.pod_event("ADDED", runner_pod_body("l4-aaaaa", "Pending", rv="5"))
    cache.pod_event("MODIFIED", runner_pod_body("l4-aaaaa", "Running", rv="6"))
    cache.pod_event("MODIFIED", runner_pod_body("l4-aaaaa", "Pending", rv="5"))  # late
    assert [(p.name, p.phase, p.pool) for p in cache.pods()] == [("l4-aaaaa", "Running", "l4")]
    cache.pool_event("ADDED", pool_body("warm", "7"))
    assert [b["metadata"]["name"] for b in cache.pools()] == ["warm"]
    cache.pool_event("DELETED", pool_body("warm", "8"))
    assert cache.pools() == [] and len(changes) == 4


def test_full_list_drops_what_vanished_unless_newer_than_the_list():
    cache, _, _ = make()
    cache.job_event(None, job_body(None, uid="a", name="a", rv="10"))
    cache.job_event(None, job_body(None, uid="b", name="b", rv="30"))
    cache.job_event(None, job_body(None, uid="c", name="c", rv="5"))
    cache.replace_jobs([job_body(None, uid="c", name="c", rv="6")], list_rv=20)
    assert sorted(v.uid for v in cache.snapshot()) == ["b", "c"]  # a vanished; b is newer than the list
    cache.pod_event(None, runner_pod_body("l4-aaaaa", rv="7"))
    cache.pod_event(None, runner_pod_body("l4-bbbbb", rv="25"))
    cache.replace_pods([], list_rv=20)
    assert [p.name for p in cache.pods()] == ["l4-bbbbb"]


def test_a_namespaces_list_drops_only_that_namespaces_jobs():
    """One reflector per watched namespace: each one's list speaks for its namespace alone."""
    cache, _, _ = make()
    cache.job_event(None, job_body(None, uid="a", name="a", namespace="one", rv="10"))
    cache.job_event(None, job_body(None, uid="b", name="b", namespace="two", rv="11"))
    cache.replace_jobs([], list_rv=20, namespace="one")
    assert [v.uid for v in cache.snapshot()] == ["b"]
    cache.replace_jobs([], list_rv=20)  # a list of every namespace
    assert cache.snapshot() == []


def test_a_relist_of_unchanged_jobs_keeps_the_cached_bodies_and_trims_the_changed_ones():
    """A periodic relist of thousands of finished jobs costs no second copy of them in memory."""
    cache, _, _ = make()
    done = {"status": "COMPLETED", "output": {"images": ["s3://b/k/0.png"]}}
    listed = [cache.listed_job(job_body(done, uid="a", name="a", rv="10")),
              cache.listed_job(job_body(done, uid="b", name="b", rv="11"))]
    cache.replace_jobs(listed, list_rv=12)
    first = {uid: cache.job(uid) for uid in "ab"}
    listed = [cache.listed_job(job_body(done, uid="a", name="a", rv="10")),
              cache.listed_job(job_body(done, uid="b", name="b", rv="15"))]
    assert listed[0] is first["a"]  # the very object the cache holds
    assert listed[1] is not first["b"] and "output" not in listed[1]["status"]  # a new version, trimmed
    cache.take_changed()
    cache.replace_jobs(listed, list_rv=16)
    assert cache.job("a") is first["a"] and cache.job("b")["metadata"]["resourceVersion"] == "15"
    assert cache.take_changed() == {"a", "b"}  # both decided on again, as after any list


def test_objects_without_identity_are_ignored():
    cache, changes, _ = make()
    cache.job_event(None, {"metadata": {"name": "x"}})
    cache.pod_event(None, {"metadata": {"uid": "u"}})
    assert cache.snapshot() == [] and cache.pods() == [] and not changes


def test_no_job_is_kept_with_its_input_and_a_finished_one_not_with_its_output_and_decisions_still_work():
    from img2img_operator.lifecycle import DeleteJob, next_step
    from img2img_operator.verdicts import without_input

    cache, _, _ = make()
    handed = []  # what the leader's dispatcher gets to hold until the job's verdict
    cache.on_input = lambda key, spec_input, size: handed.append((key, spec_input, size))
    running = job_body({"status": "IN_PROGRESS"}, rv="10", ttlSecondsAfterFinished=60)
    running["metadata"]["managedFields"] = [{"manager": "img2img-operator", "fieldsV1": {"f:status": {}}}]
    cache.job_event("MODIFIED", running)
    (view,) = cache.snapshot()
    size = len(json.dumps(running["spec"]["input"], separators=(",", ":")))  # the seed input is ASCII
    assert "input" not in view.spec and view.input_bytes == size  # the status's budget still counts it
    assert handed == [((UID, 1), running["spec"]["input"], size)]
    done = job_body({"status": "COMPLETED", "completedAt": "2026-01-01T00:00:05.000Z", "observedGeneration": 1,
                     "output": {"images": ["s3://b/k/0.png"], "info": "{}", "parameters": {"prompt": "x"}}},
                    rv="11", ttlSecondsAfterFinished=60)
    done["metadata"]["managedFields"] = running["metadata"]["managedFields"]
    assert cache.put_job(done)
    (view,) = cache.snapshot()
    assert "input" not in view.spec and "output" not in view.status and view.status["completedAt"]
    assert view.spec["ttlSecondsAfterFinished"] == 60
    assert "managedFields" not in cache.job(view.uid)["metadata"]
    assert done["spec"]["input"] and done["status"]["output"]  # the caller's body is not changed
    assert len(handed) == 1  # a finished job's input is nobody's business

    checked = without_input(view, CONFIG)
    assert checked is not None and checked.ok and checked.controls.ttl_seconds_after_finished == 60
    decision = next_step(view, 1_767_225_600_000 + 3_600_000, CONFIG, checked=checked)
    assert [type(a) for a in decision.actions] == [DeleteJob]  # its TTL still applies
