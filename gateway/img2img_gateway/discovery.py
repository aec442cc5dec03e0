"""A1111's read-only calls through the RunPod envelope (``"api": {"method": "GET", "endpoint": …}``), answered
from the model catalog and the names the product knows, in A1111's shapes, without a GPU or a job (pure).

Such a request completes at once: ``/run`` and ``/runsync`` answer COMPLETED with the A1111 JSON as ``output``,
under an id that names the call (``a1111-sdapi-v1-sd-models``), so that ``/status/{id}`` answers it again.

- ``sd-models``: the catalog's checkpoints and refiners (``title`` is A1111's ``name [hash]``);
- ``sd-vae``: its VAEs; ``loras``: its LoRAs (the names ``<lora:NAME:…>`` takes; path and metadata are the files',
  which the gateway does not read: the catalog name and ``{}``);
- ``samplers`` / ``schedulers``: A1111's, less those the runner refuses (``img2img.api.samplers``);
- ``controlnet/model_list``: its ControlNets; ``controlnet/module_list``: the preprocessors A1111's ControlNet
  extension names;
- ``options``: the checkpoint a request without ``sd_model_checkpoint`` runs, and the VAE setting.
"""

from __future__ import annotations

from typing import Any, Callable

from img2img.api.controlnet import PREPROCESSORS
from img2img.api.samplers import SAMPLERS, SCHEDULERS, scheduler_spec, supported_pairs
from img2img_runner.catalog import LORA_FOR, Catalog

ID_PREFIX = "a1111-"
CHECKPOINTS = ("sd15", "sdxl", "sdxl-refiner")
CONTROLNETS = ("controlnet-sd15", "controlnet-sdxl")
LORAS = tuple(LORA_FOR.values())


def _entries(catalog: Catalog | None, architectures: tuple[str, ...]) -> list:
    return [e for e in (catalog.entries.values() if catalog else ()) if e.architecture in architectures]


def sd_models(catalog: Catalog | None) -> list[dict[str, Any]]:
    return [{"title": e.short_title, "model_name": e.stem, "hash": e.hash, "sha256": None, "filename": e.name,
             "config": None} for e in _entries(catalog, CHECKPOINTS)]


def sd_vae(catalog: Catalog | None) -> list[dict[str, Any]]:
    return [{"model_name": e.name, "filename": e.name} for e in _entries(catalog, ("vae",))]


def samplers(catalog: Catalog | None) -> list[dict[str, Any]]:
    runnable = {sampler for sampler, _ in supported_pairs()}
    return [{"name": s.name, "aliases": list(s.aliases), "options": {}} for s in SAMPLERS if s.name in runnable]


def schedulers(catalog: Catalog | None) -> list[dict[str, Any]]:
    # DDIM, PLMS and UniPC ignore the schedule type: a schedule counts when a sampler that uses it runs it
    runnable = {schedule for sampler, schedule in supported_pairs()
                if not scheduler_spec(sampler, schedule).timestep_sampler}
    return [{"name": s.name, "label": s.label, "aliases": list(s.aliases) or None, "default_rho": -1,
             "need_inner_model": False} for s in SCHEDULERS if s.label in runnable]


def loras(catalog: Catalog | None) -> list[dict[str, Any]]:
    return [{"name": e.stem, "alias": e.stem, "path": e.name, "metadata": {}} for e in _entries(catalog, LORAS)]


def controlnet_models(catalog: Catalog | None) -> dict[str, Any]:
    return {"model_list": [e.short_title for e in _entries(catalog, CONTROLNETS)]}


def controlnet_modules(catalog: Catalog | None) -> dict[str, Any]:
    return {"module_list": [p.name for p in PREPROCESSORS]}


def options(catalog: Catalog | None) -> dict[str, Any]:
    checkpoints = _entries(catalog, ("sd15", "sdxl"))
    default = catalog.entries.get(catalog.default_checkpoint or "") if catalog else None
    default = default or (checkpoints[0] if checkpoints else None)
    return {"sd_model_checkpoint": default.short_title if default else None,
            "sd_checkpoint_hash": default.hash if default else None, "sd_vae": "Automatic"}


CALLS: dict[str, Callable[[Catalog | None], Any]] = {
    "/sdapi/v1/sd-models": sd_models,
    "/sdapi/v1/sd-vae": sd_vae,
    "/sdapi/v1/samplers": samplers,
    "/sdapi/v1/schedulers": schedulers,
    "/sdapi/v1/loras": loras,
    "/controlnet/model_list": controlnet_models,
    "/controlnet/module_list": controlnet_modules,
    "/sdapi/v1/options": options,
}


def call_id(endpoint: str) -> str:
    return ID_PREFIX + endpoint.strip("/").replace("/", "-")


_BY_ID = {call_id(endpoint): endpoint for endpoint in CALLS}


def endpoint_of_id(job_id: str) -> str | None:
    """The A1111 call an id names, None for a job's id."""
    return _BY_ID.get(job_id)


def refusal(endpoint: str) -> str | None:
    """Why a GET endpoint is not answered, None when it is."""
    if endpoint in CALLS:
        return None
    return f"GET {endpoint} is not supported; supported GET endpoints: {', '.join(CALLS)}"


def answer(endpoint: str, catalog: Catalog | None) -> dict[str, Any]:
    """The RunPod answer of a finished job whose output is A1111's answer to the call."""
    return {"id": call_id(endpoint), "status": "COMPLETED", "delayTime": 0, "executionTime": 0,
            "output": CALLS[endpoint](catalog)}
