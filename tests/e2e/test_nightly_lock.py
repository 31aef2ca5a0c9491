"""The nightly lock: a second run is refused while one runs; a killed run's lock is recovered.

Real processes: a holder process takes the lock, then the real CLI is started against it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tuner.core.cli import ExitCode
from tuner.nightly import LockHeld, NightlyLock

SPACE = "search_spaces/sglang-rtx5090-qwen3-32b-awq.yaml"

HOLDER = """
import sys, time
from pathlib import Path
from tuner.nightly.lock import NightlyLock
lock = NightlyLock(Path(sys.argv[1])).acquire()
print("held", flush=True)
time.sleep(120)
"""


def _start_holder(lock: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock)], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_second_run_is_refused_naming_the_holder(tmp_path: Path) -> None:
    lock = tmp_path / "nightly.lock"
    holder = _start_holder(lock)
    try:
        t0 = time.monotonic()
        cli = subprocess.run(
            [sys.executable, "-m", "tuner.nightly", "--space", SPACE, "--storage",
             f"sqlite:///{tmp_path / 'db.sqlite'}", "--out", str(tmp_path / "out"), "--lock", str(lock)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert cli.returncode == ExitCode.LOCKED, cli.stderr
        assert f"pid {holder.pid}" in cli.stderr and "started" in cli.stderr
        assert time.monotonic() - t0 < 30  # refused at once, no waiting
        assert not (tmp_path / "db.sqlite").exists()  # it touched nothing
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_killed_run_is_recovered(tmp_path: Path) -> None:
    lock = tmp_path / "nightly.lock"
    holder = _start_holder(lock)
    with pytest.raises(LockHeld):
        NightlyLock(lock).acquire()
    holder.send_signal(signal.SIGKILL)  # no clean-up runs: the record stays in the file
    holder.wait()
    assert json.loads(lock.read_text())["pid"] == holder.pid
    with NightlyLock(lock) as taken:
        assert taken.recovered is not None and taken.recovered["pid"] == holder.pid
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert lock.read_text() == ""  # a clean release empties the record
    with NightlyLock(lock) as again:
        assert again.recovered is None
