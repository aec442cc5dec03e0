"""Which job a runner asking for work gets (POOLS.md, "Take"). Pure.

Among the admitted jobs of the runner's GPU class, in queue order:

1. the first whose models the runner holds (warm: nothing to load);
2. else the first whose models no other idle runner of the class holds (this runner loads what is missing; a job
   another idle runner could start warm is left to that runner);
3. else nothing: the runner keeps waiting, and the warm runners take their jobs.

Models are compared by ``img2img.api.needs.model_key``: a job's models come from ``required_models``, a runner's
are the names it reports in its take (catalog names, aliases, substitutes it can serve).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from img2img.api.needs import model_key


@dataclass(frozen=True)
class Candidate:
    """An admitted job waiting for a runner: its uid and the keys of the models it needs (``required_models``)."""

    uid: str
    models: frozenset[str]


def held(runner_models: Iterable[str]) -> frozenset[str]:
    """The keys of the models a runner reports; an assignment is warm when ``job.models <= held(...)``."""
    return frozenset(model_key(name) for name in runner_models)


def pick_job(runner_models: Iterable[str], candidates: Sequence[Candidate],
             idle_runner_models: Sequence[Iterable[str]]) -> str | None:
    """The uid of the job for this runner, or None. ``candidates`` in queue order; ``idle_runner_models``: the
    models of the other idle runners of the same GPU class."""
    mine = held(runner_models)
    for job in candidates:
        if job.models <= mine:
            return job.uid
    others = [held(models) for models in idle_runner_models]
    for job in candidates:
        if not any(job.models <= theirs for theirs in others):
            return job.uid
    return None
