"""IRT for cheap fitness: multidimensional 2PL fit, item bank, abilities with a prior.

The names load on first use (PEP 562): scipy takes about half a second to import.
"""

from evomerge.lazy import lazy_getattr

_WHERE = {"fit_latent": "ability", "ItemBank": "bank", "fit_item_bank": "bank", "response_matrix": "bank",
          "IRTFit": "fit", "fit_mirt_2pl": "fit", "predict_proba": "fit"}

__getattr__ = lazy_getattr(__name__, _WHERE)

__all__ = sorted(_WHERE)
