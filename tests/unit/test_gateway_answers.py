"""The gateway's answers: a job's status as RunPod's /status, /stream and /health answer it, and the A1111
discovery calls answered from the catalog."""

from __future__ import annotations

import pytest

from img2img.api.answer import OutputMode, answer, images_wanted, job_id, output_mode
from img2img_gateway import discovery
from img2img_gateway.answers import short_answer
from img2img_gateway.health import health
from img2img_gateway.stream import MAX_CHUNKS_KEPT, ProgressLog, stream_answer
from img2img_runner.catalog import Catalog

INFO = '{"seed": 1}'
PARAMETERS = {"prompt": "a", "init_images": None}


def job(status: dict | None = None, *, name: str = "img2img-x", uid: str = "uid-1", labels: dict | None = None,
        annotations: dict | None = None, created: str = "2026-01-01T00:00:00Z") -> dict:
    return {"metadata": {"name": name, "namespace": "team-a", "uid": uid, "labels": labels or {},
                         "annotations": annotations or {}, "creationTimestamp": created},
            "spec": {}, "status": status or {}}


COMPLETED = {"id": "uid-1", "status": "COMPLETED", "delayTime": 120, "executionTime": 3400, "attempts": 1,
             "runnerPod": "runner-0", "queuePosition": 0, "result": "s3://img2img/jobs/r.json",
             "output": {"images": ["s3://img2img/jobs/0.png", "s3://img2img/jobs/1.png"], "info": INFO,
                        "parameters": PARAMETERS, "presigned": ["https://s3/0", "https://s3/1"]},
             "conditions": [{"type": "Ready", "status": "True"}]}


# ---- /status --------------------------------------------------------------------------------------------------------
def test_a_completed_job_answers_exactly_runpods_keys_with_the_images_in_place():
    made = answer(job(COMPLETED), ["aW1hZ2Uw", "aW1hZ2Ux"])
    assert made == {"id": "uid-1", "status": "COMPLETED", "delayTime": 120, "executionTime": 3400,
                    "output": {"images": ["aW1hZ2Uw", "aW1hZ2Ux"], "info": INFO, "parameters": PARAMETERS}}
    assert list(made) == ["id", "status", "delayTime", "executionTime", "output"]  # RunPod's order


def test_an_answer_the_status_could_not_hold_says_what_is_missing_and_where_the_whole_answer_is():
    bounded = {**COMPLETED, "output": {"images": ["s3://img2img/jobs/0.png"], "parameters": PARAMETERS,
                                       "omitted": ["info"]}}
    made = answer(job(bounded), ["aW1hZ2Uw"])
    assert made["output"] == {"images": ["aW1hZ2Uw"], "parameters": PARAMETERS}  # RunPod's keys only, no info
    assert made["outputOmitted"] == {"fields": ["info"], "result": "s3://img2img/jobs/r.json"}
    assert "outputOmitted" not in answer(job(COMPLETED))  # a whole answer says nothing more


def test_images_are_read_only_for_a_completed_job_in_a1111s_order():
    assert images_wanted(job(COMPLETED)) == ["s3://img2img/jobs/0.png", "s3://img2img/jobs/1.png"]
    assert images_wanted(job({"status": "IN_PROGRESS", "progress": {"step": 3, "steps": 10}})) == []


def test_a_job_the_operator_has_not_seen_is_in_queue_under_its_uid():
    assert answer(job()) == {"id": "uid-1", "status": "IN_QUEUE"}
    assert short_answer(job()) == {"id": "uid-1", "status": "IN_QUEUE"}


def test_a_failed_job_answers_its_error():
    failed = {"id": "uid-1", "status": "FAILED", "error": "input.payload.steps: must be at least 1",
              "lastFailure": {"reason": "BAD_INPUT"}}
    assert answer(job(failed)) == {"id": "uid-1", "status": "FAILED", "error": "input.payload.steps: must be at "
                                                                              "least 1"}


