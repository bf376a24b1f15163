"""``mpirt``: MERGE^3-style merged-model p-IRT.

The merge's ability is a combination of its parents' abilities, ``theta = sum_k w_k theta_k``; the
coefficients w are fitted (MAP/EAP, prior N(1/K, ``prior_w``^2)) on the anchor answers, then unseen items are
predicted as in p-IRT. Parents: the ``parents`` param, else the bank's endpoints.
"""

from __future__ import annotations

import numpy as np

from evomerge.errors import EvomergeError
from evomerge.fitness.estimators.base import ESTIMATORS, IRTEstimator


@ESTIMATORS.register("mpirt")
class MPIRTEstimator(IRTEstimator):
    def __init__(self, bank, anchors, **params):
        super().__init__(bank, anchors, **params)
        parents = list(params.get("parents") or bank.endpoints)
        if not parents:
            raise EvomergeError("mpirt needs parent models: set fitness.estimator_params.parents or build the "
                                "item bank with endpoints")
        self.parents = parents
        self._T = np.stack([bank.ability_of(p) for p in parents], axis=1)  # (D, K)

    def ability(self, y: np.ndarray) -> np.ndarray:
        a, b = self._design()
        k = self._T.shape[1]
        s = float(self.params.get("prior_w", 1.0))
        from evomerge.fitness.irt.ability import fit_latent  # scipy: not at import time

        w = fit_latent(y, a, b, np.full(k, 1.0 / k), s * s * np.eye(k), transform=self._T,
                       method=self.params.get("ability", "map"))
        return self._T @ w
