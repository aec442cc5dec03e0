"""Loading models (cached in-process) and assembling the diffusers pipelines a plan needs.

- ``ModelCache`` loads each catalog entry once and keeps it between jobs (least recently used unloaded first, within
  a memory budget): checkpoints (as their components), VAEs, ControlNets, refiners, LoRA files (``loras``). A refiner
  shares the base's VAE, ``text_encoder_2`` and ``tokenizer_2`` (the SDXL model card's recipe; the refiner repository
  ships identical copies).
- ``base_pipeline`` / ``refiner_pipeline`` assemble a pipeline object per job from cached components (cheap: no
  weights are copied) with a fresh scheduler, so jobs never share scheduler state. Nothing a job does is written to
  the cached modules (the VAE's upcast is undone in ``encode_images``), so a warm runner gives the same bytes as a
  fresh one.
- ``ControlUnits`` runs the job's ControlNets (diffusers' MultiControlNetModel, one net per enabled unit) and applies
  sd-webui-controlnet's control modes per unit, which diffusers has no flag for: "My prompt is more important" scales
  residual k by 0.825 ** (12 - k); "ControlNet is more important" does that and also zeroes the control on the
  unconditional half of the CFG batch (CN hook.py ``soft_injection`` / ``cfg_injection``).
- ``install_initial_latents`` replaces a pipeline's ``prepare_latents`` for one call so that the initial noise is
  A1111's: one CPU generator per image seeded with that image's seed, ``torch.randn(4, H/8, W/8)``, times
  ``initial_noise_multiplier``; and ``resize_mode`` 3 (latent upscale) encodes the image at its own size and
  interpolates the latents; an inpainting job's masked content is applied to the encoded latents before the noise
  (``InitialLatents.transform``, see ``inpaint_sampling``).

GPU when present (fp16 by default, ``IMG2IMG_DTYPE=bf16|fp32`` to change; PyTorch SDPA attention, diffusers'
default; the speed switches of ``acceleration``, applied to each model as the cache loads it), CPU (fp32) otherwise.
"""

from __future__ import annotations

import functools
import gc
import itertools
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from img2img.api.controlnet import WEIGHTED_PREPROCESSORS, find_preprocessor
from img2img.api.needs import annotator_key, annotator_preprocessor
from img2img.api.samplers import SchedulerSpec
from img2img_runner.acceleration import Switches, prepare
from img2img_runner.catalog import ARCHITECTURES, CHECKPOINTS, LORA_FOR, Catalog, Entry, ModelError
from img2img_runner.plan import soft_injection_scales

log = logging.getLogger(__name__)

_SIGMA_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")
MEMORY_BUDGET_ENV = "IMG2IMG_MODEL_MEMORY_BUDGET"
CUDA_BUDGET_SHARE = 0.9  # of the GPU's memory, for weights; the rest is for activations


@dataclass(frozen=True)
class Runtime:
    device: str
    dtype: torch.dtype
    switches: Switches = field(default_factory=Switches)

    @property
    def name(self) -> str:
        return f"{self.device}/{str(self.dtype).removeprefix('torch.')}"


def runtime() -> Runtime:
    """CUDA (fp16, or $IMG2IMG_DTYPE) when a GPU is visible; CPU fp32 otherwise.

    ``IMG2IMG_TORCH_THREADS`` sets torch's CPU threads (on a shared CPU, 1 avoids OpenMP threads spinning against
    each other: a tiny-model step goes from ~1 s to ~0.05 s on a loaded 2-core machine).
    """
    threads = os.environ.get("IMG2IMG_TORCH_THREADS")
    if threads and threads.isdigit() and int(threads) > 0 and torch.get_num_threads() != int(threads):
        torch.set_num_threads(int(threads))
    if torch.cuda.is_available():
        wanted = os.environ.get("IMG2IMG_DTYPE", "fp16").lower()
        dtype = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16,
                 "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}.get(wanted, torch.float16)
        return Runtime("cuda", dtype, Switches.from_env(os.environ, "cuda"))
    return Runtime("cpu", torch.float32, Switches.from_env(os.environ, "cpu"))


@dataclass
class Components:
    """A loaded checkpoint: its modules, and the pipeline config flags it was saved with."""

    entry: Entry
    modules: dict[str, Any]  # vae, text_encoder(_2), tokenizer(_2), unet, scheduler (a config template)
    flags: dict[str, Any]  # force_zeros_for_empty_prompt, requires_aesthetics_score

    def __getitem__(self, key: str) -> Any:
        return self.modules[key]


def memory_budget(env: Mapping[str, str], rt: Runtime) -> int | None:
    """Bytes of weights a runner keeps loaded: ``$IMG2IMG_MODEL_MEMORY_BUDGET``, else 90 % of the GPU's memory on
    CUDA, else None (no limit)."""
    raw = (env.get(MEMORY_BUDGET_ENV) or "").strip()
    if raw:
        if not raw.isdigit():
            raise ValueError(f"{MEMORY_BUDGET_ENV}={raw!r}: expected a whole number of bytes")
        return int(raw)
    if rt.device == "cuda":
        return int(torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory * CUDA_BUDGET_SHARE)
    return None


def weight_bytes(modules: Iterable[Any]) -> int:
    """Bytes of the parameters and buffers of the torch modules among ``modules`` (tokenizers and None count 0)."""
    return sum(t.numel() * t.element_size() for m in modules if isinstance(m, torch.nn.Module)
               for t in itertools.chain(m.parameters(), m.buffers()))


# What a loader returns: (bytes of weights, a function that moves the model to the device and returns it). The
# cache makes room for the model before it takes device memory.
Loading = tuple[int, Callable[[], Any]]


