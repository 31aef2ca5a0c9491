"""``python -m tuner.sim``: the simulated SGLang server (see ``docs/simulator.md``)."""

import sys

from tuner.sim.startup import main

sys.exit(main())
