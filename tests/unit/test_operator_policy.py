"""The per-namespace policy (config ``policy``): caps on priority, timeout, retries, compute per job and jobs running
at once; a job over a cap ends FAILED (InvalidSpec) at admission, naming the field and the cap."""

from __future__ import annotations

import pytest

from api_samples import seed_request
from img2img_operator.config import ConfigError, parse_config
from img2img_operator.dispatcher import limits_of
from img2img_operator.lifecycle import Slot, next_step
from img2img_operator.queue import QueueEntry, admit
from operator_samples import T0, config, job

NOW = T0 + 1000


def decide(cfg=None, namespace: str = "team-a", **controls):
    j = job(None, namespace=namespace, **controls)
    decision = next_step(j, NOW, cfg or config(), slot=Slot(admit=True))
    return decision.status_patch or {}


def test_the_default_policy_refuses_priority_1000_a_7_day_timeout_and_10_retries_naming_each_cap():
    status = decide(priority=1000, timeoutSeconds=7 * 24 * 3600, retries=10)
    assert status["status"] == "FAILED" and status["lastFailure"]["reason"] == "InvalidSpec"
    assert status["error"] == (
        "spec.priority: 1000 is above 100, the highest priority a job of namespace 'team-a' may ask for (the "
        "operator's policy); "
        "spec.timeoutSeconds: 604800 is above 21600, the longest timeout a job of namespace 'team-a' may ask for (the "
        "operator's policy); "
        "spec.retries: 10 is above 3, the most retries a job of namespace 'team-a' may ask for (the operator's policy)")
    # at the caps: fine (admitted at once, so offered to runners with no status written yet)
    assert decide(priority=100, timeoutSeconds=21600, retries=3).get("status") is None


def test_compute_over_the_namespace_cap_is_refused_and_a_namespace_may_be_allowed_more():
    big = seed_request()["input"]
    big["payload"].update(width=1024, height=1024, steps=50, batch_size=8, n_iter=8)  # 3355 megapixel-steps
    status = decide(input=big)
    assert status["status"] == "FAILED"
    assert status["error"] == ("spec.input.payload: asks for 3,355 megapixel-steps (1024x1024 pixels x 50 steps x 64 "
                               "images), more than 2,000, the most a job of namespace 'team-a' may ask for (the "
                               "operator's policy); ask for fewer images, steps or pixels")
    farm = config(policy={"namespaces": {"render-farm": {"maxMegapixelSteps": 10000, "maxPriority": 1000}}})
    assert decide(farm, "render-farm", input=big, priority=1000).get("status") is None  # admitted: offered
    assert decide(farm, "team-a", input=big)["status"] == "FAILED"  # the others keep the default


def test_a_namespace_entry_replaces_only_the_keys_it_sets_and_null_lifts_a_cap():
    policy = config(policy={"default": {"maxConcurrent": 4},
                            "namespaces": {"batch": {"maxConcurrent": None, "maxRetries": 5}}}).policy
    batch, other = policy.of("batch"), policy.of("other")
    assert (batch.max_concurrent, batch.max_retries, batch.max_priority) == (None, 5, 100)
    assert (other.max_concurrent, other.max_retries, other.max_priority) == (4, 3, 100)


def test_jobs_running_at_once_per_namespace_follow_the_policy():
    cfg = config(policy={"default": {"maxConcurrent": 1}, "namespaces": {"batch": {"maxConcurrent": 2}}},
                 gpuClasses={"l4": {"maxConcurrent": 10}})
    entries = [QueueEntry(uid=f"{ns}-{i}", namespace=ns, name=f"j{i}", gpu_class="l4", priority=0, submitted_at=i)
               for ns in ("batch", "team-a", "team-b") for i in range(3)]
    assert admit(entries, limits_of(cfg)).admit == ("batch-0", "team-a-0", "team-b-0", "batch-1")


@pytest.mark.parametrize("data, fragment", [
    ({"policy": {"namespaces": {"slow": {"maxTimeoutSeconds": 600}}}, "defaults": {"timeoutSeconds": 3600}},
     "policy.namespaces.slow.maxTimeoutSeconds: 600 is below defaults.timeoutSeconds (3600)"),
    ({"policy": {"default": {"maxRetries": 1}}}, "policy.default.maxRetries: 1 is below defaults.retries (2)"),
    ({"policy": {"default": {"maxMegapixelSteps": 20000}}}, "policy.default.maxMegapixelSteps"),
    ({"policy": {"namespaces": {"Team_A": {}}}}, "'Team_A' is not a namespace name"),
    ({"queue": {"maxConcurrentPerNamespace": 4}}, "moved to policy.default.maxConcurrent"),
    ({"s3": {"bucket": "b", "presignExpirySeconds": 30 * 24 * 3600}}, "s3.presignExpirySeconds"),
])
def test_a_policy_the_operator_could_not_keep_is_refused_at_start(data, fragment):
    with pytest.raises(ConfigError) as err:
        parse_config({"s3": {"bucket": "b"}, **data}, "config.yaml")
    assert fragment in str(err.value)
