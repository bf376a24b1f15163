"""The tracker interface: something outside the run directory that watches a search (W&B, MLflow, ...).

A tracker is told, in order: ``start(records)`` once (the ledger so far: a resumed run's backlog), then
``candidate(record)`` for each ledger record as it lands, then ``finish(summary)`` when the search is done, and
``close(status)`` last (always, also when the search failed or was interrupted). It runs in a thread of its own
(:mod:`evomerge.tracking.dispatch`): a tracker that is slow or raises never slows or stops the search.

Writing one::

    @TRACKERS.register("mytracker")
    class MyTracker(Tracker):
        class Options(BaseModel): ...      # typed options, extra keys refused
        requires = ("mypackage",)          # import names checked before any compute

        def candidate(self, record): ...

``self.state`` is a JSON mapping the dispatcher keeps in ``RUN_DIR/tracking/NAME.json`` after each call (a
remote run id, so a resumed search logs into the same run); ``state["logged_through"]`` is the last eval_id
this tracker logged, and :meth:`Tracker.unlogged` gives the records after it.
"""

from __future__ import annotations

import importlib.util
from abc import ABC
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

from pydantic import BaseModel, ConfigDict, ValidationError

from evomerge.errors import ConfigError
from evomerge.registry import Registry

TRACKERS: Registry = Registry(
    "tracker",
    entry_point_group="evomerge.trackers",
    modules=["evomerge.tracking.wandb_tracker", "evomerge.tracking.mlflow_tracker"],
)

#: what a record keeps when it is handed to a tracker (per-item answers stay in the ledger)
LEAN_DROP = ("item_results",)


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class TrackedRun:
    """What every tracker knows of the run it watches."""

    name: str
    run_dir: Path
    config: dict[str, Any]  # the run's config as JSON
    objectives: list[str]
    directions: list[str]
    params: list[str]  # the search space's parameter names, in order
    resumed: bool = False


@dataclass
class RunSummary:
    """The end of a search: the winner, the Pareto front, progress per generation and the plots' paths."""

    winner: Optional[dict[str, Any]]
    front: list[dict[str, Any]]
    per_generation: list[dict[str, Any]]
    test_scores: dict[int, dict[str, float]]
    plots: list[Path] = field(default_factory=list)


class Tracker(ABC):
    """A watcher of the search; every method has a do-nothing default."""

    Options: ClassVar[type[BaseModel]] = NoOptions
    #: import names the tracker needs (checked by :func:`check_trackers` before any compute)
    requires: ClassVar[tuple[str, ...]] = ()
    #: the ``pip install`` extra that brings them
    extra: ClassVar[str] = ""

    def __init__(self, run: TrackedRun, options: BaseModel, state: dict[str, Any]):
        self.run = run
        self.options = options
        self.state = state

    def start(self, records: list[dict[str, Any]]) -> None:
        """Open (or reopen on resume) and log the records not logged yet (default: one ``candidate`` each)."""
        for rec in self.unlogged(records):
            self.candidate(rec)

    def candidate(self, record: dict[str, Any]) -> None:
        """One evaluated candidate (a ledger record without its per-item answers)."""

    def finish(self, summary: RunSummary) -> None:
        """The search is done: log the winner, the front and the plots."""

    def close(self, status: str) -> None:
        """Last call: ``status`` is finished, failed or interrupted."""

    def unlogged(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        last = self.state.get("logged_through", -1)
        return [r for r in records if r["eval_id"] > last]


def lean(record: dict[str, Any]) -> dict[str, Any]:
    """A ledger record as trackers get it."""
    return {k: v for k, v in record.items() if k not in LEAN_DROP}


def scalars(record: dict[str, Any], objectives: list[str]) -> dict[str, float]:
    """A candidate's numbers by flat name: ``objective/NAME``, ``metric/NAME``, ``timing/NAME``,
    ``fidelity/NAME``, ``eval_id``, ``gen`` (failed candidates: no objective values)."""
    out: dict[str, float] = {"eval_id": record["eval_id"], "gen": record["gen"],
                             "failed": float(record["status"] != "ok")}
    if record["status"] == "ok":
        out.update({f"objective/{m}": float(v) for m, v in zip(objectives, record["values"])})
    for group, key in (("metric", "metrics"), ("timing", "timings"), ("fidelity", "fidelity")):
        for k, v in (record.get(key) or {}).items():
            if isinstance(v, (int, float)):  # bools too (``fidelity/stopped``)
                out[f"{group}/{k}"] = float(v)
    return out


def tracker_options(name: str, options: dict[str, Any]) -> BaseModel:
    cls = TRACKERS.get(name)
    try:
        return cls.Options.model_validate(options or {})
    except ValidationError as exc:
        from evomerge.recipe import _one_line

        raise ConfigError(f"invalid options for tracker {name}: {_one_line(exc)}") from None


def check_trackers(specs) -> None:
    """Every tracker named exists, takes its options and has its packages installed (one ConfigError line)."""
    for spec in specs:
        cls = TRACKERS.get(spec.name)
        tracker_options(spec.name, spec.options)
        missing = [m for m in cls.requires if importlib.util.find_spec(m) is None]
        if missing:
            extra = f" (pip install 'evomerge[{cls.extra}]')" if cls.extra else ""
            raise ConfigError(f"tracker {spec.name} needs the {', '.join(missing)} package{extra}")
