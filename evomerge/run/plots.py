"""Plots of a run (matplotlib, Agg): best value per generation (+ hypervolume), the Pareto front, and a recipe's
parameters per layer and model (``recipe_figure``). ``write_plots`` saves the first two as PNGs; the HTML
report (``run/html_report.py``) embeds all three."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from evomerge.run.recipe_grid import Grid  # noqa: E402
from evomerge.run.report import RunReport  # noqa: E402


def progress_figure(report: RunReport):
    """Best value so far per objective (every candidate in grey) and the hypervolume, per generation."""
    gens = report.per_generation()
    if not gens:
        return None
    n = len(report.objectives)
    fig, axes = plt.subplots(1, n + 1, figsize=(4.2 * (n + 1), 3.4))
    xs = [g["gen"] for g in gens]
    oks = report.ok()
    for j, name in enumerate(report.objectives):
        axes[j].plot(xs, [g["best"][j] for g in gens], marker="o", ms=3)
        axes[j].scatter([r["gen"] for r in oks], [r["values"][j] for r in oks], s=6, alpha=0.35, color="gray")
        axes[j].set(title=f"{name} ({report.directions[j]})", xlabel="generation", ylabel="value")
    axes[n].plot(xs, [g["hypervolume"] for g in gens], marker="o", ms=3, color="tab:green")
    axes[n].set(title="hypervolume", xlabel="generation")
    fig.tight_layout()
    return fig


def pareto_figure(report: RunReport):
    """The first two objectives of every candidate, the Pareto front joined (None for one objective)."""
    ok = report.ok()
    if len(report.objectives) < 2 or not ok:
        return None
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter([r["values"][0] for r in ok], [r["values"][1] for r in ok], s=8, alpha=0.4, label="candidates")
    front = sorted(report.front(), key=lambda r: r["values"][0])
    ax.plot([r["values"][0] for r in front], [r["values"][1] for r in front], "o-", color="tab:red",
            label="Pareto front")
    ax.set(xlabel=report.objectives[0], ylabel=report.objectives[1], title="Pareto front")
    ax.legend()
    fig.tight_layout()
    return fig


def recipe_figure(grids: list[Grid]):
    """One heat map per recipe parameter: rows (model, module group), columns layers (or path steps)."""
    if not grids:
        return None
    height = sum(0.9 + 0.32 * len(g.rows) for g in grids)
    width = max(6.0, min(16.0, 3.2 + 0.45 * max(len(g.cols) for g in grids)))
    fig, axes = plt.subplots(len(grids), 1, figsize=(width, height), squeeze=False)
    for ax, g in zip(axes[:, 0], grids):
        im = ax.imshow(g.values, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_yticks(range(len(g.rows)), g.rows, fontsize=8)
        step = max(1, len(g.cols) // 32)
        ax.set_xticks(range(0, len(g.cols), step), g.cols[::step], fontsize=8)
        ax.set_title(g.title, fontsize=10)
        ax.set_xlabel(g.xlabel, fontsize=8)
        if len(g.cols) * len(g.rows) <= 160:
            for (i, j), v in _cells(g.values):
                ax.text(j, i, g.labels[i][j] if g.labels else f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if v < (g.vmid if g.vmid is not None else 0.5) else "black")
        fig.colorbar(im, ax=ax, fraction=0.025, pad=0.01)
    fig.tight_layout()
    return fig


def _cells(values):
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            if v == v:  # NaN: no cell
                yield (i, j), v


def save(fig, path: Path, dpi: int = 110) -> Path:
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def write_plots(report: RunReport, out_dir: Optional[Path] = None) -> list[Path]:
    """Write ``progress.png`` (and ``pareto.png`` for 2+ objectives) into ``out_dir`` (default RUN_DIR/plots)."""
    out_dir = Path(out_dir or report.run_dir / "plots")
    out_dir.mkdir(parents=True, exist_ok=True)
    figs: list[tuple[str, Any]] = [("progress.png", progress_figure(report)), ("pareto.png", pareto_figure(report))]
    return [save(fig, out_dir / name) for name, fig in figs if fig is not None]
