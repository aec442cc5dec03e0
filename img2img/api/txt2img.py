"""The A1111 ``/sdapi/v1/txt2img`` request body: ``StableDiffusionTxt2ImgProcessingAPI`` (v1.10), field for field.

The fields both endpoints share, their defaults and their refusals are ``payload.ProcessingPayload``'s; txt2img adds
the hires fix (``enable_hr`` and the ``hr_*`` fields: img2img.api.hires has the arithmetic). The hires fields are
read only with ``enable_hr``, as A1111 reads them; without it they are accepted whatever they say.

| field(s) | refused when | why |
|---|---|---|
| firstphase_width, firstphase_height | ≠ 0 | A1111's pre-1.0 first-pass size; send width/height with hr_scale |
| firstpass_image | set | a first pass from a given image is not supported yet |
| alwayson_scripts.controlnet.args[i].image | absent on an enabled unit | txt2img has no init image to use |
| hr_upscaler | a model upscaler (ESRGAN, …) or an unknown name | the runner has no upscaler weights |
| hr_checkpoint_name | a checkpoint (with enable_hr) | a second checkpoint for the second pass is not supported yet |
| denoising_strength | 0 (with enable_hr) | A1111's second-pass schedule is int(steps / 0): none |
| hr_second_pass_steps | < 3 with DDIM/PLMS (with enable_hr) | A1111 runs n - 2 steps: none |
| steps | 1, 3, 9, 27, 36, 37, 101-111 with DDIM/PLMS | A1111 takes no step, or a first step diffusers cannot |
| hr_sampler_name, hr_scheduler | what `samplers.scheduler_spec` refuses | no diffusers scheduler draws it |
| hr_resize_x, hr_resize_y | the second pass would render below 64 pixels | too small to sample |
| hr_prompt | LoRA tags other than the prompt's (with enable_hr) | one set of LoRAs for both passes |

The compute budget (``limits``) counts the hires pass too: its size times ``hr_second_pass_steps`` (or ``steps``).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from img2img.api import hires, limits, prompts, samplers
from img2img.api.errors import FieldError, Refusals, refuse
from img2img.api.payload import MIN_SIDE, NAME_MAX, Img2ImgPayload, ProcessingPayload

SAME_CHECKPOINT = "Use same checkpoint"  # A1111's "no hires checkpoint"
CONTROLNET_ARGS = ("alwayson_scripts", "controlnet", "args")


class Txt2ImgPayload(ProcessingPayload):
    """A1111's ``StableDiffusionTxt2ImgProcessingAPI`` (v1.10), as ``input.payload`` of ``/sdapi/v1/txt2img``."""

    # --- hires fix ---------------------------------------------------------------------------------------------
    enable_hr: bool = Field(False, description="hires fix: a second, img2img-like pass at a larger size")
    firstphase_width: int = Field(0, ge=0, le=2048, description="A1111's pre-1.0 first-pass size: must be 0")
    firstphase_height: int = Field(0, ge=0, le=2048, description="A1111's pre-1.0 first-pass size: must be 0")
    hr_scale: float = Field(2.0, ge=1.0, le=4.0, description="the second pass's size: width and height times this, "
                            "when hr_resize_x and hr_resize_y are 0")
    hr_upscaler: str | None = Field(None, max_length=64, description="Latent (default), Latent (antialiased), "
                                    "Latent (bicubic), Latent (bicubic antialiased), Latent (nearest), Latent "
                                    "(nearest-exact), None, Lanczos or Nearest")
    hr_second_pass_steps: int = Field(0, ge=0, le=150, description="steps of the second pass; 0 = steps")
    hr_resize_x: int = Field(0, ge=0, le=2048, description="the second pass's width (0: from hr_resize_y or "
                             "hr_scale)")
    hr_resize_y: int = Field(0, ge=0, le=2048, description="the second pass's height (0: from hr_resize_x or "
                             "hr_scale)")
    hr_checkpoint_name: str | None = Field(None, max_length=NAME_MAX, description="not supported: absent or 'Use "
                                           "same checkpoint'")
    hr_sampler_name: str | None = Field(None, max_length=64, description="the second pass's sampler; absent = "
                                        "the first pass's")
    hr_scheduler: str | None = Field(None, max_length=64, description="the second pass's schedule type; absent = "
                                     "the first pass's")
    hr_prompt: str = Field("", max_length=limits.PROMPT_MAX_CHARS, description="the second pass's prompt; empty = "
                           "prompt")
    hr_negative_prompt: str = Field("", max_length=limits.PROMPT_MAX_CHARS, description="empty = negative_prompt")

    @classmethod
    def _unknown_key_reason(cls, key: str) -> str:
        if key in Img2ImgPayload.model_fields:
            return "is an img2img field: txt2img starts from noise; send init images to /sdapi/v1/img2img"
        return super()._unknown_key_reason(key)

    # --- refusals of one field ---------------------------------------------------------------------------------

    @field_validator("firstphase_width", "firstphase_height")
    @classmethod
    def _no_firstphase(cls, value: int) -> int:
        if value:
            raise refuse("is A1111's pre-1.0 way to size the first pass, not supported; send width and height (the "
                         "first pass) with hr_scale or hr_resize_x/hr_resize_y")
        return value

    @field_validator("firstpass_image", mode="before")
    @classmethod
    def _no_firstpass(cls, value: Any) -> None:
        raise refuse("a hires fix from a given first-pass image is not supported yet; remove it")

    # --- refusals that need several fields ---------------------------------------------------------------------

    def _prompt_fields(self) -> dict[str, bool]:
        fields = super()._prompt_fields()
        if self.enable_hr:
            fields.update(hr_prompt=True, hr_negative_prompt=False)
        return fields

    def _sampling_refusals(self, spec: samplers.SchedulerSpec, found: Refusals) -> None:
        # with the hires fix the refiner runs in the second pass only (A1111's hires_fix_refiner_pass default)
        for key, reason in samplers.timestep_sampler_refusals(spec, None, self.refiner_runs and not
                                                              self.enable_hr).items():
            found.add(key, reason)
        why = samplers.txt2img_timestep_refusal(spec, self.steps)
        if why:
            found.add("steps", why)

    def _own_refusals(self, found: Refusals) -> None:
        for index, unit in enumerate(self.controlnet_units):
            if unit.enabled and unit.source_image is None:
                found.add((*CONTROLNET_ARGS, index, "image"), "txt2img has no init image to take the control image "
                                                               "from: send the unit's own image (or disable it)")
        if self.enable_hr:
            self._hires_refusals(found)

    def _hires_refusals(self, found: Refusals) -> None:
        why = hires.upscaler_refusal(self.hr_upscaler)
        if why:
            found.add("hr_upscaler", why, self.hr_upscaler)
        if self.hr_checkpoint_name not in (None, "", SAME_CHECKPOINT):
            found.add("hr_checkpoint_name", "a second checkpoint for the hires pass is not supported yet; remove it "
                                            f"or send {SAME_CHECKPOINT!r}", self.hr_checkpoint_name)
        if self.denoising_strength == 0:
            found.add("denoising_strength", "0 with enable_hr: A1111's second pass runs over a schedule of "
                                            "int(steps / denoising_strength) steps, none here; use more than 0")
        self._hires_lora_refusal(found)
        size = self.hires_size
        if min(size.width, size.height) < MIN_SIDE:
            field = "hr_resize_x" if size.width < MIN_SIDE and self.hr_resize_x else \
                "hr_resize_y" if self.hr_resize_y else "hr_scale"
            found.add(field, f"the second pass would render {size.width}x{size.height}; at least "
                             f"{MIN_SIDE}x{MIN_SIDE}")
        try:
            first, pair = self.effective_sampler(), self.hires_sampler()
        except FieldError as exc:  # an unknown hires name (the first pass's are refused already)
            if exc.field.startswith("hr_"):
                found.add(exc.field, str(exc))
            return
        try:
            spec = samplers.scheduler_spec(*pair, self.sampler_params)
        except FieldError as exc:
            if pair != first:  # the first pass's own pair is refused already
                field = {"sampler_name": "hr_sampler_name",
                         "scheduler": "hr_scheduler" if self.hr_scheduler else "hr_sampler_name"}
                found.add(field.get(exc.field, exc.field), f"the second pass: {exc}")
            return
        for key, reason in samplers.timestep_sampler_refusals(spec, None, self.refiner_runs).items():
            found.add(key, reason)
        steps = self.hires_steps
        if spec.timestep_sampler and steps < 3:
            found.add("hr_second_pass_steps", f"{spec.sampler} runs n - 2 = {steps - 2} steps in the second pass "
                                              "(n = hr_second_pass_steps, or steps when 0): A1111 returns the "
                                              "upscaled picture unsampled; use at least 3")

    def _hires_lora_refusal(self, found: Refusals) -> None:
        """A1111 activates the hires prompt's extra networks for the second pass; the runner applies one set of
        LoRAs for the whole job, so the hires prompt must name the prompt's (an empty hr_prompt is the prompt)."""
        if self.disable_extra_networks or not self.hr_prompt:
            return
        try:
            first, second = prompts.lora_tags(self.prompt), prompts.lora_tags(self.hr_prompt)
        except prompts.PromptError:  # refused already, naming the prompt
            return
        if first != second:
            found.add("hr_prompt", f"names other LoRAs ({_written(second)}) than the prompt ({_written(first)}): a "
                                   "LoRA change between the passes is not supported yet; write the prompt's LoRA "
                                   "tags into hr_prompt, or leave hr_prompt empty")

    # --- normalized values -------------------------------------------------------------------------------------

    def hires_sampler(self) -> tuple[str, str]:
        """(canonical sampler, schedule label) of the hires pass (``samplers.hires_resolve``)."""
        return samplers.hires_resolve(self.sampler_name, self.sampler_index, self.scheduler, self.hr_sampler_name,
                                      self.hr_scheduler).pair()

    @property
    def compute(self) -> limits.Compute:
        """With the hires fix, the second pass's size times its steps counts too."""
        first = super().compute
        if not self.enable_hr:
            return first
        size = self.hires_size
        return limits.Compute((*first.passes, (size.width, size.height, self.hires_steps)), first.images)

    @property
    def hires_size(self) -> hires.HiresSize:
        return hires.hires_size(self.width, self.height, self.hr_scale, self.hr_resize_x, self.hr_resize_y)

    @property
    def hires_steps(self) -> int:
        return hires.second_pass_steps(self.hr_second_pass_steps, self.steps)

    @property
    def hires_prompts(self) -> tuple[str, str]:
        """(prompt, negative prompt) of the hires pass: A1111 takes the first pass's for an empty one."""
        return self.hr_prompt or self.prompt, self.hr_negative_prompt or self.negative_prompt

    @property
    def detect_maps(self) -> int:
        """With the hires fix, ControlNet returns each unit's map at both sizes (the second pass's first)."""
        return super().detect_maps * (2 if self.enable_hr else 1)


def _written(loras: list[prompts.LoraTag]) -> str:
    """LoRA tags as A1111 reads them, for a message: ``<lora:NAME:TE:UNET>`` each, in load order."""
    return " ".join(f"<lora:{t.name}:{t.te:g}:{t.unet:g}>" for t in loras) or "none"
