"""Reaping a killed tuner's servers (local processes): what a starting tuner stops, and what it leaves.

A starting tuner stops the servers of its study and worker that an earlier, killed run left behind
(``ProcessLauncher.reap_orphans``). A server whose tuner still runs is not one of them, even when that
tuner's study and worker carry the same names: two users' demos on one host, each with its own database,
or two test runs side by side.
"""

from __future__ import annotations

import signal
import sys
import textwrap
from pathlib import Path

from tuner.launch.process import ProcessLauncher, pid_running
from tuner.testing.study_cli import popen_python, wait_for

STUDY = "reap-same-name"


def test_a_running_tuners_servers_are_left_alone_and_a_killed_ones_reaped(tmp_path: Path) -> None:
    # Another tuner process starts a server whose own child would outlive it (the server itself dies
    # with its tuner by PR_SET_PDEATHSIG; what it started does not).
    server = "import subprocess, sys, time; c = subprocess.Popen(['sleep', '600']); print(c.pid, flush=True); time.sleep(600)"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from tuner.core.net import free_port
        from tuner.launch.base import LaunchSpec
        from tuner.launch.process import ProcessLauncher
        log = Path({str(tmp_path / "server.log")!r})
        spec = LaunchSpec([{sys.executable!r}, "-c", {server!r}], "127.0.0.1", free_port(), log, {STUDY!r}, 3)
        ProcessLauncher().start(spec)
        while not (log.exists() and log.read_text().strip()):
            time.sleep(0.05)
        print(log.read_text().split()[0], flush=True)
        time.sleep(600)
    """)
    tuner = popen_python(script)
    launcher = ProcessLauncher()
    try:
        assert tuner.stdout is not None
        child = int(tuner.stdout.readline())
        assert pid_running(child)
        # This process is a tuner of the same study and worker: the other one's server is not its orphan.
        assert launcher.reap_orphans(STUDY, "0") == 0
        assert pid_running(child), "a server of a tuner that still runs was stopped"
    finally:
        tuner.send_signal(signal.SIGKILL)
        tuner.wait()
    assert pid_running(child)  # the killed tuner's server died with it; its child did not
    assert launcher.reap_orphans(STUDY, "0") >= 1
    wait_for(lambda: not pid_running(child), 10, "the orphan to be stopped")
