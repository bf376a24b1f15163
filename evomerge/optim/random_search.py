"""Uniform random search (any number of objectives): a reference point for every other optimizer."""

from __future__ import annotations

import numpy as np

from evomerge.optim.base import Optimizer
from evomerge.optim.registry import OPTIMIZERS


@OPTIMIZERS.register("random")
class RandomSearch(Optimizer):
    multi_objective = True
    partial_tell = True
    plain_state = True  # the generator's state: a JSON dict (128-bit integers included)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._rng = np.random.default_rng(self.seed)
        self._injected: list = []

    def _inject(self, points):
        self._injected = list(points)

    def _ask(self, n):
        injected, self._injected = self._injected, []
        return [(p, None) for p in injected] + [(self.space.sample(self._rng), None) for _ in range(n - len(injected))]

    def _tell(self, handles, losses):
        pass

    def _get_state(self):
        return self._rng.bit_generator.state

    def _set_state(self, state):
        self._rng.bit_generator.state = state
