"""Search spaces: the YAML schema, loading with clear errors, and sampling."""

from tuner.space.load import load_space, parse_space
from tuner.space.sample import is_active, params_to_flags, sample_params
from tuner.space.schema import SearchSpace

__all__ = ["SearchSpace", "is_active", "load_space", "params_to_flags", "parse_space", "sample_params"]
