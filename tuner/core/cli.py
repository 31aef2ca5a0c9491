"""The one exit-code table and the one wrapper every command-line entry point runs under.

Every ``python -m tuner.…`` command returns one of :class:`ExitCode`; the README lists them once.
:func:`run_cli` turns the tuner's own errors into one line on stderr and their code (never a
traceback), and Ctrl-C outside a trial into 130::

    def main(argv=None) -> int:
        return run_cli("tuner.report", lambda: _main(argv))
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import IntEnum

from tuner.core.errors import ConfigError, LaunchError, StorageError, TunerError


class ExitCode(IntEnum):
    """Exit codes of every command (``python -m tuner.study``, ``.report``, ``.nightly``, …)."""

    OK = 0  # done (nightly: the deployed configuration is kept)
    FAILED = 1  # the command could not finish for another reason (its message says which)
    BAD_INPUT = 2  # a space file, option or flag is wrong (argparse's code for a bad command line)
    STORAGE = 3  # the database is unreachable, too new, or failed mid-write
    LAUNCH = 4  # servers cannot be started at all (no Docker daemon, missing image, no binary)
    NOTHING_FEASIBLE = 5  # study: no trial produced a feasible measurement
    PROMOTED = 10  # nightly: a significantly better configuration is now deployed
    REGRESSION = 20  # nightly: the deployed configuration got slower beyond noise
    DEPLOYED_FAILED = 21  # nightly: the deployed configuration crashed or tonight's engine rejects it
    LOCKED = 75  # nightly: another run holds the lock (EX_TEMPFAIL), this one did nothing
    INTERRUPTED = 130  # SIGINT/SIGTERM: the running trial was recorded and its server stopped


def exit_code_for(error: TunerError) -> ExitCode:
    """The code an error ends a command with."""
    if isinstance(error, ConfigError):
        return ExitCode.BAD_INPUT
    if isinstance(error, StorageError):
        return ExitCode.STORAGE
    if isinstance(error, LaunchError):
        return ExitCode.LAUNCH
    return ExitCode.FAILED


_PREFIX = {ExitCode.STORAGE: "storage error", ExitCode.LAUNCH: "launch error"}


def error_line(prog: str, error: TunerError) -> str:
    """``prog: error: message`` (``storage error``/``launch error`` for those kinds)."""
    return f"{prog}: {_PREFIX.get(exit_code_for(error), 'error')}: {error}"


def run_cli(prog: str, body: Callable[[], int]) -> int:
    """Run a command's body; a :class:`TunerError` becomes one stderr line and its exit code."""
    try:
        return int(body())
    except TunerError as e:
        print(error_line(prog, e), file=sys.stderr)
        return exit_code_for(e)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