@dataclass
class _Held:
    name: str  # the catalog entry
    value: Any  # Components, or the module
    size: int  # bytes of weights it holds alone (a refiner's shared modules are counted where they come from)
    needs: tuple[tuple, ...]  # keys of held models it shares modules with: unloaded with them
    job: int = 0  # the job that used it last


class ModelCache:
    """Loaded models, kept between jobs: one least-recently-used cache of catalog entries within a memory budget.

    Checkpoints (as their components), refiners, VAEs, ControlNets, LoRAs and ControlNet preprocessors' detectors
    (annotators). A model is measured (bytes of its weights; a detector: of its files) once loaded, before it moves to
    the device; when it does not fit in the budget, the least recently used models are unloaded first, never one that
    the current job uses (``begin_job``). A refiner shares its base's ``text_encoder_2`` and the job's VAE: it goes
    when either goes.

    ``budget``: bytes (``IMG2IMG_MODEL_MEMORY_BUDGET``); default unlimited on CPU, 90 % of the GPU's memory on CUDA.
    ``loads`` / ``load_seconds`` count the models loaded and the time spent loading them (a warm job adds nothing).
    """

    def __init__(self, catalog: Catalog, rt: Runtime | None = None, budget: int | None = None):
        self.catalog = catalog
        self.runtime = rt or runtime()
        self.budget = budget if budget is not None else memory_budget(os.environ, self.runtime)
        self.loads = 0
        self.load_seconds = 0.0
        self._held: OrderedDict[tuple, _Held] = OrderedDict()  # least recently used first
        self._job = 0
        self._lock = threading.RLock()

    # --- public --------------------------------------------------------------------------------------------

    def begin_job(self) -> None:
        """The models used from now on belong to a new job; the previous job's may be unloaded for them."""
        with self._lock:
            self._job += 1

    def checkpoint(self, entry: Entry) -> Components:
        return self._get(("checkpoint", entry.name), entry.name, lambda: self._load_checkpoint(entry))

    def vae(self, entry: Entry) -> Any:
        return self._get(("vae", entry.name), entry.name, lambda: self._load_vae(entry))

    def controlnet(self, entry: Entry) -> Any:
        return self._get(("controlnet", entry.name), entry.name, lambda: self._load_controlnet(entry))

    def annotator(self, entry: Entry, class_name: str, files: tuple[str, ...], field: str = "models") -> Any:
        """A controlnet-aux detector (``class_name``) reading ``files`` from an annotator entry's folder: one per
        entry and class, however many preprocessors use it (openpose and openpose_hand share one)."""
        return self._get(("annotator", entry.name, class_name), entry.name,
                         lambda: self._load_annotator(entry, class_name, files, field))

    def lora(self, entry: Entry) -> Any:
        """A LoRA's file as read (``loras.Lora``), on the device: applied to a checkpoint per job."""
        return self._get(("lora", entry.name), entry.name, lambda: self._load_lora(entry))

    def refiner(self, entry: Entry, base: Components, vae: Any, vae_entry: Entry | None = None) -> Components:
        """The refiner's components, sharing ``vae`` (the job's VAE: ``vae_entry``, or the base's own when None),
        ``text_encoder_2`` and ``tokenizer_2``."""
        needs = [("checkpoint", base.entry.name)] + ([("vae", vae_entry.name)] if vae_entry is not None else [])
        key = ("refiner", base.entry.name, entry.name, vae_entry.name if vae_entry is not None else None)
        return self._get(key, entry.name, lambda: self._load_refiner(entry, base, vae), needs=needs)

    def held(self) -> list[str]:
        """The catalog names of the models loaded now (what a runner tells the operator it holds), and
        ``annotator:<preprocessor>`` for each preprocessor whose detector is loaded with the weights the catalog
        gives it."""
        from img2img_runner import preprocess

        with self._lock:
            names = {held.name for held in self._held.values()}
            detectors = {(key[1], key[2]) for key in self._held if key[0] == "annotator"}
        served = {annotator_key(module) for module in WEIGHTED_PREPROCESSORS
                  if (getattr(self.catalog.annotator(module), "name", None), preprocess.detector_class(module))
                  in detectors}
        return sorted(names | served)

    def used_bytes(self) -> int:
        with self._lock:
            return sum(held.size for held in self._held.values())

    def set_switches(self, switches: Switches) -> None:
        """Run the loaded models, and those loaded from now on, with other speed switches (the GPU benchmark)."""
        with self._lock:
            self.runtime = replace(self.runtime, switches=switches)
            for held in self._held.values():
                prepare(held.value, switches)

    def preload(self, names: list[str], field: str = "models") -> None:
        """Load these catalog entries now (a pool's models, at the runner's start). A refiner is loaded for the
        first SDXL checkpoint of the list, with the list's VAE if it has one; a LoRA's file is read. ``field`` names
        the list in errors."""
        entries = [self.catalog.get(name, field=field, kinds=ARCHITECTURES, what="model") for name in names]
        self.begin_job()
        checkpoints = [self.checkpoint(e) for e in entries if e.architecture in CHECKPOINTS]
        vaes = [(e, self.vae(e)) for e in entries if e.architecture == "vae"]
        for name, entry in zip(names, entries):
            if entry.architecture.startswith("controlnet-"):
                self.controlnet(entry)
            elif entry.architecture == "sdxl-refiner":
                base = next((c for c in checkpoints if c.entry.architecture == "sdxl"), None)
                if base is None:
                    raise ModelError(field, f"refiner {entry.name!r} is loaded for an SDXL checkpoint of the "
                                            f"list, and {field} names none")
                vae_entry, vae = vaes[0] if vaes else (None, base["vae"])
                self.refiner(entry, base, vae, vae_entry)
            elif entry.architecture in LORA_FOR.values():
                self.lora(entry)
            elif entry.architecture == "annotator":
                self._preload_annotator(name, entry, field)

    def _preload_annotator(self, name: str, entry: Entry, field: str) -> None:
        """The detectors of ``annotator:<preprocessor>``, or of the preprocessors the entry lists."""
        from img2img_runner import preprocess

        modules = [annotator_preprocessor(name)] if annotator_preprocessor(name) else list(entry.modules)
        if not modules:
            raise ModelError(field, f"annotator entry {entry.name!r} lists no modules: name the preprocessors to "
                                    "preload as annotator:<preprocessor> (annotator:openpose)")
        for module in modules:
            preprocessor = find_preprocessor(module)
            if preprocessor is None or not preprocessor.annotator_files:
                raise ModelError(field, f"{module!r} is not a preprocessor that needs annotator weights")
            self.annotator(entry, preprocess.detector_class(preprocessor.name), preprocessor.annotator_files, field)

    # --- the cache -----------------------------------------------------------------------------------------

    def _get(self, key: tuple, name: str, load: Callable[[], Loading], needs: list[tuple] = ()) -> Any:
        """The held model under ``key``, touched; else ``load()`` it, make room for it, and hold it."""
        with self._lock:
            held = self._held.get(key)
            if held is None:
                started = time.monotonic()
                size, to_device = load()
                self._make_room(size)
                held = _Held(name=name, value=prepare(to_device(), self.runtime.switches), size=size,
                             needs=tuple(needs))
                self._held[key] = held
                self.loads += 1
                self.load_seconds += time.monotonic() - started
            held.job = self._job
            self._held.move_to_end(key)
            return held.value

    def _make_room(self, size: int) -> None:
        """Unload least recently used models (not the current job's) until ``size`` more bytes fit the budget."""
        if self.budget is None or self.used_bytes() + size <= self.budget:
            return
        while self.used_bytes() + size > self.budget:
            victim = next((k for k, h in self._held.items() if h.job != self._job), None)
            if victim is None:
                log.warning("models over the memory budget (%d + %d > %d bytes): the current job needs them all",
                            self.used_bytes(), size, self.budget)
                break
            self._unload(victim)
        gc.collect()  # diffusers modules hold reference cycles: free the weights now, before this load takes more

    def _unload(self, key: tuple) -> None:
        held = self._held.pop(key)
        log.info("unloaded %s (%s, %d bytes)", held.name, key[0], held.size)
        for other in [k for k, h in self._held.items() if key in h.needs]:
            self._unload(other)

    # --- loading -------------------------------------------------------------------------------------------

    def _weights(self, entry: Entry) -> tuple[str, dict[str, Any], bool]:
        """(what to pass to from_pretrained/from_single_file, extra kwargs, is a single file)."""
        source = entry.source
        if source is None:
            raise ModelError("model", f"model {entry.name!r} has no source in the catalog")
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
        if source.kind == "hub":
            kwargs: dict[str, Any] = {"cache_dir": str(self.catalog.cache_dir / "hub"), "local_files_only": offline}
            if source.revision:
                kwargs["revision"] = source.revision
            if source.variant:
                kwargs["variant"] = source.variant
            if source.subfolder:
                kwargs["subfolder"] = source.subfolder
            return source.location, kwargs, False
        path = self.catalog.local_path(source)
        if source.kind == "s3":
            from img2img_runner.storage import sync_prefix

            sync_prefix(source.location, path)
        if source.kind == "file":
            config = self.catalog.config_path(source)
            kwargs = {"local_files_only": True}
            if config is not None:
                kwargs["config"] = str(config)
            if not path.is_file():
                raise ModelError("model", f"model {entry.name!r}: weights file {path} not found")
            return str(path), kwargs, True
        if source.subfolder:
            path = path / source.subfolder
        if not path.exists():
            raise ModelError("model", f"model {entry.name!r}: folder {path} not found")
        kwargs = {"local_files_only": True}
        if source.variant:
            kwargs["variant"] = source.variant
        return str(path), kwargs, False

    def _load(self, cls: Any, entry: Entry, **extra: Any) -> Any:
        where, kwargs, single = self._weights(entry)
        kwargs.update(extra)
        log.info("loading %s (%s) from %s", entry.name, entry.architecture, where)
        try:
            if single:
                return cls.from_single_file(where, dtype=self.runtime.dtype, **kwargs)
            return cls.from_pretrained(where, dtype=self.runtime.dtype, **kwargs)
        except ModelError:
            raise
        except (OSError, ValueError, EnvironmentError) as exc:
            raise ModelError("model", f"cannot load model {entry.name!r} from {where}: {exc}") from exc

    def _load_checkpoint(self, entry: Entry) -> Loading:
        from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline

        if entry.architecture == "sdxl":
            pipe = self._load(StableDiffusionXLImg2ImgPipeline, entry, add_watermarker=False)
        elif entry.architecture == "sd15":
            pipe = self._load(StableDiffusionImg2ImgPipeline, entry, safety_checker=None, feature_extractor=None,
                              requires_safety_checker=False)
        else:
            raise ModelError("override_settings.sd_model_checkpoint",
                             f"{entry.name!r} is a {entry.architecture} model, not a checkpoint")
        return weight_bytes(pipe.components.values()), lambda: self._components(entry, pipe)

    def _load_refiner(self, entry: Entry, base: Components, vae: Any) -> Loading:
        from diffusers import StableDiffusionXLImg2ImgPipeline

        shared = {"vae": vae, "text_encoder_2": base["text_encoder_2"], "tokenizer_2": base["tokenizer_2"]}
        if entry.architecture == "sdxl-refiner":
            shared.update(text_encoder=None, tokenizer=None)
        pipe = self._load(StableDiffusionXLImg2ImgPipeline, entry, add_watermarker=False, **shared)
        own = [m for k, m in pipe.components.items() if k not in shared]
        return weight_bytes(own), lambda: self._components(entry, pipe)

    def _components(self, entry: Entry, pipe: Any) -> Components:
        """A loaded pipeline's parts on the device, and the config flags the pipelines read."""
        pipe.to(self.runtime.device)
        names = ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "unet", "scheduler")
        modules = {k: getattr(pipe, k, None) for k in names}
        flags = {k: pipe.config[k] for k in ("force_zeros_for_empty_prompt", "requires_aesthetics_score")
                 if k in pipe.config}
        return Components(entry=entry, modules=modules, flags=flags)

    def _load_vae(self, entry: Entry) -> Loading:
        from diffusers import AutoencoderKL

        vae = self._load(AutoencoderKL, entry)
        if entry.fp16_fix and vae.config.force_upcast:
            vae.register_to_config(force_upcast=False)  # the fp16-fix VAE runs in fp16 without NaNs
        return weight_bytes([vae]), lambda: vae.to(self.runtime.device)

    def _load_controlnet(self, entry: Entry) -> Loading:
        from diffusers import ControlNetModel

        net = self._load(ControlNetModel, entry)
        return weight_bytes([net]), lambda: net.to(self.runtime.device)

    def _load_annotator(self, entry: Entry, class_name: str, files: tuple[str, ...], field: str) -> Loading:
        import controlnet_aux

        source = entry.source
        assert source is not None, "the catalog refuses an annotator entry without a source"
        if source.kind == "hub":
            from huggingface_hub import snapshot_download

            where, kwargs, _ = self._weights(entry)
            try:
                folder = Path(snapshot_download(where, cache_dir=kwargs["cache_dir"], revision=source.revision,
                                                local_files_only=kwargs["local_files_only"],
                                                allow_patterns=list(files)))
            except (OSError, ValueError) as exc:
                raise ModelError(field, f"cannot read annotator weights {', '.join(files)} of {entry.name!r} from "
                                        f"the hub ({where}): {exc}") from exc
        else:
            folder = Path(self._weights(entry)[0])  # s3: synced to the local cache folder first
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise ModelError(field, f"annotator weights {', '.join(missing)} not found in the catalog's annotator "
                                    f"entry {entry.name!r} ({folder})")
        log.info("loading annotator %s (%s) from %s", entry.name, class_name, folder)
        detector = getattr(controlnet_aux, class_name).from_pretrained(str(folder))
        size = sum((folder / f).stat().st_size for f in files)
        return size, lambda: detector.to(self.runtime.device)

    def _load_lora(self, entry: Entry) -> Loading:
        from img2img_runner import loras

        where, kwargs, single = self._weights(entry)
        if single:
            path = Path(where)
        elif entry.source.kind == "hub":
            from huggingface_hub import snapshot_download

            subfolder = entry.source.subfolder
            try:
                folder = Path(snapshot_download(where, cache_dir=kwargs["cache_dir"], revision=entry.source.revision,
                                                local_files_only=kwargs["local_files_only"],
                                                allow_patterns=f"{subfolder}/*.safetensors" if subfolder
                                                else "*.safetensors"))
            except (OSError, ValueError) as exc:
                raise ModelError("prompt", f"cannot load LoRA {entry.name!r} from the hub ({where}): {exc}") from exc
            path = loras.weights_file(folder / (subfolder or ""), entry)
        else:
            path = loras.weights_file(Path(where), entry)
        log.info("loading LoRA %s from %s", entry.name, path)
        lora = loras.read(entry, path)
        return lora.size, lambda: lora.to(self.runtime.device)


