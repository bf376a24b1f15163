"""Start-up time of the CLI: each command in a fresh process, interleaved rounds, median wall time, and the
ratio to ``python -c pass`` measured in the same rounds.

    python benchmarks/startup.py [--rounds 7]

Rows: ``evomerge --help``; ``status`` of a small finished run; a config error (an unknown key, caught before
any plugin loads); ``check`` of a config whose optimizer option is misspelled (pycma's option names, cached
per pycma version); ``check`` of a whole synthetic-fitness config (builds the space and the optimizer);
``check`` of the demo config (``experiments/zoo_demo.yaml`` as shipped when the full zoo is built, else the
same config on the CI zoo: also reads the model headers, the include path's task names and the memory plan).
``python -c "import torch"`` is the reference for what a command that imports torch pays.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

SYN = {"name": "startup", "base": "/m/base", "models": ["/m/a", "/m/b"],
       "space": {"preset": "ties_layerwise", "num_layers": 4}, "fitness": {"kind": "synthetic"},
       "objectives": [{"metric": "mean"}], "optimizer": {"name": "cma", "population": 4},
       "budget": {"evaluations": 8}}


def timed(argv: list[str], cwd: Path, env: dict) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    return time.perf_counter() - t0, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--no-zoo", action="store_true", help="skip the row that needs the CI zoo")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="evomerge-startup-"))
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    (work / "syn.yaml").write_text(yaml.safe_dump(SYN))
    (work / "typo.yaml").write_text(yaml.safe_dump({**SYN, "modles": ["/m/a"]}))
    (work / "badopt.yaml").write_text(yaml.safe_dump(
        {**SYN, "optimizer": {"name": "cma", "options": {"cma_options": {"popsizee": 3}}}}))
    ev = [sys.executable, "-m", "evomerge"]
    rc = subprocess.run(ev + ["run", "syn.yaml"], cwd=work, env=env, capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr
    rows = {
        'python -c "pass"': [sys.executable, "-c", "pass"],
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
        "evomerge --help": ev + ["--help"],
        "evomerge status RUN --no-plots": ev + ["status", "runs/startup", "--no-plots"],
        "evomerge run CONFIG (config error)": ev + ["run", "typo.yaml"],
        "evomerge check CONFIG (bad pycma option)": ev + ["check", "badopt.yaml"],
        "evomerge check CONFIG (synthetic fitness)": ev + ["check", "syn.yaml", "--run-dir", "runs/fresh"],
    }
    if not args.no_zoo:
        from evomerge.zoo.settings import unbuilt_zoo

        shipped = Path(__file__).resolve().parents[1] / "experiments" / "zoo_demo.yaml"
        if unbuilt_zoo("zoo://full/base") is None:
            rows["evomerge check experiments/zoo_demo.yaml"] = ev + ["check", str(shipped), "--run-dir", "runs/fresh"]
        else:
            from evomerge.zoo import ensure_zoo

            zoo = ensure_zoo("ci")
            demo = yaml.safe_load(shipped.read_text())
            demo.update(base=str(zoo / "base"), models=[str(zoo / n) for n in ("add", "reverse", "sort")])
            (work / "demo.yaml").write_text(yaml.safe_dump(demo))
            rows["evomerge check zoo_demo (CI zoo)"] = ev + ["check", "demo.yaml", "--run-dir", "runs/fresh"]
    times: dict[str, list[float]] = {k: [] for k in rows}
    for _ in range(args.rounds):  # interleaved, so load changes hit every row alike
        for name, argv in rows.items():
            dt, code = timed(argv, work, env)
            expect_fail = "error" in name or "bad" in name
            assert (code != 0) == expect_fail, f"{name}: exit {code}"
            times[name].append(dt)
    base = statistics.median(times['python -c "pass"'])
    t = Table(title=f"start-up, median of {args.rounds} fresh processes ({os.cpu_count()} CPUs, "
                    f"load {os.getloadavg()[0]:.1f})")
    t.add_column("command")
    t.add_column("median s", justify="right")
    t.add_column("min s", justify="right")
    t.add_column("vs python -c pass", justify="right")
    for name, ts in times.items():
        med = statistics.median(ts)
        t.add_row(name, f"{med:.3f}", f"{min(ts):.3f}", f"{med / base:.1f}x")
    Console().print(t)


if __name__ == "__main__":
    main()
