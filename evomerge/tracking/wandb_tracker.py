"""Weights & Biases tracker (``tracking: [wandb]``): one W&B run per search.

Each candidate is one history step (``step = eval_id``): its objective values, metrics, timings, fidelity and
search parameters (``param/NAME``). At the end the summary holds the winner's values, a ``pareto_front`` table and
the run's plots. The run id is kept in ``RUN_DIR/tracking/wandb.json``: a resumed search logs into the same run.

Without an API key (no ``WANDB_API_KEY``, not logged in) and no ``mode`` set, the run is written offline under
``RUN_DIR/tracking/wandb`` (``wandb sync`` uploads it later); ``mode: online`` / ``offline`` / ``disabled`` or
``WANDB_MODE`` choose explicitly.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from evomerge.tracking.base import TRACKERS, RunSummary, Tracker, scalars

log = logging.getLogger(__name__)


class WandbOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    project: str = Field("evomerge", description="W&B project")
    entity: Optional[str] = Field(None, description="W&B entity (team or user; default: yours)")
    mode: Optional[Literal["online", "offline", "disabled"]] = Field(
        None, description="online, offline or disabled (default: WANDB_MODE, else online when logged in, else "
                          "offline)")
    group: Optional[str] = Field(None, description="W&B group (e.g. the staged job's name)")
    tags: list[str] = Field(default_factory=list, description="W&B tags")


def _logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = os.path.expanduser(os.environ.get("NETRC", "~/.netrc"))
    try:
        with open(netrc) as fh:
            return "api.wandb.ai" in fh.read()
    except OSError:
        return False


@TRACKERS.register("wandb")
class WandbTracker(Tracker):
    Options = WandbOptions
    requires = ("wandb",)
    extra = "wandb"

    def start(self, records: list[dict[str, Any]]) -> None:
        import wandb

        mode = self.options.mode or os.environ.get("WANDB_MODE") or ("online" if _logged_in() else "offline")
        folder = self.run.run_dir / "tracking"
        folder.mkdir(parents=True, exist_ok=True)
        run_id = self.state.get("run_id") or uuid.uuid4().hex[:12]
        self.state["run_id"] = run_id
        if mode == "offline":
            log.info("W&B: offline run %s under %s (upload with `wandb sync`)", run_id, folder / "wandb")
        self._wb = wandb.init(
            project=self.options.project, entity=self.options.entity, group=self.options.group,
            tags=self.options.tags or None, name=self.run.name, id=run_id, dir=str(folder), mode=mode,
            resume="allow" if mode == "online" else None, config=self.run.config, reinit="create_new",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True, x_disable_machine_info=True,
                                    disable_git=True, save_code=False))
        self._wb.define_metric("eval_id")
        super().start(records)

    def candidate(self, record: dict[str, Any]) -> None:
        row: dict[str, Any] = scalars(record, self.run.objectives)
        for name, value in (record.get("point") or {}).items():
            row[f"param/{name}"] = value
        if record.get("origin"):
            row["origin"] = record["origin"]
        self._wb.log(row, step=record["eval_id"])

    def finish(self, summary: RunSummary) -> None:
        import wandb

        objectives = self.run.objectives
        if summary.winner is not None:
            self._wb.summary["winner/eval_id"] = summary.winner["eval_id"]
            for m, v in zip(objectives, summary.winner["values"]):
                self._wb.summary[f"winner/{m}"] = v
        cols = ["eval_id", "gen", *objectives, *(f"test/{m}" for m in objectives)]
        rows = [[r["eval_id"], r["gen"], *r["values"],
                 *(summary.test_scores.get(r["eval_id"], {}).get(m) for m in objectives)] for r in summary.front]
        data: dict[str, Any] = {"pareto_front": wandb.Table(columns=cols, data=rows)}
        for path in summary.plots:
            data[f"plots/{path.stem}"] = wandb.Image(str(path))
        self._wb.log(data)

    def close(self, status: str) -> None:
        wb = getattr(self, "_wb", None)
        if wb is not None:
            wb.finish(exit_code=0 if status == "finished" else 1)