# --- schedulers --------------------------------------------------------------------------------------------


def make_scheduler(template: Any, spec: SchedulerSpec, seeds: Iterable[int] = (), first_index: int = 0, *,
                   from_noise: bool = False) -> Any:
    """A fresh diffusers scheduler of ``spec``'s class from the checkpoint's scheduler config, drawing its fresh
    noise as A1111 does for the batch's ``seeds`` (``sampler_noise``). PLMS starts its multistep history at
    ``first_index`` of the schedule (``_plms``). ``from_noise``: DDIM and PLMS step over A1111's whole timestep grid
    (``timestep_grid``), as txt2img does, whose top timestep diffusers' own schedule may lack."""
    import inspect

    import diffusers

    cls = _plms() if spec.class_name == "PNDMScheduler" else getattr(diffusers, spec.class_name)
    if spec.timestep_sampler:
        cls = _a1111_grid(cls, from_noise)
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {flag: False for flag in _SIGMA_FLAGS if flag in accepted}  # the model config may have set one
    kwargs.update(spec.kwargs)
    scheduler = cls.from_config(template.config, **kwargs)
    if spec.class_name == "PNDMScheduler":
        scheduler.first_index = first_index
    if spec.class_name == "LMSDiscreteScheduler":
        _lms_order_from_history(scheduler)
    sampler_noise(scheduler, spec, list(seeds))
    return scheduler


