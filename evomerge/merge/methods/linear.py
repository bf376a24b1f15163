"""Linear (model soup): theta = sum_i w_i theta_i  [/ sum_i w_i if normalize]. The base is not an input unless
it is listed among the models.

Wortsman et al., "Model soups", https://arxiv.org/abs/2203.05482
"""

import torch

from evomerge.errors import EvomergeError
from evomerge.merge.registry import MergeMethod, ParamSpec, TensorInputs, TensorParams, merge_method


@merge_method("linear")
class Linear(MergeMethod):
    params = (
        ParamSpec("weight", float, 1.0, doc="coefficient of this model"),
        ParamSpec("normalize", bool, True, scope="global", doc="divide by the sum of weights"),
    )
    needs_base = False
    uses_deltas = False
    mergekit_name = "linear"
    paper = "https://arxiv.org/abs/2203.05482"

    def merge_tensor(self, x: TensorInputs, p: TensorParams, out: torch.Tensor) -> None:
        src = x.sources
        n = src.shape[0]
        w = torch.tensor(p.per_model["weight"], dtype=src.dtype, device=src.device)
        torch.matmul(w.unsqueeze(0), src.reshape(n, -1), out=out.view(1, -1))
        if p.shared["normalize"]:
            total = float(w.sum())
            if abs(total) < 1e-8:
                raise EvomergeError(f"linear: weights sum to 0 for {x.name}; cannot normalize (set normalize: false)")
            out /= total
