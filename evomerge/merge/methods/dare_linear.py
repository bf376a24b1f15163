"""DARE (linear): drop each task-vector entry with probability 1 - density, rescale the survivors, then add the
weighted task vectors to the base::

    d_i = rescale(Bernoulli(density_i) * (theta_i - theta_base));  theta = theta_base + lambda * sum_i w_i d_i

Rescaling keeps the L1 norm of each d_i (mergekit's convention; the paper's 1/density in expectation).
Masks are drawn from a generator seeded by (recipe seed, model, tensor name): same seed, same model.

Yu et al., "Language Models are Super Mario", https://arxiv.org/abs/2311.03099
"""

from evomerge.merge.methods._task_arithmetic_core import (
    DENSITY,
    TaskArithmeticFamily,
    common_params,
    rescale_param,
)
from evomerge.merge.registry import merge_method


@merge_method("dare_linear")
class DareLinear(TaskArithmeticFamily):
    params = common_params(normalize=False, rescale=True) + (DENSITY, rescale_param(True))
    sparsifier = "random"
    mergekit_name = "dare_linear"
    paper = "https://arxiv.org/abs/2311.03099"
