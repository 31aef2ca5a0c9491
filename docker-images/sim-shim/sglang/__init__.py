"""A stand-in ``sglang`` package for the simulated-SGLang image (``scripts/build-sim-image.sh``).

Inside that image ``python3 -m sglang.launch_server …`` runs the tuner's simulator, so the Docker
launcher and the image flag check take exactly the code path they take with a real SGLang image.
``__version__`` is the SGLang version the simulator emulates: ``TUNER_SIM_SGLANG_VERSION`` when set,
otherwise the tuner's default SGLang profile.
"""

import os


def _version() -> str:
    pinned = os.environ.get("TUNER_SIM_SGLANG_VERSION")
    if pinned:
        return pinned
    from tuner.engines.sglang_flags import DEFAULT_VERSION

    return DEFAULT_VERSION


__version__ = _version()
