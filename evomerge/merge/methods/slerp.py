"""SLERP between the base and one other model, per tensor (flattened)::

    cos(Omega) = <a/|a|, b/|b|>;  theta = sin((1-t) Omega)/sin(Omega) a + sin(t Omega)/sin(Omega) b
    (linear interpolation when |cos(Omega)| > 0.9995)

``t`` = 0 gives the base, 1 the other model; it may vary per layer range and module (overrides).
Shoemake, "Animating rotation with quaternion curves" (1985); https://en.wikipedia.org/wiki/Slerp
"""

import torch

from evomerge.merge.registry import MergeMethod, ParamSpec, TensorInputs, TensorParams, merge_method

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
        a = x.base.reshape(-1)
        b = x.sources[0].reshape(-1)
        t = float(p.shared["t"])
        norm_a = torch.linalg.vector_norm(a)
        norm_b = torch.linalg.vector_norm(b)
        norm_a = norm_a if norm_a > EPS else torch.ones_like(norm_a)
        norm_b = norm_b if norm_b > EPS else torch.ones_like(norm_b)
        dot = torch.dot(a / norm_a, b / norm_b).clamp(-1, 1)
        if dot.abs() > DOT_THRESHOLD:
            ca, cb = 1 - t, t
        else:
            theta = torch.acos(dot)
            s = torch.sin(theta)
            ca = float(torch.sin((1 - t) * theta) / s)
            cb = float(torch.sin(t * theta) / s)
        o = out.view(-1)
        torch.mul(a, ca, out=o)
        o.add_(b, alpha=cb)
