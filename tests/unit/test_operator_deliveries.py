"""deliveries: when a job's webhook is owed, what each attempt's answer means, the record in status.webhook, the body;
and the lifecycle holding a finished job until its webhook is settled."""

from __future__ import annotations

import json

import pytest

from img2img.api.status import WebhookDelivery
from img2img.api.times import format_time_ms
from img2img_operator.deliveries import Attempt, after, body, due_at, outcome, owed
from img2img_operator.lifecycle import Deliver, DeleteJob, next_step

from operator_samples import T0, config, job, job_body

HOOK = "https://hooks.example.com/x"
HOOKS = config().webhooks  # the defaults: 8 attempts, 10 s doubling to 10 min
SEC = 1000


@pytest.mark.parametrize("status,expected", [
    (200, "delivered"), (204, "delivered"),
    (500, "retry"), (502, "retry"), (503, "retry"), (408, "retry"), (429, "retry"), (None, "retry"),
    (400, "give_up"), (401, "give_up"), (404, "give_up"), (410, "give_up"), (301, "give_up"), (302, "give_up"),
])
def test_what_an_answer_means(status, expected):
    assert outcome(Attempt(T0, status=status, error=None if status else "connection refused")) == expected


def test_a_refused_address_is_given_up_without_counting_an_attempt():
    record = after(None, Attempt(T0, error="'hooks.example.com' resolves to 10.0.0.7, a private address; refused",
                                 refused=True), HOOKS)
    assert record == {"delivered": False, "attempts": 0, "gaveUp": True,
                      "lastError": "'hooks.example.com' resolves to 10.0.0.7, a private address; refused"}


def test_failures_are_retried_10_s_then_doubling_to_10_min_and_given_up_after_8_attempts():
    record, waits = None, []
    now = T0
    while record is None or not record.get("gaveUp"):
        record = after(record, Attempt(now, status=503, error="the receiver answered 503: busy"), HOOKS)
        if "nextAttemptAt" in record:
            waits.append((due_at(record) - now) // SEC)
            now = due_at(record)
    assert waits == [10, 20, 40, 80, 160, 320, 600]
    assert record["attempts"] == 8 and record["lastStatusCode"] == 503 and "nextAttemptAt" not in record
    assert record["lastError"] == "the receiver answered 503: busy (gave up after 8 attempts)"
    WebhookDelivery.model_validate(record)  # what the CRD's status schema takes


def test_a_5xx_then_a_2xx_is_delivered_on_the_second_attempt():
    first = after(None, Attempt(T0, status=500, error="the receiver answered 500: nope"), HOOKS)
    assert first == {"delivered": False, "attempts": 1, "lastStatusCode": 500,
                     "lastError": "the receiver answered 500: nope", "lastAttemptAt": format_time_ms(T0),
                     "nextAttemptAt": format_time_ms(T0 + 10 * SEC)}
    second = after(first, Attempt(T0 + 10 * SEC, status=200), HOOKS)
    assert second == {"delivered": True, "attempts": 2, "lastStatusCode": 200,
                      "lastAttemptAt": format_time_ms(T0 + 10 * SEC), "deliveredAt": format_time_ms(T0 + 10 * SEC)}
    assert due_at(None) is None


def test_a_4xx_is_given_up_at_once():
    record = after(None, Attempt(T0, status=404, error="the receiver answered 404: no such hook"), HOOKS)
    assert record["gaveUp"] and record["attempts"] == 1 and "nextAttemptAt" not in record
    assert record["lastError"] == "the receiver answered 404: no such hook"


def test_a_webhook_is_owed_once_the_job_ended_until_delivered_or_given_up():
    assert owed({"webhook": HOOK}, {"status": "COMPLETED"})
    assert owed({"webhook": HOOK}, {"status": "CANCELLED", "webhook": {"attempts": 2, "delivered": False}})
    assert not owed({"webhook": HOOK}, {"status": "IN_PROGRESS"})
    assert not owed({}, {"status": "FAILED"})
    assert not owed({"webhook": HOOK}, {"status": "FAILED", "webhook": {"delivered": True}})
    assert not owed({"webhook": HOOK}, {"status": "TIMED_OUT", "webhook": {"gaveUp": True}})


COMPLETED = {"id": "uid-1", "status": "COMPLETED", "delayTime": 120, "executionTime": 3400, "attempts": 1,
             "completedAt": "2026-01-01T00:00:05.000Z",
             "output": {"images": ["s3://img2img/jobs/0.png"], "info": "{}", "parameters": {"steps": 2},
                        "presigned": ["https://s3/0"]}}


def test_the_body_is_the_jobs_runpod_status_with_its_images_as_asked():
    hooked = job_body(COMPLETED, uid="uid-1", webhook=HOOK)
    assert json.loads(body(hooked, None)) == {
        "id": "uid-1", "status": "COMPLETED", "delayTime": 120, "executionTime": 3400,
        "output": {"images": ["s3://img2img/jobs/0.png"], "info": "{}", "parameters": {"steps": 2}}}
    assert json.loads(body(hooked, ["aW1n"]))["output"]["images"] == ["aW1n"]
    assert b" " not in body(hooked, None)  # compact: the bytes signed are the bytes sent


def test_a_body_whose_answer_the_status_could_not_hold_points_at_result_json():
    bounded = {**COMPLETED, "result": "s3://img2img/jobs/ns/j/uid-1/attempt-1/result.json",
               "output": {"images": ["s3://img2img/jobs/0.png"], "parameters": {"steps": 2},
                          "omitted": ["info", "parameters.init_images"]}}
    sent = json.loads(body(job_body(bounded, uid="uid-1", webhook=HOOK), None))
    assert sent["output"] == {"images": ["s3://img2img/jobs/0.png"], "parameters": {"steps": 2}}
    assert sent["outputOmitted"] == {"fields": ["info", "parameters.init_images"],
                                     "result": "s3://img2img/jobs/ns/j/uid-1/attempt-1/result.json"}


def test_a_finished_job_asks_for_its_delivery_and_its_ttl_waits_for_it():
    cfg = config()
    ended = {**COMPLETED, "observedGeneration": 1}
    pending = job(ended, webhook=HOOK, ttlSecondsAfterFinished=0)
    assert next_step(pending, T0 + 60 * SEC, cfg).actions == (Deliver(),)
    retrying = job({**ended, "webhook": {"attempts": 1, "delivered": False,
                                         "nextAttemptAt": format_time_ms(T0 + 70 * SEC)}},
                   webhook=HOOK, ttlSecondsAfterFinished=0)
    assert next_step(retrying, T0 + 60 * SEC, cfg).actions == (Deliver(),)
    for settled in ({"delivered": True, "attempts": 2}, {"delivered": False, "gaveUp": True, "attempts": 8}):
        done = job({**ended, "webhook": settled}, webhook=HOOK, ttlSecondsAfterFinished=0)
        assert next_step(done, T0 + 60 * SEC, cfg).actions == (DeleteJob(),)
