"""evomerge: search for LLM merge recipes.

Pipeline of one candidate (see the sub-packages of the same names):
recipe -> merge -> fitness (evaluate, estimate) -> optim (ask/tell) -> run (ledger, checkpoint, Pareto).
"""

from evomerge.errors import EvomergeError

__version__ = "0.1.0"
__all__ = ["EvomergeError", "__version__"]
