"""S3 isolation between namespaces (docs/security.md, "S3 isolation"): where a job may write its results and which
``s3://`` images it may read, decided when the operator checks the job (``controls.check_spec``), each refusal
naming the field. The attacks of issue 15: a job choosing another namespace's area, another bucket, or another
namespace's images."""

from __future__ import annotations

import pytest
from img2img_operator.config import ConfigError
from img2img_operator.controls import check_spec

from operator_samples import config, spec

TEAM_A_RESULTS = "s3://team-a-results/img2img"
# the default location s3://img2img/jobs for every namespace; team-a may also write to its own bucket
POLICY = config(s3={"allowedOutputLocations": {"team-a": [TEAM_A_RESULTS + "/"]}})


def with_init_image(ref: str, **controls) -> dict:
    s = spec(**controls)
    s["input"]["payload"]["init_images"] = [ref]
    return s


def problems(s: dict, namespace: str = "team-a", cfg=POLICY) -> list[str]:
    return [str(p) for p in check_spec(s, namespace, cfg).problems]


@pytest.mark.parametrize("output,field,wanted", [
    ({"prefix": "jobs/team-b"}, "spec.output.prefix", "s3://img2img/jobs/team-b"),  # into team-b's area
    ({"prefix": ""}, "spec.output.prefix", "s3://img2img"),  # the bucket's root: team-b/… is team-b's area there
    ({"prefix": "uploads"}, "spec.output.prefix", "s3://img2img/uploads"),
    ({"prefix": "jobs/../jobs"}, "spec.output.prefix", "s3://img2img/jobs/../jobs"),
    ({"bucket": "team-b-results"}, "spec.output.bucket", "s3://team-b-results/jobs"),
    ({"bucket": "team-a-results", "prefix": "img2img/team-b"}, "spec.output.prefix",
     "s3://team-a-results/img2img/team-b"),
])
def test_a_job_may_not_write_outside_its_namespaces_output_locations(output, field, wanted):
    assert problems(spec(output=output)) == [
        f"{field}: {wanted} is not an output location of namespace 'team-a'; it may use s3://img2img/jobs, "
        f"{TEAM_A_RESULTS} (the operator's s3.allowedOutputLocations)"]


@pytest.mark.parametrize("output", [None, {"prefix": "jobs"}, {"prefix": "/jobs/"}, {"bucket": "img2img"},
                                    {"bucket": "team-a-results", "prefix": "img2img"}])
def test_a_job_may_write_under_its_namespaces_output_locations(output):
    checked = check_spec(spec(output=output) if output else spec(), "team-a", POLICY)
    assert checked.ok, checked.describe()


def test_another_namespace_may_not_use_a_location_granted_to_team_a():
    assert problems(spec(output={"bucket": "team-a-results", "prefix": "img2img"}), namespace="team-b") == [
        "spec.output.bucket: s3://team-a-results/img2img is not an output location of namespace 'team-b'; it may use "
        "s3://img2img/jobs (the operator's s3.allowedOutputLocations)"]


def test_a_location_for_every_namespace():
    shared = config(s3={"allowedOutputLocations": {"*": ["s3://shared-results"]}})
    for namespace in ("team-a", "team-b"):
        assert check_spec(spec(output={"bucket": "shared-results", "prefix": ""}), namespace, shared).ok


@pytest.mark.parametrize("ref,field", [
    ("s3://img2img/jobs/team-b/theirs/u/attempt-1/images/0.png", "spec.input.payload.init_images[0]"),
    ("s3://img2img/uploads/team-b/0123.png", "spec.input.payload.init_images[0]"),
    ("s3://img2img/jobs/team-a/../team-b/theirs/u/attempt-1/images/0.png", "spec.input.payload.init_images[0]"),
    ("s3://elsewhere/a.png", "spec.input.payload.init_images[0]"),
])
def test_a_job_may_not_read_another_namespaces_images(ref, field):
    found = problems(with_init_image(ref))
    assert found == [f"{field}: {ref}: namespace 'team-a' may not read it; it may read s3://img2img/jobs/team-a/, "
                     f"{TEAM_A_RESULTS}/team-a/, s3://img2img/uploads/team-a/ (the operator's "
                     "s3.allowedReadPrefixes)"]


def test_a_controlnet_image_is_checked_and_named_by_its_field():
    s = spec()
    unit = s["input"]["payload"]["alwayson_scripts"]["controlnet"]["args"][0]
    unit.pop("image", None)
    unit["input_image"] = "s3://img2img/uploads/team-b/control.png"
    (found,) = problems(s)
    assert found.startswith("spec.input.payload.alwayson_scripts.controlnet.args[0].input_image: "
                            "s3://img2img/uploads/team-b/control.png: namespace 'team-a' may not read it")


@pytest.mark.parametrize("ref", ["s3://img2img/jobs/team-a/mine/u/attempt-1/images/0.png",
                                 "s3://img2img/uploads/team-a/0123.png",
                                 f"{TEAM_A_RESULTS}/team-a/mine/u/attempt-1/images/0.png"])
def test_a_job_reads_its_own_areas_and_uploads(ref):
    assert problems(with_init_image(ref)) == []


@pytest.mark.parametrize("locations,message", [
    ({"team-a": ["s3://img2img/jobs/team-b"]},
     "allowedOutputLocations.team-a: s3://img2img/jobs/team-b lies inside s3://img2img/jobs (s3.prefix), where every "
     "namespace has its own area (s3://img2img/jobs/<namespace>/)"),
    ({"team-a": ["s3://img2img/uploads/team-b"]}, "lies inside s3://img2img/uploads (the uploads area)"),
    ({"team-a": ["s3://results"], "team-b": ["s3://results/team-a"]},
     "allowedOutputLocations.team-b: s3://results/team-a lies inside s3://results (allowedOutputLocations.team-a)"),
    ({"team-a": ["s3://results/a/../b"]}, "is not an s3://bucket[/prefix] location"),
    ({"team-a": ["https://results"]}, "is not an s3://bucket[/prefix] location"),
    ({"Team-A": ["s3://results"]}, "'Team-A' is not a namespace name"),
])
def test_output_locations_that_would_share_an_area_are_refused_at_configuration(locations, message):
    with pytest.raises(ConfigError, match="allowedOutputLocations") as refused:
        config(s3={"allowedOutputLocations": locations})
    assert message in str(refused.value)


def test_a_job_prefix_at_the_buckets_root_is_refused_at_configuration():
    """Its areas would be <namespace>/…: a namespace named "uploads" would own every namespace's uploads."""
    with pytest.raises(ConfigError, match="s3://img2img/uploads lies inside s3://img2img"):
        config(s3={"prefix": ""})
