"""Simple merges of a job's models: each parent alone, the uniform average, and task-arithmetic and TIES
(density 0.5) over a grid of coefficients. The demo and ``benchmarks/search_quality.py`` compare a search's
winner with them (coefficients picked on the search split); warm start evaluates the ones the search space
can express before the optimizer's own proposals."""

from __future__ import annotations

from pathlib import Path

from evomerge.recipe import MergeRecipe, ModelSource

COEFFICIENTS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
#: the families of simple merges (``baseline_recipes`` keys) a search should beat
SIMPLE_FAMILIES = ("average", "task_arithmetic", "ties")


def baseline_recipes(cfg) -> dict[str, dict[str, MergeRecipe]]:
    """Family -> {label: recipe}: each parent alone, the uniform average, task arithmetic and TIES (density
    0.5) per coefficient (``cfg``: a RunConfig, for its base and models)."""
    parents = {f"parent {Path(m).name}": MergeRecipe(method="linear", models=[ModelSource(model=m, params={"weight": 1.0})])
               for m in cfg.models}
    average = {"uniform average": MergeRecipe(method="linear", models=[ModelSource(model=m) for m in cfg.models])}
    ta = {f"task_arithmetic lambda={c}": MergeRecipe(method="task_arithmetic", base=cfg.base, params={"lambda": c},
                                                     models=[ModelSource(model=m) for m in cfg.models])
          for c in COEFFICIENTS}
    ties = {f"ties lambda={c} density=0.5": MergeRecipe(method="ties", base=cfg.base, params={"lambda": c},
                                                        models=[ModelSource(model=m, params={"density": 0.5})
                                                                for m in cfg.models])
            for c in COEFFICIENTS}
    return {"parent": parents, "average": average, "task_arithmetic": ta, "ties": ties}


def simple_merges(cfg) -> list[tuple[str, MergeRecipe]]:
    """(label, recipe) of every simple merge (average, task-arithmetic and TIES grids), in a fixed order."""
    fams = baseline_recipes(cfg)
    return [(label, r) for fam in SIMPLE_FAMILIES for label, r in fams[fam].items()]
