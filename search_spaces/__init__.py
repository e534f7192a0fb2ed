"""Torch-free search spaces: `SubnetConfig` (one architecture), `SearchSpace` (the choices
of every dimension, loaded from ``search_spaces/<name>.yaml``) and their operators."""

from search_spaces.config import SubnetConfig
from search_spaces.space import SearchSpace, SupernetDims, available_spaces, load_space

__all__ = ["SubnetConfig", "SearchSpace", "SupernetDims", "available_spaces", "load_space"]
