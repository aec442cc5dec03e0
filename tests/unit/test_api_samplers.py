"""A1111 1.9+ sampler and scheduler names: the resolution the runner builds its diffusers scheduler from."""

from __future__ import annotations

import pytest

from img2img.api.errors import FieldError
from img2img.api.samplers import SAMPLER_NAMES, SCHEDULERS, resolve, split_schedule_suffix


def test_a1111_sampler_list_in_a1111_order():
    assert SAMPLER_NAMES[:8] == ("DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a",
                                 "DPM++ 3M SDE", "Euler a", "Euler")
    assert {"DDIM", "PLMS", "UniPC", "LCM", "Restart", "DPM adaptive"} <= set(SAMPLER_NAMES)
    assert [s.label for s in SCHEDULERS][:3] == ["Automatic", "Uniform", "Karras"]


@pytest.mark.parametrize("name, expected", [
    ("DPM++ 2M Karras", ("DPM++ 2M", "karras")),
    ("DPM++ 3M SDE Exponential", ("DPM++ 3M SDE", "exponential")),
    ("DPM2 a Karras", ("DPM2 a", "karras")),
    ("Euler a", ("Euler a", None)),
    ("Euler SGM Uniform", ("Euler", "sgm_uniform")),
    ("DDIM", ("DDIM", None)),  # the sampler named like a schedule is not split
])
def test_legacy_combined_names_split(name, expected):
    base, scheduler = split_schedule_suffix(name)
    assert (base, scheduler.name if scheduler else None) == expected


@pytest.mark.parametrize("sampler_name, sampler_index, scheduler, pair", [
    (None, None, None, ("DPM++ 2M", "Karras")),  # nothing at all: A1111's first sampler
    ("euler a", None, None, ("Euler a", "Automatic")),  # any letter case
    ("k_dpmpp_2m_sde", None, "Beta", ("DPM++ 2M SDE", "Beta")),
    ("Heun", "Euler", "exponential", ("Heun", "Exponential")),
    ("", "DPM++ 2M SDE Heun Karras", None, ("DPM++ 2M SDE Heun", "Karras")),
    ("DPM++ SDE", None, "Automatic", ("DPM++ SDE", "Karras")),
])
def test_resolve(sampler_name, sampler_index, scheduler, pair):
    assert resolve(sampler_name, sampler_index, scheduler).pair() == pair


def test_unknown_names_are_refused_not_replaced_silently():
    with pytest.raises(FieldError) as info:
        resolve("DPM++ 2M Karas", None, None)
    assert info.value.field == "sampler_name" and "DPM++ 2M, DPM++ SDE" in str(info.value)
    with pytest.raises(FieldError) as info:
        resolve(None, "Eular", None)
    assert info.value.field == "sampler_index"
    with pytest.raises(FieldError) as info:
        resolve("Euler", None, "cosine")
    assert info.value.field == "scheduler" and "karras (Karras)" in str(info.value)
