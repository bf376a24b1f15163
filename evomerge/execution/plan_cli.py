"""CLI verb ``plan``: the memory plan of a job before any compute (registered on ``evomerge.cli.cli``)."""

from __future__ import annotations

from typing import Optional

import click

from evomerge.cli import cli


@cli.command("plan")
@click.argument("config")
@click.option("--gpus", type=click.IntRange(min=0), default=None,
              help="GPUs on the node (default: those visible here).")
@click.option("--gpu-memory", default=None, help="Memory of one GPU, e.g. 80GB (default: the visible GPUs').")
@click.option("--host-memory", default=None, help="Host memory for workers, e.g. 512GB (default: available now).")
def plan_cmd(config: str, gpus: Optional[int], gpu_memory: Optional[str], host_memory: Optional[str]) -> None:
    """Per worker: host memory, GPU memory, merge scratch and cache; how many workers fit. Refuses (exit 2) a
    job that cannot fit. Reads headers and configs only."""
    from evomerge.execution.memory_plan import plan_job
    from evomerge.machine import parse_size
    from evomerge.run.staged import StagedConfig, load_job, plan_config

    job = load_job(config)
    sizes = dict(host_bytes=parse_size(host_memory, "--host-memory") if host_memory else None, n_gpus=gpus,
                 gpu_bytes=parse_size(gpu_memory, "--gpu-memory") if gpu_memory else None)
    if not isinstance(job, StagedConfig):
        _print_plan(job, plan_job(job, **sizes))
        return
    for i, stage in enumerate(job.stages):  # every stage planned before any runs (and refused like a job)
        cfg, note = plan_config(job, i)
        click.echo(f"stage {stage.name}" + (f" ({note})" if note else "") + ":")
        _print_plan(cfg, plan_job(cfg, **sizes))


def _print_plan(cfg, plan) -> None:
    if plan is None:
        click.echo(f"{cfg.name}: its fitness kind loads no models; nothing to plan")
        return
    click.echo(f"plan for {cfg.name}:")
    for line in plan.lines:
        click.echo(f"  {line}")
    where = (f"{plan.n_gpus} GPU(s) of {plan.gpu_bytes / 1e9:.0f} GB" if plan.gpus_per_worker
             else f"{plan.host_bytes / 1e9:.1f} GB of host memory")
    click.echo(f"  workers that fit on this node ({where}): {plan.workers}")
    if plan.gpus_per_worker and plan.gpu_bytes:
        w = plan.worker
        for size in (24e9, 40e9, 80e9):
            need = -(-w.device_bytes // int(size))
            click.echo(f"  on {size / 1e9:.0f} GB GPUs: {need} GPU(s) per worker")
