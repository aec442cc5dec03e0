"""A1111's answer text: the ``info`` JSON string, one infotext per image, in A1111 1.10's format (pure).

The format is A1111 1.10 + current sd-webui-controlnet, because that is what current clients parse (1.9+ split
"Schedule type" off the sampler name; A1111's infotext parser reads CN's "ControlNet N" values in the current
"Key: value" form and refuses the legacy one). The legacy CN string of the RunPod example
(webui 1.5.1) is available with ``IMG2IMG_CONTROLNET_INFOTEXT=legacy``, and that example's sampler name with the
schedule in it ("DPM++ SDE Karras", no "Schedule type") with ``IMG2IMG_SAMPLER_NAME=combined``.

- ``info`` keys in ``Processed.js`` order (modules/processing.py), dumped with ``json.dumps(default=None)``.
- infotext: ``prompt[\\nNegative prompt: …]\\n`` + ``Key: value`` pairs in ``create_infotext``'s order, None values
  left out, a value containing ``,``, ``:`` or a newline JSON-quoted (infotext_utils.quote).
- ``extra_generation_params`` in the order A1111 writes them: ControlNet units (CN's ``process``), Denoising strength
  (img2img ``init``; txt2img's with the hires fix, then its Hires keys), Lora hashes (the LoRAs' activation:
  ``"name: hash, …"``, each name as the tag wrote it without ``:`` and ``,``), Schedule type (sampling), Refiner and
  Refiner switch at (when the refiner takes over). A1111 keeps "Hires prompt" and "Hires negative prompt" as
  functions of the image: the infotext shows their value, the info JSON null (``json.dumps(default=None)``).
- txt2img: "Size", ``width`` and ``height`` are the first pass's (the request's), also with the hires fix; "Denoising
  strength" is in the infotext only with the hires fix (``info``'s ``denoising_strength`` is the request's).
- "RNG: CPU": the initial noise is drawn on the CPU on every device (so a seed gives the same picture on any GPU
  class); A1111 writes that key whenever its noise source is not the GPU.
- "Version": the A1111 version whose format this is (``IMG2IMG_INFOTEXT_VERSION``, default v1.10.1), so infotext
  parsers apply 1.10's rules.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from img2img_runner.plan import Plan, UnitPlan

A1111_VERSION = "v1.10.1"
RNG_SOURCE = "CPU"
# extra_generation_params A1111 holds as functions of the image (txt2img init): null in the info JSON
PER_IMAGE_KEYS = ("Hires prompt", "Hires negative prompt")


# A1111's inpainting_mask_weight option: its default, the only value img2img.api.options lets through
INPAINTING_MASK_WEIGHT = 1.0


@dataclass(frozen=True)
class Outcome:
    """What only running the job tells: did the refiner take over, when did the job start, the LoRA files' hashes,
    did an inpainting checkpoint (a UNet taking the mask and the masked image) draw it."""

    refiner_ran: bool
    job_timestamp: str  # YYYYMMDDhhmmss
    lora_hashes: dict[str, str] = field(default_factory=dict)  # catalog name -> A1111's short hash of the file
    inpainting_conditioning: bool = False


def version() -> str:
    return os.environ.get("IMG2IMG_INFOTEXT_VERSION", A1111_VERSION)


def controlnet_format() -> str:
    return "legacy" if os.environ.get("IMG2IMG_CONTROLNET_INFOTEXT", "").lower() == "legacy" else "1.10"


def combined_sampler_names() -> bool:
    return os.environ.get("IMG2IMG_SAMPLER_NAME", "").lower() == "combined"


def sampler_name(plan: Plan, combined: bool) -> str:
    """The sampler as info/infotext name it: 1.10's name, or webui 1.5's with the schedule in it ("DPM++ SDE Karras";
    the model's own schedule, and DDIM/PLMS, add nothing)."""
    if not combined or plan.schedule in ("Automatic", "Uniform") or plan.steps.timestep_sampler:
        return plan.sampler
    return f"{plan.sampler} {plan.schedule}"


def quote(value: Any) -> Any:
    """infotext_utils.quote: JSON-quote a value containing ',', ':' or a newline."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return value
    return json.dumps(text, ensure_ascii=False)


def controlnet_value(unit: UnitPlan) -> str:
    """CN ``ControlNetUnit.serialize`` (internal_controlnet/args.py): "Module: canny, Model: …, Control Mode: …".

    Values are the unit's after CN's bounds check (processor_res -1 -> 512, thresholds -> the module's defaults),
    before pixel perfect; CN writes an empty string when any value contains ',' or ':'.
    """
    fields = [
        ("Module", unit.module_as_sent),
        ("Model", unit.model),
        ("Weight", float(unit.weight)),
        ("Resize Mode", unit.resize_mode_as_sent),
        ("Processor Res", int(unit.processor_res_info)),
        ("Threshold A", float(unit.threshold_a_info)),
        ("Threshold B", float(unit.threshold_b_info)),
        ("Guidance Start", float(unit.guidance_start)),
        ("Guidance End", float(unit.guidance_end)),
        ("Pixel Perfect", bool(unit.pixel_perfect)),
        ("Control Mode", unit.control_mode),
    ]
    values = [(k, str(v)) for k, v in fields]
    if any("," in v or ":" in v for _, v in values):
        return ""
    return ", ".join(f"{k}: {v}" for k, v in values)


def controlnet_value_legacy(unit: UnitPlan) -> str:
    """The pre-2023-08 CN string of the RunPod example, values as sent."""
    s = unit.sent

    def v(key: str, default: Any) -> Any:
        return s.get(key, default)

    end = s.get("guidance_end", s.get("guidance", unit.guidance_end))
    return (f"preprocessor: {unit.module_as_sent}, model: {unit.model}, weight: {v('weight', unit.weight)}, "
            f"starting/ending: ({v('guidance_start', unit.guidance_start)}, {end}), "
            f"resize mode: {v('resize_mode', unit.resize_mode_as_sent)}, pixel perfect: {unit.pixel_perfect}, "
            f"control mode: {v('control_mode', unit.control_mode)}, preprocessor params: "
            f"({v('processor_res', unit.processor_res)}, {v('threshold_a', unit.threshold_a_info)}, "
            f"{v('threshold_b', unit.threshold_b_info)})")


def lora_hashes(plan: Plan, outcome: Outcome) -> str:
    """extra_networks_lora's "Lora hashes": ``name: hash`` per LoRA, names as the prompt wrote them, less ``:`` and
    ``,`` (one entry per name)."""
    hashes = {p.mentioned.translate(_NOT_IN_LORA_NAMES): outcome.lora_hashes[p.entry.name] for p in plan.loras}
    return ", ".join(f"{name}: {shorthash}" for name, shorthash in hashes.items())


_NOT_IN_LORA_NAMES = str.maketrans("", "", ":,")


def extra_generation_params(plan: Plan, outcome: Outcome, cn_format: str | None = None,
                            combined: bool = False) -> dict[str, Any]:
    cn_format = cn_format or controlnet_format()
    extra: dict[str, Any] = {}
    units = {f"ControlNet {u.index}": u for u in plan.units}
    for key, value in plan.extra_generation_params.items():
        if key == "Schedule type" and combined:
            continue  # it is in the sampler's name
        if key == "Lora hashes":
            extra[key] = lora_hashes(plan, outcome)
        elif key in units:
            unit = units[key]
            if cn_format == "legacy":
                extra[f"ControlNet {unit.request_index}"] = controlnet_value_legacy(unit)
            else:
                extra[key] = controlnet_value(unit)
        else:
            extra[key] = value
    if plan.refiner is not None and outcome.refiner_ran:
        extra["Refiner"] = plan.refiner.entry.short_title
        extra["Refiner switch at"] = plan.refiner.switch_at
    return extra


def infotext(plan: Plan, index: int, extra: dict[str, Any], combined: bool = False,
             inpainting_conditioning: bool = False) -> str:
    """A1111 ``create_infotext`` for image ``index`` (0-based over all batches)."""
    models = plan.models
    vae = models.vae
    subseed_strength = plan.subseed_strength
    ensd = plan.eta_noise_seed_delta if plan.eta_noise_seed_delta and plan.scheduler.uses_ensd else None
    params: dict[str, Any] = {
        "Steps": plan.steps.requested,
        "Sampler": sampler_name(plan, combined),
        "Schedule type": None if combined else plan.schedule,
        "CFG scale": plan.cfg_scale,
        "Image CFG scale": None,
        "Seed": plan.all_seeds[index],
        "Face restoration": None,
        "Size": f"{plan.width}x{plan.height}",
        "Model hash": models.checkpoint.hash,
        "Model": models.checkpoint.stem,
        "FP8 weight": None,
        "Cache FP16 weight for LoRA": None,
        "VAE hash": vae.hash if vae else None,
        "VAE": vae.name if vae else None,
        "Variation seed": None if subseed_strength == 0 else plan.all_subseeds[index],
        "Variation seed strength": None if subseed_strength == 0 else subseed_strength,
        "Seed resize from": None,
        "Denoising strength": extra.get("Denoising strength"),
        "Conditional mask weight": INPAINTING_MASK_WEIGHT if inpainting_conditioning else None,
        "Clip skip": None if plan.clip_skip_a1111 <= 1 else plan.clip_skip_a1111,
        "ENSD": ensd,
        "Token merging ratio": None,
        "Token merging ratio hr": None,
        "Init image hash": None,
        "RNG": RNG_SOURCE,
        "Tiling": None,
        **extra,
        "Version": version(),
        "User": None,
    }
    text = ", ".join(k if k == v else f"{k}: {quote(v)}" for k, v in params.items() if v is not None)
    negative = plan.all_negative_prompts[index]
    negative_text = f"\nNegative prompt: {negative}" if negative else ""
    return f"{plan.all_prompts[index]}{negative_text}\n{text}".strip()


def info(plan: Plan, outcome: Outcome, *, restore_faces: bool = False, styles: list[str] | None = None,
         seed_resize_from: tuple[int, int] = (-1, -1), cn_format: str | None = None,
         combined: bool | None = None) -> tuple[str, list[str]]:
    """(``info`` JSON string, infotexts). Keys in A1111 1.10's ``Processed.js`` order. ``combined``: webui 1.5's
    sampler names (None: ``IMG2IMG_SAMPLER_NAME``)."""
    combined = combined_sampler_names() if combined is None else combined
    extra = extra_generation_params(plan, outcome, cn_format, combined)
    infotexts = [infotext(plan, i, extra, combined, outcome.inpainting_conditioning) for i in range(plan.images)]
    models = plan.models
    vae = models.vae
    obj = {
        "prompt": plan.all_prompts[0],
        "all_prompts": list(plan.all_prompts),
        "negative_prompt": plan.all_negative_prompts[0],
        "all_negative_prompts": list(plan.all_negative_prompts),
        "seed": plan.seed,
        "all_seeds": list(plan.all_seeds),
        "subseed": plan.subseed,
        "all_subseeds": list(plan.all_subseeds),
        "subseed_strength": plan.subseed_strength if plan.subseed_strength else 0,
        "width": plan.width,
        "height": plan.height,
        "sampler_name": sampler_name(plan, combined),
        "cfg_scale": plan.cfg_scale,
        "steps": plan.steps.requested,
        "batch_size": plan.batch_size,
        "restore_faces": restore_faces,
        "face_restoration_model": None,
        "sd_model_name": models.checkpoint.stem,
        "sd_model_hash": models.checkpoint.hash,
        "sd_vae_name": vae.name if vae else None,
        "sd_vae_hash": vae.hash if vae else None,
        "seed_resize_from_w": seed_resize_from[0],
        "seed_resize_from_h": seed_resize_from[1],
        "denoising_strength": plan.denoising_strength,
        "extra_generation_params": {k: None if k in PER_IMAGE_KEYS else v for k, v in extra.items()},
        "index_of_first_image": 0,
        "infotexts": infotexts,
        "styles": list(styles or []),
        "job_timestamp": outcome.job_timestamp,
        "clip_skip": plan.clip_skip_a1111,
        "is_using_inpainting_conditioning": outcome.inpainting_conditioning,
        "version": version(),
    }
    return json.dumps(obj, default=lambda o: None), infotexts
