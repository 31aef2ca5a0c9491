"""Failure kinds and their evidence: how a crash becomes data.

The *table* of log signatures lives with each engine (``tuner/engines/<engine>.py``);
this module holds the vocabulary (:class:`FailureKind`), the evidence record
(:class:`Failure`) and the one classification routine every launcher uses.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class FailureKind(StrEnum):
    """Why a trial produced no usable measurement. Values are stored in the database."""

    SEGFAULT = "segfault"
    CUDA_OOM = "cuda_oom"
    NOT_ENOUGH_MEMORY = "not_enough_memory"
    GRAPH_CAPTURE = "graph_capture_failed"
    UNSUPPORTED = "unsupported_on_gpu"
    FLAG_REJECTED = "flag_rejected"
    WARMUP_FAILED = "warmup_failed"
    KERNEL_OOM_KILLED = "kernel_oom_killed"
    STARTUP_TIMEOUT = "startup_timeout"
    HANG = "hang"
    HEALTHY_BUT_FAILING = "healthy_but_failing"
    CRASHED = "crashed"  # died with no known signature
    INFEASIBLE = "infeasible_config"  # rejected before launch by a declared constraint


class Phase(StrEnum):
    """When the failure happened."""

    PRECHECK = "precheck"
    STARTUP = "startup"
    WARMUP = "warmup"
    LOAD = "load"


@dataclass(frozen=True)
class Signature:
    """One log pattern that identifies a failure kind. Order in a table matters: first match wins."""

    kind: FailureKind
    pattern: str

    def search(self, text: str) -> list[str]:
        """Return the log lines this signature matches."""
        rx = re.compile(self.pattern)
        return [line for line in text.splitlines() if rx.search(line)]


@dataclass(frozen=True)
class ExitStatus:
    """How a server process or container ended."""

    code: int | None  # exit code; for a process killed by a signal: None and ``signal`` set
    signal: int | None = None
    oom_killed: bool = False  # docker's State.OOMKilled

    @classmethod
    def from_returncode(cls, rc: int) -> ExitStatus:
        """Translate a ``subprocess`` return code (negative = killed by signal)."""
        return cls(code=None, signal=-rc) if rc < 0 else cls(code=rc)

    def describe(self) -> str:
        if self.signal is not None:
            return f"killed by {signal_name(self.signal)}"
        return f"exit code {self.code}" + (" (OOMKilled)" if self.oom_killed else "")


_CHILD_SIGNAL = re.compile(r"exit code -(\d+)\b")


def _with_child(exit: ExitStatus, lines: Sequence[str]) -> str:
    """How the server ended; when a log line says a child process died of a signal first (SGLang:
    "Subprocess scheduler_0 crashed with exit code -11", then it kills its own process tree), both."""
    child = next((int(m.group(1)) for line in lines if (m := _CHILD_SIGNAL.search(line))), None)
    if child is None or exit.signal is None or child == exit.signal:
        return exit.describe()
    return (
        f"a child process died of {signal_name(child)}, then the server killed its process tree "
        f"({signal_name(exit.signal)})"
    )


def signal_name(number: int) -> str:
    """``SIGSEGV`` for 11; the number itself when no signal has it."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


@dataclass(frozen=True)
class Failure:
    """A classified failure with the evidence that led to it."""

    kind: FailureKind
    phase: Phase
    exit: ExitStatus | None = None
    matched_lines: tuple[str, ...] = ()
    log_tail: str = ""
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """``startup; a child process died of SIGSEGV, then the server killed its process tree
        (SIGKILL); <the log line that says so>``: phase, how it ended, the evidence."""
        parts = [self.phase.value]
        if self.exit is not None:
            parts.append(_with_child(self.exit, self.matched_lines))
        if self.detail:
            parts.append(self.detail)
        if self.matched_lines:
            parts.append(self.matched_lines[0][:200])
        return "; ".join(parts)

    def to_attrs(self) -> dict[str, Any]:
        """Plain-JSON form for Optuna user attributes and SQL."""
        d = asdict(self)
        d["kind"] = self.kind.value
        d["phase"] = self.phase.value
        d["matched_lines"] = list(self.matched_lines)
        d["log_tail"] = self.log_tail[-4000:]
        return d


LOG_TAIL_CHARS = 4000


def classify(
    signatures: Sequence[Signature],
    *,
    phase: Phase,
    log_text: str,
    exit: ExitStatus | None,
    detail: str = "",
) -> Failure:
    """Classify a dead or useless server from its exit status and its log.

    Log signatures win over exit codes (a segfaulting child makes SGLang's parent kill its
    tree with SIGKILL, so the exit code alone says "killed", the log says "segfault");
    then the exit status decides: OOMKilled/137 -> kernel OOM, 2 at start-up -> flag rejected,
    SIGSEGV/139 -> segfault; otherwise ``CRASHED``.

    >>> from tuner.core.failures import Signature, FailureKind, Phase, ExitStatus, classify
    >>> sigs = [Signature(FailureKind.NOT_ENOUGH_MEMORY, r"Not enough memory")]
    >>> classify(sigs, phase=Phase.STARTUP, log_text="RuntimeError: Not enough memory. x",
    ...          exit=ExitStatus(code=1)).kind
    <FailureKind.NOT_ENOUGH_MEMORY: 'not_enough_memory'>
    """
    tail = log_text[-LOG_TAIL_CHARS:]
    for sig in signatures:
        lines = sig.search(log_text)
        if lines:
            return Failure(sig.kind, phase, exit, tuple(lines[:5]), tail, detail)
    kind = FailureKind.CRASHED
    if exit is not None:
        # 137 alone is not an OOM: SGLang's parent SIGKILLs its own tree after a child crash.
        if exit.oom_killed:
            kind = FailureKind.KERNEL_OOM_KILLED
        elif exit.signal == signal.SIGSEGV.value or exit.code == 139:
            kind = FailureKind.SEGFAULT
        elif exit.code == 2 and phase is Phase.STARTUP:
            kind = FailureKind.FLAG_REJECTED
    return Failure(kind, phase, exit, (), tail, detail)
