"""Search spaces: bounded typed parameters and ``decode(point) -> Recipe`` (see :mod:`evomerge.spaces.base`)."""

from evomerge.spaces.base import Point, SearchSpace
from evomerge.spaces.build import build_space, load_space_config
from evomerge.spaces.params import BoolParam, CategoricalParam, FloatParam, IntParam, Param
from evomerge.spaces.registry import SEARCH_SPACES

__all__ = ["SEARCH_SPACES", "SearchSpace", "Point", "Param", "FloatParam", "IntParam", "CategoricalParam",
           "BoolParam", "build_space", "load_space_config"]
