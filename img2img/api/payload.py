"""The A1111 request bodies: ``ProcessingPayload`` holds the fields ``/sdapi/v1/img2img`` and ``/sdapi/v1/txt2img``
share (A1111's ``StableDiffusionProcessing``), ``Img2ImgPayload`` is ``StableDiffusionImg2ImgProcessingAPI`` field for
field; ``Txt2ImgPayload`` (img2img.api.txt2img) adds txt2img's own.

Attribute names are A1111's keys and defaults are A1111's API defaults (steps 50, sampler_index "Euler", …), not the
RunPod worker's (steps 20, "Euler a"). Ranges follow A1111's UI sliders where A1111's API has none.

What A1111 accepts but we cannot do is refused, naming the field and the reason, whenever the value would change
the output; it is never silently ignored. Values that have no effect (``restore_faces: false``, ``mask: null``,
inpainting knobs without a mask, ``image_cfg_scale`` outside instruct-pix2pix) are accepted, as A1111 does.

| field(s) | refused when | why |
|---|---|---|
| latent_mask | set | a latent mask apart from ``mask`` is not supported |
| width, height | not multiples of 8, with a mask | not supported (A1111 fails too, unless inpaint_full_res) |
| resize_mode | 3 with a mask, unless inpaint_full_res | A1111 overlays the init image at its own size |
| mask_blur_x, mask_blur_y | differ, with inpaint_full_res and a ControlNet unit cropping its input | CN fails |
| restore_faces | true | no face restoration models |
| tiling | true | not implemented yet |
| styles | non-empty | there is no styles database; put the text into the prompt |
| script_name | set | selectable scripts are A1111 plug-ins |
| firstpass_image | set | img2img: txt2img hires fix only; txt2img: not supported yet |
| infotext | set | send the fields themselves |
| subseed_strength | ≠ 0 | variation seeds are not implemented yet |
| seed_resize_from_h/_w | > 0 | not implemented yet |
| s_min_uncond | ≠ 0 | not implemented yet |
| save_images | true with >1 image | A1111 would prepend a grid image; grids are not produced |
| prompt, hr_prompt | `<hypernet:…>`, a `<lora:…>` tag A1111 fails on or with `dyn` | see ``prompts.lora_tags`` |
| prompt, negative_prompt | prompt editing `[a:b:0.5]`, alternation `[a|b]`, `AND` | one conditioning per step or part |
| prompt, negative_prompt | a `#`, unless override_settings.enable_prompt_comments is false | comments are not stripped yet |
| override_settings | an option that changes the answer, away from its default; an unknown key | see ``options`` |
| cfg_scale | below 1 (times a prompt's trailing `:weight`) | diffusers runs no guidance there |
| sampler_name, scheduler, eta, s_churn | what `samplers.scheduler_spec` refuses | no diffusers scheduler draws it |
| alwayson_scripts | any script but controlnet | only ControlNet is built in |

The input budget (``img2img.api.limits``) is checked here too: image formats and sizes (``ImageStr``), prompt sizes,
nesting depth of the free-form values, and the job's compute (pixels x steps of each sampling pass x images).

Unknown keys are refused (with the nearest known key suggested), where A1111 ignores them: an ignored typo
silently changes the picture. The RunPod A1111 worker refuses unknown keys too.
"""

from __future__ import annotations

from typing import Annotated, Any, Callable, ClassVar

from pydantic import ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator, model_validator

from img2img.api import limits, options, prompts, samplers
from img2img.api.base import ApiModel
from img2img.api.controlnet import MAX_UNITS, ControlNetUnit
from img2img.api.errors import FieldError, Refusals, refuse
from img2img.api.image_formats import JPEG_QUALITY, SAMPLES_FORMATS, ImageEncoding, SamplesFormat
from img2img.api.images import MAX_INLINE_TOTAL_CHARS, ImageStr, is_inline, too_large_message

NAME_MAX = 256
MAX_IMAGES = 8  # init_images: A1111 needs at most batch_size of them
MIN_SIDE = 64  # pixels: the smallest image the runner renders
SEED_MAX = 2**32 - 1

