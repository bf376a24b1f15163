"""The run's optuna journal (``RUN_DIR/optuna_journal.log``): the ledger mirrored as an optuna study, so
optuna-dashboard (``evomerge dashboard RUN_DIR``) shows every search live, whatever its optimizer.

One trial per ledger record, numbered by eval_id: the parameters as the search space names them (with their
optuna distributions), the objective values, the state (complete; fail for a failed candidate; pruned for one
that racing stopped early, its estimate kept as an intermediate value at the items it answered) and user
attributes (gen, origin, reason, metrics, timings, fidelity).

The ledger is the truth and the journal only mirrors it: when a search starts (fresh or resumed) the journal's
trials are compared with the ledger's records; a journal that is a prefix of the ledger (the usual case after a
kill: it lags by the records in flight) gets the missing trials appended, so a dashboard left open keeps
following the run; any other journal (edited, from another config, torn in the middle) is rebuilt whole and
swapped in atomically. While a search runs it holds ``RUN_DIR/.optuna_journal.lock`` (the journal's only
writer); ``evomerge dashboard`` rebuilds a missing journal only when no search holds it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional

from evomerge.tracking.base import RunSummary, TrackedRun, Tracker

log = logging.getLogger(__name__)
JOURNAL_FILE = "optuna_journal.log"
WRITER_LOCK = ".optuna_journal.lock"
#: fidelity fields a trial keeps (the fingerprint of the fitness setup is the same for every candidate)
_FIDELITY_KEYS = ("items", "se", "level", "stopped", "bank_rows", "threshold")


def journal_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / JOURNAL_FILE


@contextlib.contextmanager
def writer_lock(run_dir: Path, wait: bool = True) -> Iterator[bool]:
    """Hold the journal's writer lock; yields False (without waiting) when ``wait`` is off and another process
    holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / WRITER_LOCK, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def space_distributions(space) -> dict[str, Any]:
    from evomerge.optim.optuna_opt import param_distribution

    return {p.name: param_distribution(p) for p in space.params}


def frozen_trial(record: dict[str, Any], distributions: dict[str, Any], objectives: list[str]):
    """The optuna trial that stands for one ledger record."""
    from optuna.trial import FrozenTrial, TrialState

    fid = record.get("fidelity") or {}
    pruned = record["status"] == "ok" and bool(fid.get("stopped"))
    state = TrialState.FAIL if record["status"] != "ok" else TrialState.PRUNED if pruned else TrialState.COMPLETE
    values = record["values"] if state == TrialState.COMPLETE else None
    attrs: dict[str, Any] = {"eval_id": record["eval_id"], "gen": record["gen"], "metrics": record.get("metrics") or {},
                             "timings": record.get("timings") or {}}
    if record.get("origin"):
        attrs["origin"] = record["origin"]
    if record.get("reason"):
        attrs["reason"] = record["reason"]
    if fid:
        attrs["fidelity"] = {k: fid[k] for k in _FIDELITY_KEYS if k in fid}
    if state != TrialState.COMPLETE:
        attrs["told_values"] = record["values"]  # what the optimizer was told (penalty, or the racing estimate)
    params, dists, outside = {}, {}, {}
    for name, value in (record.get("point") or {}).items():
        d = distributions.get(name)
        try:
            if d is None or not d._contains(d.to_internal_repr(value)):
                raise ValueError(name)
            params[name], dists[name] = value, d
        except (ValueError, TypeError):  # a point from an older space (warm start, edited config): kept apart
            outside[name] = value
    if outside:
        attrs["params_outside_space"] = outside
    done = dt.datetime.fromtimestamp(record.get("time") or 0.0, tz=dt.timezone.utc)
    took = sum(v for v in (record.get("timings") or {}).values() if isinstance(v, (int, float)))
    inter = {}
    if pruned and len(objectives) == 1:
        inter = {int(fid.get("items", 0)): float(record["values"][0])}
    return FrozenTrial(number=record["eval_id"], state=state, value=None, values=values,
                       datetime_start=done - dt.timedelta(seconds=took), datetime_complete=done, params=params,
                       distributions=dists, user_attrs=attrs, system_attrs={}, intermediate_values=inter,
                       trial_id=record["eval_id"])


