"""The nightly retune job (``python -m tuner.nightly``; docs/nightly.md).

Its exit codes, which a scheduler alerts on, are rows of the one table ``tuner.core.cli.ExitCode``
(README, "Exit codes"): 0 kept, 10 promoted, 20 regression, 21 the deployed configuration failed or
tonight's engine rejects it, 75 another run holds the lock; 2/3/4 bad input, storage, launcher; 1 any
other failure of the job (its report says why).
"""

from tuner.nightly.job import run_nightly
from tuner.nightly.lock import LockHeld, NightlyLock
from tuner.nightly.model import NightlyOptions, NightlyRun

__all__ = [
    "LockHeld",
    "NightlyLock",
    "NightlyOptions",
    "NightlyRun",
    "run_nightly",
]