def _lms_order_from_history(scheduler: Any) -> None:
    """LMS of order min(steps taken + 1, 4), as k-diffusion's ``sample_lms``. diffusers takes the order from the
    schedule index, so an img2img run would start at order 4 with one derivative (a wrong first step)."""
    step = scheduler.step

    def lms_step(*args: Any, **kwargs: Any) -> Any:
        kwargs["order"] = min(len(scheduler.derivatives) + 1, 4)
        return step(*args, **kwargs)

    scheduler.step = lms_step


_HISTORY = ("model_outputs", "lower_order_nums", "derivatives")  # DPM-Solver++ multistep, LMS


def continue_history(scheduler: Any, previous: Any) -> None:
    """Make ``scheduler`` (the refiner's) go on with ``previous``'s (the base's) multistep history: A1111 swaps the
    model inside one sampler loop, so DPM++ 2M, DPM++ 2M SDE and LMS keep the base's last outputs at the switch."""
    import copy

    saved = {name: copy.copy(getattr(previous, name)) for name in _HISTORY if hasattr(previous, name)}
    if not saved:
        return
    set_timesteps = scheduler.set_timesteps

    def resumed(*args: Any, **kwargs: Any) -> None:
        set_timesteps(*args, **kwargs)
        for name, value in saved.items():
            setattr(scheduler, name, copy.copy(value))

    scheduler.set_timesteps = resumed