def _key(trial) -> str:
    """What must agree between a journal trial and the ledger's (times are not compared: float round-off)."""
    return json.dumps({"n": trial.number, "state": int(trial.state), "values": trial.values, "params": trial.params,
                       "attrs": trial.user_attrs, "inter": {str(k): v for k, v in trial.intermediate_values.items()}},
                      sort_keys=True, default=str)


def _cut_torn_tail(path: Path) -> None:
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(end)


class OptunaJournal(Tracker):
    """The always-on mirror of the ledger into ``RUN_DIR/optuna_journal.log``."""

    requires = ("optuna",)

    def __init__(self, run: TrackedRun, options, state: dict[str, Any], space):
        super().__init__(run, options, state)
        self._dists = space_distributions(space)
        self._lock_cm = None
        self._study = None

    def start(self, records: list[dict[str, Any]]) -> None:
        self._lock_cm = writer_lock(self.run.run_dir)
        self._lock_cm.__enter__()
        self._study = sync_journal(self.run, self._dists, records)

    def candidate(self, record: dict[str, Any]) -> None:
        self._study.add_trial(frozen_trial(record, self._dists, self.run.objectives))

    def finish(self, summary: RunSummary) -> None:
        if summary.winner is not None:
            self._study.set_user_attr("winner_eval_id", summary.winner["eval_id"])

    def close(self, status: str) -> None:
        if self._lock_cm is not None:
            self._lock_cm.__exit__(None, None, None)
            self._lock_cm = None


def _storage(path: Path):
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return JournalStorage(JournalFileBackend(str(path)))


def _new_study(run: TrackedRun, path: Path):
    import optuna

    study = optuna.create_study(storage=_storage(path), study_name=run.name, directions=run.directions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # set_metric_names is "experimental" in optuna
        study.set_metric_names(list(run.objectives))
    study.set_user_attr("run_dir", str(run.run_dir))
    study.set_user_attr("optimizer", run.config.get("optimizer", {}).get("name"))
    study.set_user_attr("mirror", "evomerge ledger.jsonl (the source of truth); rebuilt from it on resume")
    return study


def sync_journal(run: TrackedRun, distributions: dict[str, Any], records: list[dict[str, Any]]):
    """Make ``RUN_DIR/optuna_journal.log`` equal the ledger's ``records`` (append when it is a prefix, else
    rebuild); the caller holds the writer lock. Returns the study, ready for more trials."""
    import optuna

    path = journal_path(run.run_dir)
    want = [frozen_trial(r, distributions, run.objectives) for r in records]
    study = None
    if path.exists():
        Path(f"{path}.lock").unlink(missing_ok=True)  # optuna's own lock, left by a killed writer
        _cut_torn_tail(path)
        try:
            found = optuna.load_study(study_name=run.name, storage=_storage(path))
            have = found.get_trials(deepcopy=False)
            if (found.directions == [optuna.study.StudyDirection[d.upper()] for d in run.directions]
                    and len(have) <= len(want) and all(_key(a) == _key(b) for a, b in zip(have, want))):
                study, want = found, want[len(have):]
            else:
                log.info("optuna journal %s differs from the ledger: rebuilt", path)
        except Exception as exc:  # noqa: BLE001 - any unreadable journal is rebuilt from the ledger
            log.info("optuna journal %s unreadable (%s): rebuilt from the ledger", path, type(exc).__name__)
    if study is None:
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        study = _new_study(run, tmp)
        for trial in want:
            study.add_trial(trial)
        os.replace(tmp, path)
        Path(f"{tmp}.lock").unlink(missing_ok=True)
        return optuna.load_study(study_name=run.name, storage=_storage(path))
    for trial in want:
        study.add_trial(trial)
    return study


def journal_matches(run_dir: str | Path, records: list[dict[str, Any]], run: TrackedRun,
                    space) -> Optional[bool]:
    """Whether the journal's trials equal the ledger's records (None: no journal)."""
    import optuna

    path = journal_path(run_dir)
    if not path.exists():
        return None
    dists = space_distributions(space)
    have = optuna.load_study(study_name=run.name, storage=_storage(path)).get_trials(deepcopy=False)
    want = [frozen_trial(r, dists, run.objectives) for r in records]
    return len(have) == len(want) and all(_key(a) == _key(b) for a, b in zip(have, want))
