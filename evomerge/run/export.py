"""Test-split re-evaluation and export of the best candidate or the Pareto front.

Scores reported for an exported recipe always include the **test** split: the candidates are re-evaluated
(cached in ``RUN_DIR/pareto/test_scores.json``) before anything is written.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Optional

from evomerge.errors import EvomergeError
from evomerge.execution.base import EXECUTORS
from evomerge.fsutil import atomic_write, check_output_folder
from evomerge.recipe import recipe_from_dict, recipe_to_yaml
from evomerge.run.context import worker_spec
from evomerge.run.report import RunReport

log = logging.getLogger(__name__)


def evaluate_on_test(report: RunReport, records: list[dict[str, Any]],
                     progress: Optional[Callable[[int, int], None]] = None) -> dict[int, dict[str, float]]:
    """Test-split metrics of ``records`` (by eval_id), evaluating only those not cached yet."""
    from evomerge.spaces import build_space

    cached = report.test_scores()
    todo = [r for r in records if r["eval_id"] not in cached]
    if todo:
        cfg = report.config
        space = build_space(cfg.space, base=cfg.base, models=cfg.models)
        spec = worker_spec(cfg, space, report.run_dir)
        with EXECUTORS.get("local")(spec) as ex:
            tasks = [(r["eval_id"], recipe_from_dict(r["recipe"])) for r in todo]
            for k, (eid, res) in enumerate(ex.map(tasks, split="test")):
                if res.status != "ok":
                    raise EvomergeError(f"test-split evaluation of candidate {eid} failed: {res.reason}")
                cached[eid] = res.objectives
                if progress:
                    progress(k + 1, len(tasks))
        save_test_scores(report.run_dir, cached)
    return {r["eval_id"]: cached[r["eval_id"]] for r in records}


def save_test_scores(run_dir: str | Path, scores: dict[int, dict[str, float]]) -> None:
    """Merge test-split metrics (by eval_id) into ``RUN_DIR/pareto/test_scores.json`` (atomic write)."""
    path = Path(run_dir) / "pareto" / "test_scores.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(path.read_text()) if path.exists() else {}
    merged = {int(k): v for k, v in old.items()} | {int(k): v for k, v in scores.items()}
    atomic_write(path, json.dumps({str(k): v for k, v in sorted(merged.items())}, indent=1))


def select(report: RunReport, which: str) -> list[dict[str, Any]]:
    if which == "best":
        best = report.best()
        return [best] if best else []
    if which == "pareto":
        return report.front()
    raise EvomergeError(f"unknown selection {which!r} (best or pareto)")


def export_run(run_dir: str | Path, out_dir: str | Path, which: str = "best", materialize: bool = False,
               progress: Optional[Callable[[int, int], None]] = None,
               announce: Optional[Callable[[str], None]] = None) -> list[dict[str, Any]]:
    """Write recipe YAML + mergekit YAML (+ HF checkpoint) per selected candidate and a search-vs-test table.
    Every check comes first (one error line, nothing written); then ``announce`` says what is evaluated.

    Returns one row per candidate: ``{"eval_id", "name", "search": {metric: v}, "test": {metric: v}, "dir"}``.
    """
    from evomerge.fitness.config import FitnessConfig

    report = RunReport.load(run_dir)
    chosen = select(report, which)
    if not chosen:
        raise EvomergeError(f"run {run_dir} has no successful candidate to export")
    fit = report.config.fitness
    if isinstance(fit, FitnessConfig) and not fit.test_tasks:
        raise EvomergeError(f"run {run_dir} names no fitness.test_tasks: export scores the candidates on the held-out "
                            "test split; run the search with test_tasks set (or apply a recipe with "
                            "`evomerge merge RECIPE OUT`)")
    out = check_output_folder(out_dir)
    if announce is not None:
        todo = [r for r in chosen if r["eval_id"] not in report.test_scores()]
        announce(f"re-evaluating {len(todo)} {which} candidate(s) on the test split ..." if todo
                 else f"the {which} candidate(s) already have test-split scores")
    test = evaluate_on_test(report, chosen, progress)
    rows = []
    for r in chosen:
        name = f"candidate-{r['eval_id']:05d}"
        folder = out / name
        folder.mkdir(parents=True)
        recipe = recipe_from_dict(r["recipe"])
        (folder / "recipe.yaml").write_text(recipe_to_yaml(recipe))
        try:
            (folder / "mergekit.yaml").write_text(mergekit_yaml(recipe))
        except EvomergeError as exc:
            (folder / "mergekit.txt").write_text(f"no mergekit equivalent: {exc}\n")
        if materialize:
            export_checkpoint(recipe, folder / "model")
        row = {"eval_id": r["eval_id"], "name": name, "point": r["point"], "search": r["metrics"],
               "test": test[r["eval_id"]], "dir": str(folder)}
        (folder / "scores.json").write_text(json.dumps(row, indent=1))
        rows.append(row)
    (out / "summary.json").write_text(json.dumps(rows, indent=1))
    (out / "summary.md").write_text(markdown_table(rows))
    return rows


def mergekit_yaml(recipe) -> str:
    """mergekit YAML of a parameter-space recipe, or passthrough YAML of a data-flow one (all scales 1)."""
    from evomerge.dataflow import to_mergekit_passthrough
    from evomerge.merge import to_mergekit_yaml
    from evomerge.recipe.dataflow import DataFlowRecipe

    return to_mergekit_passthrough(recipe) if isinstance(recipe, DataFlowRecipe) else to_mergekit_yaml(recipe)


def export_checkpoint(recipe, out_dir: Path) -> Path:
    """An HF checkpoint of either recipe kind (data-flow scalings folded exactly into the weights)."""
    from evomerge.dataflow import export_dataflow
    from evomerge.merge import export_recipe
    from evomerge.recipe.dataflow import DataFlowRecipe

    return export_dataflow(recipe, out_dir) if isinstance(recipe, DataFlowRecipe) else export_recipe(recipe, out_dir)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    metrics = list(rows[0]["search"]) if rows else []
    head = "| candidate | " + " | ".join(f"{m} search | {m} test" for m in metrics) + " |\n"
    head += "|---|" + "---|---|" * len(metrics) + "\n"
    body = "".join("| " + r["name"] + " | " + " | ".join(
        f"{r['search'].get(m, float('nan')):.4f} | {r['test'].get(m, float('nan')):.4f}" for m in metrics) + " |\n"
        for r in rows)
    return head + body
