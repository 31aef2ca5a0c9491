"""A running trial server in a container: exit status without a round trip, live logs, an idempotent stop."""

from __future__ import annotations

import codecs
import contextlib
import logging
import math
import threading
import time

import docker
import docker.errors

from tuner.core.errors import LaunchError
from tuner.core.failures import ExitStatus
from tuner.launch.base import LaunchSpec
from tuner.launch.docker_daemon import (
    DAEMON_ERRORS,
    daemon_call,
    daemon_name,
    short_error,
)

log = logging.getLogger(__name__)


class DockerHandle:
    """A server container (see :class:`tuner.launch.base.ServerHandle`). Thread-safe."""

    def __init__(
        self,
        spec: LaunchSpec,
        client: docker.DockerClient,
        container_id: str,
        name: str,
        *,
        base_url: str,
        command: str,
        daemon: str | None,
        started_at: float,
    ) -> None:
        self.spec = spec
        self.container_id = container_id
        self.name = name
        self.command = command  # ``docker run …`` equivalent with secret values redacted: safe to store
        self.started_at = started_at  # perf_counter() before the container was created
        self.exited_at: float | None = None  # perf_counter() when the watcher saw the exit
        self._base_url = base_url
        self._api = client.api
        self._daemon = daemon
        self._exit: ExitStatus | None = None
        self._lost: str | None = None  # why the daemon stopped answering, if it did
        self._exited = threading.Event()
        self._logs_done = threading.Event()
        self._chunks: list[str] = []
        self._chunks_lock = threading.Lock()
        self._first_output_at: float | None = None
        self._stop_lock = threading.RLock()  # reentrant: a signal handler may stop() while stop() runs
        self._final: ExitStatus | None = None
        threading.Thread(target=self._watch, name=f"{name}-wait", daemon=True).start()
        threading.Thread(target=self._follow_logs, name=f"{name}-logs", daemon=True).start()

    @property
    def base_url(self) -> str:
        return self._base_url

    def exit_status(self) -> ExitStatus | None:
        """``None`` while running. Raises LaunchError when the daemon was lost before the exit was seen."""
        if self._exit is None and self._lost is not None:
            raise LaunchError(self._lost)
        return self._exit

    def log_text(self) -> str:
        """stdout and stderr so far; after the exit, waits briefly for the log stream to drain."""
        if self._exited.is_set():
            self._logs_done.wait(2.0)
        with self._chunks_lock:
            return "".join(self._chunks)

    def first_output_at(self) -> float | None:
        return self._first_output_at

    def stop(self, timeout: float = 10.0) -> ExitStatus:
        """SIGTERM, SIGKILL after ``timeout`` s, keep the logs, remove the container. Idempotent."""
        with self._stop_lock:
            if self._final is not None:
                return self._final
            with daemon_call(f"stop container {self.name}", self._daemon):
                if not self._exited.is_set():
                    with contextlib.suppress(docker.errors.NotFound):
                        self._api.stop(self.container_id, timeout=max(0, math.ceil(timeout)))
                    self._exited.wait(timeout + 15)
                # The follow stream ends with the container; fetch the whole log if it did not.
                if not self._logs_done.wait(5.0):
                    text = self._api.logs(self.container_id, stdout=True, stderr=True).decode(
                        "utf-8", "replace"
                    )
                    with self._chunks_lock:
                        self._chunks = [text]
                with contextlib.suppress(docker.errors.NotFound):
                    self._api.remove_container(self.container_id, force=True)
            status = self.exit_status()  # raises when the daemon was lost
            if status is None:
                raise LaunchError(
                    f"container {self.name} did not stop within {timeout + 15:.0f}s and was removed"
                )
            self._final = status
            return status

    def _watch(self) -> None:
        """Block on the container's exit (no HTTP timeout) and record code and OOMKilled."""
        try:
            code = self._api.wait(self.container_id, timeout=None).get("StatusCode")
            try:
                state = self._api.inspect_container(self.container_id)["State"]
                self._exit = ExitStatus(
                    code=int(state.get("ExitCode", code)), oom_killed=bool(state.get("OOMKilled"))
                )
            except docker.errors.NotFound:  # removed meanwhile (by `docker rm -f`): the wait's code is all
                self._exit = ExitStatus(code=None if code is None else int(code))
        except DAEMON_ERRORS as e:
            self._lost = (
                f"lost the Docker daemon at {daemon_name(self._daemon)} while container {self.name} "
                f"ran ({short_error(e)}); its state is unknown. Restart the daemon (scripts/setup-docker.sh), "
                f"then `python -m tuner.launch.docker reap --study {self.spec.study}`"
            )
        finally:
            self.exited_at = time.perf_counter()
            self._exited.set()

    def _follow_logs(self) -> None:
        """Append the container's output to memory and ``spec.log_path`` as it arrives."""
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        try:
            with self.spec.log_path.open("ab") as f:
                for chunk in self._api.logs(
                    self.container_id, stream=True, follow=True, stdout=True, stderr=True
                ):
                    if self._first_output_at is None:
                        self._first_output_at = time.perf_counter()
                    f.write(chunk)
                    f.flush()
                    with self._chunks_lock:
                        self._chunks.append(decoder.decode(chunk))
        except DAEMON_ERRORS as e:  # the watcher reports a lost daemon; the log just ends here
            log.debug("log stream of %s ended: %s", self.name, e)
        finally:
            self._logs_done.set()
