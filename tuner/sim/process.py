"""Start the simulator as a real process: for tests, benchmarks and the demo.

>>> with SimProcess(["--attention-backend", "triton", "--disable-cuda-graph"]) as sim:  # doctest: +SKIP
...     sim.wait_ready()
...     urllib.request.urlopen(sim.url + "/health").status
200
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tuner.core.net import free_port


class SimProcess:
    """``python -m tuner.sim`` on a free port, its log captured to a file.

    ``args`` are SGLang and ``--sim-*`` flags; ``--model-path``, ``--port`` and (unless given)
    ``--sim-startup-scale 0.01`` are added.
    """

    def __init__(
        self, args: Sequence[str], *, model_path: str = "Qwen/Qwen3-32B-AWQ", startup_scale: float = 0.01
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.argv = [
            sys.executable,
            "-m",
            "tuner.sim",
            "--model-path",
            model_path,
            "--port",
            str(self.port),
            *args,
        ]
        if "--sim-startup-scale" not in args:
            self.argv += ["--sim-startup-scale", str(startup_scale)]
        self._log = tempfile.NamedTemporaryFile("w+", prefix="sim-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SimProcess:
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def returncode(self) -> int | None:
        assert self.proc is not None
        return self.proc.poll()

    def log_text(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def wait_exit(self, timeout: float = 30.0) -> int:
        """Wait for the process to end; its return code (negative: killed by that signal)."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait for ``/health`` 200; raise RuntimeError with the log tail if the process dies first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.returncode is not None:
                raise RuntimeError(f"simulator exited with {self.returncode}:\n{self.log_text()[-2000:]}")
            if self.status("/health") == 200:
                return
            time.sleep(0.05)
        raise TimeoutError(f"simulator not ready after {timeout} s:\n{self.log_text()[-2000:]}")

    def status(self, path: str) -> int | None:
        """HTTP status of GET ``path``, or None while nothing listens."""
        try:
            return self.get(path, timeout=2.0)[0]
        except OSError:
            return None

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        """GET ``path``; (status, body) for any HTTP status."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def post(self, path: str, body: dict[str, Any], timeout: float = 60.0) -> tuple[int, bytes]:
        """POST JSON to ``path``; (status, body) for any HTTP status."""
        req = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; remove the log file."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        with contextlib.suppress(OSError):
            Path(self._log.name).unlink()
