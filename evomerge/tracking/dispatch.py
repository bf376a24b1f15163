"""Run the trackers beside the search: one thread and one queue per tracker, so a slow tracker (a remote server,
a network timeout) never slows the search, and one that raises logs one warning and is dropped.

:class:`Tracking` is what the search loop holds: ``candidate(record)`` as each ledger record lands (a queue put),
``finish()`` once the search is done (winner, Pareto front, plots), ``close(status)`` always. The optuna journal
mirror (:mod:`evomerge.tracking.optuna_journal`) is always one of its trackers; ``tracking:`` in the job config
adds the others.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any, Optional

from evomerge.fsutil import NO_SPACE, atomic_write
from evomerge.tracking.base import TRACKERS, RunSummary, TrackedRun, Tracker, lean, tracker_options

log = logging.getLogger(__name__)
#: how long ``close`` waits for a tracker to log what is queued (the search itself never waits)
CLOSE_TIMEOUT_S = 120.0
ABORT_TIMEOUT_S = 10.0
_STOP = object()


class TrackerThread:
    """One tracker, fed through a queue by its own daemon thread."""

    def __init__(self, name: str, tracker: Tracker, state_path: Optional[Path]):
        self.name, self.tracker, self.state_path = name, tracker, state_path
        self.failed = False
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=f"evomerge-tracker-{name}", daemon=True)
        self._thread.start()

    def put(self, method: str, *args: Any) -> None:
        if not self.failed:
            self._queue.put((method, args))

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            method, args = item
            if self.failed:
                continue
            try:
                getattr(self.tracker, method)(*args)
                if method == "start" and args[0]:
                    self._logged(args[0][-1]["eval_id"])
                elif method == "candidate":
                    self._logged(args[0]["eval_id"])
            except Exception as exc:  # noqa: BLE001 - a tracker must never stop the search
                self.failed = True
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                # the journal mirror on a full disk: the ledger's next write fails with the one error line that
                # says so, and the mirror is rebuilt from the ledger on resume
                quiet = self.name == "optuna_journal" and getattr(exc, "errno", None) in NO_SPACE
                log.log(logging.INFO if quiet else logging.WARNING, "tracker %s failed in %s (%s: %s); the search "
                        "goes on without it", self.name, method, type(exc).__name__, first)

    def _logged(self, eval_id: int) -> None:
        self.tracker.state["logged_through"] = max(eval_id, self.tracker.state.get("logged_through", -1))
        if self.state_path is not None:
            atomic_write(self.state_path, json.dumps(self.tracker.state, sort_keys=True), "tracker state")

    def stop(self, deadline: float) -> bool:
        """Let the queue drain until ``deadline`` (monotonic); False when the tracker was still busy."""
        self._queue.put(_STOP)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()


def load_state(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


class Tracking:
    """The trackers of one search (the optuna journal mirror first)."""

    def __init__(self, run: TrackedRun, space, specs, records: list[dict[str, Any]]):
        from evomerge.tracking.optuna_journal import OptunaJournal

        self.run = run
        self.threads: list[TrackerThread] = []
        state_dir = run.run_dir / "tracking"
        self._add("optuna_journal", lambda: OptunaJournal(run, None, {}, space), None)
        for spec in specs:
            path = state_dir / f"{spec.name}.json"
            self._add(spec.name, lambda s=spec, p=path: TRACKERS.get(s.name)(run, tracker_options(s.name, s.options),
                                                                            load_state(p)), path)
        backlog = [lean(r) for r in records]
        for t in self.threads:
            t.put("start", backlog)

    def _add(self, name: str, build, state_path: Optional[Path]) -> None:
        try:
            tracker = build()
        except Exception as exc:  # noqa: BLE001
            log.warning("tracker %s could not start (%s: %s); the search goes on without it", name,
                        type(exc).__name__, exc)
            return
        if state_path is not None:
            state_path.parent.mkdir(parents=True, exist_ok=True)
        self.threads.append(TrackerThread(name, tracker, state_path))

    def candidate(self, record: dict[str, Any]) -> None:
        rec = lean(record)
        for t in self.threads:
            t.put("candidate", rec)

    def finish(self) -> None:
        """Hand the trackers the run's end: winner, front, progress, plots (written to RUN_DIR/plots)."""
        if not any(not t.failed for t in self.threads):
            return
        summary = run_summary(self.run.run_dir, plots=len(self.threads) > 1)
        for t in self.threads:
            t.put("finish", summary)

    def close(self, status: str, timeout: Optional[float] = None) -> None:
        """Tell every tracker the run ended (``status``: finished, failed, interrupted) and wait for their queues
        (up to CLOSE_TIMEOUT_S after a finished search, ABORT_TIMEOUT_S after Ctrl-C or an error)."""
        if timeout is None:
            timeout = CLOSE_TIMEOUT_S if status == "finished" else ABORT_TIMEOUT_S
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.put("close", status)
        for t in self.threads:
            if not t.stop(deadline):
                log.warning("tracker %s still busy after %.0f s; what it has not logged yet is left", t.name, timeout)


def run_summary(run_dir: Path, plots: bool = True) -> RunSummary:
    from evomerge.run.report import RunReport

    rep = RunReport.load(run_dir)
    paths = []
    if plots:
        from evomerge.run.plots import write_plots

        paths = write_plots(rep)
    best = rep.best()
    return RunSummary(winner=lean(best) if best else None, front=[lean(r) for r in rep.front()],
                      per_generation=rep.per_generation(),
                      test_scores=rep.test_scores(), plots=paths)
