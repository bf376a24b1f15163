"""The README's demo: search the full tiny zoo, then compare the winner on the TEST split with its parents,
the uniform average and the best single-coefficient task-arithmetic and TIES merges (coefficients picked on
the search split). ``compare_with_baselines`` is that comparison for any finished run."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from evomerge.errors import EvomergeError
from evomerge.execution.base import EXECUTORS
from evomerge.recipe import recipe_from_dict
from evomerge.run.baselines import COEFFICIENTS, SIMPLE_FAMILIES, baseline_recipes
from evomerge.run.config import RunConfig, load_run_config, run_config_from_dict
from evomerge.run.export import save_test_scores
from evomerge.run.context import Progress, worker_spec
from evomerge.run.loop import run_search
from evomerge.run.run_dir import identity_diff
from evomerge.run.report import RunReport

log = logging.getLogger(__name__)
__all__ = ["COEFFICIENTS", "baseline_recipes", "cached_baselines", "compare_with_baselines", "demo_config",
           "demo_run_dir", "run_demo", "score_baselines"]


def demo_config(variant: str = "full", backend: str = "hf") -> RunConfig:
    """The demo job on a zoo ``variant``, evaluated by ``backend`` (``fitness.backend``)."""
    cfg = load_run_config("zoo_demo")
    if variant == "full" and backend == "hf":
        return cfg
    data = json.loads(json.dumps(cfg.model_dump(mode="json")).replace("zoo://full/", f"zoo://{variant}/"))
    data["fitness"]["backend"] = backend
    return run_config_from_dict(data)


def demo_run_dir(preferred: Path, variant: str = "full", backend: str = "hf") -> tuple[Path, list[str]]:
    """Where the demo of this version goes when the user named no folder: ``preferred``, unless it holds
    another run (an earlier version's demo, the other zoo variant); then the first ``preferred-N`` that is
    free or holds this same run. Returns (folder, the keys the skipped run differs in)."""
    cfg, first_diff = demo_config(variant, backend), []
    for n in range(1, 1000):
        path = Path(preferred) if n == 1 else Path(f"{preferred}-{n}")
        if not (path / "config.yaml").exists():
            return path, first_diff
        try:
            diff = identity_diff(cfg, path)
        except EvomergeError:  # an unreadable config.yaml: not ours to overwrite
            diff = ["config.yaml"]
        if not diff:
            return path, first_diff
        first_diff = first_diff or diff
    raise EvomergeError(f"no free run folder next to {preferred}: pass --run-dir")


def score_baselines(cfg: RunConfig, ex, say: Callable[[str], None]) -> dict[str, Any]:
    """Search-split scores of the simple merges, the best of each family, and the test scores of the parents
    and of those picks (the same for every search of one job: ``compare_with_baselines`` caches them)."""
    families = baseline_recipes(cfg)
    say("baselines: scoring the simple merges on the search split")
    search_scores = {}
    grid = [(label, r) for fam in SIMPLE_FAMILIES for label, r in families[fam].items()]
    for label, res in ex.map(grid):
        search_scores[label] = res.objectives.get("mean", float("-inf")) if res.status == "ok" else float("-inf")
    chosen = dict(families["parent"])
    for fam in SIMPLE_FAMILIES:
        label = max(families[fam], key=lambda k: search_scores[k])
        chosen[f"best {label}" if len(families[fam]) > 1 else label] = families[fam][label]
    say(f"test split: evaluating {len(chosen)} baselines")
    rows = []
    for label, res in ex.map(list(chosen.items()), split="test"):
        if res.status != "ok":
            raise EvomergeError(f"test evaluation of {label} failed: {res.reason}")
        family = "parent" if label.startswith("parent ") else "simple"
        rows.append({"model": label, "family": family, "test": res.objectives})
    return {"search_scores": search_scores, "rows": rows}


def cached_baselines(cfg: RunConfig, ex, cache: Optional[Path], say: Callable[[str], None]) -> dict[str, Any]:
    """``score_baselines``, read from the JSON file ``cache`` when it exists, else scored and written there."""
    if cache is not None and cache.exists():
        return json.loads(cache.read_text())
    out = score_baselines(cfg, ex, say)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(out, indent=1))
    return out


def compare_with_baselines(run_dir: Path, say: Callable[[str], None] = log.info,
                           baseline_cache: Optional[Path] = None) -> dict[str, Any]:
    """Score the best candidate of the run in ``run_dir`` on the TEST split beside its parents and the best
    simple merge of each family (picked on the search split); returns the table as a dict. ``baseline_cache``:
    a JSON file holding the baselines' scores (written on first use, read after: they do not depend on the
    search's seed)."""
    from evomerge.spaces import build_space

    report = RunReport.load(run_dir)
    cfg, best = report.config, report.best()
    if best is None:
        raise EvomergeError("the search produced no successful candidate")
    space = build_space(cfg.space, base=cfg.base, models=cfg.models)
    spec = worker_spec(cfg, space, run_dir)
    with EXECUTORS.get("local")(spec) as ex:
        base = cached_baselines(cfg, ex, baseline_cache, say)
        label = f"winner (candidate {best['eval_id']})"
        [(_, res)] = list(ex.map([(label, recipe_from_dict(best["recipe"]))], split="test"))
        if res.status != "ok":
            raise EvomergeError(f"test evaluation of the winner failed: {res.reason}")
    winner = {"model": label, "family": "winner", "test": res.objectives}
    rows = base["rows"] + [winner]
    save_test_scores(run_dir, {best["eval_id"]: winner["test"]})  # `evomerge status` shows it
    margins = {r["model"]: winner["test"]["mean"] - r["test"]["mean"] for r in base["rows"]}
    return {"run_dir": str(run_dir), "tasks": list(cfg.fitness.tasks), "rows": rows,
            "search_scores": base["search_scores"], "winner_search": best["metrics"], "winner_id": best["eval_id"],
            "winner_origin": best.get("origin"), "winner_finalist": best.get("finalist"), "margin_vs": margins,
            "beats_all": bool(all(m > 0 for m in margins.values())),
            "min_margin": float(np.min(list(margins.values())))}


def run_demo(run_dir: Path, variant: str = "full", progress: Optional[Progress] = None,
             say: Callable[[str], None] = log.info, backend: str = "hf") -> dict[str, Any]:
    """Run (or continue) the demo search and the comparison; returns and saves ``RUN_DIR/demo.json``."""
    cfg = demo_config(variant, backend)
    say(f"search: {cfg.name} ({cfg.optimizer.name}, {cfg.budget.evaluations} evaluations) in {run_dir}")
    run_search(cfg, run_dir, progress)
    result = compare_with_baselines(run_dir, say)
    (Path(run_dir) / "demo.json").write_text(json.dumps(result, indent=1))
    return result
