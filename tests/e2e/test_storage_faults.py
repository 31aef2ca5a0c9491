"""A database that fills up or that another process holds locked: one clear line, exit 3, no
traceback, and the study stays readable (``python -m tuner.report``) and resumable."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tuner.testing.study_cli import ROOT, small_space, study_cmd


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 260 KiB tmpfs: room for a study's first trials, not for thirty (root mounts it; CI runs as root)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=260k", "tmpfs", str(mount)], capture_output=True
    )
    assert proc.returncode == 0, f"cannot mount a tmpfs (needs root): {proc.stderr.decode()}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _study(
    space: Path, tmp_path: Path, url: str, trials: int, **env: str
) -> subprocess.CompletedProcess[str]:
    cmd = study_cmd(space, tmp_path, trials=trials, study="full")
    cmd[cmd.index("--storage") + 1] = url
    return subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, **env}
    )


def test_a_full_disk_ends_the_study_with_exit_3_and_leaves_it_readable(
    tmp_path: Path, tiny_disk: Path
) -> None:
    url = f"sqlite:///{tiny_disk}/t.db"
    proc = _study(small_space(tmp_path, num_requests=4), tmp_path, url, trials=40)
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("tuner.study: storage error: ") and "the disk holding the database is full" in last
    report = subprocess.run(
        [sys.executable, "-m", "tuner.report", "--storage", url, "--study", "full", "--out", str(tmp_path / "r")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert "COMPLETE" in (tmp_path / "r" / "report.md").read_text()


def test_a_locked_database_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process writing and never letting go
    try:
        proc = _study(
            small_space(tmp_path), tmp_path, f"sqlite:///{db}", trials=1, TUNER_SQLITE_BUSY_TIMEOUT_S="3"
        )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "another process held the SQLite file for 3 s" in proc.stderr.strip().splitlines()[-1]
