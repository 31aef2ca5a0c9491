"""``python3 -m sglang.launch_server ARGS`` inside the simulated-SGLang image: run ``python -m tuner.sim ARGS``.

``exec`` replaces this process, so the simulator gets the container's signals and its exit code is
the container's. An image built for one SGLang version (``TUNER_SIM_SGLANG_VERSION`` in its
environment) passes ``--sim-sglang-version``, so its ``--help`` and its parser are that version's.
``TUNER_SIM_ARGS`` (e.g. ``--sim-gpu h100 --sim-startup-scale 0.02``, from the target's ``env``)
adds simulator options while the search space's flags stay pure SGLang.
"""

import os
import shlex
import sys

if __name__ == "__main__":
    args = sys.argv[1:]
    pinned = os.environ.get("TUNER_SIM_SGLANG_VERSION")
    if pinned and not any(a.split("=")[0] == "--sim-sglang-version" for a in args):
        args = ["--sim-sglang-version", pinned, *args]
    args += shlex.split(os.environ.get("TUNER_SIM_ARGS", ""))
    os.execv(sys.executable, [sys.executable, "-m", "tuner.sim", *args])
