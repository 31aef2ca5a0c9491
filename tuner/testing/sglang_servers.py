"""Real SGLang (CPU engine) and the simulator as session-scoped test servers.

Both are started the same way — the same SGLang flags, a free port, their own process group
(``start_new_session``), the log captured to a file, ``/health`` polled from the moment the process
is spawned until it answers 200 (every answer is kept, so a test can check what ``/health`` said while
the server was starting) — and stopped the same way: SIGTERM to the main pid, the group only as a
fallback. Used by ``tests/integration/test_conformance.py``; any test can take the fixtures ``real_sglang_server``
and ``sim_sglang_server`` (import them into the test module) or call :func:`start_server` itself.

Real SGLang is the 0.5.23 CPU venv and tiny model of ``docs/sglang-cpu.md``:
``TUNER_SGLANG_CPU_PYTHON`` / ``TUNER_SGLANG_CPU_MODEL``, else their default cache paths. Without
them the real server's tests are skipped, unless ``TUNER_REQUIRE_ALL=1``, where they fail. One real
launch takes 20-60 s and ~2.3 GB of memory: start it once per session.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tuner.core.net import free_port
from tuner.engines import sglang
from tuner.engines.base import tool_cache
from tuner.testing.require import missing

ROOT = Path(__file__).resolve().parents[2]
CACHE = tool_cache()
REAL_PYTHON = sglang.default_cpu_python("0.5.23")
REAL_MODEL = sglang.cpu_model_dir()
STARTUP_TIMEOUT_S = float(os.environ.get("TUNER_SGLANG_CPU_STARTUP_S", "300"))

REAL = "real"
SIM = "sim"
KINDS = (REAL, SIM)

# docs/sglang-cpu.md's launch recipe. The KV pool (2048 tokens) is smaller than the model's context
# (4096), so a request can be too long for the pool without being too long for the context.
POOL_TOKENS = 2048
SLEEP_ON_IDLE = "--sleep-on-idle"  # idle, the scheduler would spin a core (bench/results/sglang_idle_cpu.md)
SGLANG_FLAGS: tuple[str, ...] = (
    "--device", "cpu", "--attention-backend", "torch_native", "--sampling-backend", "pytorch",
    "--cuda-graph-backend-decode", "disabled", "--cuda-graph-backend-prefill", "disabled",
    "--host", "127.0.0.1", "--mem-fraction-static", "0.1", "--max-total-tokens", str(POOL_TOKENS),
    "--dtype", "float32", SLEEP_ON_IDLE,
)  # fmt: skip
# The simulator's own options: the profile of the same tiny Llama, a fast GPU, no noise, short start-up.
SIM_FLAGS: tuple[str, ...] = (
    "--sim-gpu", "h100", "--sim-model", "sglang-tiny-llama", "--sim-noise", "0", "--sim-seed", "1",
    "--sim-startup-scale", "0.02",
)  # fmt: skip


def real_available() -> str | None:
    """None when the real SGLang CPU venv and model are there, else what is missing."""
    if not REAL_PYTHON.is_file():
        return f"SGLang CPU venv missing ({REAL_PYTHON}): run scripts/setup-sglang-cpu.sh"
    if not (REAL_MODEL / "config.json").is_file():
        return f"tiny SGLang model missing ({REAL_MODEL}): run scripts/setup-sglang-cpu-model.sh"
    return None


def require_real() -> None:
    """Skip (or, with TUNER_REQUIRE_ALL=1, fail) the calling test when real SGLang is not set up."""
    if (why := real_available()) is not None:
        missing(why)


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``port`` (a connect is refused)."""
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) != 0


