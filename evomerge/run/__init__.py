"""Runs: config, the search loop, ledger, checkpoints, Pareto/hypervolume, plots, export, CLI verbs."""

from evomerge.run.config import RunConfig, load_run_config, run_config_from_dict
from evomerge.run.validate import validate_run
from evomerge.run.loop import resume, run_search

__all__ = ["RunConfig", "load_run_config", "run_config_from_dict", "validate_run", "run_search", "resume"]
