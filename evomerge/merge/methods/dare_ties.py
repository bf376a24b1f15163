"""DARE-TIES: DARE's random drop-and-rescale of each task vector, then TIES sign election and disjoint merge::

    d_i = w_i * rescale(Bernoulli(density_i) * (theta_i - theta_base));  s = sign(sum_i d_i)
    theta = theta_base + lambda * sum_i [sign d_i = s] d_i  [/ sum_i [sign d_i = s] w_i if normalize]

Seeded by (recipe seed, model, tensor name). Yu et al., https://arxiv.org/abs/2311.03099
"""

from evomerge.merge.methods._task_arithmetic_core import (
    DENSITY,
    TaskArithmeticFamily,
    common_params,
    rescale_param,
)
from evomerge.merge.registry import merge_method


@merge_method("dare_ties")
class DareTies(TaskArithmeticFamily):
    params = common_params(normalize=False, rescale=True) + (DENSITY, rescale_param(True))
    sparsifier = "random"
    consensus = True
    mergekit_name = "dare_ties"
    paper = "https://arxiv.org/abs/2311.03099"
