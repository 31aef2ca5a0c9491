"""``python3 -m sglang.launch_server ARGS`` inside the simulated-SGLang image: run ``python -m tuner.sim ARGS``.

``exec`` replaces this process, so the simulator gets the container's signals and its exit code is
the container's.
"""

import os
import sys

if __name__ == "__main__":
    argv = [sys.executable, "-m", "tuner.sim", *sys.argv[1:]]
    os.execv(sys.executable, argv)
