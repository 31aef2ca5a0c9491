"""The nightly retune job (``python -m tuner.nightly``; docs/nightly.md).

Exit codes a scheduler alerts on:

====  ====================================================================================
0     kept: the deployed configuration stays (nothing better beyond noise), no alarm
10    promoted: a significantly better configuration is now deployed (file + history)
20    regression: the deployed configuration is slower than its history beyond noise
21    the deployed configuration crashed, failed its SLO-free health, or tonight's engine rejects it
1     failed: the job itself could not run (bad space file, database down, launcher error)
2     bad command line
75    another nightly run holds the lock (EX_TEMPFAIL): this run did nothing
====  ====================================================================================
"""

from tuner.nightly.job import run_nightly
from tuner.nightly.lock import LockHeld, NightlyLock
from tuner.nightly.model import (
    EXIT_DEPLOYED_FAILED,
    EXIT_FAILED,
    EXIT_KEPT,
    EXIT_LOCKED,
    EXIT_PROMOTED,
    EXIT_REGRESSION,
    NightlyOptions,
    NightlyRun,
)

__all__ = [
    "EXIT_DEPLOYED_FAILED",
    "EXIT_FAILED",
    "EXIT_KEPT",
    "EXIT_LOCKED",
    "EXIT_PROMOTED",
    "EXIT_REGRESSION",
    "LockHeld",
    "NightlyLock",
    "NightlyOptions",
    "NightlyRun",
    "run_nightly",
]
