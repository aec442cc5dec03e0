"""routing.pick_job: a runner gets the first job it holds the models of, else one no idle runner holds."""

from __future__ import annotations

from img2img_operator.routing import Candidate, held, pick_job

SDXL = frozenset({"sd_xl_base_1.0", "sdxl_vae"})
SDXL_CANNY = frozenset({"sd_xl_base_1.0", "sdxl_vae", "diffusers_xl_canny_mid"})
SD15 = frozenset({"v1-5-pruned-emaonly"})


def job(uid: str, models: frozenset[str]) -> Candidate:
    return Candidate(uid, models)


def test_a_warm_job_is_taken_before_older_cold_ones():
    queue = [job("a", SD15), job("b", SDXL_CANNY), job("c", SDXL)]
    assert pick_job({"sd_xl_base_1.0", "sdxl_vae"}, queue, []) == "c"


def test_queue_order_among_warm_jobs():
    queue = [job("a", SDXL), job("b", SDXL)]
    assert pick_job({"sd_xl_base_1.0", "sdxl_vae", "diffusers_xl_canny_mid"}, queue, []) == "a"


def test_runner_names_in_any_a1111_spelling_count_as_held():
    queue = [job("a", SDXL)]
    assert pick_job({"sd_xl_base_1.0 [31e35c80fc]", "sdxl_vae.safetensors"}, queue, [set()]) == "a"


def test_a_cold_runner_takes_the_first_job_no_idle_runner_holds():
    queue = [job("a", SDXL), job("b", SD15), job("c", SD15)]
    other_idle = [{"sd_xl_base_1.0", "sdxl_vae"}]
    assert pick_job(set(), queue, other_idle) == "b"  # "a" is left to the runner that holds it


def test_a_job_whose_models_no_one_holds_goes_to_any_runner():
    queue = [job("a", SDXL_CANNY)]
    assert pick_job({"v1-5-pruned-emaonly"}, queue, [{"sd_xl_base_1.0"}, {"sdxl_vae"}]) == "a"


def test_nothing_when_every_job_is_held_by_another_idle_runner():
    queue = [job("a", SDXL), job("b", SD15)]
    assert pick_job(set(), queue, [{"sd_xl_base_1.0", "sdxl_vae"}, {"v1-5-pruned-emaonly"}]) is None


def test_nothing_to_take():
    assert pick_job({"sd_xl_base_1.0"}, [], []) is None


def test_a_job_needing_no_named_model_is_warm_anywhere():
    assert pick_job(set(), [job("a", frozenset())], [{"sd_xl_base_1.0"}]) == "a"


def test_warm_means_the_runner_holds_every_model():
    assert SDXL <= held(["SD_XL_BASE_1.0.safetensors", "sdxl_vae.safetensors", "extra"])
    assert not SDXL_CANNY <= held(["sd_xl_base_1.0", "sdxl_vae"])
