"""``evomerge zoo build`` and ``evomerge zoo report``."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from evomerge.cli import cli
from evomerge.errors import EvomergeError
from evomerge.zoo.settings import VARIANTS


@cli.group()
def zoo() -> None:
    """The tiny model zoo: a char-level Llama base and one expert per skill."""


def _quiet_hf() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own rich progress/status instead


VARIANT_NAMES = tuple(VARIANTS)  # evomerge.zoo.settings holds no torch, so `--help` stays fast


def _skills_option(value: str | None) -> list[str] | None:
    return [s.strip() for s in value.split(",") if s.strip()] if value else None


@zoo.command("build")
@click.argument("out_dir", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--variant", type=click.Choice(VARIANT_NAMES), default="full", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--skills", default=None, help="Comma-separated skills (default: all of the variant's).")
@click.option("--force", is_flag=True, help="Replace a zoo built in OUT_DIR with other settings.")
def build_cmd(out_dir: Path | None, variant: str, seed: int, skills: str | None, force: bool) -> None:
    """Build the zoo into OUT_DIR (default: evomerge's cache); reuses it if built with the same settings."""
    skill_list = _skills_option(skills)
    if out_dir is None and skill_list is not None:
        raise EvomergeError("--skills needs an explicit OUT_DIR (the cache holds the standard variants)")
    _quiet_hf()
    from evomerge.zoo.build import build_zoo
    from evomerge.zoo.ensure import ensure_zoo

    if out_dir is None:
        path = ensure_zoo(variant, seed=seed, progress=True)
    else:
        path = build_zoo(out_dir, variant=variant, seed=seed, skills=skill_list, progress=True, force=force)
    click.echo(str(path))


@zoo.command("report")
@click.argument("zoo_dir", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--variant", type=click.Choice(VARIANT_NAMES), default="full", show_default=True,
              help="Which cached zoo to report on when ZOO_DIR is not given (built if missing).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--split", type=click.Choice(["test", "search"]), default="test", show_default=True)
@click.option("--limit", type=int, default=None, help="Only the first N items of each skill.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the table as JSON.")
def report_cmd(zoo_dir: Path | None, variant: str, seed: int, split: str, limit: int | None,
               json_out: Path | None) -> None:
    """Accuracy per skill of the base, each expert and simple merges (average, task arithmetic, TIES)."""
    import json

    if limit is not None and limit < 1:
        raise EvomergeError("--limit must be >= 1")
    if zoo_dir is not None:
        try:
            json.loads((zoo_dir / "zoo.json").read_text())
        except (OSError, ValueError):
            raise EvomergeError(f"{zoo_dir} is not a built zoo (no readable zoo.json); "
                                f"run `evomerge zoo build {zoo_dir}`") from None
    _quiet_hf()
    from evomerge.zoo.ensure import ensure_zoo
    from evomerge.zoo.report import acceptance, render_table, zoo_report

    if zoo_dir is None:
        zoo_dir = ensure_zoo(variant, seed=seed, progress=True)
    console = Console()
    with console.status("evaluating base, experts and merges..."):
        rows = zoo_report(zoo_dir, split=split, limit=limit)
    console.print(render_table(rows, title=f"zoo {zoo_dir} ({split} split, exact match %)"))
    verdict = acceptance(rows)
    console.print(verdict.message)
    if json_out is not None:
        json_out.write_text(json.dumps({"rows": rows, "acceptance": verdict.passed}, indent=2) + "\n")
