"""Model references and loading: HF folders, hub names and ``zoo://VARIANT/NAME``."""

from evomerge.models.paths import resolve_model

__all__ = ["resolve_model"]