@functools.cache
def _plms() -> type:
    """diffusers' PLMS (PNDMScheduler with skip_prk_steps) whose first step may lie inside the schedule.

    PLMS's first step evaluates the model twice: at its timestep, and at the next one on an Euler prediction; so
    diffusers repeats the schedule's second timestep. A1111's img2img PLMS makes that first step at
    ``timesteps[t_enc - 1]``: the timestep repeated must be the one after ``first_index``.
    """
    import diffusers
    import numpy as np

    class WindowedPLMS(diffusers.PNDMScheduler):
        first_index = 0

        def set_timesteps(self, num_inference_steps: int, device: Any = None) -> None:
            super().set_timesteps(num_inference_steps, device)
            self._windowed(device)

        def _windowed(self, device: Any) -> None:
            grid = self._timesteps[::-1]  # one per step, from the top
            at = self.first_index + 1
            self.plms_timesteps = np.concatenate([grid[:at], grid[at:at + 1], grid[at:]])
            self.timesteps = torch.from_numpy(self.plms_timesteps.astype(np.int64)).to(device)

    return WindowedPLMS


@functools.cache
def _a1111_grid(cls: type, whole: bool) -> type:
    """``cls`` (DDIM, or the windowed PLMS) over A1111's timestep grid (``whole``), else as it is.

    diffusers' "leading" schedule of n steps is A1111's grid without its top timesteps where n does not divide 1000
    (30 steps: diffusers tops at 958, A1111 at 991); each step still goes down 1000 // n, as in A1111.
    """
    if not whole:
        return cls
    import numpy as np

    from img2img.api.samplers import timestep_grid

    class A1111Grid(cls):
        def set_timesteps(self, num_inference_steps: int, device: Any = None) -> None:
            super().set_timesteps(num_inference_steps, device)
            grid = np.asarray(timestep_grid(num_inference_steps), dtype=np.int64)
            if hasattr(self, "_windowed"):  # PLMS: its doubled first step over the whole grid
                self._timesteps = grid
                self._windowed(device)
            else:
                self.timesteps = torch.from_numpy(grid[::-1].copy()).to(device)

    return A1111Grid


def sampler_noise(scheduler: Any, spec: SchedulerSpec, seeds: list[int]) -> None:
    """Make ``scheduler`` draw A1111's fresh noise, times ``s_noise``.

    A1111's DPM++ SDE and DPM++ 2M SDE take their noise from a Brownian tree over the schedule's sigma range, one
    tree per image seeded with its seed (``create_noise_sampler``), its normal draws on the CPU (torchsde's
    ``_randn`` replaced, as A1111 does, so that it is the same on any device). diffusers' DPMSolverSDEScheduler has
    that tree; its multistep SDE draws plain normal noise, so its ``variance_noise`` is filled from a tree here.
    """
    if not spec.brownian:
        return
    _cpu_brownian_draws()
    if spec.class_name == "DPMSolverSDEScheduler":
        scheduler.noise_sampler_seed = seeds
        if spec.s_noise != 1.0:
            scheduler.step = functools.partial(scheduler.step, s_noise=spec.s_noise)
        return
    from diffusers.schedulers.scheduling_dpmsolver_sde import BrownianTreeNoiseSampler

    step, trees = scheduler.step, []

    def brownian_step(model_output, timestep, sample, generator=None, variance_noise=None, return_dict=True):
        sigmas = scheduler.sigmas
        if not trees:
            positive = sigmas[sigmas > 0]
            # The tree lives on the CPU, where its normals are drawn: on a GPU its ~50 draws and bisections a step
            # would each be a blocking copy and a handful of tiny kernels (2,217 synchronisations a job on an H200)
            cpu_sample = torch.zeros_like(sample, device="cpu")
            trees.append(BrownianTreeNoiseSampler(cpu_sample, positive.min().item(), sigmas.max().item(), seeds))
        index = scheduler.step_index if scheduler.step_index is not None else scheduler.begin_index or 0
        sigma, sigma_next = sigmas[index], sigmas[index + 1]
        if sigma_next > 0:
            # pageable memory is staged at once: no wait for the GPU's queue
            noise = trees[0](sigma, sigma_next).to(sample.device, sample.dtype, non_blocking=True) * spec.s_noise
        else:  # the last step lands on sigma 0: k-diffusion returns the denoised sample, no noise
            noise = torch.zeros_like(sample)
        return step(model_output, timestep, sample, generator=generator, variance_noise=noise,
                    return_dict=return_dict)

    scheduler.step = brownian_step


_BROWNIAN_PATCHED = []


