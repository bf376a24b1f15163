"""Model Breadcrumbs: per task vector, drop the ``gamma`` fraction of largest-magnitude entries (outliers) and
then the smallest ones so that a ``density`` fraction survives; add the weighted masked task vectors::

    d_i = mask_{gamma, density}(theta_i - theta_base);  theta = theta_base + lambda * sum_i w_i d_i

``breadcrumbs_ties`` adds the TIES sign election. Davari & Belilovsky, "Model Breadcrumbs",
https://arxiv.org/abs/2312.06795
"""

from evomerge.merge.methods._task_arithmetic_core import (
    DENSITY,
    TaskArithmeticFamily,
    common_params,
    rescale_param,
)
from evomerge.merge.registry import ParamSpec, merge_method

GAMMA = ParamSpec("gamma", float, 0.01, bounds=(0.0, 1.0), doc="fraction of largest-magnitude entries dropped")


@merge_method("breadcrumbs")
class Breadcrumbs(TaskArithmeticFamily):
    params = common_params(normalize=False, rescale=False) + (DENSITY, GAMMA, rescale_param(False))
    sparsifier = "outliers"
    mergekit_name = "breadcrumbs"
    paper = "https://arxiv.org/abs/2312.06795"


@merge_method("breadcrumbs_ties")
class BreadcrumbsTies(Breadcrumbs):
    consensus = True
    mergekit_name = "breadcrumbs_ties"
