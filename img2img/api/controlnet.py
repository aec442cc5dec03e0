"""ControlNet units (``alwayson_scripts.controlnet.args[i]``), lenient in what they accept, as A1111 users expect.

Accepted as Mikubill/sd-webui-controlnet accepts them, old and new:

- ``resize_mode`` and ``control_mode`` as their names or as the integers older versions took (0/1/2, resize 3 =
  "Just Resize"), plus the old resize-mode aliases ("Inner Fit (Scale to Fit)" …);
- ``guidance`` as an alias of ``guidance_end`` (sending both, equal, is fine: the RunPod examples do);
  ``lowvram`` as an alias of ``low_vram``; ``input_image`` of ``image``; ``mask_image`` of ``mask``;
- ``enabled`` missing means enabled (current CN ignores units without ``"enabled": true``; the RunPod examples omit
  it and expect the unit to run);
- ``image`` missing means the img2img init image is used;
- ``module`` as a preprocessor name or label.

The unit keeps the values as sent (the ``parameters`` echo shows them); the ``*_name``/``effective_*`` accessors give
the normalized values the runner uses.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ConfigDict, Field, field_validator, model_validator

from img2img.api.base import ApiModel
from img2img.api.errors import Refusals, refuse
from img2img.api.images import ImageStr


@dataclass(frozen=True)
class Slider:
    label: str
    minimum: float
    maximum: float
    default: float

    def effective(self, value: float) -> float:
        # CN: a value outside the slider's range means the preprocessor's default (the API sends -1 for "unset")
        return value if self.minimum <= value <= self.maximum else self.default


@dataclass(frozen=True)
class Preprocessor:
    name: str
    label: str
    threshold_a: Slider | None = None
    threshold_b: Slider | None = None
    needs_model: bool = True  # reference_* work by attention injection, without a ControlNet model
    unsupported: str | None = None  # why the runner cannot run it (an enabled unit with it is refused)
    annotator_files: tuple[str, ...] = ()  # the lllyasviel/Annotators weights it loads (from an annotator entry)


_NO_AUX = "it has no controlnet-aux detector (the runner's preprocessor library)"
_DWPOSE = "DWPose needs onnxruntime/mmpose models that are not part of the runner"
_SAMPLER_HOOK = "colour-fix tiles change the sampler's prediction, which the runner does not hook"
_ATTENTION = "reference preprocessors work by attention injection, which the runner does not do"

# the lllyasviel/Annotators files controlnet-aux's detectors load (``from_pretrained`` of a folder holding them)
_MIDAS = ("dpt_hybrid-midas-501f0c75.pt",)
_LERES = ("res101.pth", "latest_net_G.pth")
_OPENPOSE = ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth")
_LINEART = ("sk_model.pth", "sk_model2.pth")
_HED = ("ControlNetHED.pth",)
_PIDINET = ("table5_pidinet.pth",)

# Mikubill/sd-webui-controlnet preprocessors (scripts/preprocessor/*, legacy/preprocessor_compiled.py):
# name, label, and the meaning of threshold_a/threshold_b. The runner decides which it can run.
PREPROCESSORS: tuple[Preprocessor, ...] = (
    Preprocessor("none", "none"),
    Preprocessor("canny", "canny", Slider("Low Threshold", 1, 255, 100), Slider("High Threshold", 1, 255, 200)),
    Preprocessor("depth", "depth_midas", annotator_files=_MIDAS),
    Preprocessor("depth_leres", "depth_leres", Slider("Remove Near %", 0, 100, 0),
                 Slider("Remove Background %", 0, 100, 0), annotator_files=_LERES),
    Preprocessor("depth_leres++", "depth_leres++", Slider("Remove Near %", 0, 100, 0),
                 Slider("Remove Background %", 0, 100, 0), annotator_files=_LERES),
    Preprocessor("depth_zoe", "depth_zoe", annotator_files=("ZoeD_M12_N.pt",)),
    Preprocessor("depth_anything", "depth_anything", unsupported=_NO_AUX),
    Preprocessor("depth_anything_v2", "depth_anything_v2", unsupported=_NO_AUX),
    Preprocessor("openpose", "openpose", annotator_files=_OPENPOSE),
    Preprocessor("openpose_face", "openpose_face", annotator_files=_OPENPOSE),
    Preprocessor("openpose_faceonly", "openpose_faceonly", annotator_files=_OPENPOSE),
    Preprocessor("openpose_hand", "openpose_hand", annotator_files=_OPENPOSE),
    Preprocessor("openpose_full", "openpose_full", annotator_files=_OPENPOSE),
    Preprocessor("dw_openpose_full", "dw_openpose_full", unsupported=_DWPOSE),
    Preprocessor("lineart", "lineart_realistic", annotator_files=_LINEART),
    Preprocessor("lineart_coarse", "lineart_coarse", annotator_files=_LINEART),
    Preprocessor("lineart_anime", "lineart_anime", annotator_files=("netG.pth",)),
    Preprocessor("lineart_anime_denoise", "lineart_anime_denoise", unsupported=_NO_AUX),
    Preprocessor("lineart_standard", "lineart_standard"),
    Preprocessor("hed", "softedge_hed", annotator_files=_HED),
    Preprocessor("hed_safe", "softedge_hedsafe", annotator_files=_HED),
    Preprocessor("pidinet", "softedge_pidinet", annotator_files=_PIDINET),
    Preprocessor("pidinet_safe", "softedge_pidisafe", annotator_files=_PIDINET),
    Preprocessor("scribble_hed", "scribble_hed", annotator_files=_HED),
    Preprocessor("pidinet_scribble", "scribble_pidinet", annotator_files=_PIDINET),
    Preprocessor("scribble_xdog", "scribble_xdog", Slider("XDoG Threshold", 1, 64, 32)),
    Preprocessor("mlsd", "mlsd", Slider("MLSD Value Threshold", 0.01, 2.0, 0.1),
                 Slider("MLSD Distance Threshold", 0.01, 20.0, 0.1), annotator_files=("mlsd_large_512_fp32.pth",)),
    Preprocessor("normal_bae", "normal_bae", annotator_files=("scannet.pt",)),
    Preprocessor("normal_map", "normal_midas", Slider("Normal Background Threshold", 0, 1, 0.4),
                 annotator_files=_MIDAS),
    Preprocessor("segmentation", "seg_ufade20k", unsupported=_NO_AUX),
    Preprocessor("oneformer_ade20k", "seg_ofade20k", unsupported=_NO_AUX),
    Preprocessor("oneformer_coco", "seg_ofcoco", unsupported=_NO_AUX),
    Preprocessor("tile_resample", "tile_resample", Slider("Down Sampling Rate", 1, 8, 1.0)),
    Preprocessor("tile_colorfix", "tile_colorfix", Slider("Variation", 3, 32, 8), unsupported=_SAMPLER_HOOK),
    Preprocessor("tile_colorfix+sharp", "tile_colorfix+sharp", Slider("Variation", 3, 32, 8),
                 Slider("Sharpness", 0, 2, 1.0), unsupported=_SAMPLER_HOOK),
    Preprocessor("blur_gaussian", "blur_gaussian", Slider("Sigma", 0.01, 64, 9)),
    Preprocessor("shuffle", "shuffle"),
    Preprocessor("threshold", "threshold", Slider("Binarization Threshold", 0, 255, 127)),
    Preprocessor("reference_only", "reference_only", Slider("Style Fidelity", 0, 1, 0.5), needs_model=False,
                 unsupported=_ATTENTION),
    Preprocessor("reference_adain", "reference_adain", Slider("Style Fidelity", 0, 1, 0.5), needs_model=False,
                 unsupported=_ATTENTION),
    Preprocessor("reference_adain+attn", "reference_adain+attn", Slider("Style Fidelity", 0, 1, 0.5),
                 needs_model=False,
                 unsupported=_ATTENTION),
    Preprocessor("invert", "invert (from white bg & black line)"),
)
_PREPROCESSOR_BY_KEY = {key: p for p in PREPROCESSORS for key in (p.name, p.label)}
WEIGHTED_PREPROCESSORS = tuple(p.name for p in PREPROCESSORS if p.annotator_files)

# CN's processor resolution slider: outside it (the API's -1 included) the default applies.
PROCESSOR_RES = Slider("Preprocessor Resolution", 64, 2048, 512)

# Canonical values first; then the spellings CN also accepts for them (old labels, and the integers pre-2024 CN
# took: `resize_mode_from_value`, `control_mode_from_value`).
RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")
_RESIZE_ALIASES = {
    "Inner Fit (Scale to Fit)": "Crop and Resize", "Scale to Fit (Inner Fit)": "Crop and Resize",
    "Outer Fit (Shrink to Fit)": "Resize and Fill", "Envelope (Outer Fit)": "Resize and Fill",
    0: "Just Resize", 1: "Crop and Resize", 2: "Resize and Fill", 3: "Just Resize",  # 3 = "Just Resize (Latent)"
}
CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
_CONTROL_ALIASES = {0: "Balanced", 1: "My prompt is more important", 2: "ControlNet is more important"}
# CN's HiResFixOption: which passes of txt2img's hires fix the unit runs in (its value, index or enum name)
HR_OPTIONS = ("Both", "Low res only", "High res only")
_HR_ALIASES = {0: "Both", 1: "Low res only", 2: "High res only", "HiResFixOption.BOTH": "Both",
               "HiResFixOption.LOW_RES_ONLY": "Low res only", "HiResFixOption.HIGH_RES_ONLY": "High res only"}

MAX_UNITS = 8


def find_preprocessor(key: str) -> Preprocessor | None:
    return _PREPROCESSOR_BY_KEY.get(key)


def resize_mode_name(value: int | str) -> str | None:
    """The canonical resize mode for a value CN accepts, None for one it does not."""
    return value if value in RESIZE_MODES else _RESIZE_ALIASES.get(value)


def control_mode_name(value: int | str) -> str | None:
    return value if value in CONTROL_MODES else _CONTROL_ALIASES.get(value)


def hr_option_name(value: int | str) -> str | None:
    return value if value in HR_OPTIONS else _HR_ALIASES.get(value)


def _choices(canonical: tuple[str, ...], aliases: dict) -> str:
    names = [*canonical, *(k for k in aliases if isinstance(k, str))]
    numbers = sorted(k for k in aliases if isinstance(k, int))
    return ", ".join(repr(n) for n in names) + f" or {numbers[0]}-{numbers[-1]}"


class ControlNetUnit(ApiModel):
    """One ControlNet unit, as ``alwayson_scripts.controlnet.args[i]``."""

    # The checks of `_consistent` the API server can make too (CEL, in the CRD): cheap, no string is walked.
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "!has(self.image) || !has(self.input_image)", "fieldPath": ".input_image",
         "message": "send the control image once: image or input_image (an alias), not both"},
        {"rule": "!has(self.guidance) || !has(self.guidance_end) || self.guidance == self.guidance_end",
         "fieldPath": ".guidance", "message": "is an alias of guidance_end, and they differ; send one of them"},
        {"rule": "!has(self.low_vram) || !has(self.lowvram) || self.low_vram == self.lowvram",
         "fieldPath": ".lowvram", "message": "is an alias of low_vram, and they differ; send one of them"},
        {"rule": "(has(self.guidance_start) ? self.guidance_start : 0.0) <= (has(self.guidance_end) ? "
                 "self.guidance_end : has(self.guidance) ? self.guidance : 1.0)",
         "fieldPath": ".guidance_start", "message": "must not be after guidance_end"},
    ]})

    enabled: bool = True
    module: str = Field("none", max_length=64, description="preprocessor name or label (canny, depth_midas, …)")
    model: str = Field("None", max_length=256, description="ControlNet model name, optionally with ' [hash]'")
    weight: float = Field(1.0, ge=0.0, le=2.0)
    image: ImageStr | None = Field(None, description="control image; absent = the img2img init image")
    input_image: ImageStr | None = Field(None, description="alias of image")
    mask: str | None = Field(None, max_length=64, description="not supported: must be absent")
    mask_image: str | None = Field(None, max_length=64, description="not supported: must be absent")
    resize_mode: int | str = Field("Crop and Resize", description="Just Resize | Crop and Resize | Resize and "
                                   "Fill, or 0-3", json_schema_extra={"maxLength": 32})
    low_vram: bool | None = None
    lowvram: bool | None = Field(None, description="alias of low_vram")
    processor_res: int = Field(-1, ge=-1, le=8192, description="-1 or out of 64-2048 = the default, 512")
    threshold_a: float = Field(-1.0, ge=-1e6, le=1e6, description="meaning per module; out of range = default")
    threshold_b: float = Field(-1.0, ge=-1e6, le=1e6, description="meaning per module; out of range = default")
    guidance_start: float = Field(0.0, ge=0.0, le=1.0)
    guidance_end: float = Field(1.0, ge=0.0, le=1.0)
    guidance: float | None = Field(None, ge=0.0, le=1.0, description="legacy alias of guidance_end")
    pixel_perfect: bool = False
    control_mode: int | str = Field("Balanced", description="Balanced | My prompt is more important | "
                                    "ControlNet is more important, or 0-2", json_schema_extra={"maxLength": 32})
    save_detected_map: bool = True
    inpaint_crop_input_image: bool = Field(True, description="with a mask and inpaint_full_res: cut the input image "
                                           "to the masked area, as the init image is")
    hr_option: int | str = Field("Both", description="txt2img hires fix: Both | Low res only | High res only, or "
                                 "0-2; no effect elsewhere", json_schema_extra={"maxLength": 32})

    @field_validator("module")
    @classmethod
    def _known_module(cls, value: str) -> str:
        if find_preprocessor(value) is None:
            valid = ", ".join(p.name if p.name == p.label else f"{p.name} ({p.label})" for p in PREPROCESSORS)
            raise refuse(f"unknown preprocessor {value!r}; valid: {valid}")
        return value

    @field_validator("resize_mode")
    @classmethod
    def _known_resize_mode(cls, value: int | str) -> int | str:
        if resize_mode_name(value) is None:
            raise refuse(f"unknown resize mode {value!r}; valid: {_choices(RESIZE_MODES, _RESIZE_ALIASES)}")
        return value

    @field_validator("control_mode")
    @classmethod
    def _known_control_mode(cls, value: int | str) -> int | str:
        if control_mode_name(value) is None:
            raise refuse(f"unknown control mode {value!r}; valid: {_choices(CONTROL_MODES, _CONTROL_ALIASES)}")
        return value

    @field_validator("hr_option")
    @classmethod
    def _known_hr_option(cls, value: int | str) -> int | str:
        if hr_option_name(value) is None:
            raise refuse(f"unknown hires-fix option {value!r}; valid: {_choices(HR_OPTIONS, _HR_ALIASES)}")
        return value

    @field_validator("mask", "mask_image", mode="before")  # before: the refusal, not "too long"
    @classmethod
    def _no_mask(cls, value: object) -> None:
        raise refuse("ControlNet masks (inpainting) are not supported; remove the mask")

    @model_validator(mode="after")
    def _consistent(self) -> "ControlNetUnit":
        found = Refusals("ControlNetUnit")
        if self.image is not None and self.input_image is not None:
            found.add("input_image", "send the control image once: image or input_image (an alias), not both")
        if self.guidance is not None and "guidance_end" in self.model_fields_set \
                and self.guidance != self.guidance_end:
            found.add("guidance", f"is an alias of guidance_end, and they differ ({self.guidance} vs "
                                  f"{self.guidance_end}); send one of them")
        if self.low_vram is not None and self.lowvram is not None and self.low_vram != self.lowvram:
            found.add("lowvram", "is an alias of low_vram, and they differ; send one of them")
        if self.enabled and self.preprocessor.unsupported:
            found.add("module", f"preprocessor {self.module!r} is not supported: {self.preprocessor.unsupported}")
        elif self.enabled and self.preprocessor.needs_model and self.model_name is None:
            found.add("model", f"the enabled unit with preprocessor {self.module!r} names no ControlNet model; name "
                               "one (e.g. control_v11p_sd15_canny) or disable the unit")
        if self.guidance_start > self.effective_guidance_end:
            found.add("guidance_start", f"must not be after guidance_end ({self.guidance_start} > "
                                        f"{self.effective_guidance_end})")
        found.raise_any()
        return self

    # --- normalized values -----------------------------------------------------------------------------------

    @property
    def preprocessor(self) -> Preprocessor:
        return _PREPROCESSOR_BY_KEY[self.module]

    @property
    def source_image(self) -> str | None:
        """The control image as sent (base64, data URI or reference); None = use the init image."""
        return self.image if self.image is not None else self.input_image

    @property
    def effective_guidance_end(self) -> float:
        if "guidance_end" in self.model_fields_set or self.guidance is None:
            return self.guidance_end
        return self.guidance

    @property
    def resize_mode_name(self) -> str:
        return resize_mode_name(self.resize_mode)  # type: ignore[return-value]  # validated

    @property
    def control_mode_name(self) -> str:
        return control_mode_name(self.control_mode)  # type: ignore[return-value]  # validated

    @property
    def hr_option_name(self) -> str:
        return hr_option_name(self.hr_option)  # type: ignore[return-value]  # validated

    @property
    def model_name(self) -> str | None:
        """The model name without a " [hash]" suffix; None for CN's "None" (no model)."""
        name = self.model.split(" [", 1)[0].strip()
        return None if name in ("", "None", "none") else name

    @property
    def effective_processor_res(self) -> int:
        return int(PROCESSOR_RES.effective(self.processor_res))

    @property
    def effective_thresholds(self) -> tuple[float | None, float | None]:
        """threshold_a/b as the preprocessor uses them: out of range -> default; None where it has no slider."""
        pre = self.preprocessor
        return (pre.threshold_a.effective(self.threshold_a) if pre.threshold_a else None,
                pre.threshold_b.effective(self.threshold_b) if pre.threshold_b else None)
