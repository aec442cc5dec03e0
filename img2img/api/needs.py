"""What a job needs of a runner: the models it names, the stored images it reads, and room for the images it can
produce. Pure.

Model names are compared by ``model_key``: A1111 accepts one model under several spellings ("sd_xl_base_1.0",
"sd_xl_base_1.0 [31e35c80fc]", "sd_xl_base_1.0.safetensors", "SDXL/sd_xl_base_1.0.safetensors"), and so does the
runner's catalog, so a runner's catalog names and a request's names meet on the key. Aliases and substitutes
(``img2img_runner.catalog``) are the runner's to report: it says every name it can serve without loading.
A preprocessor's annotator weights are not named by the request: the job needs ``annotator_key(preprocessor)``, and
a runner holding a catalog's annotator entry reports that key for each preprocessor the entry serves.
"""

from __future__ import annotations

import re

from img2img.api.images import S3Ref, parse_reference
from img2img.api.payload import ProcessingPayload

WEIGHT_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
HASH_SUFFIX = re.compile(r"\s*\[[0-9a-fA-F]{8,64}\]\s*$")
VAE_OFF = ("Automatic", "None", "auto", "")  # A1111's sd_vae values for "the checkpoint's own VAE"


def model_key(name: str) -> str:
    """One key for A1111's spellings of a model: no " [hash]", no folder, no weights extension, lower case."""
    bare = HASH_SUFFIX.sub("", name.strip()).replace("\\", "/").rsplit("/", 1)[-1]
    for ext in WEIGHT_EXTENSIONS:
        if bare.lower().endswith(ext):
            bare = bare[: -len(ext)]
            break
    return bare.lower()


ANNOTATOR_KEY_PREFIX = "annotator:"


def annotator_key(preprocessor: str) -> str:
    """The key of the annotator weights a preprocessor (canonical name: "openpose") runs with; a pool's models may
    name it to preload them."""
    return ANNOTATOR_KEY_PREFIX + preprocessor


def annotator_preprocessor(name: str) -> str | None:
    """The preprocessor of an ``annotator_key`` ("annotator:openpose" -> "openpose"); None for other names."""
    return name.strip()[len(ANNOTATOR_KEY_PREFIX):] if name.strip().startswith(ANNOTATOR_KEY_PREFIX) else None


def required_models(payload: ProcessingPayload, default_checkpoint: str | None) -> frozenset[str]:
    """The keys of the models the job runs: checkpoint (``default_checkpoint``, the catalog's, when the request
    names none; None = unknown, left out), VAE unless the checkpoint's own, refiner unless off, the model of every
    enabled ControlNet unit that names one, the prompt's LoRAs (a runner holding them skips reading them), and the
    annotator weights of the units' preprocessors."""
    names = [payload.checkpoint or default_checkpoint, payload.refiner]
    if payload.vae is not None and payload.vae.strip() not in VAE_OFF:
        names.append(payload.vae)
    units = payload.enabled_controlnet_units
    names += [unit.model_name for unit in units]
    names += [tag.name for tag in payload.loras]
    keys = {model_key(n) for n in names if n}
    return frozenset(keys | {annotator_key(u.preprocessor.name) for u in units if u.preprocessor.annotator_files})


def output_image_bound(payload: ProcessingPayload) -> int:
    """At most this many images come back: batch_size × n_iter generated, plus the detect maps of the enabled
    ControlNet units (``payload.detect_maps``; the runner uploads a map only when the unit saves it)."""
    return payload.images_per_job + payload.detect_maps


def s3_image_fields(payload: ProcessingPayload) -> list[tuple[str, S3Ref]]:
    """Every ``s3://`` image the job reads with its field (``input.payload.init_images[0]``, ``mask``, a ControlNet
    unit's ``image`` or ``input_image``): init images, the mask, then enabled ControlNet units' images."""
    refs = [(f"input.payload.{field}", parse_reference(v)) for field, v in payload.input_images]
    return [(field, ref) for field, ref in refs if isinstance(ref, S3Ref)]


def s3_images(payload: ProcessingPayload) -> list[S3Ref]:
    """The ``s3://`` images the job reads, each once, in order: the reads the operator presigns for the runner."""
    return list(dict.fromkeys(ref for _, ref in s3_image_fields(payload)))
