"""SLERP between the base and one other model, per tensor (flattened)::

    cos(Omega) = <a/|a|, b/|b|>;  theta = sin((1-t) Omega)/sin(Omega) a + sin(t Omega)/sin(Omega) b
    (linear interpolation when |cos(Omega)| > 0.9995)

``t`` = 0 gives the base, 1 the other model; it may vary per layer range and module (overrides).
Shoemake, "Animating rotation with quaternion curves" (1985); https://en.wikipedia.org/wiki/Slerp
"""

from __future__ import annotations

import math

from typing import TYPE_CHECKING

from evomerge.merge.registry import MergeMethod, ParamSpec, TensorParams, merge_method

if TYPE_CHECKING:
    import torch

    from evomerge.merge.engine import TensorInputs

DOT_THRESHOLD = 0.9995
EPS = 1e-8


@merge_method("slerp")
class Slerp(MergeMethod):
    params = (ParamSpec("t", float, 0.5, bounds=(0.0, 1.0), scope="global", doc="interpolation factor"),)
    needs_base = True
    min_models = 1
    max_models = 1
    uses_deltas = False
    mergekit_name = "slerp"
    paper = "https://en.wikipedia.org/wiki/Slerp"

    def merge_tensor(self, x: TensorInputs, p: TensorParams, out: torch.Tensor) -> None:
        import torch  # here, not at the top: the registry lists methods without torch

        ca, cb = x.stat("slerp", lambda: _coefficients(x, float(p.shared["t"])))
        torch.mul(x.base, ca, out=out)
        out.add_(x.sources[0], alpha=cb)


def _coefficients(x: TensorInputs, t: float) -> tuple[float, float]:
    """(weight of the base, weight of the other model) from the whole tensor's norms and dot product."""
    import torch  # here, not at the top: the registry lists methods without torch

    aa = bb = ab = 0.0
    for chunk in x.chunks():
        a = chunk.base.reshape(-1)
        b = chunk.sources[0].reshape(-1)
        aa += float(torch.dot(a, a))
        bb += float(torch.dot(b, b))
        ab += float(torch.dot(a, b))
    norm_a = math.sqrt(aa) if math.sqrt(aa) > EPS else 1.0
    norm_b = math.sqrt(bb) if math.sqrt(bb) > EPS else 1.0
    dot = min(1.0, max(-1.0, ab / (norm_a * norm_b)))
    if abs(dot) > DOT_THRESHOLD:
        return 1 - t, t
    theta = math.acos(dot)
    s = math.sin(theta)
    return math.sin((1 - t) * theta) / s, math.sin(t * theta) / s
