"""The Docker daemon and the simulated SGLang image, as tests need them."""

from __future__ import annotations

import os
import subprocess

from tuner.launch.docker_daemon import daemon_unavailable_reason
from tuner.launch.simulator import SIM_IMAGE
from tuner.testing import ROOT
from tuner.testing.require import missing


def sim_image(tag: str = SIM_IMAGE, *, sglang_version: str | None = None) -> str:
    """The simulated image ``tag`` built (or found up to date), on a daemon started if it was stopped.

    ``sglang_version`` builds an image whose simulator pretends to be that SGLang version (an older
    image for the flag-check tests). Skips the test (fails under ``TUNER_REQUIRE_ALL=1``) without a daemon.
    """
    if daemon_unavailable_reason() is not None:
        # another test may have stopped the daemon on purpose: the set-up script starts it again
        subprocess.run([str(ROOT / "scripts" / "setup-docker.sh")], capture_output=True, timeout=120)
    if (reason := daemon_unavailable_reason()) is not None:
        missing(f"Docker daemon ({reason})")
    env = {**os.environ, **({"SIM_SGLANG_VERSION": sglang_version} if sglang_version else {})}
    build = [str(ROOT / "scripts" / "build-sim-image.sh"), *([tag] if tag != SIM_IMAGE else [])]
    subprocess.run(build, check=True, capture_output=True, timeout=120, env=env)
    return tag
