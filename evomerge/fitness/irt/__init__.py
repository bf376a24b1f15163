"""IRT for cheap fitness: multidimensional 2PL fit, item bank, abilities with a prior.

The names load on first use (PEP 562): scipy takes about half a second to import.
"""

import importlib

_WHERE = {"fit_latent": "ability", "ItemBank": "bank", "fit_item_bank": "bank", "response_matrix": "bank",
          "IRTFit": "fit", "fit_mirt_2pl": "fit", "predict_proba": "fit"}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_WHERE)
