"""CLI verbs ``run``, ``resume``, ``check``, ``status``, ``report``, ``export`` and ``demo`` (registered on
``evomerge.cli.cli``)."""

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
def progress_reporter(total: Optional[int], maximize: bool = True):
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
            # the optimizer's recommendation is evaluated after the budget (run/recommend.py): keep the bar full
            bar.update(task, completed=min(ev["n_evals"], total) if total else ev["n_evals"], gen=ev["gen"])
        if ev["event"] == "candidate" and ev["record"]["status"] == "ok":
            v = ev["record"]["values"]
            if state["best"] is None or (v[0] > state["best"][0] if maximize else v[0] < state["best"][0]):
                state["best"] = v
            bar.update(task, best=", ".join(f"{x:.4g}" for x in state["best"]))

    try:
        yield on_event
    except BaseException:
        if state["bar"] is not None:  # the error line must stand alone: erase the bar instead of leaving it
            state["bar"].live.transient = True
        raise
    finally:
        if state["bar"] is not None:
            state["bar"].stop()


@cli.command("run")
@click.argument("config")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory (default: the config's run_dir, else runs/NAME).")
def run_cmd(config: str, run_dir: Optional[Path]) -> None:
    """Run the search (or staged job) described by CONFIG (a YAML path or a shipped experiment name).

    Running it again on the same run directory continues it."""
    from evomerge.run.loop import run_search
    from evomerge.run.run_dir import default_run_dir
    from evomerge.run.staged import StagedConfig, iter_stages, load_job

    job = load_job(config)
    if isinstance(job, StagedConfig):
        run_dir = run_dir or Path(job.run_dir or Path("runs") / job.name)
        for stage, cfg, stage_dir in iter_stages(job, run_dir):
            console.print(f"[bold]stage {stage.name}[/]: {cfg.name} in {stage_dir}")
            with progress_reporter(cfg.budget.evaluations, cfg.directions[0] == "maximize") as on_event:
                run_search(cfg, stage_dir, progress=on_event)
        click.echo(f"staged job finished: {run_dir}  (evomerge status {run_dir}/{job.stages[-1].name})")
        return
    run_dir = run_dir or default_run_dir(job)
    with progress_reporter(job.budget.evaluations, job.directions[0] == "maximize") as on_event:
        run_search(job, run_dir, progress=on_event)
    click.echo(f"run finished: {run_dir}  (evomerge status {run_dir})")


@cli.command("check")
@click.argument("config")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also check this run directory (default: where `evomerge run` would write).")
def check_cmd(config: str, run_dir: Optional[Path]) -> None:
    """Preflight CONFIG: every check that needs no compute (config, run dir, executor resources, lm-eval tasks,
    model folders); writes nothing. Exit 0 when `evomerge run CONFIG` would start."""
    from evomerge.run.run_dir import default_run_dir
    from evomerge.run.preflight import preflight
    from evomerge.run.staged import StagedConfig, check_stages, load_job

    job = load_job(config)
    if isinstance(job, StagedConfig):
        run_dir = run_dir or Path(job.run_dir or Path("runs") / job.name)
        for line in check_stages(job, run_dir):
            click.echo(line)
        click.echo(f"ok: staged job {job.name} ({len(job.stages)} stages) would run in {run_dir}")
        return
    run_dir = run_dir or default_run_dir(job)
    rep = preflight(job, run_dir)
    for line in rep.checks:
        click.echo(f"  {line}")
    click.echo(f"ok: {job.name} would run in {run_dir} ({rep.seconds:.1f}s of checks)")


@cli.command("resume")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--evaluations", type=int, default=None, help="Raise the evaluation budget.")
@click.option("--generations", type=int, default=None, help="Raise the generation budget.")
@click.option("--wall-time-s", type=float, default=None, help="Raise the wall-time budget.")
def resume_cmd(run_dir: Path, evaluations, generations, wall_time_s) -> None:
    """Continue a run (after a crash or kill -9) from its latest intact checkpoint."""
    from evomerge.run.loop import resume
    from evomerge.run.run_dir import load_run_dir_config

    budget = {k: v for k, v in dict(evaluations=evaluations, generations=generations,
                                    wall_time_s=wall_time_s).items() if v is not None}
    cfg = load_run_dir_config(run_dir)
    total = budget.get("evaluations") or cfg.budget.evaluations
    with progress_reporter(total, cfg.directions[0] == "maximize") as on_event:
        resume(run_dir, progress=on_event, budget=budget or None)
    click.echo(f"run finished: {run_dir}")


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"


@cli.command("status")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--top", type=int, default=10, show_default=True, help="How many best candidates to list.")
@click.option("--no-plots", is_flag=True, help="Skip writing PNG plots.")
def status_cmd(run_dir: Path, top: int, no_plots: bool) -> None:
    """Progress, best candidates and Pareto front of a run; writes PNG plots to RUN_DIR/plots."""
    from rich.table import Table

    from evomerge.run.report import is_recommendation
    from evomerge.run.report import RunReport

    rep = RunReport.load(run_dir)
    out = Console()
    cfg = rep.config
    b = cfg.budget
    budget = ", ".join(f"{k}={v}" for k, v in b.model_dump().items() if v is not None)
    n_failed = sum(r["status"] != "ok" for r in rep.records)
    n_rec = sum(map(is_recommendation, rep.records))
    extra = f", {n_rec} the optimizer's recommendation after the budget" if n_rec else ""
    out.print(f"[bold]{cfg.name}[/]  {run_dir}\n{len(rep.records)} evaluations ({n_failed} failed{extra}), "
              f"{rep.generations_done} generations checkpointed; budget: {budget}; optimizer {cfg.optimizer.name}")
    tests = rep.test_scores()
    t = Table(title=f"best {min(top, len(rep.ok()))} candidates")
    t.add_column("eval", justify="right")
    t.add_column("gen", justify="right")
    for o in cfg.objectives:
        t.add_column(f"{o.metric} ({'max' if o.direction == 'maximize' else 'min'})", justify="right")
    t.add_column("test " + cfg.objectives[0].metric, justify="right")
    front_ids = {r["eval_id"] for r in rep.front()}
    for r in rep.ranked()[:top]:
        test = tests.get(r["eval_id"], {}).get(cfg.objectives[0].metric)
        mark = " *" if r["eval_id"] in front_ids else ""
        t.add_row(f"{r['eval_id']}{mark}", str(r["gen"]), *[_fmt(v) for v in r["values"]], _fmt(test))
    out.print(t)
    fin = rep.finalists()
    if fin:
        out.print(f"winner: candidate {rep.best()['eval_id']}, the best of {len(fin)} finalists re-scored on fresh "
                  "search items (told + fresh pooled): " + ", ".join(f"{e}: {_fmt(v['value'])}" for e, v in fin.items()))
    g = Table(title="per generation (* = on the Pareto front)")
    for c in ("gen", "evaluated", "failed", "best so far", "hypervolume"):
        g.add_column(c, justify="right")
    for row in rep.per_generation():
        g.add_row(str(row["gen"]), str(row["n"]), str(row["failed"]), ", ".join(_fmt(v) for v in row["best"]),
                  f"{row['hypervolume']:.4g}")
    out.print(g)
    if not no_plots:
        from evomerge.run.plots import write_plots

        for p in write_plots(rep):
            out.print(f"plot: {p}")


@cli.command("report")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--html", "html", is_flag=True, default=True, help="One self-contained HTML page (the default, for now "
              "the only format).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write it (default RUN_DIR/report.html).")
def report_cmd(run_dir: Path, html: bool, out: Optional[Path]) -> None:
    """One self-contained HTML page of a run (opens without network): config, progress and hypervolume, the
    Pareto front with test scores where known, the winner's recipe per layer and model, the finalists."""
    from evomerge.run.html_report import write_html_report

    click.echo(f"report: {write_html_report(run_dir, out)}")


@cli.command("export")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--best", "which", flag_value="best", default=True, help="Export the best candidate (default).")
@click.option("--pareto", "which", flag_value="pareto", help="Export every candidate on the Pareto front.")
@click.option("--materialize", is_flag=True, help="Also write each merged model as an HF checkpoint.")
def export_cmd(run_dir: Path, out_dir: Path, which: str, materialize: bool) -> None:
    """Re-evaluate the chosen candidates on the TEST split and write recipe + mergekit YAML (+ model)."""
    from rich.table import Table

    from evomerge.run.export import export_run

    rows = export_run(run_dir, out_dir, which=which, materialize=materialize, announce=console.print)
    t = Table(title=f"{which}: search vs test")
    t.add_column("candidate")
    metrics = list(rows[0]["search"])
    for m in metrics:
        t.add_column(f"{m} search", justify="right")
        t.add_column(f"{m} test", justify="right")
    for r in rows:
        t.add_row(r["name"], *[x for m in metrics for x in (_fmt(r["search"].get(m)), _fmt(r["test"].get(m)))])
    Console().print(t)
    click.echo(f"exported {len(rows)} candidate(s) to {out_dir}")


@cli.command("demo")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/zoo_demo"),
              show_default=True)
