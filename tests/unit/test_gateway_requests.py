"""The gateway's decisions about a request: who may call (keys, scopes, rate limits) and which job a RunPod request
body becomes (validated as `img2img validate` does, the endpoint's defaults under the request's own controls)."""

from __future__ import annotations

import base64
import io
import json
import random

import pytest
from PIL import Image

from api_samples import seed_request
from img2img_gateway.auth import Grant, RateLimiter, Refusal, authorize, digest, presented_key
from img2img.api.answer import OutputMode
from img2img_gateway.config import ConfigError, RateLimit, parse_config
from img2img_gateway.submission import (
    BadRequest, build_submission, get_endpoint_of, parse_body, retry_manifest,
)

CONFIG = {"s3": {"bucket": "img2img"},
          "endpoints": {"sdxl": {"namespace": "team-a", "output": "s3",
                                 "jobDefaults": {"gpuClass": "a100", "timeoutSeconds": 600, "priority": 5}},
                        "other": {"namespace": "team-b"}},
          "keys": [{"secret": "team-a-key", "endpoints": ["sdxl"]}]}


def endpoint(name: str = "sdxl"):
    return parse_config(CONFIG).endpoints[name]


def grant(key: str = "s3cret", endpoints=("sdxl",), limit: RateLimit | None = None) -> Grant:
    return Grant("team-a-key/key", digest(key), frozenset(endpoints), limit)


# ---- keys ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("header", ["Bearer s3cret", "bearer s3cret", "s3cret", "  Bearer   s3cret "])
def test_the_key_is_taken_with_or_without_bearer_as_runpods_curl_examples_send_it(header):
    assert presented_key(header) == "s3cret"
    assert authorize([grant()], header, "sdxl", {"sdxl", "other"}) == grant()


@pytest.mark.parametrize("header, status, says", [
    (None, 401, "no API key"), ("", 401, "no API key"), ("Bearer ", 401, "no API key"),
    ("Bearer wrong", 401, "not valid"), ("s3cre", 401, "not valid"),
])
def test_a_missing_or_wrong_key_is_401(header, status, says):
    refused = authorize([grant()], header, "sdxl", {"sdxl"})
    assert isinstance(refused, Refusal) and refused.status == status and says in refused.message


def test_an_endpoint_outside_the_keys_scope_looks_like_one_that_does_not_exist():
    outside = authorize([grant()], "Bearer s3cret", "other", {"sdxl", "other"})
    missing = authorize([grant()], "Bearer s3cret", "nope", {"sdxl", "other"})
    assert isinstance(outside, Refusal) and isinstance(missing, Refusal)
    assert outside.status == missing.status == 404
    assert authorize([grant(endpoints=("*",))], "Bearer s3cret", "other", {"sdxl", "other"}) == \
        grant(endpoints=("*",))


def test_keys_are_kept_as_digests_only():
    assert "s3cret" not in repr(grant()) and grant().digest != b"s3cret"


def test_the_rate_limit_answers_with_the_wait_and_refills_over_time():
    limited = grant(limit=RateLimit(requestsPerSecond=2, burst=3))
    limiter = RateLimiter()
    assert [limiter.wait_needed(limited, 100.0) for _ in range(3)] == [0, 0, 0]  # the burst
    assert limiter.wait_needed(limited, 100.0) == pytest.approx(0.5)  # then one per half second
    assert limiter.wait_needed(limited, 100.5) == 0
    assert limiter.wait_needed(limited, 100.5) > 0
    assert [limiter.wait_needed(limited, 200.0) for _ in range(3)] == [0, 0, 0]  # idle: a full burst again
    assert limiter.wait_needed(grant(), 100.0) == 0  # no limit configured: never throttled


# ---- configuration ------------------------------------------------------------------------------------------------
def test_the_configuration_names_every_bad_key():
    bad = {**CONFIG, "endpoints": {"sdxl": {"namespace": "Team_A", "output": "png",
                                            "jobDefaults": {"retries": 99}}},
           "keys": [{"secret": "k", "endpoints": ["sdxl"], "rateLimit": {"requestsPerSecond": 0, "burst": 1}}]}
    with pytest.raises(ConfigError) as info:
        parse_config(bad, "gateway.yaml")
    text = str(info.value)
    for path in ("endpoints.sdxl.namespace", "endpoints.sdxl.output", "endpoints.sdxl.jobDefaults.retries",
                 "keys[0].rateLimit.requestsPerSecond"):
        assert path in text


