"""Cost of one lm-eval call on a few items (what every round of an IRT estimator pays), with and without the
evaluator's in-memory copy of the evaluation docs, side by side.

    python benchmarks/subset_eval.py [--variant full] [--repeats 5]

Rows: items per task (3 zoo skills, 1000 search docs each) -> median seconds per ``evaluate`` call with the docs
cached (the default) and read from the Arrow dataset each call (lm-eval's own path), and the ratio. The
model is the zoo's base; batch size 64; the first call of each evaluator (HFLM wrap) is not timed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="full")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evomerge.fitness import LMEvalEvaluator
    from evomerge.models import resolve_model
    from evomerge.resources import shipped_dir
    from evomerge.zoo import ensure_zoo

    ensure_zoo(args.variant)
    path = resolve_model(f"zoo://{args.variant}/base")
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    tasks = ["zoo_add", "zoo_reverse", "zoo_sort"]
    evs = {cached: LMEvalEvaluator(tasks, include_path=str(shipped_dir("fitness") / "zoo"), batch_size=64,
                                   cache_docs=cached) for cached in (True, False)}
    for ev in evs.values():
        ev.evaluate(model, tok, {t: [0] for t in tasks})  # wrap the model once, warm caches
    t = Table(title=f"one lm-eval call on a subset ({args.variant} zoo base, median of {args.repeats})")
    for col in ("items/task", "docs cached s", "lm-eval docs s", "speed-up"):
        t.add_column(col, justify="right")
    for n in (4, 8, 20, 100):
        times = {}
        for cached, ev in evs.items():
            runs = []
            for r in range(args.repeats):
                items = {k: list(range(100 * r + 1, 100 * r + 1 + n)) for k in tasks}
                t0 = time.perf_counter()
                ev.evaluate(model, tok, items)
                runs.append(time.perf_counter() - t0)
            times[cached] = statistics.median(runs)
        t.add_row(str(n), f"{times[True]:.3f}", f"{times[False]:.3f}", f"{times[False] / times[True]:.1f}x")
    Console(width=120).print(t)


if __name__ == "__main__":
    main()
