"""MLflow tracker (``tracking: [mlflow]``): one parent run per search, one child run per candidate.

A child run (``candidate-00012``) holds the candidate's search parameters as params and its objective values,
metrics, timings and fidelity as metrics (FAILED when the candidate failed), so MLflow's run table, parallel
coordinates and scatter plots compare candidates. The parent run holds the config (``config.json``), each
objective and its best so far as metrics over ``step = eval_id``, and at the end the winner's values, the Pareto
front (``pareto_front.json``), the winner's recipe and the plots.

``tracking_uri``: a local server (``http://127.0.0.1:5000``), a database or a file store; default
``MLFLOW_TRACKING_URI``, else a local SQLite store, ``RUN_DIR/tracking/mlflow.db``, with its artifacts in
``RUN_DIR/tracking/mlflow-artifacts`` (``mlflow ui --backend-store-uri sqlite:///RUN_DIR/tracking/mlflow.db``
shows it). The parent run id is kept in
``RUN_DIR/tracking/mlflow.json``: a resumed search logs into the same run, and candidates already there are not
logged twice.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

from evomerge.tracking.base import TRACKERS, RunSummary, Tracker, scalars

log = logging.getLogger(__name__)
EVAL_TAG = "evomerge.eval_id"


class MlflowOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tracking_uri: Optional[str] = Field(None, description="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else "
                                                          "a SQLite store, RUN_DIR/tracking/mlflow.db)")
    artifact_location: Optional[str] = Field(None, description="where a new experiment keeps artifacts (default: "
                                                               "the server's; RUN_DIR/tracking/mlflow-artifacts for "
                                                               "the default local store)")
    experiment: str = Field("evomerge", description="MLflow experiment name")
    child_runs: bool = Field(True, description="one child run per candidate (else metrics on the parent only)")


@TRACKERS.register("mlflow")
class MlflowTracker(Tracker):
    Options = MlflowOptions
    requires = ("mlflow",)
    extra = "mlflow"

    def start(self, records: list[dict[str, Any]]) -> None:
        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic"):  # their INFO lines (database set-up) would interleave with the progress bar
            logging.getLogger(name).setLevel(logging.WARNING)
        tracking = (self.run.run_dir / "tracking").resolve()
        uri = self.options.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        artifacts = self.options.artifact_location
        if not uri:  # a store of the run's own; without a location MLflow would put artifacts in ./mlruns
            uri = f"sqlite:///{tracking / 'mlflow.db'}"
            artifacts = artifacts or (tracking / "mlflow-artifacts").as_uri()
        self._client = c = MlflowClient(tracking_uri=uri)
        self._best: list[Optional[float]] = [None] * len(self.run.objectives)
        run_id = self.state.get("run_id")
        logged: set[int] = set()
        if run_id:  # a resumed search: the same parent run, running again
            self._parent = run_id
            self._exp = c.get_run(run_id).info.experiment_id
            c.update_run(run_id, status="RUNNING")
            if self.options.child_runs:
                logged = self._children()
        else:
            exp = c.get_experiment_by_name(self.options.experiment)
            self._exp = exp.experiment_id if exp else c.create_experiment(self.options.experiment, artifacts)
            run = c.create_run(self._exp, run_name=self.run.name, tags={"evomerge.run_dir": str(self.run.run_dir)})
            run_id = self.state["run_id"] = run.info.run_id
            cfg = self.run.config
            c.log_dict(run_id, cfg, "config.json")
            params = {"name": cfg.get("name"), "optimizer": cfg.get("optimizer", {}).get("name"),
                      "seed": cfg.get("seed"), "base": cfg.get("base"), "models": ", ".join(cfg.get("models", [])),
                      "objectives": ", ".join(self.run.objectives), "search_parameters": len(self.run.params)}
            _log_batch(c, run_id, params={k: v for k, v in params.items() if v is not None})
        self._parent = run_id
        for rec in records:  # the best so far counts every record; what is logged already is not sent again
            if rec["eval_id"] in logged or rec["eval_id"] <= self.state.get("logged_through", -1):
                self._track_best(rec)
            else:
                self.candidate(rec)

    def _children(self) -> set[int]:
        runs = self._client.search_runs([self._exp], filter_string=f"tags.mlflow.parentRunId = '{self._parent}'",
                                        max_results=50000)
        return {int(r.data.tags[EVAL_TAG]) for r in runs if EVAL_TAG in r.data.tags}

    def _track_best(self, record: dict[str, Any]) -> dict[str, float]:
        out = {}
        if record["status"] == "ok":
            for j, (m, d) in enumerate(zip(self.run.objectives, self.run.directions)):
                v, b = record["values"][j], self._best[j]
                self._best[j] = v if b is None else (max(b, v) if d == "maximize" else min(b, v))
                out[f"objective/{m}"], out[f"best/{m}"] = v, self._best[j]
        return out

    def candidate(self, record: dict[str, Any]) -> None:
        c, step = self._client, record["eval_id"]
        _log_batch(c, self._parent, metrics=self._track_best(record), step=step)
        if not self.options.child_runs:
            return
        child = c.create_run(self._exp, run_name=f"candidate-{step:05d}",
                             tags={"mlflow.parentRunId": self._parent, EVAL_TAG: str(step),
                                   "evomerge.origin": record.get("origin") or "optimizer",
                                   "evomerge.reason": (record.get("reason") or "")[:4000]})
        params = {k: v for k, v in (record.get("point") or {}).items()}
        _log_batch(c, child.info.run_id, params=params, metrics=scalars(record, self.run.objectives), step=0)
        c.set_terminated(child.info.run_id, "FINISHED" if record["status"] == "ok" else "FAILED")

    def finish(self, summary: RunSummary) -> None:
        c, run_id = self._client, self._parent
        if summary.winner is not None:
            w = summary.winner
            _log_batch(c, run_id, metrics={f"winner/{m}": v for m, v in zip(self.run.objectives, w["values"])},
                       step=w["eval_id"])
            c.set_tag(run_id, "evomerge.winner_eval_id", str(w["eval_id"]))
            if w.get("recipe"):
                import yaml

                c.log_text(run_id, yaml.safe_dump(w["recipe"], sort_keys=False), "winner_recipe.yaml")
        front = [{"eval_id": r["eval_id"], "gen": r["gen"], "values": dict(zip(self.run.objectives, r["values"])),
                  "test": summary.test_scores.get(r["eval_id"], {}), "point": r.get("point")} for r in summary.front]
        c.log_dict(run_id, front, "pareto_front.json")
        for path in summary.plots:
            c.log_artifact(run_id, str(path), "plots")

    def close(self, status: str) -> None:
        if getattr(self, "_parent", None):
            state = {"finished": "FINISHED", "failed": "FAILED"}.get(status, "KILLED")
            self._client.set_terminated(self._parent, state)


def _log_batch(client, run_id: str, params: Optional[dict[str, Any]] = None,
               metrics: Optional[dict[str, float]] = None, step: int = 0) -> None:
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    ps = [Param(k, str(v)) for k, v in (params or {}).items()]
    ms = [Metric(k, float(v), now, step) for k, v in (metrics or {}).items()]
    for i in range(0, max(len(ps), len(ms), 1), 100):  # MLflow takes at most 100 params per batch
        if ps[i:i + 100] or ms[i:i + 100]:
            client.log_batch(run_id, metrics=ms[i:i + 100], params=ps[i:i + 100])
