"""DELLA: magnitude-based random pruning (MagPrune). In each row of a task vector, entries are ranked by
magnitude and kept with probability p = density - epsilon + 2 * epsilon * rank / (n - 1), then rescaled;
followed by TIES sign election (``della``) or a plain weighted sum (``della_linear``)::

    d_i = rescale(Bernoulli(p_i) * (theta_i - theta_base));  theta = theta_base + lambda * merge(w_i d_i)

Requires 0 < density - epsilon and density + epsilon < 1. Seeded by (recipe seed, model, tensor name).
Deep et al., "DELLA-Merging", https://arxiv.org/abs/2406.11617
"""

from evomerge.merge.methods._task_arithmetic_core import (
    DENSITY,
    TaskArithmeticFamily,
    common_params,
    rescale_param,
)
from evomerge.merge.registry import ParamSpec, merge_method

EPSILON = ParamSpec("epsilon", float, 0.15, bounds=(0.0, 0.5), doc="half-width of the keep-probability band")


@merge_method("della")
class Della(TaskArithmeticFamily):
    params = common_params(normalize=True, rescale=True) + (DENSITY, EPSILON, rescale_param(True))
    sparsifier = "della"
    consensus = True
    mergekit_name = "della"
    paper = "https://arxiv.org/abs/2406.11617"


@merge_method("della_linear")
class DellaLinear(Della):
    params = common_params(normalize=False, rescale=True) + (DENSITY, EPSILON, rescale_param(True))
    consensus = False
    mergekit_name = "della_linear"
