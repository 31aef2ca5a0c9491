"""Secrets from the host (a target's ``secret_env_from_host``): read in one place, given to the server only."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tuner.core.net import free_port
from tuner.launch.base import LaunchSpec, host_secrets
from tuner.launch.process import ProcessLauncher
from tuner.testing.study_cli import wait_for

NAME = "TUNER_TEST_SECRET_TOKEN"


def test_host_secrets_reads_the_variables_that_are_set() -> None:
    os.environ[NAME] = "s3cret"
    try:
        assert host_secrets([NAME, "TUNER_TEST_SECRET_UNSET"]) == {NAME: "s3cret"}
    finally:
        del os.environ[NAME]
    assert host_secrets([NAME]) == {}


def test_a_process_server_gets_the_secret_in_its_environment(tmp_path: Path) -> None:
    code = f"import os; print('token', os.environ.get({NAME!r}), flush=True)"
    spec = LaunchSpec([sys.executable, "-c", code], "127.0.0.1", free_port(), tmp_path / "s.log", "sec", 0,
                      secret_env={NAME: "s3cret"})  # fmt: skip
    handle = ProcessLauncher().start(spec)
    wait_for(lambda: handle.exit_status() is not None, 30, "the process to exit")
    handle.stop(5)
    assert "token s3cret" in handle.log_text()
    assert handle.command is None  # nothing but the argv, which carries no secret, is shown or stored
    assert "s3cret" not in " ".join(spec.argv)
