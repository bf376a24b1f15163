"""optuna-dashboard over a run directory's journal (``evomerge dashboard``)."""

from __future__ import annotations

import logging
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from evomerge.errors import EvomergeError

log = logging.getLogger(__name__)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the stdlib's name
        log.debug("dashboard: " + format, *args)


def refresh_journal(run_dir: Path) -> Path:
    """The run's journal, brought level with its ledger first when no search is writing it (a search that runs
    keeps it level itself); returns its path."""
    from evomerge.run.ledger import Ledger
    from evomerge.run.run_dir import load_run_dir_config
    from evomerge.spaces import build_space
    from evomerge.tracking.base import TrackedRun
    from evomerge.tracking.optuna_journal import journal_path, space_distributions, sync_journal, writer_lock

    run_dir = Path(run_dir)
    cfg = load_run_dir_config(run_dir)
    with writer_lock(run_dir, wait=False) as free:
        if free:
            space = build_space(cfg.space, base=cfg.base, models=cfg.models)
            run = TrackedRun(name=cfg.name, run_dir=run_dir, config=cfg.model_dump(mode="json"),
                             objectives=[o.metric for o in cfg.objectives], directions=cfg.directions,
                             params=space.names())
            led = run_dir / "ledger.jsonl"
            sync_journal(run, space_distributions(space), Ledger(led).records() if led.exists() else [])
    path = journal_path(run_dir)
    if not path.exists():
        raise EvomergeError(f"{run_dir} has no optuna journal yet and a search is starting in it: try again in a "
                            "moment")
    return path


def dashboard_server(run_dir: Path, host: str, port: int) -> tuple[WSGIServer, Path]:
    """A WSGI server (bound, not yet serving) for optuna-dashboard on ``run_dir``'s journal."""
    from optuna.storages.journal import JournalFileBackend, JournalStorage
    from optuna_dashboard import wsgi

    path = refresh_journal(run_dir)
    app = wsgi(JournalStorage(JournalFileBackend(str(path))))
    try:
        server = make_server(host, port, app, handler_class=_QuietHandler)
    except OSError as exc:
        raise EvomergeError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port") from None
    return server, path
