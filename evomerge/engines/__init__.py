"""Evaluation engines: the live model of a worker, which each candidate is merged into and lm-eval scores.

``hf`` (default): a transformers model, merged into parameter by parameter, scored through lm-eval's HFLM.
``vllm``: one vLLM engine per worker, started once; each candidate's merged tensors stream into it through
vLLM's in-place weight reload, and lm-eval's requests run on it (:mod:`evomerge.engines.vllm_lm`).
Third-party engines register under the ``evomerge.engines`` entry-point group.
"""

from evomerge.engines.base import ENGINES, Engine

__all__ = ["ENGINES", "Engine"]
