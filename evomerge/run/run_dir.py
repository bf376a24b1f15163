"""The run folder's identity: where a run lives, the config it holds (hub models pinned to their commits), and
whether a config names the run a folder already holds."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from evomerge.errors import ConfigError, EvomergeError
from evomerge.fsutil import atomic_write, remove_stale_temps
from evomerge.run.config import RunConfig, run_config_from_dict
from evomerge.yaml_io import parse_yaml

RUN_ROOT = Path("runs")


def default_run_dir(cfg: RunConfig) -> Path:
    """``cfg.run_dir`` (a relative path inside the working folder, checked by RunConfig), else RUN_ROOT/NAME."""
    return Path(cfg.run_dir) if cfg.run_dir else RUN_ROOT / cfg.name


def identity(cfg: RunConfig) -> dict[str, Any]:
    """The parts of a config that define *which* run it is (budget, run_dir, the executor, the finalists and the
    trackers may change on resume: a run can go on with more workers, on a cluster, watched by another tool)."""
    d = cfg.model_dump(mode="json")
    for key in ("budget", "run_dir", "description", "executor", "finalists", "tracking"):
        d.pop(key, None)
    return d


def sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def load_run_dir_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise EvomergeError(f"{run_dir} is not a run directory (no config.yaml)")
    return run_config_from_dict(parse_yaml(path.read_text(), f"run config YAML {path}"))


def identity_diff(cfg: RunConfig, run_dir: Path) -> list[str]:
    """Top-level keys in which ``cfg`` names another run than the one ``run_dir`` holds ([] = the same run)."""
    a, b = identity(load_run_dir_config(run_dir)), identity(cfg)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def started(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` has computed anything (a ledger record, a checkpoint, an item bank, an
    export): a run that failed while starting (a worker that could not be built) has not, and its folder may
    take a corrected config."""
    run_dir = Path(run_dir)
    ledger = run_dir / "ledger.jsonl"
    if ledger.is_file() and ledger.read_bytes().strip():
        return True
    return any(any((run_dir / sub).iterdir()) for sub in ("checkpoints", "item_bank", "pareto")
               if (run_dir / sub).is_dir())


def check_same_run(cfg: RunConfig, run_dir: Path) -> None:
    """Refuse ``cfg`` when ``run_dir`` holds another run that has started (one line naming what differs)."""
    if not (Path(run_dir) / "config.yaml").exists():
        return
    diff = identity_diff(cfg, run_dir)
    if diff and started(run_dir):
        raise ConfigError(f"run dir {run_dir} already holds a different run (differs in: {', '.join(diff)}); "
                          "pick another --run-dir or use 'evomerge resume'")


def prepare_run_dir(cfg: RunConfig, run_dir: Path) -> None:
    """Create the run dir with the resolved config, or check an existing one holds this same run; removes
    temporary files an interrupted write left behind."""
    check_same_run(cfg, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(run_dir)
    atomic_write(run_dir / "config.yaml", cfg.to_yaml())


def pin_hub_models(cfg: RunConfig, run_dir: Path) -> RunConfig:
    """``cfg`` with every hub model pinned to a commit: the one ``run_dir`` already holds for it (a run
    continued), else the one its revision names now. The pinned config is what the run folder keeps."""
    from evomerge.execution.base import WORKERS
    from evomerge.models.hub import HubRef, pin, pin_all, pinned_refs

    if not WORKERS.get(cfg.fitness.kind).needs_models:
        return cfg  # model references are only names to a fitness that loads no models
    data = cfg.model_dump(mode="json")
    held: dict[str, str] = {}
    if (run_dir / "config.yaml").is_file():
        try:
            held = pinned_refs(load_run_dir_config(run_dir).model_dump(mode="json"))
        except EvomergeError:
            pass  # preflight names what is wrong with the run dir

    def resolve(ref: str) -> str:
        h = HubRef.parse(ref)
        return held[h.repo_id] if h is not None and not h.pinned and h.repo_id in held else pin(ref)

    pinned = pin_all(data, resolve)
    return cfg if pinned == data else run_config_from_dict(pinned)
