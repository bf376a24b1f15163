"""Shared core of the task-arithmetic family (task_arithmetic, ties, dare_*, breadcrumbs*, della*).

Generalised task arithmetic, the same algebra as mergekit's ``GeneralizedTaskArithmeticMerge``::

    d_i   = sparsify(theta_i - theta_base, density_i)           # optional, per source
    d_i  *= w_i
    m     = sign(d_i) == sign(sum_j d_j)                        # optional TIES sign consensus ("sum")
    delta = sum_i m_i d_i / (sum_i m_i w_i  if normalize else 1)
    theta = theta_base + lambda * delta

Sparsifiers: ``magnitude`` keeps the top-k |d| (TIES), ``random`` keeps each entry with probability density
(DARE), ``magnitude_outliers`` drops the gamma largest then the smallest (Breadcrumbs), ``della_magprune``
keeps entries with rank-dependent probability in [density - eps, density + eps] per row (DELLA). With
``rescale`` the kept entries are scaled so the L1 norm of d_i is preserved (mergekit's convention; in
expectation the same as the papers' 1/density).

Tensors arrive in chunks (see :mod:`evomerge.merge.engine`). The top-k by magnitude is a per-candidate
k-th value found by an exact radix select over the chunks (no per-entry ranks are stored); rescaling uses the
whole tensor's L1 norms from one statistics pass that draws the same random masks (a counter-based stream,
:mod:`evomerge.merge.counter_stream`). The magnitude histograms, task vectors and DELLA ranks depend only on
the sources, so they go to the budgeted cache. On CPU the fused kernels of
:mod:`evomerge.merge.methods._ta_fused` do the same arithmetic in one pass per chunk; GPUs run the torch
kernels of :mod:`evomerge.merge.methods._ta_kernels`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Optional

from evomerge.merge.registry import MergeMethod, ParamSpec, TensorParams

if TYPE_CHECKING:
    import torch

    from evomerge.merge.engine import TensorInputs


def common_params(normalize: bool, rescale: bool) -> tuple[ParamSpec, ...]:
    return (
        ParamSpec("weight", float, 1.0, doc="scale of this source's task vector"),
        ParamSpec("normalize", bool, normalize, scope="global", doc="divide by the sum of (kept) weights"),
        ParamSpec("lambda", float, 1.0, scope="global", doc="scale of the merged task vector"),
    )


DENSITY = ParamSpec("density", float, 1.0, bounds=(0.0, 1.0), open_low=True, doc="fraction of entries kept")


def rescale_param(default: bool) -> ParamSpec:
    return ParamSpec("rescale", bool, default, scope="global", doc="keep the L1 norm of each sparsified delta")


class TaskArithmeticFamily(MergeMethod):
    """Base class of the family; subclasses pick a sparsifier, a consensus rule and defaults. The tensor code
    is in :mod:`evomerge.merge.methods._ta_kernels` (imported on first use: it needs torch)."""

    sparsifier: ClassVar[Optional[str]] = None  # magnitude | random | outliers | della
    consensus: ClassVar[bool] = False

    def random_draws(self) -> bool:
        return self.sparsifier in ("random", "della")

    def whole_tensor(self, shape) -> bool:
        # DELLA ranks entries within rows of the first dimension; chunks of a >2-D tensor would split them
        return self.sparsifier == "della" and len(shape) > 2

    def writes(self, dtype, device) -> bool:
        from evomerge.merge.methods import _ta_fused

        return super().writes(dtype, device) or _ta_fused.writes(self, dtype, device)

    def streams(self, device, base_dtype, source_dtypes: list) -> bool:
        from evomerge.merge.methods import _ta_fused

        return (_ta_fused.streams(self, device) and base_dtype is not None
                and _ta_fused.reads(base_dtype, source_dtypes))

    def merge_tensor(self, x: TensorInputs, p: TensorParams, out: torch.Tensor) -> Optional[float]:
        from evomerge.merge.methods import _ta_fused, _ta_kernels

        if _ta_fused.usable(self, x) and (peak := _ta_fused.merge(self, x, p, out)) is not None:
            return peak
        _ta_kernels.merge(self, x, p, out)
        return None
