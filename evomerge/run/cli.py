"""CLI verbs ``run``, ``resume``, ``status``, ``export`` and ``demo`` (registered on ``evomerge.cli.cli``)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from evomerge.cli import cli

console = Console(stderr=True)


@contextlib.contextmanager
def progress_reporter(total: Optional[int]):
    """A rich progress bar fed by the loop's progress events (shown from the first event on, so a config
    error is printed alone)."""
    state: dict = {"bar": None, "task": None, "best": None}

    def on_event(ev: dict) -> None:
        if state["bar"] is None:
            state["bar"] = Progress(TextColumn("[bold]gen {task.fields[gen]}"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("best {task.fields[best]}"), TimeElapsedColumn(), console=console)
            state["bar"].start()
            state["task"] = state["bar"].add_task("search", total=total, gen=0, best="-")
        bar, task = state["bar"], state["task"]
        if ev["event"] in ("candidate", "checkpoint", "done"):
            bar.update(task, completed=ev["n_evals"], gen=ev["gen"])
        if ev["event"] == "candidate" and ev["record"]["status"] == "ok":
            v = ev["record"]["values"]
            if state["best"] is None or v[0] > state["best"][0]:
                state["best"] = v
            bar.update(task, best=", ".join(f"{x:.4g}" for x in state["best"]))

    try:
        yield on_event
    finally:
        if state["bar"] is not None:
            state["bar"].stop()


@cli.command("run")
@click.argument("config")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory (default: the config's run_dir, else runs/NAME).")
def run_cmd(config: str, run_dir: Optional[Path]) -> None:
    """Run the search described by CONFIG (a YAML path or a shipped experiment name)."""
    from evomerge.run.config import load_run_config
    from evomerge.run.loop import default_run_dir, run_search

    cfg = load_run_config(config)
    run_dir = run_dir or default_run_dir(cfg)
    with progress_reporter(cfg.budget.evaluations) as on_event:
        run_search(cfg, run_dir, progress=on_event)
    click.echo(f"run finished: {run_dir}  (evomerge status {run_dir})")


@cli.command("resume")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--evaluations", type=int, default=None, help="Raise the evaluation budget.")
@click.option("--generations", type=int, default=None, help="Raise the generation budget.")
@click.option("--wall-time-s", type=float, default=None, help="Raise the wall-time budget.")
def resume_cmd(run_dir: Path, evaluations, generations, wall_time_s) -> None:
    """Continue a run (after a crash or kill -9) from its latest intact checkpoint."""
    from evomerge.run.loop import load_run_dir_config, resume

    budget = {k: v for k, v in dict(evaluations=evaluations, generations=generations,
                                    wall_time_s=wall_time_s).items() if v is not None}
    total = budget.get("evaluations") or load_run_dir_config(run_dir).budget.evaluations
    with progress_reporter(total) as on_event:
        resume(run_dir, progress=on_event, budget=budget or None)
    click.echo(f"run finished: {run_dir}")