# A1111's "off" spellings for refiner_checkpoint (processing.py)
REFINER_OFF = ("", "None", "none")

# refused values that would change the output: field -> (is the value in use?, why it is refused)
_UNSUPPORTED_WHEN: dict[str, tuple[Callable[[Any], bool], Callable[[Any], str]]] = {
    "restore_faces": (bool, lambda v: "face restoration is not supported; set it to false"),
    "tiling": (bool, lambda v: "tiling is not supported yet; set it to false"),
    "styles": (bool, lambda v: f"prompt styles are not supported (there is no styles database): {v!r}; "
                               "put the style's text into the prompt"),
    "script_name": (bool, lambda v: f"scripts are not supported ({v!r}); only alwayson_scripts.controlnet is"),
    "subseed_strength": (lambda v: v != 0,
                         lambda v: "variation seeds (subseed_strength other than 0) are not supported yet"),
    "seed_resize_from_h": (lambda v: v > 0, lambda v: "seed resize is not supported yet; use -1"),
    "seed_resize_from_w": (lambda v: v > 0, lambda v: "seed resize is not supported yet; use -1"),
    "s_min_uncond": (bool, lambda v: "is not supported yet; use 0"),
}


class OverrideSettings(ApiModel):
    """``override_settings``: the options the runner acts on are typed; any other A1111 1.10 option is accepted at
    its default or where it cannot change the answer, and refused by name otherwise (img2img.api.options)."""

    model_config = ConfigDict(extra="allow")

    sd_model_checkpoint: str | None = Field(None, max_length=NAME_MAX, description="checkpoint name, as A1111 "
                                            "names it (sd_xl_base_1.0); absent = the catalog's default")
    sd_vae: str | None = Field(None, max_length=NAME_MAX, description="VAE file name, 'Automatic' or 'None'")
    CLIP_stop_at_last_layers: int | None = Field(None, ge=1, le=12, description="clip skip")
    eta_noise_seed_delta: int | None = Field(None, ge=0, le=SEED_MAX, description="ENSD")
    img2img_fix_steps: bool | None = None
    initial_noise_multiplier: float | None = Field(None, ge=0.0, le=2.0, description="used when the request's "
                                                   "initial_noise_multiplier is absent")
    # how the answer's images are written (img2img.api.image_formats)
    samples_format: SamplesFormat | None = Field(None, description="format of the images: png (A1111's default), "
                                                 "jpg, jpeg or webp")
    jpeg_quality: int | None = Field(None, ge=1, le=100, description="JPEG and WebP quality; A1111's default 80")
    webp_lossless: bool | None = Field(None, description="lossless WebP")
    enable_pnginfo: bool | None = Field(None, description="false: no infotext in the image files")
    enable_prompt_comments: bool | None = Field(None, description="A1111 strips '#' comments from prompts when "
                                                "true (its default); false sends '#' as text")

    # mode="wrap": the options are judged even when a typed one is wrong, so that every problem is reported at once
    @model_validator(mode="wrap")
    @classmethod
    def _known_options(cls, data: Any, handler: Any) -> "OverrideSettings":
        found = Refusals("OverrideSettings")
        for key, value in (data.items() if isinstance(data, dict) else ()):
            reason = None if key in cls.model_fields or value is None else options.refusal(str(key), value)
            if reason:
                found.add(str(key), reason, value)
        try:
            settings = handler(data)
        except ValidationError as exc:
            found.raise_any(also=exc)
            raise
        found.raise_any()
        return settings


class ControlNetArgs(ApiModel):
    args: list[ControlNetUnit] = Field(default_factory=list, max_length=MAX_UNITS)


class AlwaysOnScripts(ApiModel):
    """``alwayson_scripts``: A1111 matches script titles case-insensitively; only ControlNet is built in."""

    controlnet: ControlNetArgs | None = None

    @classmethod
    def _normalize_keys(cls, data: dict[str, Any]) -> dict[str, Any]:
        return {"controlnet" if isinstance(k, str) and k.lower() == "controlnet" else k: v for k, v in data.items()}

    @classmethod
    def _unknown_key_reason(cls, key: str) -> str:
        return f"always-on script {key!r} is not supported; supported: controlnet"


