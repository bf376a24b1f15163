"""Task arithmetic: theta = theta_base + lambda * sum_i w_i (theta_i - theta_base)  [/ sum_i w_i if normalize].

Ilharco et al., "Editing Models with Task Arithmetic", https://arxiv.org/abs/2212.04089
"""

from evomerge.merge.methods._task_arithmetic_core import TaskArithmeticFamily, common_params
from evomerge.merge.registry import merge_method


@merge_method("task_arithmetic")
class TaskArithmetic(TaskArithmeticFamily):
    params = common_params(normalize=False, rescale=False)
    mergekit_name = "task_arithmetic"
    paper = "https://arxiv.org/abs/2212.04089"