def _cpu_brownian_draws() -> None:
    """torchsde's Brownian tree draws its normals from a CPU generator (A1111 ``replace_torchsde_browinan``)."""
    if _BROWNIAN_PATCHED:
        return
    import torchsde._brownian.brownian_interval as interval

    def cpu_randn(size, dtype, device, seed):
        generator = torch.Generator("cpu").manual_seed(int(seed))
        return torch.randn(size, generator=generator).to(device=device, dtype=dtype)

    interval._randn = cpu_randn
    _BROWNIAN_PATCHED.append(True)


def refiner_start_index(scheduler: Any, steps: int, switch_at: float) -> int:
    """The index in ``scheduler.timesteps`` where an SDXL img2img refiner with ``denoising_start=switch_at`` begins.

    diffusers' rule (StableDiffusionXLImg2ImgPipeline.get_timesteps): cutoff = round(T - switch_at * T); the refiner
    runs the timesteps below the cutoff; for 2nd-order schedulers an even count gets one more so that it starts at a
    step boundary. The base stops right before this index, so no step is run twice or skipped (reference A1.4).
    """
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps
    total = scheduler.config.num_train_timesteps
    cutoff = int(round(total - switch_at * total))
    n = int((timesteps < cutoff).sum().item())
    if scheduler.order == 2 and n % 2 == 0:
        n += 1
    return len(timesteps) - n


# --- prompts of different lengths --------------------------------------------------------------------------


def split_by_context(forward: Callable, lengths: tuple[int, int], batch_size: int,
                     call: Callable | None = None) -> Callable:
    """``forward`` (a UNet's or a ControlNet's) run once per context length, as A1111 runs the UNet when the prompt
    and the negative prompt have a different number of chunks.

    ``lengths`` are the (negative, positive) token counts; the pipeline's ``encoder_hidden_states`` are padded to
    the longer one. Its batch is diffusers' CFG batch (``batch_size`` negative rows, then as many positive ones) or,
    without CFG, the positive rows only. Every argument with a row per batch element is sliced alike; the outputs
    are joined again. ``call`` (default ``forward``) is what runs each part: the module itself where it can be,
    so that its hooks and compiled code run.
    """
    import inspect

    signature = inspect.signature(forward)
    negative, positive = lengths

    def rows(value: Any, part: slice, total: int) -> Any:
        if isinstance(value, torch.Tensor):
            return value[part] if value.ndim and value.shape[0] == total else value
        if isinstance(value, (list, tuple)):
            return type(value)(rows(v, part, total) for v in value)
        if isinstance(value, dict):
            return {k: rows(v, part, total) for k, v in value.items()}
        return value

    def joined(outputs: list[Any]) -> Any:
        first = outputs[0]
        if isinstance(first, torch.Tensor):
            return torch.cat(outputs)
        return type(first)(joined(list(parts)) for parts in zip(*outputs))

    def run(*args: Any, **kwargs: Any) -> Any:
        arguments = signature.bind(*args, **kwargs).arguments
        total = arguments["sample"].shape[0]
        if total == 2 * batch_size:
            parts = [(slice(0, batch_size), negative), (slice(batch_size, total), positive)]
        else:
            parts = [(slice(0, total), positive)]
        outputs = []
        for part, length in parts:
            sliced = {k: rows(v, part, total) for k, v in arguments.items()}
            sliced["encoder_hidden_states"] = sliced["encoder_hidden_states"][:, :length]
            outputs.append((call or forward)(**sliced))
        return joined(outputs)

    return run


class context_split:
    """Within the block, ``module`` (a UNet) runs once per context length (``split_by_context``); nothing when the
    lengths are equal."""

    def __init__(self, module: Any, lengths: tuple[int, int], batch_size: int):
        self.module, self.lengths, self.batch_size = module, lengths, batch_size

    def __enter__(self) -> None:
        if self.lengths[0] != self.lengths[1]:
            self.module.forward = split_by_context(self.module.forward, self.lengths, self.batch_size)

    def __exit__(self, *exc: Any) -> None:
        self.module.__dict__.pop("forward", None)


# --- ControlNet units --------------------------------------------------------------------------------------


def control_units(controlnets: list[Any], soft: list[bool], cfg_injection: list[bool],
                  context: tuple[tuple[int, int], int] | None = None, windows: list[tuple[bool, ...]] | None = None,
                  step_of: Callable[[int], int] | None = None) -> Any:
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

    class ControlUnits(MultiControlNetModel):
        """One ControlNet per enabled unit, each with its own control mode (see the module docstring)."""

        def __init__(self) -> None:
            super().__init__(controlnets)
            self.soft = list(soft)
            self.cfg_injection = list(cfg_injection)
            self.cfg_active = False  # set per call: is the batch [uncond, cond]?
            self.calls = [0] * len(controlnets)  # how often each unit ran (tests: guidance windows)
            # per unit, per sampler step: does it run (sd-webui-controlnet's window); the evaluations seen so far
            self.windows, self.step_of, self.evaluation = windows, step_of, 0
            # ((negative, positive) context lengths, batch size) when they differ: each net runs once per length
            self.context = context if context is not None and context[0][0] != context[0][1] else None

        def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale,
                    class_labels=None, timestep_cond=None, attention_mask=None, added_cond_kwargs=None,
                    cross_attention_kwargs=None, guess_mode=False, return_dict=True):
            if self.windows is not None:
                step = self.step_of(self.evaluation)
                conditioning_scale = [scale if window[step] else 0.0
                                      for scale, window in zip(conditioning_scale, self.windows)]
            self.evaluation += 1
            active = [i for i, scale in enumerate(conditioning_scale) if scale != 0]
            down_total = mid_total = None
            for i in active or [0]:  # no unit in its guidance window: one run at scale 0 gives zero residuals
                net = self.nets[i]
                if self.context is not None:
                    net = split_by_context(net.forward, *self.context, call=net)
                down, mid = net(
                    sample=sample, timestep=timestep, encoder_hidden_states=encoder_hidden_states,
                    controlnet_cond=controlnet_cond[i], conditioning_scale=conditioning_scale[i],
                    class_labels=class_labels, timestep_cond=timestep_cond, attention_mask=attention_mask,
                    added_cond_kwargs=added_cond_kwargs, cross_attention_kwargs=cross_attention_kwargs,
                    guess_mode=False, return_dict=False,
                )
                if active:
                    self.calls[i] += 1
                residuals = [*down, mid]
                if self.soft[i]:
                    residuals = [r * s for r, s in zip(residuals, soft_injection_scales(len(residuals)))]
                if self.cfg_injection[i] and self.cfg_active:
                    half = residuals[0].shape[0] // 2  # diffusers' CFG batch is [negative, positive]
                    mask = torch.ones(residuals[0].shape[0], 1, 1, 1, device=sample.device, dtype=residuals[0].dtype)
                    mask[:half] = 0
                    residuals = [r * mask for r in residuals]
                if down_total is None:
                    down_total, mid_total = residuals[:-1], residuals[-1]
                else:
                    down_total = [a + b for a, b in zip(down_total, residuals[:-1])]
                    mid_total = mid_total + residuals[-1]
            return down_total, mid_total

    return ControlUnits()


