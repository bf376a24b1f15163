"""Linear (model soup): theta = sum_i w_i theta_i  [/ sum_i w_i if normalize]. The base is not an input unless
it is listed among the models.

Wortsman et al., "Model soups", https://arxiv.org/abs/2203.05482
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from evomerge.errors import EvomergeError
from evomerge.merge.registry import MergeMethod, ParamSpec, TensorParams, merge_method

if TYPE_CHECKING:
    import torch

    from evomerge.merge.engine import TensorInputs


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

    def writes(self, dtype, device) -> bool:
        from evomerge.merge.methods import _ta_fused

        return super().writes(dtype, device) or (_ta_fused.ENABLED and device.type == "cpu"
                                                 and dtype in _ta_fused.OUT_DTYPES)

    def streams(self, device, base_dtype, source_dtypes: list) -> bool:
        from evomerge.merge.methods import _ta_fused  # the fused sum needs two sources (see weighted_sum)

        return (_ta_fused.ENABLED and device.type == "cpu" and len(source_dtypes) > 1
                and _ta_fused.reads(None, source_dtypes))

    def merge_tensor(self, x: TensorInputs, p: TensorParams, out: torch.Tensor) -> Optional[float]:
        import torch  # here, not at the top: the registry lists methods without torch

        weights = p.per_model["weight"]
        total = sum(weights)
        if p.shared["normalize"] and abs(total) < 1e-8:
            raise EvomergeError(f"linear: weights sum to 0 for {x.name}; cannot normalize (set normalize: false)")
        scale = 1.0 / total if p.shared["normalize"] else 1.0
        from evomerge.merge.methods import _ta_fused

        if (peak := _ta_fused.weighted_sum(x, [w * scale for w in weights], out)) is not None:  # CPU: one pass
            return peak
        if out.dtype != torch.float32:
            merged = x.buffer("merged", out.shape, torch.float32)
            self.merge_tensor(x, p, merged)
            out.copy_(merged)
            return None
        torch.mul(x.source(0), weights[0] * scale, out=out)  # one read of each source, no stack
        for i in range(1, len(weights)):
            out.add_(x.source(i), alpha=weights[i] * scale)
        return None
