"""cleanup: which S3 area goes with a deleted job, where the start-of-leadership sweep looks, which keys it takes for
a job's, and when a deletion is tried (after its runner let go of the job; again after S3 failed)."""

from __future__ import annotations

import asyncio

import pytest
from img2img_operator.cache import Cache
from img2img_operator.cleanup import Cleanup, area_of_key, job_area, sweep_roots
from img2img_operator.staging import batches

from operator_samples import CONFIG, NS, UID, config, job_body

OTHER_UID = "9a8b7c6d-1111-4222-8333-444455556666"
TEAM_BUCKET = {"allowedOutputLocations": {NS: ["s3://team-a-results/img2img"]}}


def test_a_deleted_job_takes_its_own_area_and_no_prefix_of_another_jobs():
    mine = job_area(job_body({"status": "COMPLETED"}, name="seed"), CONFIG)
    assert mine == f"s3://img2img/jobs/{NS}/seed/{UID}/"
    # a job named like a prefix of another's, or the same name again later: the uid keeps their areas apart
    again = job_area(job_body(name="seed", uid=OTHER_UID), CONFIG)
    longer = job_area(job_body(name="seed-2", uid=OTHER_UID), CONFIG)
    assert not again.startswith(mine) and not longer.startswith(mine) and not mine.startswith(again)


def test_a_job_with_its_own_output_location_takes_its_area_there():
    cfg = config(s3=TEAM_BUCKET)
    body = job_body(output={"bucket": "team-a-results", "prefix": "img2img"})
    assert job_area(body, cfg) == f"s3://team-a-results/img2img/{NS}/seed/{UID}/"


def test_nothing_goes_under_an_output_location_the_namespace_may_not_use_nor_when_retained():
    refused = job_body({"status": "FAILED"}, output={"bucket": "someone-elses", "prefix": "data"})
    assert job_area(refused, CONFIG) is None  # refused before anything was written: never touch that bucket
    assert job_area(job_body(), config(s3={"reclaimPolicy": "Retain"})) is None


def test_the_sweep_lists_the_shared_locations_whole_and_otherwise_only_the_namespaces_areas():
    shared = {"allowedOutputLocations": {"*": ["s3://results/all"], NS: ["s3://team-a-results/img2img"]}}
    assert sweep_roots(config(s3=shared)) == [  # team-a's own location: only team-a's area in it
        ("s3://img2img/jobs", "s3://img2img/jobs/"), ("s3://results/all", "s3://results/all/"),
        ("s3://team-a-results/img2img", f"s3://team-a-results/img2img/{NS}/")]
    watched = config(s3=TEAM_BUCKET, namespaces=[NS, "team-b"])
    assert sweep_roots(watched) == [
        ("s3://img2img/jobs", f"s3://img2img/jobs/{NS}/"),
        ("s3://team-a-results/img2img", f"s3://team-a-results/img2img/{NS}/"),
        ("s3://img2img/jobs", "s3://img2img/jobs/team-b/")]
    assert sweep_roots(config(s3={"reclaimPolicy": "Retain"})) == []


@pytest.mark.parametrize("location,key,expected", [
    ("s3://img2img/jobs", f"jobs/{NS}/seed/{UID}/input.json", (f"s3://img2img/jobs/{NS}/seed/{UID}/", UID)),
    ("s3://img2img/jobs", f"jobs/{NS}/seed/{UID}/attempt-2/images/0.png", (f"s3://img2img/jobs/{NS}/seed/{UID}/",
                                                                           UID)),
    ("s3://img2img", f"{NS}/seed/{UID}/input.json", (f"s3://img2img/{NS}/seed/{UID}/", UID)),
    ("s3://img2img/jobs", f"jobs/{NS}/seed/not-a-uid/input.json", None),  # not a job's area: left alone
    ("s3://img2img/jobs", f"jobs/{NS}/{UID}/input.json", None),  # too shallow
    ("s3://img2img/jobs", f"jobs/{NS}/seed/{UID}", None),  # no object inside an area
    ("s3://img2img/jobs", f"jobsX/{NS}/seed/{UID}/input.json", None),  # another prefix
])
def test_the_sweep_takes_only_keys_inside_a_jobs_area(location, key, expected):
    assert area_of_key(location, key) == expected


def test_deletes_go_1000_keys_at_a_time():
    assert [len(b) for b in batches(f"k{i}" for i in range(2500))] == [1000, 1000, 500]
    assert list(batches([])) == []


class FlakyS3:
    """A Staging whose S3 fails ``failures`` times, then deletes: S3 down for a while cannot be staged here."""

    def __init__(self, objects: dict[str, list[str]], failures: int = 0):
        self.objects = objects  # bucket → keys
        self.failures = failures

    def keys_under(self, uri: str):
        bucket, _, prefix = uri[5:].partition("/")
        if self.failures:
            self.failures -= 1
            raise ConnectionError("S3 is down")
        return [k for k in self.objects.get(bucket, []) if k.startswith(prefix)]

    def delete_keys(self, bucket: str, keys):
        self.objects[bucket] = [k for k in self.objects[bucket] if k not in set(keys)]


def run(coro):
    return asyncio.run(coro)


def test_a_deleted_jobs_area_goes_once_its_runner_lets_go_and_another_jobs_stays():
    keys = [f"jobs/{NS}/seed/{UID}/input.json", f"jobs/{NS}/seed/{UID}/attempt-1/result.json",
            f"jobs/{NS}/seed/{OTHER_UID}/input.json"]
    s3 = FlakyS3({"img2img": list(keys)})
    cache, leased = Cache(), {UID}
    cleanup = Cleanup(CONFIG, cache, s3, held=lambda uid: uid in leased)
    cache.on_job_gone = cleanup.job_gone
    cache.job_event("ADDED", job_body(uid=UID, rv="1"))
    cache.job_event("ADDED", job_body(uid=OTHER_UID, rv="2"))
    cache.job_event("DELETED", job_body(uid=UID, rv="3"))

    assert run(cleanup.delete_due()) == 5.0  # its runner still holds it: looked at again in 5 s
    assert s3.objects["img2img"] == keys
    leased.clear()
    assert run(cleanup.delete_due()) is None
    assert s3.objects["img2img"] == [f"jobs/{NS}/seed/{OTHER_UID}/input.json"]
    assert cleanup.owed() == []


def test_a_deletion_s3_failed_is_tried_again_after_a_back_off():
    s3 = FlakyS3({"img2img": [f"jobs/{NS}/seed/{UID}/input.json"]}, failures=2)
    clock = [1000.0]
    cache = Cache()
    cleanup = Cleanup(CONFIG, cache, s3, held=lambda uid: False, clock=lambda: clock[0])
    cache.on_job_gone = cleanup.job_gone
    cache.job_event("ADDED", job_body(rv="1"))
    cache.job_event("DELETED", job_body(rv="2"))

    assert run(cleanup.delete_due()) == 1.0
    assert run(cleanup.delete_due()) == 1.0  # not due yet: nothing tried
    clock[0] += 1
    assert run(cleanup.delete_due()) == 2.0  # failed again: twice the wait
    clock[0] += 2
    assert run(cleanup.delete_due()) is None
    assert s3.objects["img2img"] == []


def test_a_retained_jobs_area_is_owed_nothing():
    retained = Cleanup(config(s3={"reclaimPolicy": "Retain"}), Cache(), FlakyS3({}), held=lambda uid: False)
    retained.job_gone(job_body())
    assert retained.owed() == []