def argv_for(
    kind: str,
    port: int,
    extra: Sequence[str] = (),
    *,
    model: str | None = None,
    without: Sequence[str] = (),
) -> list[str]:
    """The command line of server ``kind`` ("real" or "sim") on ``port`` with the shared SGLang flags
    (but the switches in ``without``)."""
    model = model or str(REAL_MODEL)
    shared = [f for f in SGLANG_FLAGS if f not in without]
    common = ["--model-path", model, *shared, "--port", str(port), *extra]
    if kind == REAL:
        return [str(REAL_PYTHON), "-m", "sglang.launch_server", *common]
    return [sys.executable, "-m", "tuner.sim", *common, *SIM_FLAGS]


def env_for(kind: str) -> dict[str, str]:
    env = dict(os.environ)
    if kind == REAL:
        env.update(SGLANG_USE_CPU_ENGINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    else:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    def json(self) -> Any:
        return json.loads(self.body)

    def sse(self) -> list[str]:
        """The ``data:`` payloads of an SSE body, in order (asserts every event is a data line)."""
        events = [e for e in self.body.decode().split("\n\n") if e.strip()]
        assert all(e.startswith("data: ") for e in events), events
        return [e[len("data: ") :] for e in events]


@dataclass
class ServerRun:
    """One server process: its command line, port, log, and what ``/health`` said while it started."""

    kind: str
    argv: list[str]
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    started: float = field(default_factory=time.monotonic)
    health_history: list[tuple[float, int | None]] = field(default_factory=list)  # (s, status | None)
    ready_s: float | None = None
    exit_code: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def model_path(self) -> str:
        return self.argv[self.argv.index("--model-path") + 1]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        content_type: str | None = "application/json",
        timeout: float = 120.0,
    ) -> Response:
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type} if content_type and data is not None else {}
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return Response(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
        except urllib.error.HTTPError as e:
            return Response(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Response:
        return self.request("POST", path, body, **kw)

    def health(self, timeout: float = 2.0) -> int | None:
        """``/health``'s status, or None while nothing answers."""
        try:
            return self.get("/health", timeout=timeout).status
        except OSError:
            return None

    def wait_ready(self, timeout: float) -> None:
        """Poll ``/health`` every 50 ms (recording each answer) until 200; fail with the log tail."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.kind} server exited with {self.proc.returncode} before /health 200:\n"
                    f"{self.log_text()[-3000:]}"
                )
            status = self.health()
            self.health_history.append((time.monotonic() - self.started, status))
            if status == 200:
                self.ready_s = time.monotonic() - self.started
                return
            time.sleep(0.05)
        raise TimeoutError(f"{self.kind} server not ready after {timeout:.0f} s:\n{self.log_text()[-3000:]}")

    def wait_log(self, needle: str, timeout: float = 10.0) -> str:
        """Wait until ``needle`` appears in the log; return the log."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()
            if needle in text or time.monotonic() > deadline:
                return text
            time.sleep(0.1)

    def terminate_main(self, timeout: float = 60.0) -> int | None:
        """SIGTERM the main pid only and wait up to ``timeout``; its exit code, None if still running.

        SGLang's graceful stop (docs/sglang-cpu.md): the main pid drains and exits 0 in 4-5 s;
        signalling the whole group instead kills the scheduler under it and ends in exit 137.
        """
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        return self.proc.poll()

    def stop(self, timeout: float = 60.0) -> int:
        """:meth:`terminate_main`; then SIGTERM, then SIGKILL, the group if it is not gone in time.

        Returns the exit code (negative: killed by that signal). Idempotent.
        """
        if self.exit_code is None:
            if self.terminate_main(timeout) is None:
                self._signal_group(signal.SIGTERM)
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    self._signal_group(signal.SIGKILL)
                    self.proc.wait()
            self.exit_code = self.proc.returncode
        self.reap_group()
        return self.exit_code

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the live processes of the server's group (scheduler included)."""
        total = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue  # gone meanwhile
            fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp ...
            if int(fields[2]) == self.proc.pid:
                total += int(fields[11]) + int(fields[12])  # utime stime, in clock ticks
        return total / os.sysconf("SC_CLK_TCK")

    def group_alive(self, grace: float = 0.0) -> bool:
        """Whether any process of the server's group is left (waiting up to ``grace`` s for it to go)."""
        deadline = time.monotonic() + grace
        while True:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                pass
            if time.monotonic() >= deadline:
                return True
            time.sleep(0.1)

    def reap_group(self, timeout: float = 15.0) -> None:
        """Wait for the rest of the group (children) to go; SIGKILL it after ``timeout``."""
        if self.group_alive(grace=timeout):
            self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)


def spawn(
    kind: str,
    extra: Sequence[str] = (),
    *,
    port: int | None = None,
    log_dir: Path | None = None,
    without: Sequence[str] = (),
) -> ServerRun:
    """Start server ``kind`` in its own process group (no wait). Real SGLang must be available."""
    port = port or free_port()
    argv = argv_for(kind, port, extra, without=without)
    log = tempfile.NamedTemporaryFile(  # noqa: SIM115
        "wb", prefix=f"sglang-{kind}-{port}-", suffix=".log", dir=log_dir, delete=False
    )
    with log:
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env_for(kind),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ServerRun(kind=kind, argv=argv, port=port, proc=proc, log_path=Path(log.name))


def start_server(
    kind: str, extra: Sequence[str] = (), *, timeout: float | None = None, log_dir: Path | None = None
) -> ServerRun:
    """Start server ``kind`` and wait for ``/health`` 200 (stopping it if that fails)."""
    run = spawn(kind, extra, log_dir=log_dir)
    try:
        run.wait_ready(timeout or (STARTUP_TIMEOUT_S if kind == REAL else 60.0))
    except BaseException:
        run.stop(timeout=20)
        raise
    return run


@contextlib.contextmanager
def running_server(kind: str, extra: Sequence[str] = (), **kw: Any) -> Iterator[ServerRun]:
    run = start_server(kind, extra, **kw)
    try:
        yield run
    finally:
        run.stop()


@dataclass(frozen=True)
class CliResult:
    argv: list[str]
    returncode: int
    output: str
    seconds: float


def run_cli(kind: str, extra: Sequence[str], timeout: float = 180.0) -> CliResult:
    """Run server ``kind`` with ``extra`` flags to completion (for command lines that must fail)."""
    argv = argv_for(kind, free_port(), extra)
    t0 = time.monotonic()
    proc = subprocess.run(
        argv, cwd=ROOT, env=env_for(kind), stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
        start_new_session=True,
    )  # fmt: skip
    out = (proc.stdout + proc.stderr).decode(errors="replace")
    return CliResult(argv, proc.returncode, out, time.monotonic() - t0)


def run_clis(kind: str, cases: Mapping[str, Sequence[str]], timeout: float = 180.0) -> dict[str, CliResult]:
    """:func:`run_cli` for several command lines at once (each real one spends ~12 s importing)."""
    with ThreadPoolExecutor(max_workers=len(cases)) as pool:
        futures = {name: pool.submit(run_cli, kind, extra, timeout) for name, extra in cases.items()}
        return {name: f.result() for name, f in futures.items()}


def _server_fixture(kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerRun]:
    if kind == REAL:
        require_real()
    run = start_server(kind, log_dir=tmp_path_factory.mktemp(f"sglang-{kind}"))
    try:
        yield run
    finally:
        run.stop()


@pytest.fixture(scope="session")
def real_sglang_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerRun]:
    """Real SGLang 0.5.23 (CPU engine, tiny Llama) with :data:`SGLANG_FLAGS`, ready."""
    yield from _server_fixture(REAL, tmp_path_factory)


@pytest.fixture(scope="session")
def sim_sglang_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerRun]:
    """``python -m tuner.sim`` with the same SGLang flags (plus :data:`SIM_FLAGS`), ready."""
    yield from _server_fixture(SIM, tmp_path_factory)
