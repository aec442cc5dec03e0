"""A pool's runner (``img2img-runner serve``, ``img2img_runner.worker``) serving jobs from an operator, on the tiny
models.

The operator here is ``fake_operator.FakeOperator``: the real one's runner endpoint is being built at the same time
by another change, so these tests hold the runner to the protocol's messages (``img2img.api.protocol``) on their own.
Objects (input.json, images, result.json) go through the fake's presigned-style URLs; the stack test
(tests/integration/test_runner_worker_s3.py) does the same against MinIO's presigned URLs.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from fake_operator import FakeOperator, token
from model_samples import canny_unit, picture, png_bytes, sd15_input, seed_input

RUNNER = Path(sys.executable).with_name("img2img-runner")
SD15 = "v1-5-pruned-emaonly"


@pytest.fixture
def fake():
    operator = FakeOperator()
    yield operator
    operator.close()


@pytest.fixture
def start_worker(catalog, fake):
    """Start runners in threads (``Worker.serve_forever``), each with its own model cache; stopped at the end."""
    from img2img_runner.pipelines import ModelCache
    from img2img_runner.worker import OperatorLink, Worker

    started = []

    def start(runner: str = "pool-a-x1y2z", cache=None):
        worker = Worker(runner, OperatorLink(fake.url, token(runner)), catalog, cache or ModelCache(catalog))
        thread = threading.Thread(target=worker.serve_forever, daemon=True)
        thread.start()
        started.append((worker, thread))
        return worker

    yield start
    for worker, thread in started:
        worker.stop()
        thread.join(60)


def wait_for(condition, timeout: float = 120, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def png_text(data: bytes) -> str:
    return Image.open(io.BytesIO(data)).text["parameters"]


# --- warm jobs -------------------------------------------------------------------------------------------------


def test_a_warm_runner_loads_nothing_for_its_next_job(fake, start_worker):
    worker = start_worker()
    first = fake.submit(sd15_input(steps=4))
    cold = fake.outcome(first)
    assert cold["error"] is None and cold["result"] == first.outputs.resultUri
    assert cold["modelLoadTime"] > 0
    loads = worker.cache.loads

    second = fake.submit(sd15_input(steps=4, seed=2))
    warm = fake.outcome(second)
    assert warm["error"] is None and warm["result"] == second.outputs.resultUri
    assert warm["modelLoadTime"] == 0 and worker.cache.loads == loads
    assert warm["startedAt"] <= warm["modelsLoadedAt"] <= warm["finishedAt"]
    assert warm["inferenceTime"] >= 0 and warm["uploadTime"] >= 0

    # the runner tells the operator what it holds: nothing at first, the checkpoint once loaded
    assert fake.takes[0].models == []
    assert SD15 in fake.takes[-1].models
    # the image, then result.json naming it; every call carried the runner's token
    result = fake.result(second)
    assert result["images"] == second.outputs.imageUris[:1]
    assert "Seed: 2" in png_text(fake.image(second, 0))
    assert fake.content_types[fake.key(second.outputs.imageUrls[0])] == "image/png"
    assert fake.content_types[fake.key(second.outputs.resultUrl)] == "application/json"
    assert fake.authorizations == {f"Bearer {token(worker.runner)}"}


def test_a_next_job_handed_out_in_the_answer_to_done_is_served_without_a_take(fake, start_worker):
    fake.next_in_done = True
    first, second = fake.submit(sd15_input(steps=2), name="first"), fake.submit(sd15_input(steps=2), name="second")
    start_worker()
    assert fake.outcome(first)["error"] is None and fake.outcome(second)["error"] is None
    assert fake.handed_in_done == [second.lease]
    done_first = next(d for d in fake.dones if d.lease == first.lease)
    assert SD15 in done_first.models  # what it holds, as a take says
    assert fake.result(second)["images"] == second.outputs.imageUris[:1]


def test_heartbeats_carry_progress_step_k_of_n(fake, start_worker):
    start_worker()
    # A1111 img2img with Euler: int(0.5 * 10) + 1 = 6 sampler steps
    job = fake.submit(sd15_input(256, 256, steps=10, denoising_strength=0.5))
    assert fake.outcome(job)["error"] is None
    beats = fake.beats(job)
    assert beats and all(b.runner == "pool-a-x1y2z" for b in beats)
    progress = [(b.step, b.steps) for b in beats if b.steps is not None]
    assert {n for _, n in progress} == {6}
    steps = [k for k, _ in progress]
    assert steps == sorted(steps)
    assert any(0 < k < 6 for k in steps), steps  # beats while sampling, not only before and after


# --- stop ------------------------------------------------------------------------------------------------------


def stopped_at(outcome: dict) -> int:
    return int(re.search(r"at step (\d+) of", outcome["error"]["message"]).group(1))


def test_a_stop_interrupts_within_a_step_and_the_runner_serves_the_next_job(fake, start_worker):
    stops: dict[str, str] = {}
    fake.stop_when = lambda beat: stops.get(beat.lease) if (beat.step or 0) >= 2 else None
    start_worker()
    long_job = sd15_input(384, 384, steps=40, denoising_strength=1.0)  # 40 steps of ~0.2 s

    jobs = {}
    for reason in ("cancelled", "deadline", "lost"):
        jobs[reason] = fake.submit(long_job, name=reason)
        stops[jobs[reason].lease] = reason
    after = fake.submit(sd15_input(steps=4), name="after")

    for reason, code in (("cancelled", "CANCELLED"), ("deadline", "TIMED_OUT")):
        outcome = fake.outcome(jobs[reason])
        assert outcome["error"]["code"] == code and outcome["result"] is None
        asked = next(r.beat.step for r in fake.replies if r.beat.lease == jobs[reason].lease and r.stop)
        # the step running when the answer came is the last one
        assert asked <= stopped_at(outcome) <= asked + 1, (asked, outcome["error"])
        assert not any("attempt-1/images" in key and jobs[reason].job.uid in key for key in fake.objects)
    assert fake.outcome(after)["error"] is None  # the runner went on, also after the lost lease
    assert not [d for d in fake.dones if d.lease == jobs["lost"].lease]  # a lost lease is not reported


# --- failures are outcomes -------------------------------------------------------------------------------------


def test_bad_input_is_the_jobs_outcome_and_the_runner_goes_on(fake, start_worker):
    start_worker()
    fake.objects["uploads/ns/picture.png"] = png_bytes(picture(64, 64))
    granted = {"s3://bucket/uploads/ns/picture.png": fake.object_url("uploads/ns/picture.png"),
               "s3://bucket/uploads/ns/gone.png": fake.object_url("uploads/ns/gone.png")}
    not_granted = fake.submit(sd15_input(steps=4, init_images=["s3://bucket/uploads/other/secret.png"]),
                              images=granted)
    missing = fake.submit(sd15_input(steps=4, init_images=["s3://bucket/uploads/ns/gone.png"]), images=granted)
    bad_steps = fake.submit(sd15_input(steps=0))
    good = fake.submit(sd15_input(steps=4, init_images=["s3://bucket/uploads/ns/picture.png"]), images=granted)

    error = fake.outcome(not_granted)["error"]
    assert error["code"] == "BAD_INPUT" and error["field"] == "input.payload.init_images[0]"
    assert "s3://bucket/uploads/other/secret.png" in error["message"]
    error = fake.outcome(missing)["error"]
    assert error["code"] == "BAD_INPUT" and error["field"] == "input.payload.init_images[0]"
    assert "no such object" in error["message"]
    error = fake.outcome(bad_steps)["error"]
    assert error["code"] == "BAD_INPUT" and error["field"] == "input.payload.steps"
    assert fake.outcome(good)["error"] is None  # an s3:// image through its presigned GET


def test_a_refused_outcome_is_logged_and_the_runner_goes_on(fake, start_worker, caplog):
    fake.done_status = 409
    start_worker()
    with caplog.at_level(logging.WARNING, logger="img2img_runner.worker"):
        first = fake.submit(sd15_input(steps=4))
        second = fake.submit(sd15_input(steps=4, seed=3))
        assert fake.outcome(first)["error"] is None
        assert fake.outcome(second)["error"] is None  # the runner went on after the first refusal
        wait_for(lambda: sum("refused the outcome" in r.getMessage() for r in caplog.records) == 2,
                 what="both refusals in the log")


def test_the_runner_waits_for_an_operator_that_is_not_there_yet(catalog, caplog):
    from img2img_runner.pipelines import ModelCache
    from img2img_runner.worker import OperatorLink, Worker

    with socket.socket() as probe:  # a port where nothing listens yet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    worker = Worker("pool-a-x1y2z", OperatorLink(f"http://127.0.0.1:{port}", token("pool-a-x1y2z")), catalog,
                    ModelCache(catalog))
    thread = threading.Thread(target=worker.serve_forever, daemon=True)
    with caplog.at_level(logging.WARNING, logger="img2img_runner.worker"):
        thread.start()
        wait_for(lambda: sum("cannot take work" in r.getMessage() for r in caplog.records) >= 2, timeout=30,
                 what="two failed takes")
    fake = FakeOperator(port=port)  # the operator comes (back)
    try:
        wait_for(lambda: fake.takes, timeout=30, what="a take once the operator answers")
        assert thread.is_alive()
    finally:
        worker.stop()
        thread.join(30)
        fake.close()


def test_a_refused_token_ends_the_runner(catalog, fake):
    from img2img_runner.pipelines import ModelCache
    from img2img_runner.worker import OperatorLink, TokenRefused, Worker

    worker = Worker("pool-a-x1y2z", OperatorLink(fake.url, token("another-runner")), catalog, ModelCache(catalog))
    with pytest.raises(TokenRefused):
        worker.serve_forever()
    assert fake.authorizations == {f"Bearer {token('another-runner')}"}


# --- no state from one job to the next -------------------------------------------------------------------------


def test_the_same_request_gives_the_same_bytes_whatever_ran_before(fake, start_worker):
    """SDXL + refiner + ControlNet first on a fresh runner, then after jobs with other samplers, checkpoints, with
    and without ControlNet, other seeds: the same PNGs, detect map included."""
    start_worker()
    request = seed_input(64, 64, seed=7, steps=4)
    others = [
        sd15_input(steps=4, sampler_name="Euler a", seed=11),
        sd15_input(steps=4, sampler_name="DPM++ 2M", scheduler="Karras", seed=12,
                   alwayson_scripts={"controlnet": {"args": [canny_unit()]}}),
        seed_input(64, 64, seed=13, steps=4, sampler_name="Heun", alwayson_scripts={}, refiner_checkpoint=None,
                   refiner_switch_at=None),
        seed_input(64, 64, seed=14, steps=5, denoising_strength=0.5),
    ]
    before = fake.submit(request, name="before")
    rest = [fake.submit(other, name=f"other-{i}") for i, other in enumerate(others)]
    again = fake.submit(request, name="again")
    for job in (before, *rest, again):
        assert fake.outcome(job)["error"] is None, fake.outcome(job)["error"]

    assert fake.result(before)["images"] == before.outputs.imageUris[:2]  # the picture and the detect map
    assert fake.image(again, 0) == fake.image(before, 0)
    assert fake.image(again, 1) == fake.image(before, 1)
    assert fake.image(rest[-1], 0) != fake.image(before, 0)  # the comparison can tell pictures apart


def test_a_job_after_a_lora_job_draws_what_a_fresh_runner_draws(fake, start_worker):
    """The LoRA is on the checkpoint for its job only: the runner's next job gives the bytes a fresh runner gave, and
    the runner tells the operator it holds the LoRA (a job naming it is warm there)."""
    start_worker()
    request = seed_input(64, 64, seed=5, steps=4, alwayson_scripts={}, refiner_checkpoint=None, refiner_switch_at=None)
    with_lora = seed_input(64, 64, seed=5, steps=4, alwayson_scripts={}, refiner_checkpoint=None,
                           refiner_switch_at=None, prompt="an astronaut riding a horse <lora:tiny_lora:0.9>")
    fresh = fake.submit(request, name="fresh")
    lora = fake.submit(with_lora, name="lora")
    again = fake.submit(request, name="again")
    for job in (fresh, lora, again):
        assert fake.outcome(job)["error"] is None, fake.outcome(job)["error"]
    assert fake.image(lora, 0) != fake.image(fresh, 0)
    assert fake.image(again, 0) == fake.image(fresh, 0)
    assert 'Lora hashes: "tiny_lora: ' in png_text(fake.image(lora, 0))
    assert "tiny_lora" in fake.takes[-1].models


# --- the model cache's memory budget ---------------------------------------------------------------------------


def weights_on_disk(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.safetensors"))


def test_over_budget_the_least_recently_used_model_is_unloaded(catalog, run):
    from img2img_runner.pipelines import ModelCache

    size = {name: weights_on_disk(catalog.local_path(catalog.entries[name].source))
            for name in (SD15, "deliberate_v2", "control_v11p_sd15_canny")}
    # room for both checkpoints, not for both and the ControlNet
    cache = ModelCache(catalog, budget=size[SD15] + size["deliberate_v2"] + size["control_v11p_sd15_canny"] // 2)
    run(sd15_input(steps=2), cache=cache)
    run(sd15_input(steps=2, override_settings={"sd_model_checkpoint": "deliberate_v2"}), cache=cache)
    run(sd15_input(steps=2), cache=cache)  # SD15 is now the most recently used
    assert cache.held() == ["deliberate_v2", SD15] and cache.loads == 2

    run(sd15_input(steps=2, alwayson_scripts={"controlnet": {"args": [canny_unit()]}}), cache=cache)
    assert cache.held() == ["control_v11p_sd15_canny", SD15] and cache.loads == 3
    assert cache.used_bytes() <= cache.budget


def test_a_memory_budget_is_a_number_of_bytes():
    import torch

    from img2img_runner.pipelines import Runtime, memory_budget

    cpu = Runtime("cpu", torch.float32)
    assert memory_budget({"IMG2IMG_MODEL_MEMORY_BUDGET": "12000000000"}, cpu) == 12_000_000_000
    assert memory_budget({}, cpu) is None  # on the CPU: no limit unless one is set
    with pytest.raises(ValueError, match="IMG2IMG_MODEL_MEMORY_BUDGET='12Gi': expected a whole number of bytes"):
        memory_budget({"IMG2IMG_MODEL_MEMORY_BUDGET": "12Gi"}, cpu)


# --- the process ---------------------------------------------------------------------------------------------


def serve_process(fake: FakeOperator, catalog_path: Path, models: list[str], log_file: Path,
                  runner: str = "pool-a-proc1") -> subprocess.Popen:
    env = {**os.environ, "IMG2IMG_OPERATOR_URL": fake.url, "IMG2IMG_RUNNER_TOKEN": token(runner),
           "IMG2IMG_RUNNER_NAME": runner, "IMG2IMG_POOL": "pool-a", "IMG2IMG_POOL_MODELS": json.dumps(models),
           "IMG2IMG_CATALOG": str(catalog_path)}
    return subprocess.Popen([str(RUNNER), "serve"], env=env, stdout=subprocess.DEVNULL,
                            stderr=log_file.open("wb"))


def test_serve_loads_the_pools_models_then_stops_at_a_step_on_sigterm(fake, tiny_catalog_path, tmp_path):
    log_file = tmp_path / "runner.log"
    proc = serve_process(fake, tiny_catalog_path, [SD15], log_file)
    try:
        wait_for(lambda: fake.takes, what="the runner's first take")
        assert fake.takes[0].runner == "pool-a-proc1" and fake.takes[0].models == [SD15]  # loaded before asking

        warm = fake.submit(sd15_input(steps=4))
        assert fake.outcome(warm)["error"] is None and fake.outcome(warm)["modelLoadTime"] == 0

        busy = fake.submit(sd15_input(384, 384, steps=40, denoising_strength=1.0))
        wait_for(lambda: any((b.step or 0) >= 1 for b in fake.beats(busy)), what="sampling")
        proc.send_signal(signal.SIGTERM)
        outcome = fake.outcome(busy, timeout=30)
        assert outcome["error"]["code"] == "CRASH" and "terminating" in outcome["error"]["message"]
        assert stopped_at(outcome) < 40
        assert proc.wait(30) == 0
    finally:
        proc.kill()
    lines = [json.loads(line) for line in log_file.read_text().splitlines() if line.startswith("{")]
    assert any(line.get("job") == "job" and line.get("runner") == "pool-a-proc1" for line in lines)


def test_serve_exits_at_once_on_sigterm_when_idle(fake, tiny_catalog_path, tmp_path):
    proc = serve_process(fake, tiny_catalog_path, [], tmp_path / "runner.log")
    try:
        wait_for(lambda: fake.takes, what="the runner's first take")
        asked = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # in the middle of a long poll
        assert proc.wait(10) == 0
        assert time.monotonic() - asked < 5
    finally:
        proc.kill()


def test_serve_fails_visibly_when_the_pools_models_cannot_load(fake, tiny_catalog_path, tmp_path):
    log_file = tmp_path / "runner.log"
    proc = serve_process(fake, tiny_catalog_path, [SD15, "sd_xl_turbo"], log_file)
    try:
        assert proc.wait(120) == 3  # ExitCode.MODEL
    finally:
        proc.kill()
    assert not fake.takes
    text = log_file.read_text()
    assert "sd_xl_turbo" in text and "IMG2IMG_POOL_MODELS" in text

