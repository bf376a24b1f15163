"""TIES: trim each task vector to its top-``density`` magnitudes, elect the sign of the summed (weighted) trimmed
vectors per entry, and average only the entries that agree with it (disjoint mean)::

    d_i = w_i * topk(|theta_i - theta_base|, density_i);  s = sign(sum_i d_i)
    theta = theta_base + lambda * sum_i [sign d_i = s] d_i / sum_i [sign d_i = s] w_i

Yadav et al., "TIES-Merging: Resolving Interference When Merging Models", https://arxiv.org/abs/2306.01708
"""

from evomerge.merge.methods._task_arithmetic_core import (
    DENSITY,
    TaskArithmeticFamily,
    common_params,
    rescale_param,
)
from evomerge.merge.registry import merge_method


@merge_method("ties")
class Ties(TaskArithmeticFamily):
    params = common_params(normalize=True, rescale=False) + (DENSITY, rescale_param(False))
    sparsifier = "magnitude"
    consensus = True
    mergekit_name = "ties"
    paper = "https://arxiv.org/abs/2306.01708"
