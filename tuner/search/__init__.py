"""Search efficiency: early pruning, confirmation of the winners, and crash learning.

``pruning`` builds the pruner a space asks for and the per-window hook that feeds it; ``confirm``
re-measures the final top candidates with repeats and attaches confidence intervals; ``learning``
measures whether the sampler steers away from crashes (crash rate by study half).
"""

from tuner.search.confirm import Confirmation, ConfirmSpec, confirm_top, mean_ci, record_confirmation
from tuner.search.learning import CrashHalves, crash_rate_by_half, study_crash_halves
from tuner.search.pruning import PruningSpec, build_pruner, check_windows, window_should_stop

__all__ = [
    "ConfirmSpec",
    "Confirmation",
    "CrashHalves",
    "PruningSpec",
    "build_pruner",
    "check_windows",
    "confirm_top",
    "crash_rate_by_half",
    "mean_ci",
    "record_confirmation",
    "study_crash_halves",
    "window_should_stop",
]
