"""The README's demo: search the full tiny zoo, then compare the winner on the TEST split with its parents and
the best single-coefficient task-arithmetic and TIES merges (coefficients picked on the search split)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from evomerge.errors import EvomergeError
from evomerge.execution.base import EXECUTORS
from evomerge.recipe import MergeRecipe, ModelSource, recipe_from_dict
from evomerge.run.config import RunConfig, load_run_config, run_config_from_dict
from evomerge.run.export import save_test_scores
from evomerge.run.loop import Progress, run_search, worker_spec
from evomerge.run.report import RunReport

log = logging.getLogger(__name__)
COEFFICIENTS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)


def demo_config(variant: str = "full") -> RunConfig:
    cfg = load_run_config("zoo_demo")
    if variant == "full":
        return cfg
    text = json.dumps(cfg.model_dump(mode="json")).replace("zoo://full/", f"zoo://{variant}/")
    return run_config_from_dict(json.loads(text))


def baseline_recipes(cfg: RunConfig) -> dict[str, dict[str, MergeRecipe]]:
    """Family -> {label: recipe}: each parent alone, task arithmetic and TIES (density 0.5) per coefficient."""
    parents = {f"parent {Path(m).name}": MergeRecipe(method="linear", models=[ModelSource(model=m, params={"weight": 1.0})])
               for m in cfg.models}
    ta = {f"task_arithmetic lambda={c}": MergeRecipe(method="task_arithmetic", base=cfg.base, params={"lambda": c},
                                                     models=[ModelSource(model=m) for m in cfg.models])
          for c in COEFFICIENTS}
    ties = {f"ties lambda={c} density=0.5": MergeRecipe(method="ties", base=cfg.base, params={"lambda": c},
                                                        models=[ModelSource(model=m, params={"density": 0.5})
                                                                for m in cfg.models])
            for c in COEFFICIENTS}
    return {"parent": parents, "task_arithmetic": ta, "ties": ties}


def run_demo(run_dir: Path, variant: str = "full", progress: Optional[Progress] = None,
             say: Callable[[str], None] = log.info) -> dict[str, Any]:
    """Run (or continue) the demo search and the comparison; returns and saves ``RUN_DIR/demo.json``."""
    from evomerge.spaces import build_space

    cfg = demo_config(variant)
    say(f"search: {cfg.name} ({cfg.optimizer.name}, {cfg.budget.evaluations} evaluations) in {run_dir}")
    run_search(cfg, run_dir, progress)
    report = RunReport.load(run_dir)
    best = report.best()
    if best is None:
        raise EvomergeError("the demo search produced no successful candidate")
    families = baseline_recipes(cfg)
    space = build_space(cfg.space, base=cfg.base, models=cfg.models)
    spec = worker_spec(cfg, space, run_dir)
    tasks_metric = list(cfg.fitness["tasks"])  # the accuracy metrics (the worker also reports model size)
    with EXECUTORS.get("local")(spec) as ex:
        say("baselines: scoring task-arithmetic and TIES coefficients on the search split")
        search_scores = {}
        grid = [(label, r) for fam in ("task_arithmetic", "ties") for label, r in families[fam].items()]
        for label, res in ex.map(grid):
            search_scores[label] = res.objectives.get("mean", float("-inf")) if res.status == "ok" else float("-inf")
        chosen = {label: r for label, r in families["parent"].items()}
        for fam in ("task_arithmetic", "ties"):
            label = max(families[fam], key=lambda k: search_scores[k])
            chosen[f"best {label}"] = families[fam][label]
        chosen[f"winner (candidate {best['eval_id']})"] = recipe_from_dict(best["recipe"])
        say(f"test split: evaluating {len(chosen)} models")
        rows = []
        for label, res in ex.map(list(chosen.items()), split="test"):
            if res.status != "ok":
                raise EvomergeError(f"test evaluation of {label} failed: {res.reason}")
            rows.append({"model": label, "test": res.objectives})
    winner = rows[-1]
    others = rows[:-1]
    save_test_scores(run_dir, {best["eval_id"]: winner["test"]})  # `evomerge status` shows it
    margins = {r["model"]: winner["test"]["mean"] - r["test"]["mean"] for r in others}
    result = {"run_dir": str(run_dir), "tasks": tasks_metric, "rows": rows, "search_scores": search_scores,
              "winner_search": best["metrics"], "margin_vs": margins,
              "beats_all": bool(all(m > 0 for m in margins.values())),
              "min_margin": float(np.min(list(margins.values())))}
    (Path(run_dir) / "demo.json").write_text(json.dumps(result, indent=1))
    return result