def test_a_key_scoped_to_an_unknown_endpoint_is_a_configuration_error():
    with pytest.raises(ConfigError, match="keys\\[0\\].endpoints: 'sdx' not in endpoints"):
        parse_config({**CONFIG, "keys": [{"secret": "k", "endpoints": ["sdx"]}]})


# ---- request -> job -----------------------------------------------------------------------------------------------
def test_the_seed_request_becomes_a_job_in_the_endpoints_namespace_with_its_defaults():
    submission = build_submission(seed_request(), "sdxl", endpoint(), "img2img")
    job = submission.manifest(submitted_ms=1_700_000_000_123)
    assert job["metadata"]["namespace"] == "team-a" and job["metadata"]["generateName"] == "img2img-"
    assert job["metadata"]["labels"] == {"img2img.dev/endpoint": "sdxl"}
    # the endpoint's output mode is recorded on the job: its webhook carries the images as its /status does
    assert job["metadata"]["annotations"] == {"img2img.dev/submitted-at": "1700000000123",
                                              "img2img.dev/output-mode": "s3"}
    assert job["spec"]["input"] == seed_request()["input"]  # verbatim
    assert {k: v for k, v in job["spec"].items() if k != "input"} == {"gpuClass": "a100", "timeoutSeconds": 600,
                                                                      "priority": 5}
    assert submission.output_mode is OutputMode.S3 and submission.s3_config is None


def test_the_requests_policy_and_webhook_win_over_the_endpoints_defaults():
    body = {**seed_request(), "webhook": "https://hooks.example.com/x",
            "policy": {"executionTimeout": 30_000, "lowPriority": True}, "outputMode": "presigned"}
    submission = build_submission(body, "sdxl", endpoint(), "img2img")
    spec = submission.manifest(0)["spec"]
    assert (spec["timeoutSeconds"], spec["priority"], spec["gpuClass"]) == (30, -1000, "a100")
    assert spec["webhook"] == "https://hooks.example.com/x"
    assert submission.output_mode is OutputMode.PRESIGNED
    assert submission.manifest(0)["metadata"]["annotations"]["img2img.dev/output-mode"] == "presigned"


def test_every_problem_of_a_request_is_named_by_its_field_path():
    body = seed_request()
    body["input"]["payload"].update(steps=0, sampler_name="Nope")
    body.update(webhook="https://169.254.169.254/", outputMode="png", s3Config={"bucketName": "x"},
                policy={"ttl": 5})
    with pytest.raises(BadRequest) as info:
        build_submission(body, "sdxl", endpoint(), "img2img")
    paths = {p.path for p in info.value.problems}
    assert {"input.payload.steps", "input.payload.sampler_name", "webhook", "outputMode", "policy.ttl",
            "s3Config.bucketName", "s3Config.accessId", "s3Config.accessSecret", "s3Config.endpointUrl"} <= paths


S3CONFIG = {"accessId": "AKIA", "accessSecret": "secret", "bucketName": "their-bucket",
            "endpointUrl": "http://10.0.0.5:9000", "objectPath": "results"}


def test_an_s3config_to_a_private_endpoint_is_refused_unless_the_gateway_allows_it():
    body = {**seed_request(), "s3Config": S3CONFIG}
    with pytest.raises(BadRequest) as info:
        build_submission(body, "sdxl", endpoint(), "img2img")
    assert [str(p) for p in info.value.problems] == [
        "s3Config.endpointUrl: 'http://10.0.0.5:9000' must be an https:// URL"]
    with pytest.raises(BadRequest, match="10.0.0.5 is a private address"):
        build_submission({**body, "s3Config": {**S3CONFIG, "endpointUrl": "https://10.0.0.5"}}, "sdxl", endpoint(),
                         "img2img")
    allowed = build_submission(body, "sdxl", endpoint(), "img2img", allow_private=True)
    assert allowed.s3_config.bucketName == "their-bucket"
    with pytest.raises(BadRequest, match="must not carry credentials"):  # the URL's form is checked all the same
        build_submission({**body, "s3Config": {**S3CONFIG, "endpointUrl": "http://u:p@10.0.0.5"}}, "sdxl",
                         endpoint(), "img2img", allow_private=True)
    assert "s3Config" not in json.dumps(allowed.manifest(0))  # the credentials never reach the job object
    assert "secret" not in json.dumps(allowed.manifest(0))


