"""Settings of the online item bank and of multi-fidelity racing (pydantic; YAML round trip through the run
config). Light module: no numpy / scipy / torch import, so config validation stays cheap."""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator


class OnlineBankConfig(BaseModel):
    """The bank a search fits from its own answers (``fitness.bank: online``).

    ``pool_per_task`` items per task are drawn once (seeded) from the search split; the base and the parents
    answer all of them (the seed rows), every candidate answers a part of them chosen adaptively, and the 2PL
    model (``dim`` dimensions) is refitted from the whole sparse response matrix (missing answers masked)
    at every generation (generational schedule) or every ``refit_every`` results (steady state; 0: the
    population size). A candidate's estimate is its predicted accuracy on the pool. ``start_from``: a kept
    bank folder (same tasks) whose items become the pool and whose rows seed the fit (the bank grows)."""

    model_config = ConfigDict(extra="forbid")

    pool_per_task: int = Field(100, ge=2,
                               description="items per task drawn once from the search split (the bank's pool)")
    dim: int = Field(0, ge=0, description="IRT dimensions; 0: one per task (at most 5)")
    refit_every: int = Field(0, ge=0,
                             description="steady state: refit the bank every this many results (0: the population)")
    start_from: Optional[str] = Field(None, description="a kept bank folder whose items and rows seed this one")
    max_rows: int = Field(400, ge=8, description="most recent candidate rows kept in a refit (seed rows always)")


class FidelityConfig(BaseModel):
    """Multi-fidelity racing (``fitness.fidelity``), with the online bank.

    A candidate answers ``levels[0]`` items per task, then up to ``levels[k]`` (cumulative) only while
    ``estimate + z * std_error >= threshold``, where the threshold is the ``top_k``-th best value the search
    has told so far (seed models' pool accuracies included); one that passes the last level answers the
    whole pool (``full_pool``), so the best candidates are scored on the pool exactly (no IRT shrinkage).
    The optimizer is told the estimate at the fidelity reached. The default (``levels: [8, 20, 40], top_k:
    3, z: 1``, picked on one seed of the zoo demo) found better merges over 5 seeds on both zoos (docs/benchmarks.md,
    ``benchmarks/irt_search.py``) than ``levels: [20], top_k: 1, z: 0`` (no racing: 20 adaptive items per
    task, the whole pool only for a candidate that beats the best so far), whose winners were often lucky
    early pool scores that later candidates' shrunk estimates could not reach. ``full_pool: false`` (every
    value an IRT estimate) was not better over 5 seeds with a 200-item pool, and worse in one: estimates told
    under banks of different ages are not comparable, exact pool scores are."""

    model_config = ConfigDict(extra="forbid")

    levels: list[int] = Field(default_factory=lambda: [8, 20, 40],
                              description="cumulative items per task at each racing level")
    top_k: int = Field(3, ge=1, description="race against the top_k-th best value told so far")
    z: float = Field(1.0, ge=0, description="a candidate goes on while estimate + z * std_error reaches the threshold")
    full_pool: bool = Field(True, description="one that passes the last level answers the whole pool (exact score)")

    @field_validator("levels")
    @classmethod
    def _levels(cls, v):
        if not v or any(x < 1 for x in v) or any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"levels must be increasing item counts >= 1, got {v}")
        return v
