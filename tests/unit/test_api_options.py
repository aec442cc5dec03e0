"""override_settings as A1111 1.10 applies them: honoured, accepted where they cannot change the answer, refused by
name otherwise; an unknown key is refused (A1111's opts.set fails on it)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api_samples import seed_payload
from img2img.api.errors import problems
from img2img.api.payload import Img2ImgPayload
from runner_samples import plan_for, seed_payload as runner_payload


def refusals(options: dict) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        Img2ImgPayload.model_validate(seed_payload(override_settings=options))
    return {p.path.removeprefix("input.payload.override_settings."): p.reason
            for p in problems(info.value, "input.payload")}


def test_options_at_their_default_or_without_effect_are_accepted_and_echoed():
    options = {"sd_model_checkpoint": "sd_xl_base_1.0", "emphasis": "Original", "comma_padding_backtrack": 20,
               "eta_ancestral": 1, "sdxl_crop_top": 0.0, "randn_source": "CPU", "samples_save": False,
               "outdir_img2img_samples": "/tmp/x", "live_previews_enable": False, "jpeg_quality": 95}
    payload = Img2ImgPayload.model_validate(seed_payload(override_settings=options))
    assert payload.parameters()["override_settings"]["outdir_img2img_samples"] == "/tmp/x"


def test_options_that_would_change_the_picture_are_refused_by_name():
    found = refusals({"emphasis": "No norm", "comma_padding_backtrack": 0, "eta_ancestral": 0.5,
                      "sdxl_refiner_high_aesthetic_score": 7, "img2img_color_correction": True,
                      "randn_source": "NV"})
    assert set(found) == {"emphasis", "comma_padding_backtrack", "eta_ancestral",
                          "sdxl_refiner_high_aesthetic_score", "img2img_color_correction", "randn_source"}
    assert "'Original'" in found["emphasis"] and "20" in found["comma_padding_backtrack"]


def test_unknown_options_are_refused_by_name():
    assert "not an A1111 1.10 option" in refusals({"sd_model_chekpoint": "x"})["sd_model_chekpoint"]


def test_samples_format_is_png_only():
    assert "PNG" in refusals({"samples_format": "webp"})["samples_format"]
    Img2ImgPayload.model_validate(seed_payload(override_settings={"samples_format": "png"}))


def test_the_initial_noise_multiplier_option_applies_when_the_request_has_none():
    option = {"sd_model_checkpoint": "sd_xl_base_1.0", "initial_noise_multiplier": 0.9}
    assert plan_for(runner_payload(override_settings=option)).noise_multiplier == 0.9
    assert plan_for(runner_payload(override_settings=option, initial_noise_multiplier=1.1)).noise_multiplier == 1.1
    assert plan_for(runner_payload()).noise_multiplier == 1.0
