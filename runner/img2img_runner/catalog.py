"""The model catalog: A1111 model names -> where the weights are and what they are (pure; no torch).

A catalog is a YAML (or JSON) file, usually mounted from a ConfigMap (``IMG2IMG_CATALOG``)::

    version: 1
    default_checkpoint: sd_xl_base_1.0     # used when the request names no sd_model_checkpoint
    models:
      sd_xl_base_1.0:
        architecture: sdxl                 # sd15 | sdxl | sdxl-refiner | controlnet-sd15 | controlnet-sdxl | vae |
                                           # annotator | lora-sd15 | lora-sdxl
        source: {path: /models/sdxl-base}  # a diffusers folder (relative paths: to the catalog file)
        hash: 31e35c80fc                   # "Model hash" in info/infotext (A1111: sha256 of the file, 10 hex)
      sd_xl_refiner_1.0:
        architecture: sdxl-refiner
        source: {file: /models/sd_xl_refiner_1.0.safetensors, config: /models/configs/sdxl-refiner}
      sdxl_vae.safetensors:
        architecture: vae
        source: {hub: madebyollin/sdxl-vae-fp16-fix}   # hub id, read from the local cache (offline: local only)
        fp16_fix: true                     # safe to run in fp16 (no upcast)
      diffusers_xl_canny_mid:
        architecture: controlnet-sdxl
        source: {s3: s3://models/controlnet/xl-canny-mid/}  # synced to a local cache folder once
      control_v11p_sd15_canny:
        architecture: controlnet-sd15
        source: {path: /models/control_v11p_sd15_canny}
        substitutes: {sdxl: diffusers_xl_canny_mid}  # under an SDXL checkpoint, run this instead (said in info)
      lllyasviel/Annotators:
        architecture: annotator            # ControlNet preprocessor weights: a folder (path, s3, hub) with the
        source: {path: /models/annotators} # lllyasviel/Annotators files (body_pose_model.pth, sk_model.pth, …)
        modules: [openpose, lineart]       # optional: the preprocessors it serves (none listed: all)
      add_detail:                          # <lora:add_detail:0.8> in a prompt
        architecture: lora-sd15            # a LoRA for SD 1.5 checkpoints (lora-sdxl: for SDXL ones)
        source: {file: /models/loras/add_detail.safetensors}  # kohya/A1111 or diffusers format; a folder source
                                           # (path, hub, s3) holds one .safetensors file
        hash: 0123456789ab                 # "Lora hashes" (A1111: 12 hex of the file's addnet hash; else computed)

Names are looked up as A1111 does: exact, then without a ``[hash]`` suffix, then with/without a weights extension
(``.safetensors``, ``.ckpt``, ``.pt``, ``.pth``, ``.bin``), then case-insensitively, then by ``aliases``.
A name that is not there, or a combination that cannot run (an SD 1.5 ControlNet under SDXL without a substitute,
an SD 1.5 LoRA under an SDXL checkpoint), raises ModelError naming the models involved: the runner exits with
ExitCode.MODEL, before it loads anything.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from img2img import split_s3_uri
from img2img.api.controlnet import WEIGHTED_PREPROCESSORS, Preprocessor, find_preprocessor
from img2img.api.errors import FieldError
from img2img.api.needs import annotator_preprocessor

ARCHITECTURES = ("sd15", "sdxl", "sdxl-refiner", "controlnet-sd15", "controlnet-sdxl", "vae", "annotator",
                 "lora-sd15", "lora-sdxl")
CHECKPOINTS = ("sd15", "sdxl")
CONTROLNET_FOR = {"sd15": "controlnet-sd15", "sdxl": "controlnet-sdxl"}
LORA_FOR = {"sd15": "lora-sd15", "sdxl": "lora-sdxl"}
LORA_HASH_LENGTH = 12  # A1111's "Lora hashes" shorthash; checkpoints and VAEs show 10 hex
# a refiner continues a base's latents: it must share the latent space (SDXL VAE) and take the same sampler state
REFINERS_FOR = {"sdxl": ("sdxl-refiner", "sdxl")}
# the family a VAE belongs to is not in the weights' shape (SD and SDXL VAEs are the same network): optional field
_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
_HASH_SUFFIX = re.compile(r"\s*\[[0-9a-fA-F]{8,64}\]\s*$")


class ModelError(FieldError):
    """An unknown model, or models that cannot run together (exit code MODEL, not BAD_INPUT). ``field`` is the
    payload key that named them; "model" when no one key did."""


class CatalogError(ValueError):
    """The catalog file itself is wrong (a deployment problem, not the job's)."""


@dataclass(frozen=True)
class Source:
    kind: str  # "path" | "file" | "hub" | "s3"
    location: str  # folder, file, hub repo id, or s3://bucket/prefix/
    config: str | None = None  # diffusers config folder for a single file (offline from_single_file)
    subfolder: str | None = None
    revision: str | None = None
    variant: str | None = None  # "fp16" weights variant of a hub/s3 folder

    def describe(self) -> str:
        return f"{self.kind}:{self.location}"


@dataclass(frozen=True)
class Entry:
    name: str  # the catalog key, as A1111 names the model
    architecture: str
    source: Source | None  # None: the entry only maps to substitutes
    hash: str | None = None
    fp16_fix: bool = False
    substitutes: dict[str, str] = field(default_factory=dict)  # checkpoint architecture -> entry name
    modules: tuple[str, ...] = ()  # annotator: the ControlNet preprocessors it serves (empty = any)
    aliases: tuple[str, ...] = ()

    @property
    def stem(self) -> str:
        """A1111's model name: the file name without extension (``sd_model_name``)."""
        return _strip_extension(self.name)

    @property
    def short_title(self) -> str:
        """A1111's ``name [hash]`` (``CheckpointInfo.short_title``), or the name when no hash is known."""
        return f"{self.stem} [{self.hash}]" if self.hash else self.stem


@dataclass(frozen=True)
class Catalog:
    entries: dict[str, Entry]
    default_checkpoint: str | None = None
    base_dir: Path = Path(".")
    cache_dir: Path = Path("/tmp/img2img-models")  # where hub downloads and s3 syncs land

    # --- loading ---------------------------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> "Catalog":
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise CatalogError(f"cannot read the model catalog {path}: {exc}") from None
        except yaml.YAMLError as exc:
            raise CatalogError(f"the model catalog {path} is not valid YAML: {exc}") from None
        return cls.from_dict(data, base_dir=path.parent, cache_dir=cache_dir)

    @classmethod
    def from_dict(cls, data: Any, *, base_dir: str | os.PathLike = ".",
                  cache_dir: str | os.PathLike | None = None) -> "Catalog":
        if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
            raise CatalogError("a model catalog needs a 'models' mapping")
        base = Path(base_dir)
        entries = {str(name): _entry(str(name), spec, base) for name, spec in data["models"].items()}
        for entry in entries.values():
            for arch, target in entry.substitutes.items():
                if arch not in CHECKPOINTS:
                    raise CatalogError(f"model {entry.name!r}: substitutes key {arch!r} is not a checkpoint "
                                       f"architecture ({', '.join(CHECKPOINTS)})")
                if target not in entries:
                    raise CatalogError(f"model {entry.name!r}: substitute {target!r} is not in the catalog")
        default = data.get("default_checkpoint")
        if default is not None and default not in entries:
            raise CatalogError(f"default_checkpoint {default!r} is not in the catalog")
        cache = Path(cache_dir or os.environ.get("IMG2IMG_MODEL_CACHE") or data.get("cache_dir")
                     or "/tmp/img2img-models")
        return cls(entries=entries, default_checkpoint=default, base_dir=base, cache_dir=cache)

    # --- lookup ----------------------------------------------------------------------------------------------

    def find(self, name: str) -> Entry | None:
        """The entry A1111 would pick for ``name`` ("sd_xl_base_1.0 [31e35c80fc]", "x.safetensors", "X"); for
        ``annotator:<preprocessor>`` the annotator entry serving that preprocessor."""
        module = annotator_preprocessor(name)
        if module is not None:
            preprocessor = find_preprocessor(module)
            return self.annotator(preprocessor.name) if preprocessor is not None else None
        for candidate in _name_variants(name):
            if candidate in self.entries:
                return self.entries[candidate]
        lowered = {k.lower(): e for k, e in self.entries.items()}
        for candidate in _name_variants(name):
            if candidate.lower() in lowered:
                return lowered[candidate.lower()]
        for entry in self.entries.values():
            if any(v in entry.aliases for v in _name_variants(name)):
                return entry
        return None

    def servable(self, held: Iterable[str]) -> list[str]:
        """The names a runner holding the entries ``held`` serves without loading anything: those entries, their
        aliases, the entries that run as one of them under a held checkpoint (substitutes: the SD 1.5 canny
        ControlNet of RunPod's example, run as the SDXL one under an SDXL checkpoint), and the preprocessors whose
        detectors the runner holds (``annotator:<preprocessor>``, ``ModelCache.held``). What a runner reports when it
        asks for work, so that the operator's routing (``img2img.api.needs.model_key``) sees a job naming any of
        these as warm."""
        held = list(held)
        entries = [self.entries[name] for name in held if name in self.entries]
        names = {e.name for e in entries}
        architectures = {e.architecture for e in entries if e.architecture in CHECKPOINTS}
        served = set(names) | {alias for e in entries for alias in e.aliases}
        served |= {e.name for e in self.entries.values()
                   if any(e.substitutes.get(arch) in names for arch in architectures)}
        served |= {name for name in held if annotator_preprocessor(name) is not None and self.find(name) is not None}
        return sorted(served)

    def get(self, name: str, *, field: str, kinds: Iterable[str], what: str) -> Entry:
        entry = self.find(name)
        kinds = tuple(kinds)
        if entry is None:
            known = ", ".join(sorted(e.name for e in self.entries.values() if e.architecture in kinds)) or "none"
            raise ModelError(field, f"unknown {what} {name!r}; the model catalog has: {known}")
        if entry.architecture not in kinds:
            raise ModelError(field, f"{name!r} is a {entry.architecture} model, not a {what} "
                                    f"({' or '.join(kinds)})")
        return entry

    def annotator(self, module: str) -> Entry | None:
        """The annotator entry serving a ControlNet preprocessor: one listing the module, else one listing none."""
        found = [e for e in self.entries.values() if e.architecture == "annotator"]
        for entry in found:
            if module in entry.modules:
                return entry
        return next((e for e in found if not e.modules), None)

    def resolve_payload(self, payload: Any) -> "Resolved":
        """``resolve`` for a payload (img2img's or txt2img's): its checkpoint, VAE, refiner, enabled units'
        ControlNets and annotator weights, LoRAs. Raises ModelError."""
        annotators = {i: u.preprocessor for i, u in enumerate(payload.controlnet_units)
                      if u.enabled and u.preprocessor.annotator_files}
        enabled = [i for i, u in enumerate(payload.controlnet_units) if u.enabled]
        return self.resolve(checkpoint=payload.checkpoint, vae=payload.vae, refiner=payload.refiner,
                            controlnets=[u.model_name for u in payload.enabled_controlnet_units],
                            loras=[t.name for t in payload.loras], annotators=annotators, unit_positions=enabled)

    def resolve(self, *, checkpoint: str | None, vae: str | None, refiner: str | None,
                controlnets: list[str | None], loras: list[str] = (),
                annotators: dict[int, Preprocessor] | None = None,
                unit_positions: list[int] | None = None) -> "Resolved":
        """Which models a job runs: the checkpoint, its VAE, its refiner, one ControlNet per enabled unit, the
        prompt's LoRAs, the annotator weights of the units' preprocessors.

        ``controlnets`` are the units' model names (None = the unit names no model); ``loras`` the names of the
        prompt's LoRA tags; ``annotators`` the preprocessors that need annotator weights, by the unit's position
        in ``alwayson_scripts.controlnet.args``; ``unit_positions`` each enabled unit's position there (a refusal
        names the unit as sent: disabled units before it count). Raises ModelError.
        """
        if checkpoint is None:
            if self.default_checkpoint is None:
                raise ModelError("override_settings.sd_model_checkpoint",
                                 "the request names no checkpoint and the model catalog has no default_checkpoint")
            checkpoint = self.default_checkpoint
        base = self.get(checkpoint, field="override_settings.sd_model_checkpoint", kinds=CHECKPOINTS,
                        what="checkpoint")
        base_arch = base.architecture

        vae_entry = None
        if vae is not None and vae not in ("Automatic", "None", "auto", ""):
            vae_entry = self.get(vae, field="override_settings.sd_vae", kinds=("vae",), what="VAE")

        refiner_entry = None
        if refiner is not None:
            refiner_entry = self.get(refiner, field="refiner_checkpoint",
                                     kinds=("sdxl-refiner", "sdxl", "sd15"), what="refiner checkpoint")
            if refiner_entry.architecture not in REFINERS_FOR.get(base_arch, ()):
                raise ModelError("refiner_checkpoint",
                                 f"refiner {refiner!r} ({refiner_entry.architecture}) cannot refine checkpoint "
                                 f"{base.name!r} ({base_arch}): a refiner needs an SDXL checkpoint and an SDXL "
                                 "refiner or base model")

        units: list[ResolvedControlNet | None] = []
        wanted = CONTROLNET_FOR[base_arch]
        for index, name in enumerate(controlnets):
            if name is None:
                units.append(None)
                continue
            position = unit_positions[index] if unit_positions is not None else index
            field_ = f"alwayson_scripts.controlnet.args[{position}].model"
            requested = self.get(name, field=field_, kinds=("controlnet-sd15", "controlnet-sdxl"),
                                 what="ControlNet model")
            runs = requested
            if requested.architecture != wanted or requested.source is None:
                target = requested.substitutes.get(base_arch)
                if target is None:
                    if requested.architecture != wanted:
                        raise ModelError(field_, f"ControlNet model {name!r} ({requested.architecture}) cannot be "
                                                 f"used with checkpoint {base.name!r} ({base_arch}); it needs a "
                                                 f"{wanted} model, or a catalog entry mapping {requested.name!r} "
                                                 f"to one under {base_arch} (substitutes)")
                    raise ModelError(field_, f"ControlNet model {name!r} has no weights in the model catalog "
                                             f"(no source) and no substitute for {base_arch}")
                runs = self.entries[target]
                if runs.architecture != wanted or runs.source is None:
                    raise CatalogError(f"model {requested.name!r}: its substitute {target!r} for {base_arch} is a "
                                       f"{runs.architecture} model; it must be a {wanted} model with a source")
            units.append(ResolvedControlNet(requested=requested, runs=runs))

        lora_entries: list[Entry] = []
        if loras and refiner_entry not in (None, base) and refiner_entry.architecture != "sdxl-refiner":
            raise ModelError("refiner_checkpoint", f"LoRAs with a base checkpoint as the refiner ({refiner!r}) are "
                                                   "not supported (A1111 would apply them to it too); use an SDXL "
                                                   "refiner or no refiner")
        for name in loras:
            entry = self.get(name, field="prompt", kinds=tuple(LORA_FOR.values()), what="LoRA")
            if entry.architecture != LORA_FOR[base_arch]:
                raise ModelError("prompt", f"LoRA {name!r} ({entry.architecture}) cannot be used with checkpoint "
                                           f"{base.name!r} ({base_arch}); it needs a {LORA_FOR[base_arch]} LoRA")
            if entry in lora_entries:
                raise ModelError("prompt", f"LoRA {entry.name!r} is named twice (A1111 would apply it twice); "
                                           "name it once, with the weight you want")
            lora_entries.append(entry)
        return Resolved(checkpoint=base, vae=vae_entry, refiner=refiner_entry, controlnets=units,
                        loras=tuple(lora_entries),
                        annotators={i: self._annotator_for(i, pre) for i, pre in (annotators or {}).items()})

    def _annotator_for(self, request_index: int, preprocessor: Preprocessor) -> Entry:
        entry = self.annotator(preprocessor.name)
        if entry is None:
            raise ModelError(f"alwayson_scripts.controlnet.args[{request_index}].module",
                             f"preprocessor {preprocessor.name!r} needs annotator weights "
                             f"({', '.join(preprocessor.annotator_files)}, from lllyasviel/Annotators) and the model "
                             "catalog has no entry for them: add one with architecture 'annotator' and a source "
                             "holding these files (listing the preprocessor in its modules, or no modules)")
        return entry

    # --- where the weights are -------------------------------------------------------------------------------

    def local_path(self, source: Source) -> Path:
        """The local folder/file of a path/file source (relative to the catalog); the cache folder of s3/hub."""
        if source.kind in ("path", "file"):
            p = Path(source.location)
            return p if p.is_absolute() else (self.base_dir / p)
        if source.kind == "s3":
            bucket, prefix = split_s3_uri(source.location, need_key=False)
            return self.cache_dir / "s3" / bucket / prefix.strip("/")
        return self.cache_dir / "hub"

    def config_path(self, source: Source) -> Path | None:
        if source.config is None:
            return None
        p = Path(source.config)
        return p if p.is_absolute() else (self.base_dir / p)


@dataclass(frozen=True)
class ResolvedControlNet:
    requested: Entry  # what the unit named (shown in infotext as sent)
    runs: Entry  # what runs: the same entry, or its catalog substitute

    @property
    def substituted(self) -> bool:
        return self.runs is not self.requested


@dataclass(frozen=True)
class Resolved:
    checkpoint: Entry
    vae: Entry | None
    refiner: Entry | None
    controlnets: list[ResolvedControlNet | None]
    loras: tuple[Entry, ...] = ()  # in the order of the prompt's LoRA tags
    annotators: dict[int, Entry] = field(default_factory=dict)  # unit position in the request -> its weights

    @property
    def architecture(self) -> str:
        return self.checkpoint.architecture


# --- parsing -------------------------------------------------------------------------------------------------


def _entry(name: str, spec: Any, base: Path) -> Entry:
    if not isinstance(spec, dict):
        raise CatalogError(f"model {name!r}: expected a mapping, got {type(spec).__name__}")
    arch = spec.get("architecture")
    if arch not in ARCHITECTURES:
        raise CatalogError(f"model {name!r}: architecture {arch!r} is not one of {', '.join(ARCHITECTURES)}")
    source = _source(name, spec.get("source")) if spec.get("source") is not None else None
    if arch == "annotator" and (source is None or source.kind == "file"):
        raise CatalogError(f"model {name!r}: an annotator entry's source is a folder holding the lllyasviel/"
                           "Annotators files (path, s3 or hub)")
    modules = [find_preprocessor(str(m)) for m in spec.get("modules") or ()]
    unknown = [str(m) for m, p in zip(spec.get("modules") or (), modules) if p is None or not p.annotator_files]
    if unknown:
        raise CatalogError(f"model {name!r}: modules {unknown} are not preprocessors that need annotator weights "
                           f"({', '.join(WEIGHTED_PREPROCESSORS)})")
    substitutes = spec.get("substitutes") or {}
    if not isinstance(substitutes, dict):
        raise CatalogError(f"model {name!r}: substitutes must map a checkpoint architecture to a model name")
    if source is None and not substitutes:
        raise CatalogError(f"model {name!r}: needs a source (or substitutes)")
    hash_ = spec.get("hash")
    if hash_ is not None:
        hash_ = str(hash_)
        if not re.fullmatch(r"[0-9a-fA-F]{8,64}", hash_):
            raise CatalogError(f"model {name!r}: hash {hash_!r} is not hexadecimal")
        hash_ = hash_[:LORA_HASH_LENGTH if arch in LORA_FOR.values() else 10].lower()
    aliases = spec.get("aliases") or ()
    return Entry(name=name, architecture=arch, source=source, hash=hash_, fp16_fix=bool(spec.get("fp16_fix", False)),
                 substitutes={str(k): str(v) for k, v in substitutes.items()},
                 modules=tuple(p.name for p in modules), aliases=tuple(str(a) for a in aliases))


def _source(name: str, spec: Any) -> Source:
    if isinstance(spec, str):  # shorthand: s3://…, hub:repo/id, *.safetensors, else a folder
        if spec.startswith("s3://"):
            spec = {"s3": spec}
        elif spec.startswith("hub:"):
            spec = {"hub": spec[4:]}
        elif spec.endswith(_EXTENSIONS):
            spec = {"file": spec}
        else:
            spec = {"path": spec}
    if not isinstance(spec, dict):
        raise CatalogError(f"model {name!r}: source must be a mapping or a string")
    kinds = [k for k in ("path", "file", "hub", "s3") if spec.get(k)]
    if len(kinds) != 1:
        raise CatalogError(f"model {name!r}: source needs exactly one of path, file, hub, s3 (got {kinds or 'none'})")
    kind = kinds[0]
    location = str(spec[kind])
    if kind == "s3" and not location.startswith("s3://"):
        raise CatalogError(f"model {name!r}: an s3 source is an s3://bucket/prefix/ URI")
    extra = set(spec) - {"path", "file", "hub", "s3", "config", "subfolder", "revision", "variant"}
    if extra:
        raise CatalogError(f"model {name!r}: unknown source keys {sorted(extra)}")
    return Source(kind=kind, location=location, config=spec.get("config"), subfolder=spec.get("subfolder"),
                  revision=spec.get("revision"), variant=spec.get("variant"))


def _strip_extension(name: str) -> str:
    for ext in _EXTENSIONS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def _name_variants(name: str) -> list[str]:
    """A1111's ways of naming one model: as sent, without " [hash]", without/with a weights extension, basename."""
    name = name.strip()
    bare = _HASH_SUFFIX.sub("", name)
    variants = [name, bare, _strip_extension(bare)]
    variants += [_strip_extension(bare) + ext for ext in _EXTENSIONS]
    base = bare.replace("\\", "/").rsplit("/", 1)[-1]  # "SDXL/sd_xl_base_1.0.safetensors" (A1111 subfolders)
    variants += [base, _strip_extension(base)]
    return list(dict.fromkeys(v for v in variants if v))
