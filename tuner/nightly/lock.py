"""One nightly run at a time: an ``fcntl.flock`` on a lock file.

The kernel drops a flock when the process holding it dies (even by SIGKILL), so a lock left by
a killed run is recovered by simply taking it again: there is no stale-pid guessing. The holder
still writes its pid, host and start time into the file so the refusal can say who holds it.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
from pathlib import Path
from typing import IO, Any

from tuner.core.errors import ConfigError, TunerError


class LockHeld(TunerError):
    """Another nightly run holds the lock. ``holder`` is what that run wrote into the lock file."""

    def __init__(self, path: Path, holder: dict[str, Any]) -> None:
        who = (
            ", ".join(f"{k} {holder[k]}" for k in ("pid", "host", "started") if k in holder)
            or "unknown holder"
        )
        super().__init__(
            f"another nightly run ({who}) holds the lock {path}; this run does nothing. If no such run "
            "exists, the lock is released automatically when its process is gone"
        )
        self.path = path
        self.holder = holder


class NightlyLock:
    """Exclusive, non-blocking lock on ``path``; a context manager.

    >>> with NightlyLock(Path("storage/nightly/demo.lock")) as lock:  # doctest: +SKIP
    ...     lock.recovered  # True when a killed run had left its record in the file
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None
        self.recovered: dict[str, Any] | None = None  # the dead holder's record, if it left one

    def acquire(self) -> NightlyLock:
        """Take the lock or raise :class:`LockHeld` at once (never waits)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            f = self.path.open("a+")
        except OSError as e:
            raise ConfigError(f"cannot open the lock file ({e.strerror}); choose another with --lock",
                              source=str(self.path)) from e  # fmt: skip
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(f)
            f.close()
            raise LockHeld(self.path, holder) from None
        # We hold it: whatever is in the file was written by a run that died without cleaning up.
        previous = _read_holder(f)
        self.recovered = previous or None
        f.seek(0)
        f.truncate()
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        f.write(json.dumps(record) + "\n")
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        """Empty the record and drop the lock (the file stays: deleting it would race a new holder)."""
        if self._file is None:
            return
        self._file.seek(0)
        self._file.truncate()
        self._file.flush()
        fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
        self._file.close()
        self._file = None

    def __enter__(self) -> NightlyLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(f: IO[str]) -> dict[str, Any]:
    f.seek(0)
    text = f.read().strip()
    if not text:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {"record": text[:200]}
    return data if isinstance(data, dict) else {}
