"""What the user sees while a study runs: one line per trial phase, live metrics, best so far."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import TextIO


class Progress:
    """Prints ``[  3/50] trial 7  measuring  12/16 req  out 118.2 tok/s  best 131.0`` lines.

    On a terminal the live line is rewritten in place; otherwise each phase change is one line
    (CI logs stay readable).
    """

    def __init__(
        self, total: int, *, stream: TextIO | None = None, metric: str = "output_throughput", done: int = 0
    ) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.metric = metric
        self.best: float | None = None
        self._tty = self.stream.isatty()
        self._n = done  # trials finished before this run (a resumed study counts on)
        self._trial = -1
        self._last_live = 0.0

    def start_trial(self, trial_number: int, label: str = "") -> None:
        self._n += 1
        self._trial = trial_number
        self.phase("launching", label)

    def phase(self, name: str, detail: str = "") -> None:
        self._emit(f"{name:<10} {detail}", final=not self._tty)

    def live(self, done: int, total: int | None, metrics: Mapping[str, float]) -> None:
        now = time.monotonic()
        if not self._tty and now - self._last_live < 2.0:
            return  # keep CI logs short: at most one live line every 2 s
        self._last_live = now
        value = metrics.get(self.metric)
        shown = f"{self.metric} {value:.1f}" if value is not None else ""
        self._emit(f"{'measuring':<10} {done}/{total or '?'} req  {shown}", final=not self._tty)

    def end_trial(self, outcome: str) -> None:
        self._emit(outcome, final=True)

    def note(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def _emit(self, text: str, *, final: bool) -> None:
        best = f"  best {self.best:.2f}" if self.best is not None else ""
        line = f"[{self._n:>3}/{self.total}] trial {self._trial:<4} {text}{best}"
        if self._tty:
            print("\r\033[K" + line, end="\n" if final else "", file=self.stream, flush=True)
        else:
            print(line, file=self.stream, flush=True)
