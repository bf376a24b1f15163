"""``validate_run(cfg)``: build the space, the optimizer and the worker class a ``RunConfig`` names, and check the
objectives against the metrics the fitness kind reports, so a bad config fails with one line before any merge
or evaluation runs (the first step of preflight)."""

from __future__ import annotations

from evomerge.errors import ConfigError
from evomerge.run.config import RunConfig, fitness_config, resolve_schedule


def validate_run(cfg: RunConfig):
    """Build (space, optimizer, worker class) or raise one clear ConfigError; does no merging/evaluation."""
    from evomerge.execution.base import EXECUTORS
    from evomerge.optim import make_optimizer
    from evomerge.spaces import build_space

    if not cfg.models:
        raise ConfigError("models is empty: list the models to merge")
    worker_cls, fitness = fitness_config(cfg)
    known = worker_cls.metrics(fitness)
    for o in cfg.objectives:
        if o.metric not in known:
            raise ConfigError(f"objective metric {o.metric!r} is not reported by fitness {cfg.fitness.kind!r} "
                              f"(known: {', '.join(known)})")
    from evomerge.tracking.base import check_trackers

    check_trackers(cfg.tracking)
    executor_cls = EXECUTORS.get(cfg.executor.name)
    if hasattr(executor_cls, "validate_options"):  # typed executor options fail here, before any compute
        executor_cls.validate_options(cfg.executor.options)
    if worker_cls.needs_models:
        from evomerge.models import resolve_model
        from evomerge.zoo.settings import unbuilt_zoo

        for ref in ([cfg.base] if cfg.base else []) + cfg.models:
            if not ref.startswith("zoo://") or unbuilt_zoo(ref) is None:  # the run builds a zoo, not validation
                resolve_model(ref)  # raises "model folder not found: ..." for a missing model
    space = build_space(cfg.space, base=cfg.base, models=cfg.models)
    optimizer = make_optimizer(cfg.optimizer.name, space, cfg.directions, seed=cfg.seed,
                               population=cfg.optimizer.population, budget=cfg.budget.evaluations,
                               options=cfg.optimizer.options)
    resolve_schedule(cfg, optimizer)
    from evomerge.run.warm_start import takes_warm_start, warm_start_points

    if warm_start_points(cfg, space):
        takes_warm_start(cfg, optimizer)  # raises for explicit points the plugin cannot take
    return space, optimizer, worker_cls
