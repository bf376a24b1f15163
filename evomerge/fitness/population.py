"""Build an item bank from a population evomerge makes itself: the base, the parents, and random merges of
them, all evaluated on the full search split (endpoints through the on-disk cache)."""

from __future__ import annotations

import logging
from typing import Callable, Optional, Sequence

import numpy as np

from evomerge.fitness.cache import EndpointCache
from evomerge.fitness.evaluator import LMEvalEvaluator
from evomerge.fitness.irt.bank import ItemBank, fit_item_bank
from evomerge.fitness.results import ItemResults
from evomerge.models import resolve_model
from evomerge.recipe import MergeRecipe, ModelSource

log = logging.getLogger(__name__)


def endpoint_recipe(ref: str) -> MergeRecipe:
    """A recipe whose merge is exactly the model ``ref``."""
    return MergeRecipe(method="linear", models=[ModelSource(model=ref, params={"weight": 1.0})])


def random_recipes(sources: Sequence[str], base: Optional[str], n: int, seed: int = 0) -> list[MergeRecipe]:
    """``n`` varied random merges of ``sources`` (linear, task arithmetic, TIES when a base is given)."""
    rng = np.random.default_rng(seed)
    experts = [s for s in sources if s != base]
    out = []
    for k in range(n):
        kind = ("linear", "task_arithmetic", "ties")[k % 3] if base else "linear"
        if kind == "linear":
            pool = list(experts) + ([base] if base else [])
            w = rng.dirichlet(np.full(len(pool), 0.7))
            out.append(MergeRecipe(method="linear", models=[ModelSource(model=m, params={"weight": float(x)})
                                                            for m, x in zip(pool, w)]))
        else:
            models = []
            for m in experts:
                p = {"weight": float(rng.uniform(0.0, 1.2))}
                if kind == "ties":
                    p["density"] = float(rng.uniform(0.2, 1.0))
                models.append(ModelSource(model=m, params=p))
            out.append(MergeRecipe(method=kind, base=base, models=models, params={"normalize": False}))
    return out


def evaluate_population(evaluator: LMEvalEvaluator, merger, model, tokenizer, sources: Sequence[str],
                        base: Optional[str], n_random: int, seed: int = 0, cache: Optional[EndpointCache] = None,
                        progress: Optional[Callable[[str], None]] = None,
                        known: Optional[dict[str, ItemResults]] = None,
                        space_recipes: Sequence[MergeRecipe] = ()) -> tuple[dict[str, ItemResults], list[str]]:
    """Full-split results of the endpoints, ``n_random`` random merges and ``space_recipes`` (named
    ``space-NNN``: random points of the run's search space); returns (results, endpoint names).

    Members already in ``known`` (an earlier, smaller population of the same seed) are not evaluated again:
    random merge ``k`` is the same recipe for every ``n_random > k``.
    """
    endpoints = list(dict.fromkeys(([base] if base else []) + list(sources)))
    known = known or {}
    results: dict[str, ItemResults] = {}
    for ref in endpoints:
        if ref in known:
            results[ref] = known[ref]
            continue
        folder = resolve_model(ref)
        hit = cache.get(folder, evaluator.fingerprint) if cache else None
        if hit is None:
            merger.merge_into(endpoint_recipe(ref), model)
            hit = evaluator.evaluate(model, tokenizer)
            if cache:
                cache.put(folder, evaluator.fingerprint, hit)
        results[ref] = hit
        if progress:
            progress(f"endpoint {ref}: {hit.metrics}")
    members = [(f"random-{k:03d}", r) for k, r in enumerate(random_recipes(sources, base, n_random, seed))]
    members += [(f"space-{k:03d}", r) for k, r in enumerate(space_recipes)]
    results.update(evaluate_merges(evaluator, merger, model, tokenizer, members, known, progress))
    return results, endpoints


def evaluate_merges(evaluator: LMEvalEvaluator, merger, model, tokenizer,
                    named: Sequence[tuple[str, MergeRecipe]], known: Optional[dict[str, ItemResults]] = None,
                    progress: Optional[Callable[[str], None]] = None) -> dict[str, ItemResults]:
    """Full-split results of each ``(name, recipe)``, merged into ``model`` in place; names in ``known`` are
    taken from it instead of being evaluated again."""
    known = known or {}
    results: dict[str, ItemResults] = {}
    for k, (name, recipe) in enumerate(named):
        if name in known:
            results[name] = known[name]
            continue
        merger.merge_into(recipe, model)
        results[name] = evaluator.evaluate(model, tokenizer)
        if progress:
            progress(f"merge {k + 1}/{len(named)} ({name}): {results[name].metrics}")
    return results


def space_samples(space, n: int, seed: int = 0) -> list[MergeRecipe]:
    """``n`` uniform random points of a search space, decoded; [] unless it decodes to merge recipes."""
    rng = np.random.default_rng([seed, 1])
    out = []
    for _ in range(n):
        recipe = space.decode(space.sample(rng))
        if not isinstance(recipe, MergeRecipe):
            return []
        out.append(recipe)
    return out


def bank_from_results(results: dict[str, ItemResults], tasks: Sequence[str], endpoints: Sequence[str],
                      dim: int, fingerprint: dict, seed: int = 0) -> ItemBank:
    return fit_item_bank({m: r.scores for m, r in results.items()}, tasks, dim=dim, fingerprint=fingerprint,
                         seed=seed, endpoints=endpoints)
