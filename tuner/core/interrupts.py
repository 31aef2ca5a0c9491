"""A Ctrl-C that Python swallowed is not lost.

The study's SIGINT/SIGTERM handler raises KeyboardInterrupt wherever the main thread happens to be. If
that is inside a hook whose exceptions the interpreter ignores (``os.fork``'s at-fork handlers, which
``logging`` registers and ``subprocess`` runs when a server is launched; a ``__del__``), Python prints
"Exception ignored in …" and carries on, and the study would run on as if nothing had happened. So the
handler also marks the interrupt as pending, and the trial runner checks at every phase of a trial
(launching, warming, measuring, probing) and raises it there.
"""

from __future__ import annotations

_pending = False


def mark() -> None:
    """An interrupt arrived (called by the signal handler before it raises)."""
    global _pending
    _pending = True


def clear() -> None:
    """Forget any interrupt (entering or leaving the code that handles them)."""
    global _pending
    _pending = False


def check() -> None:
    """Raise KeyboardInterrupt if an interrupt arrived and was not acted on."""
    if _pending:
        raise KeyboardInterrupt