class ProcessingPayload(ApiModel):
    """What A1111's img2img and txt2img bodies share (``StableDiffusionProcessing``, v1.9/1.10): prompt, seeds,
    sampling, models, output, always-on scripts. Each endpoint's payload adds its own fields and refusals."""

    # the field an "all inline images together" refusal names (img2img: init_images)
    INLINE_FIELD: ClassVar[str] = "alwayson_scripts"

    # --- prompt ------------------------------------------------------------------------------------------------
    prompt: str = Field("", max_length=limits.PROMPT_MAX_CHARS)
    negative_prompt: str = Field("", max_length=limits.PROMPT_MAX_CHARS)
    styles: list[Annotated[str, Field(max_length=NAME_MAX)]] | None = Field(
        None, max_length=16, description="not supported: must be empty")

    # --- seeds -------------------------------------------------------------------------------------------------
    seed: int = Field(-1, ge=-1, le=SEED_MAX, description="-1 = random")
    subseed: int = Field(-1, ge=-1, le=SEED_MAX)
    subseed_strength: float = Field(0.0, ge=0.0, le=1.0)
    seed_resize_from_h: int = Field(-1, ge=-1, le=8192)
    seed_resize_from_w: int = Field(-1, ge=-1, le=8192)

    # --- sampling ----------------------------------------------------------------------------------------------
    sampler_name: str | None = Field(None, max_length=64, description="A1111 sampler, legacy combined names too")
    sampler_index: str = Field("Euler", max_length=64, description="used when sampler_name is empty")
    scheduler: str | None = Field(None, max_length=64, description="schedule type: name or label")
    batch_size: int = Field(1, ge=1, le=8)
    n_iter: int = Field(1, ge=1, le=100)
    steps: int = Field(50, ge=1, le=150)
    cfg_scale: float = Field(7.0, ge=0.0, le=30.0)
    denoising_strength: float = Field(0.75, ge=0.0, le=1.0, description="how far sampling moves from its start: "
                                      "img2img's init image, or txt2img's first pass in the hires fix")
    width: int = Field(512, ge=MIN_SIDE, le=2048)
    height: int = Field(512, ge=MIN_SIDE, le=2048)
    restore_faces: bool | None = None
    tiling: bool | None = None
    eta: float | None = Field(None, ge=0.0, le=1.0)
    s_min_uncond: float | None = Field(None, ge=0.0, le=100.0)
    s_churn: float | None = Field(None, ge=0.0, le=100.0)
    s_tmax: float | None = Field(None, ge=0.0, le=1000.0)
    s_tmin: float | None = Field(None, ge=0.0, le=1000.0)
    s_noise: float | None = Field(None, ge=0.0, le=2.0)

    # --- models ------------------------------------------------------------------------------------------------
    override_settings: OverrideSettings | None = None
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = Field(None, max_length=NAME_MAX, description="'None', 'none' or '' = off")
    refiner_switch_at: float | None = Field(None, ge=0.0, le=1.0, description="fraction of the schedule at "
                                            "which the refiner takes over")
    disable_extra_networks: bool = False

    # --- output and bookkeeping --------------------------------------------------------------------------------
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    send_images: bool = True
    save_images: bool = False
    firstpass_image: str | None = Field(None, max_length=64, description="not supported: must be absent")
    comments: dict[str, Any] | None = Field(None, max_length=64)
    force_task_id: str | None = Field(None, max_length=NAME_MAX)
    infotext: str | None = Field(None, max_length=64, description="not supported: must be absent")
    script_name: str | None = Field(None, max_length=NAME_MAX, description="not supported: must be absent")
    script_args: list[Any] = Field(default_factory=list, max_length=64)
    alwayson_scripts: AlwaysOnScripts = Field(default_factory=AlwaysOnScripts)

    # alwayson_scripts exactly as sent, for the `parameters` echo (A1111 echoes the request as received)
    _alwayson_sent: dict[str, Any] = PrivateAttr(default_factory=dict)

    # --- refusals of one field ---------------------------------------------------------------------------------

    @field_validator("infotext", mode="before")
    @classmethod
    def _no_infotext(cls, value: Any) -> Any:
        if value:
            raise refuse("is not supported; send the parameters as fields")
        return value

    @field_validator(*_UNSUPPORTED_WHEN)
    @classmethod
    def _no_unsupported_value(cls, value: Any, info: ValidationInfo) -> Any:
        in_use, reason = _UNSUPPORTED_WHEN[info.field_name]
        if in_use(value):
            raise refuse(reason(value))
        return value

    @field_validator("sampler_name")
    @classmethod
    def _known_sampler_name(cls, value: str) -> str:
        if value:
            _check_sampler(value)
        return value

    @field_validator("sampler_index")
    @classmethod
    def _known_sampler_index(cls, value: str, info: ValidationInfo) -> str:
        if not info.data.get("sampler_name"):  # A1111 uses sampler_index only when sampler_name is empty
            _check_sampler(value)
        return value

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, value: str) -> str:
        if value and samplers.find_scheduler(value) is None:
            raise refuse(f"unknown scheduler {value!r}; valid: {samplers.valid_scheduler_list()}")
        return value

    # --- refusals that need several fields ---------------------------------------------------------------------

    @model_validator(mode="before")
    @classmethod
    def _not_too_deep(cls, data: Any) -> Any:
        """Free-form values (``script_args``, ``comments``, options) nest at most limits.MAX_NESTING_DEPTH deep;
        checked before anything else reads them."""
        if isinstance(data, dict):
            found = Refusals(cls.__name__)
            for key, value in data.items():
                reason = limits.nesting_refusal(value)
                if reason:
                    found.add(str(key), reason)
            found.raise_any()
        return data

    @model_validator(mode="wrap")
    @classmethod
    def _keep_alwayson_as_sent(cls, data: Any, handler: Any) -> "ProcessingPayload":
        payload = handler(data)
        if isinstance(data, dict) and isinstance(data.get("alwayson_scripts"), dict):
            payload._alwayson_sent = data["alwayson_scripts"]
        return payload

    @model_validator(mode="after")
    def _consistent(self) -> "ProcessingPayload":
        found = Refusals(type(self).__name__)
        if self.save_images and self.images_per_job > 1:
            found.add("save_images", "with more than one image A1111 prepends a grid image, and grids are not "
                                     "produced; set save_images to false")
        comments = not (self.override_settings and self.override_settings.enable_prompt_comments is False)
        for key, positive in self._prompt_fields().items():
            text = getattr(self, key)
            # A1111 reads extra networks (LoRAs) out of the positive prompts only
            networks = prompts.extra_network_refusals(text) if positive and not self.disable_extra_networks else []
            for reason in [*networks, limits.prompt_refusal(text), *prompts.refusals(text, positive=positive)]:
                if reason:
                    found.add(key, reason)
            if comments and "#" in text:
                found.add(key, "has '#', which A1111 reads as a comment to the end of the line and leaves out "
                               "(override_settings.enable_prompt_comments, on by default); the runner does not do "
                               "that yet: remove the comment, or set enable_prompt_comments to false to send '#' "
                               "as text")
            weight = prompts.positive_text(text)[1] if positive else 1.0
            if positive and self.cfg_scale * weight < 1:
                whose = "the prompt" if key == "prompt" else key
                scaled = f" (times {whose}'s weight {weight:g})" if weight != 1 else ""
                found.add("cfg_scale", f"{self.cfg_scale:g}{scaled} is below 1, where diffusers turns guidance off "
                                       "and A1111 would move the picture toward the negative prompt; use 1 or more")
        try:
            spec = samplers.scheduler_spec(*self.effective_sampler(), self.sampler_params)
        except FieldError as exc:  # a sampler, schedule or parameter the runner cannot draw as A1111 does
            named = "sampler_index" if exc.field == "sampler_name" and not self.sampler_name else exc.field
            found.add(named, str(exc))
        else:
            self._sampling_refusals(spec, found)
        inline = self.inline_image_chars
        if inline > MAX_INLINE_TOTAL_CHARS:
            found.add(self.INLINE_FIELD, "all inline images together: " + too_large_message(inline))
        self._own_refusals(found)
        too_much = self.compute.refusal(limits.MAX_MEGAPIXEL_STEPS, "the most one job may ask for")
        if too_much:
            found.add((), too_much)
        found.raise_any()
        return self

    def _prompt_fields(self) -> dict[str, bool]:
        """The prompts the job encodes: field -> is it a positive prompt."""
        return {"prompt": True, "negative_prompt": False}

    def _sampling_refusals(self, spec: samplers.SchedulerSpec, found: Refusals) -> None:
        """The endpoint's refusals of how its sampler would run (``spec``: what runs the request's sampler)."""

    def _own_refusals(self, found: Refusals) -> None:
        """The endpoint's refusals of its own fields."""

    # --- normalized values -------------------------------------------------------------------------------------

    def effective_sampler(self) -> tuple[str, str]:
        """(canonical sampler name, schedule label), e.g. ("DPM++ SDE", "Karras"), resolved as A1111 1.9+ does.

        The label is the schedule that runs: "Automatic" becomes the sampler's own default when it has one
        (DPM++ 2M -> Karras); it stays "Automatic" (the model's schedule) for Euler, Euler a, LMS, Heun, ….
        """
        return samplers.resolve(self.sampler_name, self.sampler_index, self.scheduler).pair()

    @property
    def sampler_params(self) -> samplers.SamplerParams:
        return samplers.SamplerParams(eta=self.eta, s_churn=self.s_churn, s_tmin=self.s_tmin, s_tmax=self.s_tmax,
                                      s_noise=self.s_noise)

    @property
    def controlnet_units(self) -> list[ControlNetUnit]:
        """Every unit as sent, disabled ones included (A1111's index counts them)."""
        return self.alwayson_scripts.controlnet.args if self.alwayson_scripts.controlnet else []

    @property
    def enabled_controlnet_units(self) -> list[ControlNetUnit]:
        return [unit for unit in self.controlnet_units if unit.enabled]

    @property
    def loras(self) -> list[prompts.LoraTag]:
        """The prompt's LoRA tags (none with disable_extra_networks), in the order A1111 loads them."""
        return [] if self.disable_extra_networks else prompts.lora_tags(self.prompt)

    @property
    def refiner(self) -> str | None:
        """The refiner checkpoint's name, None when off."""
        name = self.refiner_checkpoint
        return None if name is None or name.strip() in REFINER_OFF else name

    @property
    def refiner_runs(self) -> bool:
        """A refiner other than the checkpoint is named and the switch is inside the schedule (A1111 switches once
        (999 - t) / 1000 >= refiner_switch_at, a ratio that never reaches 1)."""
        return (self.refiner is not None and self.refiner != self.checkpoint
                and (self.refiner_switch_at is None or self.refiner_switch_at < 1))

    @property
    def checkpoint(self) -> str | None:
        return self.override_settings.sd_model_checkpoint if self.override_settings else None

    @property
    def vae(self) -> str | None:
        return self.override_settings.sd_vae if self.override_settings else None

    @property
    def image_encoding(self) -> ImageEncoding:
        """How the answer's images are written: ``samples_format``, ``jpeg_quality``, ``webp_lossless``,
        ``enable_pnginfo``, A1111's defaults where not sent."""
        opts = self.override_settings or OverrideSettings()
        return ImageEncoding(format=SAMPLES_FORMATS[opts.samples_format or "png"],
                             quality=JPEG_QUALITY if opts.jpeg_quality is None else opts.jpeg_quality,
                             lossless=bool(opts.webp_lossless), infotext=opts.enable_pnginfo is not False)

    @property
    def images_per_job(self) -> int:
        return self.batch_size * self.n_iter

    @property
    def init_images_sent(self) -> list[str]:
        """The init images as sent (img2img's); none for txt2img."""
        return []

    @property
    def mask_sent(self) -> str | None:
        """The inpainting mask as sent (img2img's); none for txt2img."""
        return None

    @property
    def input_images(self) -> list[tuple[str, str]]:
        """Every image the job reads, as sent, with its field: the init images (``init_images[0]``, …), the mask
        (``mask``), then the enabled ControlNet units' own (``alwayson_scripts.controlnet.args[j].image`` or
        ``.input_image``)."""
        found = [(f"init_images[{i}]", v) for i, v in enumerate(self.init_images_sent)]
        if self.mask_sent is not None:
            found.append(("mask", self.mask_sent))
        for j, unit in enumerate(self.controlnet_units):
            if unit.enabled and unit.source_image is not None:
                key = "image" if unit.image is not None else "input_image"
                found.append((f"alwayson_scripts.controlnet.args[{j}].{key}", unit.source_image))
        return found

    @property
    def detect_maps(self) -> int:
        """At most this many detect maps follow the generated images: one per enabled ControlNet unit (the runner
        returns a unit's map only when the unit saves it)."""
        return len(self.enabled_controlnet_units)

    @property
    def compute(self) -> limits.Compute:
        """The sampling work the job asks for: its one pass (txt2img's hires fix adds its second)."""
        return limits.Compute(((self.width, self.height, self.steps),), self.images_per_job)

    @property
    def inline_image_chars(self) -> int:
        """Characters of inline (base64) image data in the payload: what counts against etcd's limit."""
        values = [*self.init_images_sent, self.mask_sent,
                  *(u.source_image for u in self.controlnet_units if u.source_image)]
        return sum(len(v) for v in values if v and is_inline(v))

    def parameters(self) -> dict[str, Any]:
        """The ``parameters`` echo of A1111's answer: every field with its default, as received, ``alwayson_scripts``
        as sent.

        Inline ControlNet images are nulled (A1111 would echo them): the echo lands in the job's status, and a
        megabyte of base64 there would not fit etcd's limit. References (s3://, https://) are kept.
        """
        params = self.model_dump(mode="json", exclude={"alwayson_scripts"})
        sent = _drop_inline_images(self._alwayson_sent) if self._alwayson_sent else {}
        params["alwayson_scripts"] = sent
        return dict(sorted(params.items()))