@click.option("--variant", type=click.Choice(["ci", "full"]), default="full", show_default=True,
              help="Zoo variant (ci: seconds, for a smoke test; full: the real demo).")
@click.option("--backend", type=click.Choice(["hf", "vllm"]), default="hf", show_default=True,
              help="Evaluation engine (vllm: one vLLM engine, each candidate reloaded into it in place; "
                   "its run folder gets a _vllm suffix by default).")
def demo_cmd(run_dir: Path, variant: str, backend: str) -> None:
    """Build the tiny zoo if missing, search a merge recipe, and compare the winner on the TEST split."""
    from rich.table import Table

    from evomerge.run.demo import demo_config, demo_run_dir, run_demo
    from evomerge.zoo import ensure_zoo

    cfg = demo_config(variant, backend)  # config errors before any compute
    if backend != "hf":
        from evomerge.run.preflight import check_engine

        check_engine(cfg.fitness, None, [], lead="")  # the engine is installed and of a tested version
    if click.get_current_context().get_parameter_source("run_dir") == click.core.ParameterSource.DEFAULT:
        if backend != "hf":
            run_dir = run_dir.with_name(f"{run_dir.name}_{backend}")
        chosen, diff = demo_run_dir(run_dir, variant, backend)
        if chosen != run_dir:
            console.print(f"{run_dir} holds another run (differs in: {', '.join(diff)}); this demo goes to {chosen}")
            run_dir = chosen
    console.print(f"[bold]1/3[/] tiny zoo ({variant}): building if missing ...")
    ensure_zoo(variant, progress=True)
    console.print("[bold]2/3[/] search")
    with progress_reporter(cfg.budget.evaluations) as on_event:
        res = run_demo(run_dir, variant, progress=on_event, say=lambda s: console.print(f"    {s}"), backend=backend)
    console.print("[bold]3/3[/] comparison on the test split")
    t = Table(title="test-split exact-match accuracy (%)")
    t.add_column("model")
    for task in res["tasks"]:
        t.add_column(task, justify="right")
    t.add_column("mean", justify="right")
    t.add_column("winner - this", justify="right")
    for r in res["rows"]:
        margin = res["margin_vs"].get(r["model"])
        t.add_row(r["model"], *[f"{100 * r['test'][k]:.1f}" for k in res["tasks"]], f"{100 * r['test']['mean']:.1f}",
                  "-" if margin is None else f"{100 * margin:+.1f}")
    Console().print(t)
    fin = res.get("winner_finalist")
    if fin:
        from evomerge.run.report import RECOMMENDED

        what = (" (the optimizer's recommendation, evaluated after the budget)"
                if res.get("winner_origin") == RECOMMENDED else "")
        click.echo(f"winner: candidate {res['winner_id']}{what}, the best of the finalists re-scored on "
                   f"{sum(fin['fresh_items'].values())} fresh search items (RUN_DIR/finalists.json)")
    verdict = "beats" if res["beats_all"] else "does NOT beat"
    click.echo(f"the searched recipe {verdict} every parent and the best simple merge "
               "(uniform average, task arithmetic, TIES) "
               f"(smallest margin {100 * res['min_margin']:+.1f} points on the test mean)")
    click.echo(f"run dir: {run_dir}  (evomerge status {run_dir}; evomerge export {run_dir} OUT --best)")