def test_a_retry_job_answers_to_the_id_of_the_job_it_retries():
    again = job({"id": "uid-2", "status": "IN_QUEUE"}, uid="uid-2", labels={"img2img.dev/job-id": "uid-1"})
    assert job_id(again) == "uid-1" and answer(again)["id"] == "uid-1"


def test_the_requests_output_mode_wins_over_the_endpoints():
    assert output_mode(job(), OutputMode.BASE64) is OutputMode.BASE64
    chosen = job(annotations={"img2img.dev/output-mode": "presigned"})
    assert output_mode(chosen, OutputMode.BASE64) is OutputMode.PRESIGNED
    assert output_mode(job(annotations={"img2img.dev/output-mode": "???"}), OutputMode.S3) is OutputMode.S3


# ---- /stream --------------------------------------------------------------------------------------------------------
def running(step: int, steps: int = 4) -> dict:
    return {"status": "IN_PROGRESS", "progress": {"step": step, "steps": steps}}


def test_stream_chunks_are_each_progress_value_once_drained_on_read():
    log = ProgressLog()
    for status in (running(1), running(1), running(2)):  # the same value twice is one chunk
        log.record(status)
    assert log.drain() == [{"output": {"step": 1, "steps": 4}}, {"output": {"step": 2, "steps": 4}}]
    assert log.drain() == []
    log.record(running(4))
    log.record({"status": "COMPLETED"})
    assert stream_answer("COMPLETED", log.drain()) == {"status": "COMPLETED",
                                                       "stream": [{"output": {"step": 4, "steps": 4}}]}
    assert stream_answer("COMPLETED", log.drain()) == {"status": "COMPLETED", "stream": []}


def test_a_long_job_keeps_its_latest_progress_values():
    log = ProgressLog()
    for step in range(1, MAX_CHUNKS_KEPT + 11):
        log.record(running(step, 10_000))
    chunks = log.drain()
    assert len(chunks) == MAX_CHUNKS_KEPT and chunks[-1]["output"]["step"] == MAX_CHUNKS_KEPT + 10
    log.record(running(MAX_CHUNKS_KEPT + 11, 10_000))
    assert log.drain() == [{"output": {"step": MAX_CHUNKS_KEPT + 11, "steps": 10_000}}]


@pytest.mark.parametrize("progress", [None, "3/10", {"step": "3", "steps": 10}, {"step": 3, "steps": 0},
                                      {"step": True, "steps": 2}])
def test_progress_in_another_shape_is_no_chunk(progress):
    log = ProgressLog()
    log.record({"status": "IN_PROGRESS", "progress": progress})
    assert log.drain() == []


# ---- /health --------------------------------------------------------------------------------------------------------
def test_health_counts_jobs_as_runpod_does_and_workers_from_the_pools():
    jobs = [job({"status": "COMPLETED", "attempts": 1}, name="a"), job({"status": "COMPLETED", "attempts": 2},
                                                                       name="b"),
            job({"status": "FAILED"}, name="c"), job({"status": "TIMED_OUT"}, name="d"),
            job({"status": "IN_PROGRESS"}, name="e"), job({}, name="f"), job({"status": "IN_QUEUE"}, name="g"),
            job({"status": "CANCELLED"}, name="h"), job({"status": "FAILED"}, name="old")]
    pools = [{"spec": {"gpuClass": "a100"}, "status": {"readyRunners": 3, "busyRunners": 1, "startingRunners": 2}},
             {"spec": {"gpuClass": "h100"}, "status": {"readyRunners": 1, "busyRunners": 1}},
             {"spec": {"gpuClass": "a100"}}]
    assert health(jobs, {"old"}, pools, None) == {
        "jobs": {"completed": 2, "failed": 2, "inProgress": 1, "inQueue": 2, "retried": 2},
        "workers": {"idle": 2, "initializing": 2, "ready": 4, "running": 2, "throttled": 0}}
    assert health([], set(), pools, "a100")["workers"] == {"idle": 2, "initializing": 2, "ready": 3, "running": 1,
                                                           "throttled": 0}
    assert health([], set(), [], None)["workers"] == {"idle": 0, "initializing": 0, "ready": 0, "running": 0,
                                                      "throttled": 0}


