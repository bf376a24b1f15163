"""Score table of a zoo: the base, each expert and a few simple merges, exact-match accuracy per skill.

Merges go through the merge engine (:class:`evomerge.merge.InMemoryMerger`), written into one live model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.table import Table
from transformers import AutoModelForCausalLM, AutoTokenizer

from evomerge.errors import EvomergeError
from evomerge.recipe import MergeRecipe, ModelSource
from evomerge.zoo.settings import read_manifest
from evomerge.zoo.data import load_split
from evomerge.zoo.decode import exact_match

log = logging.getLogger(__name__)


def simple_merges(base: str, experts: list[str]) -> dict[str, MergeRecipe]:
    """The merges every zoo report shows: uniform average, task arithmetic at 0.5 and 1.0, TIES."""

    def recipe(method: str, params: dict, per_model: dict | None = None, with_base: bool = True) -> MergeRecipe:
        return MergeRecipe(method=method, base=base if with_base else None,
                           models=[ModelSource(model=e, params=dict(per_model or {})) for e in experts],
                           params=params)

    return {
        "average": recipe("linear", {"normalize": True}, with_base=False),
        "task_arithmetic 0.5": recipe("task_arithmetic", {"lambda": 0.5}),
        "task_arithmetic 1.0": recipe("task_arithmetic", {"lambda": 1.0}),
        "ties 0.5 (density 0.5)": recipe("ties", {"lambda": 0.5}, {"density": 0.5}),
        "ties 1.0 (density 0.5)": recipe("ties", {"lambda": 1.0}, {"density": 0.5}),
    }


def zoo_report(zoo_dir: str | Path, split: str = "test", limit: int | None = None) -> list[dict]:
    """One row per model: ``{"model", "kind", "scores": {skill: %}, "mean": %}``."""
    zoo_dir = Path(zoo_dir)
    manifest = read_manifest(zoo_dir)
    if manifest is None:
        raise EvomergeError(f"{zoo_dir} is not a built zoo (no zoo.json)")
    skills: list[str] = manifest["skills"]
    items = {s: load_split(s, split)[:limit] for s in skills}
    tokenizer = AutoTokenizer.from_pretrained(str(zoo_dir / "base"))
    base_ref = str(zoo_dir / "base")
    expert_refs = [str(zoo_dir / s) for s in skills]

    def score(model, name: str, kind: str) -> dict:
        scores = {s: 100.0 * sum(exact_match(model, tokenizer, items[s])) / len(items[s]) for s in skills}
        row = {"model": name, "kind": kind, "scores": scores, "mean": sum(scores.values()) / len(scores)}
        log.info("%s: %s", name, row)
        return row

    rows = []
    with torch.no_grad():
        for name, ref, kind in [("base", base_ref, "base")] + [(s, r, "expert") for s, r in zip(skills, expert_refs)]:
            rows.append(score(AutoModelForCausalLM.from_pretrained(ref).eval(), name, kind))
        from evomerge.merge import InMemoryMerger

        merger = InMemoryMerger([base_ref] + expert_refs)
        model = AutoModelForCausalLM.from_pretrained(base_ref).eval()
        for name, recipe in simple_merges(base_ref, expert_refs).items():
            merger.merge_into(recipe, model)
            rows.append(score(model, name, "merge"))
    return rows


@dataclass
class Acceptance:
    passed: bool
    message: str


def acceptance(rows: list[dict], min_gain: float = 20.0) -> Acceptance:
    """Issue 2's bar: some merge beats every expert and the base on mean accuracy, and every expert beats
    the base on its own skill by at least ``min_gain`` points."""
    base = next(r for r in rows if r["kind"] == "base")
    experts = [r for r in rows if r["kind"] == "expert"]
    merges = [r for r in rows if r["kind"] == "merge"]
    best_single = max([base] + experts, key=lambda r: r["mean"])
    best_merge = max(merges, key=lambda r: r["mean"]) if merges else None
    merge_ok = best_merge is not None and best_merge["mean"] > best_single["mean"]
    gains = {e["model"]: e["scores"][e["model"]] - base["scores"][e["model"]] for e in experts}
    gain_ok = all(g >= min_gain for g in gains.values())
    parts = [
        f"best merge {best_merge['model']} {best_merge['mean']:.1f}" if best_merge else "no merges",
        f"vs best single {best_single['model']} {best_single['mean']:.1f}",
        "expert gains over base on own skill: " + ", ".join(f"{k} {v:+.1f}" for k, v in gains.items()),
    ]
    ok = merge_ok and gain_ok
    return Acceptance(ok, ("[green]acceptance: PASS[/] " if ok else "[red]acceptance: FAIL[/] ") + "; ".join(parts))


def render_table(rows: list[dict], title: str = "zoo") -> Table:
    """A rich table: one row per model, one column per skill, plus the mean."""
    skills = list(rows[0]["scores"])
    table = Table(title=title)
    table.add_column("model")
    table.add_column("kind")
    for s in skills:
        table.add_column(s, justify="right")
    table.add_column("mean", justify="right", style="bold")
    best = max(r["mean"] for r in rows)
    for r in rows:
        mean = f"{r['mean']:.1f}"
        table.add_row(r["model"], r["kind"], *(f"{r['scores'][s]:.1f}" for s in skills),
                      f"[green]{mean}[/]" if r["mean"] == best else mean)
    return table