def test_a_webhook_to_a_private_address_is_refused_unless_the_gateway_allows_it():
    body = {**seed_request(), "webhook": "http://127.0.0.1:8099/hook"}
    with pytest.raises(BadRequest) as info:
        build_submission(body, "sdxl", endpoint(), "img2img")
    assert [str(p) for p in info.value.problems] == ["webhook: 'http://127.0.0.1:8099/hook' must be an https:// URL"]
    with pytest.raises(BadRequest) as info:
        build_submission({**body, "webhook": "https://10.1.2.3/hook"}, "sdxl", endpoint(), "img2img")
    assert [str(p) for p in info.value.problems] == ["webhook: 'https://10.1.2.3/hook' 10.1.2.3 is a private "
                                                     "address; refused"]
    allowed = build_submission(body, "sdxl", endpoint(), "img2img", allow_private=True)
    assert allowed.manifest(0)["spec"]["webhook"] == "http://127.0.0.1:8099/hook"


def noisy_png(side: int) -> str:
    rng = random.Random(side)
    image = Image.frombytes("RGB", (side, side), bytes(rng.getrandbits(8) for _ in range(side * side * 3)))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_a_large_inline_image_is_set_aside_for_s3_as_img2img_submit_does():
    big = noisy_png(400)  # ~640 KB of base64: past the 256 KiB the CLI keeps inline
    assert len(big) > 300_000
    submission = build_submission(seed_request(big), "sdxl", endpoint(), "img2img")
    [(container, key, upload)] = submission.prepared.uploads
    assert upload.path == "input.payload.init_images[0]" and base64.b64encode(upload.data).decode() == big
    container[key] = f"s3://img2img/{upload.key('team-a')}"  # what the upload does
    image = submission.manifest(0)["spec"]["input"]["payload"]["init_images"][0]
    assert image.startswith("s3://img2img/uploads/team-a/") and image.endswith(".png")


@pytest.mark.parametrize("raw, says", [
    (b"{not json", "not valid JSON"), (b"[]", "input: is required"), (b"", "input: is required"),
    (json.dumps({"kind": "Img2ImgJob", "spec": {}, "input": {}}).encode(), "input: is required"),
])
def test_a_body_that_is_not_a_runpod_request_is_refused(raw, says):
    with pytest.raises(BadRequest, match=says):
        parse_body(raw)


def test_a_get_envelope_is_a_discovery_call_not_a_job():
    assert get_endpoint_of({"input": {"api": {"method": "get", "endpoint": "sdapi/v1/sd-models"}}}) == \
        "/sdapi/v1/sd-models"
    assert get_endpoint_of(seed_request()) is None


def test_a_retry_is_the_same_job_again_answering_to_the_first_ones_id():
    first = {"apiVersion": "img2img.dev/v1alpha1", "kind": "Img2ImgJob",
             "metadata": {"name": "img2img-abcde", "namespace": "team-a", "uid": "u-1", "resourceVersion": "7",
                          "labels": {"img2img.dev/endpoint": "sdxl"},
                          "annotations": {"img2img.dev/submitted-at": "1", "img2img.dev/output-mode": "s3",
                                          "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
             "spec": {"input": seed_request()["input"], "timeoutSeconds": 60, "cancel": False},
             "status": {"status": "FAILED"}}
    again = retry_manifest(first, "u-1", 2)
    assert again["metadata"] == {"generateName": "img2img-abcde-retry-", "namespace": "team-a",
                                 "labels": {"img2img.dev/endpoint": "sdxl", "img2img.dev/job-id": "u-1"},
                                 "annotations": {"img2img.dev/submitted-at": "2", "img2img.dev/output-mode": "s3"}}
    assert again["spec"] == {"input": seed_request()["input"], "timeoutSeconds": 60}
    # a retry of the retry keeps one suffix
    second = {**first, "metadata": {**first["metadata"], "name": "img2img-abcde-retry-x1y2z"}}
    assert retry_manifest(second, "u-1", 3)["metadata"]["generateName"] == "img2img-abcde-retry-"
