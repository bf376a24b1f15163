"""Unpickling with an allow-list: checkpoints hold optimizer states that pycma, optuna and nevergrad can only
give as pickles, and a run directory someone sent you must not run their code when resumed.

``safe_loads(data, what)`` accepts only the globals an optimizer state is made of: plain containers, numpy
arrays / dtypes / random generators, the strategy classes of the optimizer libraries (``cma``, ``optuna``,
``nevergrad``; listed module by module) and a short list of their functions. Anything else (``os.system``, ``builtins.eval``, ``subprocess.Popen``,
a class of another package ...) is refused with one ``EvomergeError`` line naming it, before it is called.
``builtins.getattr`` (how a pickled bound method of a numpy generator is rebuilt, e.g. pycma's ``randn``) is
replaced by a version that only reaches sampling methods of numpy random generators and scipy distributions.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from evomerge.errors import EvomergeError

#: modules whose classes (types only, never functions) an optimizer state may hold: the optimizer and
#: strategy classes themselves. Deliberately not whole packages: some library classes run commands or write
#: files when called (nevergrad's ``CommandFunction``, ``FolderFunction``), and an unpickled instance can be
#: called by the pickle itself.
_CLASS_MODULES = (
    "cma.evolution_strategy", "cma.boundary_handler", "cma.sampler", "cma.sigma_adaptation",
    "cma.recombination_weights", "cma.transformations", "cma.options_parameters", "cma.optimization_tools",
    "cma.restricted_gaussian_sampler", "cma.constraints_handler",
    "optuna.distributions", "optuna.study.", "optuna.trial.", "optuna.storages._in_memory", "optuna.pruners.",
    "optuna.samplers.", "optuna.search_space.",
    "nevergrad.optimization.", "nevergrad.parametrization.data", "nevergrad.parametrization.container",
    "nevergrad.parametrization.core", "nevergrad.parametrization.choice", "nevergrad.parametrization.transforms",
    "nevergrad.parametrization._datalayers", "nevergrad.parametrization._layering", "nevergrad.common.tools",
    "cmaes._cma", "cmaes._sepcma", "cmaes._cmawm",  # optuna's CMA-ES sampler keeps these in trial attributes
    "numpy.random.", "evomerge.optim.",
    "scipy.stats._continuous_distns", "scipy.stats._discrete_distns",  # distributions some optimizers sample from
)
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
    # classes of pycma's strategy state outside the modules above
    ("cma.logger", "CMADataLogger"), ("cma.utilities.utils", "BlancClass"),
    ("cma.utilities.utils", "DictFromTagsInString"), ("cma.utilities.utils", "ElapsedWCTime"),
    ("cma.utilities.utils", "MoreToWrite"), ("cma.utilities.utils", "SolutionDict"),
    ("nevergrad.parametrization.utils", "BoundChecker"), ("nevergrad.parametrization.utils", "FunctionInfo"),
    ("nevergrad.parametrization.utils", "Subobjects"), ("nevergrad.parametrization.utils", "Descriptors"),
    ("nevergrad.parametrization.helpers", "Normalizer"),
    ("optuna.samplers._tpe.parzen_estimator", "_ParzenEstimator"),
    # functions the optimizer libraries store as settings (defaults of their own options)
    ("cma.evolution_strategy", "_pass"), ("cma.options_parameters", "is_feasible"),
    ("nevergrad.parametrization.core", "default_congruence"),
    ("nevergrad.optimization.multiobjective.nsga2", "rank"),
    ("optuna.samplers._tpe.sampler", "default_gamma"), ("optuna.samplers._tpe.sampler", "default_weights"),
    ("optuna.samplers._tpe.sampler", "default_gamma_multiobjective"),
    ("optuna.samplers._tpe.sampler", "hyperopt_default_gamma"),
}
_NP_METHODS = {"randn", "rand", "random", "standard_normal", "normal", "uniform", "integers", "randint"}


_SCIPY_METHODS = {"cdf", "ppf", "pdf", "rvs", "sf", "isf", "logpdf", "logcdf", "pmf"}


def _safe_getattr(obj: Any, name: str, *default: Any) -> Any:
    import numpy as np

    if isinstance(obj, (np.random.RandomState, np.random.Generator)) and name in _NP_METHODS:
        return getattr(obj, name, *default)
    if type(obj).__module__ in ("scipy.stats._continuous_distns", "scipy.stats._discrete_distns") \
            and name in _SCIPY_METHODS:
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
        if any(module == m or module.startswith(m if m.endswith(".") else m + ".") for m in _CLASS_MODULES) \
                and not name.startswith("__"):
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
