"""Watching a search: the optuna journal mirror of the ledger (for optuna-dashboard) and tracker plugins
(W&B, MLflow, third-party ones through the ``evomerge.trackers`` entry-point group)."""

from evomerge.tracking.base import TRACKERS, RunSummary, TrackedRun, Tracker, check_trackers
from evomerge.tracking.dispatch import Tracking

__all__ = ["TRACKERS", "RunSummary", "TrackedRun", "Tracker", "Tracking", "check_trackers"]
