"""PNG plots of a run (matplotlib, Agg): best value per generation (+ hypervolume) and the Pareto front."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from evomerge.run.report import RunReport  # noqa: E402


def write_plots(report: RunReport, out_dir: Path | None = None) -> list[Path]:
    """Write ``progress.png`` (and ``pareto.png`` for 2+ objectives) into ``out_dir`` (default RUN_DIR/plots)."""
    out_dir = Path(out_dir or report.run_dir / "plots")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    gens = report.per_generation()
    if gens:
        n = len(report.objectives)
        fig, axes = plt.subplots(1, n + 1, figsize=(4.2 * (n + 1), 3.4))
        xs = [g["gen"] for g in gens]
        for j, name in enumerate(report.objectives):
            axes[j].plot(xs, [g["best"][j] for g in gens], marker="o", ms=3)
            oks = report.ok()
            axes[j].scatter([r["gen"] for r in oks], [r["values"][j] for r in oks], s=6, alpha=0.35, color="gray")
            axes[j].set(title=f"{name} ({report.directions[j]})", xlabel="generation", ylabel="value")
        axes[n].plot(xs, [g["hypervolume"] for g in gens], marker="o", ms=3, color="tab:green")
        axes[n].set(title="hypervolume", xlabel="generation")
        fig.tight_layout()
        path = out_dir / "progress.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    if len(report.objectives) >= 2 and report.ok():
        fig, ax = plt.subplots(figsize=(5, 4))
        ok = report.ok()
        ax.scatter([r["values"][0] for r in ok], [r["values"][1] for r in ok], s=8, alpha=0.4, label="candidates")
        front = sorted(report.front(), key=lambda r: r["values"][0])
        ax.plot([r["values"][0] for r in front], [r["values"][1] for r in front], "o-", color="tab:red",
                label="Pareto front")
        ax.set(xlabel=report.objectives[0], ylabel=report.objectives[1], title="Pareto front")
        ax.legend()
        fig.tight_layout()
        path = out_dir / "pareto.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
