"""Engine knowledge, one module per engine. ``get_engine("sglang")`` returns its module object."""

from __future__ import annotations

from tuner.core.errors import ConfigError
from tuner.engines.base import Engine, FlagSpec, FlagValue, FlagVector, RequestShape, render_flags

__all__ = ["Engine", "FlagSpec", "FlagValue", "FlagVector", "RequestShape", "get_engine", "render_flags"]


def get_engine(name: str) -> Engine:
    """Return the engine profile registered under ``name`` (``sglang``, ``llamacpp``, ``transformers``)."""
    from tuner.engines import llamacpp, sglang, transformers_serve

    engines: dict[str, Engine] = {
        "sglang": sglang.ENGINE,
        "llamacpp": llamacpp.ENGINE,
        "transformers": transformers_serve.ENGINE,
    }
    if name not in engines:
        raise ConfigError(f"unknown engine {name!r}; known: {', '.join(sorted(engines))}", field="engine")
    return engines[name]
