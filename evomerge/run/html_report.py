"""``evomerge report RUN_DIR --html``: one self-contained HTML page of a run (plots inlined as PNG data URIs, no
script, no network): the config, progress per generation with the hypervolume, the Pareto front (or the best
candidates) with test-split scores where known, the winner's recipe as heat maps per layer and model, and the
finalists."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
from pathlib import Path
from typing import Any, Optional

import yaml

from evomerge.run.report import RunReport, load_finalists

TEMPLATE = "report.html.j2"


def _png(fig) -> Optional[str]:
    if fig is None:
        return None
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _layers(rep: RunReport) -> Optional[int]:
    """Decoder layers of the lead model when its config.json is on this machine (a local folder or a built zoo;
    a report fetches and builds nothing); else None, and the recipe's per-layer overrides tell."""
    from evomerge.errors import EvomergeError
    from evomerge.models import resolve_model
    from evomerge.models.hub import is_hub_name
    from evomerge.zoo.settings import unbuilt_zoo

    ref = rep.config.base or rep.config.models[0]
    if is_hub_name(ref) or (ref.startswith("zoo://") and unbuilt_zoo(ref) is not None):
        return None
    try:
        path = resolve_model(ref)
        data = json.loads((Path(path) / "config.json").read_text())
        return int(data.get("num_hidden_layers") or data.get("text_config", {}).get("num_hidden_layers"))
    except (EvomergeError, OSError, ValueError, TypeError, KeyError):
        return None


def report_context(rep: RunReport) -> dict[str, Any]:
    """Everything the page shows, as plain data."""
    from evomerge.run.plots import pareto_figure, progress_figure, recipe_figure
    from evomerge.run.recipe_grid import recipe_grids

    cfg = rep.config
    objectives = rep.objectives
    tests = rep.test_scores()
    multi = len(objectives) > 1
    shown = sorted(rep.front(), key=lambda r: r["eval_id"]) if multi else rep.ranked()[:10]
    best = rep.best()
    fin_data = load_finalists(rep.run_dir)
    finalists = rep.finalists()
    fin_rows = []
    for eid, f in sorted(finalists.items(), key=lambda kv: -kv[1]["value"]):
        told = next((r["values"][0] for r in rep.records if r["eval_id"] == eid), None)
        fin_rows.append({"eval_id": eid, "told": told, "value": f["value"], "items": sum(f["fresh_items"].values()),
                         "winner": best is not None and eid == best["eval_id"]})
    grids = recipe_grids(best["recipe"], _layers(rep)) if best and best.get("recipe") else []
    failed = [r for r in rep.records if r["status"] != "ok"]
    return {
        "name": cfg.name, "description": cfg.description, "run_dir": str(rep.run_dir),
        "generated": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "optimizer": cfg.optimizer.name, "n_records": len(rep.records), "n_failed": len(failed),
        "generations": rep.generations_done,
        "budget": ", ".join(f"{k}={v}" for k, v in cfg.budget.model_dump().items() if v is not None),
        "objectives": [{"metric": o.metric, "direction": o.direction} for o in cfg.objectives],
        "test_metric": objectives[0],
        "per_generation": rep.per_generation(),
        "progress_png": _png(progress_figure(rep)), "pareto_png": _png(pareto_figure(rep)),
        "shown_title": "Pareto front" if multi else f"best {len(shown)} candidates",
        "shown": [{"eval_id": r["eval_id"], "gen": r["gen"], "values": r["values"], "origin": r.get("origin") or "",
                   "test": tests.get(r["eval_id"], {})} for r in shown],
        "winner": None if best is None else {
            "eval_id": best["eval_id"], "values": best["values"], "origin": best.get("origin") or "",
            "finalist": best.get("finalist"), "test": tests.get(best["eval_id"], {}),
            "recipe_yaml": yaml.safe_dump(best.get("recipe"), sort_keys=False) if best.get("recipe") else "",
            "recipe_png": _png(recipe_figure(grids))},
        "finalists": fin_rows,
        "finalist_items": (fin_data or {}).get("settings", {}).get("items_per_task"),
        "failures": [{"eval_id": r["eval_id"], "reason": r.get("reason", "")} for r in failed[:20]],
        "config_yaml": cfg.to_yaml(),
    }


def write_html_report(run_dir: str | Path, out: Optional[Path] = None) -> Path:
    """Render the page to ``out`` (default ``RUN_DIR/report.html``); returns its path."""
    import jinja2

    from evomerge.fsutil import atomic_write

    rep = RunReport.load(run_dir)
    env = jinja2.Environment(loader=jinja2.PackageLoader("evomerge.run", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined)
    env.filters["num"] = lambda v: "-" if v is None else f"{v:.4f}"
    html = env.get_template(TEMPLATE).render(**report_context(rep))
    out = Path(out) if out is not None else rep.run_dir / "report.html"
    atomic_write(out, html, "HTML report")
    return out
