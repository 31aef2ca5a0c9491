"""Engine knowledge, one module per engine. ``get_engine("sglang")`` returns its module object."""

from __future__ import annotations

from tuner.engines.base import Engine, FlagSpec, FlagValue, FlagVector, RequestShape, render_flags
from tuner.errors import ConfigError

__all__ = ["Engine", "FlagSpec", "FlagValue", "FlagVector", "RequestShape", "get_engine", "render_flags"]


def get_engine(name: str) -> Engine:
    """Return the engine profile registered under ``name``."""
    from tuner.engines import sglang

    engines: dict[str, Engine] = {"sglang": sglang.ENGINE}
    try:
        from tuner.engines import llamacpp

        engines["llamacpp"] = llamacpp.ENGINE
    except ImportError:
        pass
    try:
        from tuner.engines import transformers_serve

        engines["transformers"] = transformers_serve.ENGINE
    except ImportError:
        pass
    if name not in engines:
        raise ConfigError(f"unknown engine {name!r}; known: {', '.join(sorted(engines))}", field="engine")
    return engines[name]
