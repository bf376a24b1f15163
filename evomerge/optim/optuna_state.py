"""An optuna study as plain data, and back: what an optuna checkpoint holds (no pickle).

``study_state(study)`` gives every trial (number, state, values, start / end times, params, distributions as
``optuna.distributions.distribution_to_json``, user / system attributes, intermediate values), the study's
system and user attributes (NSGA-II caches its parent populations there), and the state of every random
generator the sampler holds (``LazyRandomState`` / ``RandomState`` objects reachable through its attributes,
found by path). ``restore_study(data, sampler, n_objectives)`` replays the trials into a fresh in-memory study
(``add_trial`` in number order, so numbers and trial ids are the original ones; asked-but-untold trials come
back RUNNING) over a freshly built sampler of the same settings, then puts the generators' states back. The
samplers offered (TPE, NSGA-II, CMA-ES, random) keep nothing else that is not derived from the trials, so the
restored study asks exactly what the original would have asked next (``tests/test_optim.py``,
``tests/test_run_resume.py``).

One exception: optuna's CMA-ES sampler stores its ``cmaes`` optimizer in trial system attributes as a pickle
(hex text, optuna's own format) and unpickles it itself. Those attributes are checked against the allow-list
of :mod:`evomerge.safe_pickle` before optuna sees them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np

from evomerge.errors import EvomergeError

_MAX_DEPTH = 3


def _rng_objects(sampler) -> dict[str, Any]:
    """``{attribute path: generator}`` of the sampler's LazyRandomState / RandomState objects, each object once
    (at its first path in sorted attribute order)."""
    from optuna.samplers._lazy_random_state import LazyRandomState

    found: dict[str, Any] = {}
    seen: set[int] = set()

    def walk(obj, path: str, depth: int) -> None:
        for name in sorted(vars(obj)):
            val = getattr(obj, name)
            sub = f"{path}.{name}" if path else name
            if isinstance(val, (LazyRandomState, np.random.RandomState)):
                if id(val) not in seen:
                    seen.add(id(val))
                    found[sub] = val
            elif depth < _MAX_DEPTH and type(val).__module__.startswith("optuna.") and hasattr(val, "__dict__"):
                walk(val, sub, depth + 1)

    walk(sampler, "", 0)
    return found


def _rng_state(gen) -> Any:
    rs = getattr(gen, "_rng", gen) if not isinstance(gen, np.random.RandomState) else gen
    if rs is None:  # a LazyRandomState never used: it is still the seeded one a fresh sampler has
        return None
    name, keys, pos, has_gauss, cached = rs.get_state()
    return {"name": name, "keys": np.asarray(keys), "pos": int(pos), "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached)}


def _set_rng_state(gen, state) -> None:
    if state is None:
        return
    rs = gen if isinstance(gen, np.random.RandomState) else gen.rng
    rs.set_state((state["name"], np.asarray(state["keys"], dtype=np.uint32), state["pos"], state["has_gauss"],
                  state["cached_gaussian"]))


def _time(t: dt.datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def _trial_data(t) -> dict[str, Any]:
    from optuna.distributions import distribution_to_json

    return {"number": t.number, "state": t.state.name, "values": t.values,
            "datetime_start": _time(t.datetime_start), "datetime_complete": _time(t.datetime_complete),
            "params": dict(t.params),
            "distributions": {k: distribution_to_json(d) for k, d in t.distributions.items()},
            "user_attrs": dict(t.user_attrs), "system_attrs": dict(t.system_attrs),
            "intermediate_values": [[int(k), v] for k, v in t.intermediate_values.items()]}


def study_state(study) -> dict[str, Any]:
    """The study as plain data (see the module doc)."""
    return {"trials": [_trial_data(t) for t in study.get_trials(deepcopy=False)],
            "study_system_attrs": dict(study._storage.get_study_system_attrs(study._study_id)),
            "study_user_attrs": dict(study.user_attrs),
            "rngs": {path: _rng_state(g) for path, g in _rng_objects(study.sampler).items()}}


def _check_pickled_attrs(trial: dict[str, Any]) -> None:
    """optuna's CMA-ES sampler unpickles ``cma:optimizer:N`` (``sepcma:``, ``cmawm:``) attributes: check them."""
    from evomerge.safe_pickle import safe_loads

    attrs = trial["system_attrs"]
    for prefix in ("cma:optimizer:", "sepcma:optimizer:", "cmawm:optimizer:"):
        parts = {k: v for k, v in attrs.items() if k.startswith(prefix)}
        if not parts:
            continue
        try:
            blob = bytes.fromhex("".join(parts[f"{prefix}{i}"] for i in range(len(parts))))
        except (KeyError, TypeError, ValueError):
            raise EvomergeError(f"optuna trial {trial['number']}: malformed {prefix} attributes") from None
        safe_loads(blob, f"optuna trial {trial['number']} CMA-ES state")


def restore_study(data: dict[str, Any], sampler, n_objectives: int):
    """A fresh in-memory study over ``sampler`` holding ``data``'s trials, attributes and generator states."""
    import optuna
    from optuna.distributions import json_to_distribution
    from optuna.trial import FrozenTrial, TrialState

    study = optuna.create_study(directions=["minimize"] * n_objectives, sampler=sampler)
    for key, value in data["study_system_attrs"].items():
        study._storage.set_study_system_attr(study._study_id, key, value)
    for key, value in data["study_user_attrs"].items():
        study.set_user_attr(key, value)
    for t in sorted(data["trials"], key=lambda t: t["number"]):
        _check_pickled_attrs(t)
        start, end = t["datetime_start"], t["datetime_complete"]
        values = t["values"]
        study.add_trial(FrozenTrial(
            number=t["number"], state=TrialState[t["state"]], value=None,
            values=None if values is None else list(values),
            datetime_start=None if start is None else dt.datetime.fromisoformat(start),
            datetime_complete=None if end is None else dt.datetime.fromisoformat(end),
            params=t["params"], user_attrs=t["user_attrs"], system_attrs=t["system_attrs"],
            distributions={k: json_to_distribution(d) for k, d in t["distributions"].items()},
            intermediate_values={int(k): v for k, v in t["intermediate_values"]}, trial_id=t["number"]))
    gens = _rng_objects(sampler)
    for path, state in data["rngs"].items():
        if path not in gens:
            raise EvomergeError(f"optuna sampler state names a generator {path!r} this sampler does not have "
                                "(another optuna version or sampler?)")
        _set_rng_state(gens[path], state)
    return study