# ---- discovery ------------------------------------------------------------------------------------------------------
CATALOG = Catalog.from_dict({"default_checkpoint": "sd_xl_base_1.0", "models": {
    "sd_xl_base_1.0": {"architecture": "sdxl", "source": {"path": "base"}, "hash": "31e35c80fc"},
    "sd_xl_refiner_1.0": {"architecture": "sdxl-refiner", "source": {"path": "refiner"}},
    "v1-5-pruned": {"architecture": "sd15", "source": {"path": "sd15"}},
    "sdxl_vae.safetensors": {"architecture": "vae", "source": {"path": "vae"}},
    "diffusers_xl_canny_mid": {"architecture": "controlnet-sdxl", "source": {"path": "cn"}, "hash": "112a778d"},
    "control_v11p_sd15_canny": {"architecture": "controlnet-sd15", "source": {"path": "cn15"},
                                "substitutes": {"sdxl": "diffusers_xl_canny_mid"}},
    "pixel-art-xl.safetensors": {"architecture": "lora-sdxl", "source": {"file": "loras/pixel-art-xl.safetensors"}},
}})


def test_sd_models_lists_the_catalogs_checkpoints_in_a1111s_shape():
    models = discovery.answer("/sdapi/v1/sd-models", CATALOG)["output"]
    assert [m["title"] for m in models] == ["sd_xl_base_1.0 [31e35c80fc]", "sd_xl_refiner_1.0", "v1-5-pruned"]
    assert models[0] == {"title": "sd_xl_base_1.0 [31e35c80fc]", "model_name": "sd_xl_base_1.0",
                         "hash": "31e35c80fc", "sha256": None, "filename": "sd_xl_base_1.0", "config": None}


def test_vae_controlnet_and_options_come_from_the_catalog():
    assert discovery.answer("/sdapi/v1/sd-vae", CATALOG)["output"] == [
        {"model_name": "sdxl_vae.safetensors", "filename": "sdxl_vae.safetensors"}]
    assert discovery.answer("/controlnet/model_list", CATALOG)["output"] == {
        "model_list": ["diffusers_xl_canny_mid [112a778d]", "control_v11p_sd15_canny"]}
    assert discovery.answer("/sdapi/v1/options", CATALOG)["output"]["sd_model_checkpoint"] == \
        "sd_xl_base_1.0 [31e35c80fc]"
    assert discovery.answer("/sdapi/v1/loras", CATALOG)["output"] == [
        {"name": "pixel-art-xl", "alias": "pixel-art-xl", "path": "pixel-art-xl.safetensors", "metadata": {}}]


def test_samplers_and_schedulers_are_those_the_runner_can_run():
    samplers = [s["name"] for s in discovery.answer("/sdapi/v1/samplers", None)["output"]]
    assert "DPM++ SDE" in samplers and "Euler a" in samplers
    assert "DPM fast" not in samplers and "Restart" not in samplers  # refused by the runner
    labels = [s["label"] for s in discovery.answer("/sdapi/v1/schedulers", None)["output"]]
    assert labels[0] == "Automatic" and "Karras" in labels and "Align Your Steps" not in labels
    modules = discovery.answer("/controlnet/module_list", None)["output"]["module_list"]
    assert "canny" in modules and "depth" in modules


def test_a_discovery_call_completes_at_once_under_an_id_that_answers_it_again():
    made = discovery.answer("/controlnet/model_list", CATALOG)
    assert made["status"] == "COMPLETED" and made["id"] == "a1111-controlnet-model_list"
    assert discovery.endpoint_of_id(made["id"]) == "/controlnet/model_list"
    assert discovery.endpoint_of_id("0b5e6a1c-7f0a-4d55-9a1e-2f2d0c4c1a11") is None
    assert "supported GET endpoints" in discovery.refusal("/sdapi/v1/progress")
    assert discovery.refusal("/sdapi/v1/sd-models") is None