# --- pipelines ---------------------------------------------------------------------------------------------


def base_pipeline(base: Components, vae: Any, scheduler: Any, units: Any | None, *, txt2img: bool = False) -> Any:
    """The pipeline that runs the checkpoint: img2img's (from an image or handed latents) or txt2img's (from noise),
    with ControlNet units (a ``control_units`` object) or without. Built from the cached modules: no weights are
    copied."""
    import diffusers

    m = base.modules
    if base.entry.architecture == "sdxl":
        common = dict(vae=vae, text_encoder=m["text_encoder"], text_encoder_2=m["text_encoder_2"],
                      tokenizer=m["tokenizer"], tokenizer_2=m["tokenizer_2"], unet=m["unet"], scheduler=scheduler,
                      force_zeros_for_empty_prompt=base.flags.get("force_zeros_for_empty_prompt", True),
                      add_watermarker=False)
        if units is not None:
            cls = diffusers.StableDiffusionXLControlNetPipeline if txt2img else \
                diffusers.StableDiffusionXLControlNetImg2ImgPipeline
            pipe = cls(controlnet=units, **common)
        elif txt2img:
            pipe = diffusers.StableDiffusionXLPipeline(**common)
        else:
            pipe = diffusers.StableDiffusionXLImg2ImgPipeline(
                requires_aesthetics_score=base.flags.get("requires_aesthetics_score", False), **common)
    else:
        common = dict(vae=vae, text_encoder=m["text_encoder"], tokenizer=m["tokenizer"], unet=m["unet"],
                      scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        if units is not None:
            cls = diffusers.StableDiffusionControlNetPipeline if txt2img else \
                diffusers.StableDiffusionControlNetImg2ImgPipeline
            pipe = cls(controlnet=units, **common)
        elif txt2img:
            pipe = diffusers.StableDiffusionPipeline(**common)
        else:
            pipe = diffusers.StableDiffusionImg2ImgPipeline(**common)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def refiner_pipeline(refiner: Components, scheduler: Any) -> Any:
    import diffusers

    m = refiner.modules
    pipe = diffusers.StableDiffusionXLImg2ImgPipeline(
        vae=m["vae"], text_encoder=m["text_encoder"], text_encoder_2=m["text_encoder_2"], tokenizer=m["tokenizer"],
        tokenizer_2=m["tokenizer_2"], unet=m["unet"], scheduler=scheduler,
        requires_aesthetics_score=refiner.flags.get("requires_aesthetics_score", True),
        force_zeros_for_empty_prompt=refiner.flags.get("force_zeros_for_empty_prompt", False), add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --- initial latents ---------------------------------------------------------------------------------------


@dataclass
class InitialLatents:
    """What ``prepare_latents`` builds for one batch: the clean latents (encoded init images, handed-in latents, or
    none for txt2img) noised with A1111's noise at the start timestep."""

    images: list[Any]  # PIL images to encode, one per batch element (at the render size, or original for mode 3)
    noise: torch.Tensor  # (B, C, h, w), float32, CPU
    noise_multiplier: float
    vae_seeds: list[int]  # generator seeds for sampling the VAE posterior, one per image
    latent_size: tuple[int, int] | None  # (h, w): resize_mode 3 interpolates the encoded latents to this
    # the schedule index whose noise level the latents get; None = the first executed step's (DDIM/PLMS: the one
    # above it, as A1111 noises to timesteps[t_enc] and steps from timesteps[t_enc - 1])
    noise_index: int | None = None
    latents: torch.Tensor | None = None  # clean latents handed in instead of ``images`` (the hires fix's upscale)
    cut: tuple[int, int] = (0, 0)  # latent cells cut from the clean latents' width and height (the hires fix's)
    noise_only: bool = False  # txt2img with DDIM/PLMS: A1111 starts from the noise itself, not noise at a level
    # what becomes of the encoded latents before they are noised (inpainting: the masked content)
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None


def a1111_noise(seeds: list[int] | tuple[int, ...], shape: tuple[int, int, int]) -> tuple[torch.Tensor, list]:
    """A1111's first noise draw per image (rng.ImageRNG.first, CPU source): a generator per seed, randn(shape).

    Returns the stacked noise and the generators (A1111 keeps drawing from them for ancestral/SDE noise).
    """
    generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    noise = torch.stack([torch.randn(shape, generator=g) for g in generators])
    return noise, generators


def encode_images(pipe: Any, images: list[Any], seeds: list[int], device: Any, dtype: torch.dtype) -> torch.Tensor:
    """VAE-encode PIL images one by one (posterior sampled with a seeded CPU generator), scaled for the UNet."""
    return encode_pixels(pipe.vae, [pipe.image_processor.preprocess(image) for image in images], seeds, device, dtype)


def encode_pixels(vae: Any, pixels: list[torch.Tensor], seeds: list[int], device: Any,
                  dtype: torch.dtype) -> torch.Tensor:
    """VAE-encode images given as (1, 3, H, W) tensors in -1..1, one by one (posterior sampled with a seeded CPU
    generator), scaled for the UNet."""
    upcast = vae.dtype == torch.float16 and vae.config.force_upcast
    if upcast:
        vae.to(dtype=torch.float32)
    try:
        latents = []
        for image, seed in zip(pixels, seeds):
            x = image.to(device=device, dtype=vae.dtype)
            dist = vae.encode(x).latent_dist
            generator = torch.Generator("cpu").manual_seed(int(seed))
            latents.append(dist.sample(generator=generator))
        z = torch.cat(latents).to(dtype)
    finally:
        if upcast:
            vae.to(dtype=torch.float16)
    config = vae.config
    mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    if mean is not None and std is not None:
        mean = torch.tensor(mean).view(1, -1, 1, 1).to(z.device, z.dtype)
        std = torch.tensor(std).view(1, -1, 1, 1).to(z.device, z.dtype)
        return (z - mean) * config.scaling_factor / std
    return z * config.scaling_factor


def cut_latents(latents: torch.Tensor, cut: tuple[int, int]) -> torch.Tensor:
    """A1111's hires truncation: ``cut`` = (cells of width, cells of height), half on each side, the odd one on the
    right and bottom."""
    x, y = cut
    return latents[:, :, y // 2:latents.shape[2] - (y + 1) // 2, x // 2:latents.shape[3] - (x + 1) // 2]


def upscale_latents(latents: torch.Tensor, size: tuple[int, int], mode: str, antialias: bool) -> torch.Tensor:
    """A1111's latent upscale (``sample_hr_pass``): ``F.interpolate`` to ``size`` = (h, w) cells, in float32."""
    up = torch.nn.functional.interpolate(latents.float(), size=size, mode=mode, antialias=antialias)
    return up.to(latents.dtype)


def _start(pipe: Any, init: InitialLatents, clean: torch.Tensor, timestep: Any, device: Any,
           dtype: torch.dtype) -> torch.Tensor:
    """``clean`` noised with the batch's A1111 noise where sampling starts (``timestep``, or ``init.noise_index``)."""
    noise = (init.noise * init.noise_multiplier).to(device=device, dtype=dtype)
    if init.noise_only:
        return noise
    if init.noise_index is not None:
        timestep = pipe.scheduler.timesteps[init.noise_index].repeat(clean.shape[0])
    return pipe.scheduler.add_noise(clean, noise, timestep)


def install_initial_latents(pipe: Any, init: InitialLatents) -> None:
    """Make an img2img ``pipe`` start from ``init`` on its next call (instance attribute; removed by
    ``remove_initial_latents``).

    diffusers' own ``prepare_latents`` samples the VAE and the noise from the one ``generator``; A1111 draws the
    noise first from a per-image generator. The replacement keeps diffusers' timestep and noising (scheduler
    ``add_noise`` at the first executed timestep) and only changes where the numbers come from.
    """

    def prepare_latents(image, timestep, batch_size, num_images_per_prompt, dtype, device, generator=None,
                        add_noise=True):
        if getattr(image, "ndim", 0) == 4 and image.shape[1] == 4 and not add_noise:
            return image  # latents handed over (refiner after the base)
        if init.latents is not None:
            latents = init.latents.to(device=device, dtype=dtype)
        else:
            latents = encode_images(pipe, init.images, init.vae_seeds, device, dtype)
        if init.latent_size is not None and tuple(latents.shape[-2:]) != init.latent_size:
            latents = torch.nn.functional.interpolate(latents, size=init.latent_size, mode="bilinear")
        latents = cut_latents(latents, init.cut)
        if init.transform is not None:
            latents = init.transform(latents)
        if not add_noise:
            return latents
        return _start(pipe, init, latents, timestep, device, dtype)

    pipe.prepare_latents = prepare_latents


def install_noise_latents(pipe: Any, init: InitialLatents) -> None:
    """Make a txt2img ``pipe`` start from ``init``'s A1111 noise alone: at the schedule's first noise level (k-diffusion
    samplers: noise times sigma_max, as A1111's ``x * sigmas[0]``), or the noise itself (DDIM, PLMS)."""

    def prepare_latents(batch_size, num_channels_latents, height, width, dtype, device, generator, latents=None):
        clean = torch.zeros(init.noise.shape, device=device, dtype=dtype)
        return _start(pipe, init, clean, pipe.scheduler.timesteps[:1].repeat(clean.shape[0]), device, dtype)

    pipe.prepare_latents = prepare_latents


def remove_initial_latents(pipe: Any) -> None:
    pipe.__dict__.pop("prepare_latents", None)


def step_counter(stop_at: int | None, first: int, seen: list[int], on_index: Callable[[int], None]) -> Callable:
    """A ``callback_on_step_end`` that records executed schedule indices, tells ``on_index`` (which may raise to
    abort the job), and ends the pipeline's loop at ``stop_at``."""

    def callback(pipe: Any, i: int, t: Any, kwargs: dict) -> dict:
        index = first + i
        seen.append(index)
        on_index(index)
        if stop_at is not None and index + 1 >= stop_at:
            pipe._interrupt = True
        return kwargs

    return callback
