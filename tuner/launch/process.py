"""Local process launcher: each server in its own process group, reaped even after a SIGKILLed tuner.

Every server gets ``TUNER=1``, ``TUNER_STUDY`` and ``TUNER_TRIAL`` in its environment and dies with
the tuner (``PR_SET_PDEATHSIG``); a server that outlives a killed tuner anyway (its children, or a
tuner killed between fork and prctl) is found through ``/proc/*/environ`` by :meth:`reap_orphans`.
``TUNER_OWNER_PID`` names the tuner that started it: a server whose tuner still runs is not an orphan,
even when that tuner's study and worker have the same names (two studies in two databases on one host).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from tuner.core.errors import LaunchError
from tuner.core.failures import ExitStatus
from tuner.core.net import free_port, tcp_socket
from tuner.launch.base import TOOL_LABEL, ImageInfo, LaunchSpec, read_tail

_PR_SET_PDEATHSIG = 1
OWNER_ENV = "TUNER_OWNER_PID"  # the tuner process that started the server
GROUP_GRACE_S = 5.0  # after the leader ignored SIGTERM for the stop timeout: the group's SIGTERM grace


def _child_setup() -> None:
    os.setsid()  # own process group: stop() signals the whole tree
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ProcessHandle:
    """A server running as a local process group; its output is copied to ``spec.log_path``."""

    def __init__(self, spec: LaunchSpec, proc: subprocess.Popen[bytes]) -> None:
        self.spec = spec
        self.command: str | None = None  # the argv in the spec is the command
        self._proc = proc
        self._first_output_at: float | None = None
        self._pump = threading.Thread(target=self._copy_output, name=f"log-{proc.pid}", daemon=True)
        self._pump.start()

    @property
    def base_url(self) -> str:
        return self.spec.base_url

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _copy_output(self) -> None:
        assert self._proc.stdout is not None
        with self.spec.log_path.open("ab") as log:
            for line in iter(self._proc.stdout.readline, b""):
                if self._first_output_at is None:
                    self._first_output_at = time.perf_counter()
                log.write(line)
                log.flush()

    def exit_status(self) -> ExitStatus | None:
        rc = self._proc.poll()
        return None if rc is None else ExitStatus.from_returncode(rc)

    def log_text(self) -> str:
        return read_tail(self.spec.log_path)

    def first_output_at(self) -> float | None:
        return self._first_output_at

    def stop(self, timeout: float = 10.0) -> ExitStatus:
        """Stop the server: SIGTERM its leader, then its group, then SIGKILL; wait for the log pump.

        The leader (the process we started) gets SIGTERM first and ``timeout`` seconds to exit, so a
        server that shuts its own children down does so cleanly: real SGLang exits 0 in 2-6 s. Signalling
        the whole group at once would kill its scheduler under it, and SGLang then reports "Subprocess
        scheduler_0 crashed with exit code -15" and exits 137 after ~7 s (docs/sglang-cpu.md): a normal
        stop that looks like a crash. Only a leader still alive after ``timeout`` has its group
        SIGTERMed, with :data:`GROUP_GRACE_S` more seconds, before SIGKILL; whatever is left in the
        group after the leader is gone (children that outlived it) is SIGKILLed as before.
        """
        pgid = self._proc.pid
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pgid, signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(pgid, signal.SIGTERM)
                try:
                    self._proc.wait(min(timeout, GROUP_GRACE_S))
                except subprocess.TimeoutExpired:
                    _signal_group(pgid, signal.SIGKILL)
                    self._proc.wait()
        _signal_group(pgid, signal.SIGKILL)  # children that outlived their leader
        self._pump.join(timeout=5)
        status = self.exit_status()
        assert status is not None
        return status


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class ProcessLauncher:
    """Starts servers as local processes (the simulator and ``process`` targets)."""

    bind_host: str | None = None  # servers bind the space's launch.host
    image_info: ImageInfo | None = None  # no image to check

    def start(self, spec: LaunchSpec) -> ProcessHandle:
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            **spec.env,
            **spec.secret_env,
            TOOL_LABEL.upper(): "1",
            "TUNER_STUDY": spec.study,
            "TUNER_TRIAL": str(spec.trial),
            "TUNER_WORKER": spec.worker,
            OWNER_ENV: str(os.getpid()),
            "PYTHONUNBUFFERED": "1",
        }
        if spec.gpu_ids is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in spec.gpu_ids)
        try:
            proc = subprocess.Popen(
                spec.argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                preexec_fn=_child_setup,
            )
        except (FileNotFoundError, PermissionError) as e:
            raise LaunchError(
                f"cannot start {spec.argv[0]!r}: {e.strerror}; is it installed and on PATH?"
            ) from e
        return ProcessHandle(spec, proc)

    def free_port(self, host: str) -> int:
        return free_port(host)

    def reap_orphans(self, study: str | None = None, worker: str | None = None) -> int:
        """Kill the process groups of servers a tuner that no longer runs left running (Linux ``/proc``)."""
        killed = 0
        for pid in _our_server_pids(study, worker, orphans=True):
            try:
                pgid = os.getpgid(pid)
            except ProcessLookupError:
                continue
            if pgid == os.getpgid(0):
                continue  # never our own group
            _signal_group(pgid, signal.SIGKILL)
            killed += 1
        return killed

    def close(self) -> None:
        return None


def _our_server_pids(study: str | None, worker: str | None, *, orphans: bool = False) -> list[int]:
    """Servers we started (of ``study`` and ``worker`` when given); ``orphans``: only those whose tuner
    is gone."""
    want = {f"{TOOL_LABEL.upper()}=1".encode()}
    if study is not None:
        want.add(f"TUNER_STUDY={study}".encode())
    if worker is not None:
        want.add(f"TUNER_WORKER={worker}".encode())
    me = os.getpid()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            environ = set((entry / "environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if want <= environ and not (orphans and _owner_alive(environ)):
            pids.append(int(entry.name))
    return pids


def _owner_alive(environ: set[bytes]) -> bool:
    """Whether the tuner named by a server's ``TUNER_OWNER_PID`` still runs (servers started before
    the variable existed have none: orphans)."""
    prefix = f"{OWNER_ENV}=".encode()
    owner = next((e[len(prefix) :] for e in environ if e.startswith(prefix)), b"")
    return owner.isdigit() and pid_running(int(owner))


def pid_running(pid: int) -> bool:
    """Whether process ``pid`` runs: exists and is not a zombie (a killed process its parent has not
    waited for yet), from ``/proc/PID/stat`` ("pid (comm) S ...")."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_port_free(host: str, port: int, timeout_s: float = 10.0) -> bool:
    """Wait until nothing accepts connections on ``host:port`` (the last server really went away)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        s, address = tcp_socket(host, port)
        with s:
            s.settimeout(0.2)
            if s.connect_ex(address) != 0:
                return True
        time.sleep(0.1)
    return False
