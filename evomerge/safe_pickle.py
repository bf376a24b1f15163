"""Unpickling with an allow-list: checkpoints hold optimizer states that pycma, optuna and nevergrad can only
give as pickles, and a run directory someone sent you must not run their code when resumed.

``safe_loads(data, what)`` accepts only the globals an optimizer state is made of: plain containers, numpy
arrays / dtypes / random generators, classes of the optimizer libraries (``cma``, ``optuna``, ``nevergrad``)
and a short list of their functions. Anything else (``os.system``, ``builtins.eval``, ``subprocess.Popen``,
a class of another package ...) is refused with one ``EvomergeError`` line naming it, before it is called.
``builtins.getattr`` (how a pickled bound method of a numpy generator is rebuilt, e.g. pycma's ``randn``) is
replaced by a version that only reaches sampling methods of numpy random generators.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from evomerge.errors import EvomergeError

#: packages whose classes (types only, never functions) an optimizer state may hold
_CLASS_PACKAGES = ("cma.", "optuna.", "nevergrad.", "numpy.random.", "evomerge.optim.")
#: other globals allowed by exact (module, name)
_EXACT = {
    ("builtins", n) for n in ("set", "frozenset", "list", "dict", "tuple", "complex", "slice", "range",
                              "bytearray", "bytes", "int", "float", "bool", "str", "object")
} | {
    ("collections", "OrderedDict"), ("collections", "deque"), ("collections", "defaultdict"),
    ("copyreg", "_reconstructor"), ("datetime", "datetime"), ("datetime", "timedelta"), ("datetime", "date"),
    ("datetime", "timezone"), ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy.random._pickle", "__randomstate_ctor"), ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__generator_ctor"), ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    ("numpy.linalg", "eigh"),  # pycma keeps a reference to its eigen-decomposition function
    # functions the optimizer libraries store as settings (defaults of their own options)
    ("cma.evolution_strategy", "_pass"), ("cma.options_parameters", "is_feasible"),
    ("nevergrad.parametrization.core", "default_congruence"),
    ("optuna.samplers._tpe.sampler", "default_gamma"), ("optuna.samplers._tpe.sampler", "default_weights"),
    ("optuna.samplers._tpe.sampler", "default_gamma_multiobjective"),
    ("optuna.samplers._tpe.sampler", "hyperopt_default_gamma"),
}
_NP_METHODS = {"randn", "rand", "random", "standard_normal", "normal", "uniform", "integers", "randint"}


def _safe_getattr(obj: Any, name: str, *default: Any) -> Any:
    import numpy as np

    if isinstance(obj, (np.random.RandomState, np.random.Generator)) and name in _NP_METHODS:
        return getattr(obj, name, *default)
    raise EvomergeError(f"refusing getattr({type(obj).__name__}, {name!r}) while unpickling")


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, what: str):
        super().__init__(file)
        self.what = what

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("builtins", "getattr"):
            return _safe_getattr
        if (module, name) in _EXACT:
            return super().find_class(module, name)
        if module.startswith(_CLASS_PACKAGES) and not name.startswith("__"):
            obj = super().find_class(module, name)
            if isinstance(obj, type):
                return obj
        raise EvomergeError(f"{self.what} refers to {module}.{name}, which is not on the allow-list of "
                            "optimizer-state types; refusing to load it (it could run code)")


def safe_loads(data: bytes, what: str = "checkpoint") -> Any:
    """``pickle.loads`` restricted to the allow-list above; raises one EvomergeError line otherwise."""
    try:
        return _Unpickler(io.BytesIO(data), what).load()
    except EvomergeError:
        raise
    except Exception as exc:
        raise EvomergeError(f"{what} cannot be loaded: {type(exc).__name__}: {exc}") from None
