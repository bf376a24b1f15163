"""``evomerge bank show PATH`` and ``evomerge bank merge A B OUT``: item banks as files users keep.

Light imports only (numpy, scipy for a merge's refit): no torch, no lm-eval."""

from __future__ import annotations

import json
from pathlib import Path

import click

from evomerge.cli import cli


def _load(path: str):
    from evomerge.fitness.irt.bank import ItemBank

    return ItemBank.load(Path(path))


@cli.group("bank")
def bank() -> None:
    """Item banks (IRT parameters + the answers that fitted them): show, merge."""


@bank.command("show")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="the summary as JSON")
def show(path: str, as_json: bool) -> None:
    """Items, difficulty / discrimination summary and the models a bank saw, per task."""
    from evomerge.fitness.irt.bank_tools import summary

    s = summary(_load(path))
    if as_json:
        click.echo(json.dumps(s, indent=1))
        return
    click.echo(f"item bank {path}: {len(s['tasks'])} task(s), {s['dim']}-dim 2PL, {len(s['models'])} model(s) "
               f"({len(s['endpoints'])} seed/endpoint)")
    click.echo(f"{'task':<24} {'items':>6} {'answers':>8} {'answered':>9} {'models':>7} {'mean acc':>9}  "
               f"difficulty b (min/median/max)  discrimination |a| (min/median/max)")
    for t, d in s["tasks"].items():
        b, a = d["difficulty_q"], d["discrimination_q"]
        click.echo(f"{t:<24} {d['items']:>6} {d['answers']:>8} {100 * d['answered_share']:>8.1f}% "
                   f"{d['models_answering']:>7} {d['mean_accuracy']:>9.3f}  {b[0]:+.2f} / {b[2]:+.2f} / {b[4]:+.2f}"
                   f"{'':14}{a[0]:.2f} / {a[2]:.2f} / {a[4]:.2f}")
    more = len(s["models"]) - 12
    click.echo(f"models: {', '.join(s['models'][:12])}" + (f" ... (+{more})" if more > 0 else ""))


@bank.command("merge")
@click.argument("a")
@click.argument("b")
@click.argument("out")
@click.option("--seed", default=0, show_default=True, help="seed of the refit")
def merge(a: str, b: str, out: str, seed: int) -> None:
    """Union of banks A and B (same tasks): items and rows of both, refitted; written to OUT."""
    from evomerge.errors import EvomergeError
    from evomerge.fitness.irt.bank_tools import merge_banks

    if Path(out).exists() and any(Path(out).iterdir()):
        raise EvomergeError(f"output folder {out} exists and is not empty")
    merged = merge_banks(_load(a), _load(b), seed=seed)
    merged.save(out)
    click.echo(f"merged bank: {merged.n_items} items, {len(merged.models)} models -> {out}")