class Img2ImgPayload(ProcessingPayload):
    """A1111's ``StableDiffusionImg2ImgProcessingAPI`` (v1.9/1.10), as ``input.payload`` of ``/sdapi/v1/img2img``."""

    INLINE_FIELD: ClassVar[str] = "init_images"

    # --- images and img2img ----------------------------------------------------------------------------------
    init_images: list[ImageStr] = Field(..., min_length=1, max_length=MAX_IMAGES,
                                        description="base64, data URI, s3://bucket/key or https:// URL")
    resize_mode: int = Field(0, ge=0, le=3, description="0 just resize, 1 crop and resize, 2 resize and fill, "
                             "3 just resize (latent upscale)")
    image_cfg_scale: float | None = Field(None, ge=0.0, le=30.0, description="instruct-pix2pix only; no effect")
    initial_noise_multiplier: float | None = Field(None, ge=0.0, le=2.0)
    include_init_images: bool = False

    # --- inpainting (img2img_runner.inpaint) ---------------------------------------------------------------------
    mask: ImageStr | None = Field(None, description="inpainting mask (white: inpaint; an RGBA mask that is not "
                                  "opaque: its alpha): base64, data URI, s3://bucket/key or https:// URL")
    latent_mask: str | None = Field(None, max_length=64, description="not supported: must be absent")
    mask_blur_x: int = Field(4, ge=0, le=64)
    mask_blur_y: int = Field(4, ge=0, le=64)
    mask_blur: int | None = Field(None, ge=0, le=64, description="both axes' blur; sets mask_blur_x and _y")
    mask_round: bool = Field(True, description="round the latent mask to 0 or 1")
    inpainting_fill: int = Field(0, ge=0, le=3, description="masked content: 0 fill, 1 original, 2 latent noise, "
                                 "3 latent nothing")
    inpaint_full_res: bool = Field(True, description="true: only the masked area, at width x height; false: the "
                                   "whole picture")
    inpaint_full_res_padding: int = Field(0, ge=0, le=256, description="pixels around the masked area")
    inpainting_mask_invert: int = Field(0, ge=0, le=1, description="1: inpaint what is not masked")

    @classmethod
    def _unknown_key_reason(cls, key: str) -> str:
        if key == "enable_hr" or key.startswith(("hr_", "firstphase_")):
            return "is a txt2img field (hires fix): send the request to /sdapi/v1/txt2img"
        return super()._unknown_key_reason(key)

    # mode="before": the refusal is the message, not "too long" or "not a string" (null never gets here)
    @field_validator("latent_mask", mode="before")
    @classmethod
    def _no_latent_mask(cls, value: Any) -> None:
        raise refuse("a latent mask apart from mask is not supported; remove it (mask is the latent mask too)")

    @field_validator("firstpass_image", mode="before")
    @classmethod
    def _no_firstpass(cls, value: Any) -> None:
        raise refuse("applies to txt2img hires fix only; remove it")

    def _sampling_refusals(self, spec: samplers.SchedulerSpec, found: Refusals) -> None:
        fix_steps = bool(self.override_settings and self.override_settings.img2img_fix_steps)
        t_enc = samplers.img2img_t_enc(self.steps, self.denoising_strength, fix_steps)[1]
        for key, reason in samplers.timestep_sampler_refusals(spec, t_enc, self.refiner_runs).items():
            found.add(key, reason)

    def _own_refusals(self, found: Refusals) -> None:
        if len(self.init_images) > self.batch_size:
            found.add("init_images", f"has {len(self.init_images)} images, more than batch_size "
                                     f"({self.batch_size})")
        if self.mask is not None:
            self._mask_refusals(found)

    def _mask_refusals(self, found: Refusals) -> None:
        """Inpainting requests A1111 fails on (nothing to reproduce), and sizes off the 8-pixel grid."""
        for key in ("width", "height"):
            if getattr(self, key) % 8:
                found.add(key, f"{getattr(self, key)} is not a multiple of 8, which inpainting needs here (A1111 "
                               "itself fails on it unless inpaint_full_res: it overlays the init image at that size "
                               "on a result rendered at a multiple of 8)")
        if self.resize_mode == 3 and not self.inpaint_full_res:
            found.add("resize_mode", "3 (latent upscale) with a mask needs inpaint_full_res: A1111 would overlay the "
                                     "init image at its own size on a result of width x height")
        cropping = [u for u in self.enabled_controlnet_units if u.inpaint_crop_input_image]
        blur_x, blur_y = self.mask_blur_xy
        if self.inpaint_full_res and cropping and blur_x != blur_y:
            found.add("mask_blur_x", f"differs from mask_blur_y ({blur_x} vs {blur_y}) with inpaint_full_res and a "
                                     "ControlNet unit that crops its input to the mask (inpaint_crop_input_image): "
                                     "sd-webui-controlnet fails on that; send one mask_blur")

    @property
    def mask_blur_xy(self) -> tuple[int, int]:
        """(mask_blur_x, mask_blur_y) as A1111 runs them: ``mask_blur``, when sent, sets both."""
        if self.mask_blur is not None:
            return self.mask_blur, self.mask_blur
        return self.mask_blur_x, self.mask_blur_y

    @property
    def init_images_sent(self) -> list[str]:
        return list(self.init_images)

    @property
    def mask_sent(self) -> str | None:
        return self.mask

    def parameters(self) -> dict[str, Any]:
        """As ``ProcessingPayload.parameters``, with ``init_images`` and ``mask`` null unless ``include_init_images``
        (A1111 api.py)."""
        params = super().parameters()
        if not self.include_init_images:
            params["init_images"] = params["mask"] = None
        return params


def _check_sampler(name: str) -> None:
    try:
        samplers.resolve(name, None, None)
    except FieldError as exc:
        raise refuse(str(exc)) from None


def _drop_inline_images(scripts: dict[str, Any]) -> dict[str, Any]:
    out = dict(scripts)
    for title, script in scripts.items():
        if title.lower() != "controlnet" or not isinstance(script, dict):
            continue
        args = []
        for unit in script.get("args") or []:
            unit = dict(unit)
            for key in ("image", "input_image"):
                if isinstance(unit.get(key), str) and is_inline(unit[key]):
                    unit[key] = None
            args.append(unit)
        out[title] = {**script, "args": args}
    return out
