"""SGLang-style log lines on stderr, flushed at once (launchers read them while we run)."""

from __future__ import annotations

import sys
import time


def log(message: str, *, stamp: bool = True) -> None:
    """Print ``[YYYY-mm-dd HH:MM:SS] message`` (or the bare line, for traceback bodies)."""
    prefix = time.strftime("[%Y-%m-%d %H:%M:%S] ") if stamp else ""
    sys.stderr.write(prefix + message + "\n")
    sys.stderr.flush()
