"""Run each trial's server in a Docker container: start, watch, capture logs, remove.

The container runs the engine command the engine module rendered (``python3 -m sglang.launch_server …``)
in the target image with the GPUs, shared memory, environment, volumes and memory limit the search
space's ``target:`` block asks for (:class:`DockerTarget`). The server's port is published on
``127.0.0.1`` under the same number, so ``free_port()`` picks it and the engine renders it into argv.

What this module promises the trial runner:

* the image is never pulled: a missing image is a :class:`~tuner.core.errors.LaunchError` saying how to get it;
* ``exit_status()`` costs nothing (a thread blocked on the container's ``wait`` fills it in as soon as
  the container exits) and carries the exit code and Docker's ``State.OOMKilled``;
* ``log_text()`` is stdout and stderr interleaved, also appended live to ``spec.log_path``;
* ``stop()`` sends SIGTERM, kills after ``timeout``, keeps the logs and then removes the container; it is
  idempotent and may be called from another thread or a signal handler;
* containers carry the labels ``tuner=1``, ``tuner.study``, ``tuner.trial`` and their owner's host and pid,
  so :meth:`DockerLauncher.reap_orphans` removes what a killed tuner left behind;
* a Docker daemon that is unreachable or dies mid-trial is a :class:`~tuner.core.errors.LaunchError` naming the
  daemon and how to start it, never a docker-py traceback.

Command line: ``python -m tuner.launch.docker sim-target`` prints the ``target:`` block for the simulated
SGLang image (``scripts/build-sim-image.sh``); ``python -m tuner.launch.docker reap [--study S]``
removes orphaned containers.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import logging
import math
import os
import re
import shlex
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import docker
import docker.errors
import requests
from docker.types import DeviceRequest

from tuner.core.cli import run_cli
from tuner.core.errors import LaunchError
from tuner.core.failures import ExitStatus
from tuner.launch.base import TOOL_LABEL, ImageInfo, LaunchSpec
from tuner.space.targets import DockerTarget, VolumeBind

log = logging.getLogger(__name__)

SIM_IMAGE = "sglang-tuner/sim:dev"
STUDY_LABEL = "tuner.study"
TRIAL_LABEL = "tuner.trial"
WORKER_LABEL = "tuner.worker"
ROLE_LABEL = "tuner.role"  # "server" for trial servers, "probe" for one-off commands (image checks)
OWNER_HOST_LABEL = "tuner.owner.host"
OWNER_PID_LABEL = "tuner.owner.pid"
REDACTED = "***"

# docker-py raises these when the daemon is gone (socket refused, connection reset mid-stream).
_DAEMON_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)


def connect(daemon: str | None = None, *, timeout: float = 60.0) -> docker.DockerClient:
    """A docker client for ``daemon`` (default: the environment's); a LaunchError saying how to start one."""
    try:
        if daemon:
            return docker.DockerClient(base_url=daemon, version="auto", timeout=int(timeout))
        return docker.from_env(version="auto", timeout=int(timeout))
    except _DAEMON_ERRORS as e:
        raise LaunchError(
            f"cannot reach the Docker daemon at {_daemon_name(daemon)} ({_short(e)}); start it with "
            "scripts/setup-docker.sh (or `dockerd &` as root) or point DOCKER_HOST at a running one"
        ) from e


def daemon_unavailable_reason(daemon: str | None = None) -> str | None:
    """``None`` when a Docker daemon answers, else why not (for tests and ``doctor`` checks)."""
    try:
        connect(daemon, timeout=5).close()
    except LaunchError as e:
        return str(e)
    return None


@contextlib.contextmanager
def _daemon_call(what: str, daemon: str | None) -> Iterator[None]:
    """Translate docker-py and transport errors into a LaunchError that names the operation."""
    try:
        yield
    except docker.errors.APIError as e:
        text = str(e.explanation or e)
        if "could not select device driver" in text:
            text += "; this daemon has no NVIDIA runtime: install nvidia-container-toolkit or set target.gpus: none"
        raise LaunchError(f"docker could not {what}: {text}") from e
    except _DAEMON_ERRORS as e:
        raise LaunchError(
            f"lost the Docker daemon at {_daemon_name(daemon)} while trying to {what} ({_short(e)}); "
            "check it (`docker info`) and restart it with scripts/setup-docker.sh"
        ) from e


class DockerLauncher:
    """Starts trial servers as containers of ``target.image`` (see :class:`DockerTarget`).

    >>> launcher = DockerLauncher(sim_image_target())          # doctest: +SKIP
    >>> port = launcher.free_port(launcher.bind_host)           # doctest: +SKIP
    >>> argv = engine.launch_argv(model=m, host=launcher.bind_host, port=port, flags=f, version=v)  # doctest: +SKIP
    >>> spec = LaunchSpec(argv, launcher.bind_host, port, log_path, "s", 0)  # doctest: +SKIP
    >>> handle = launcher.start(spec)  # doctest: +SKIP
    """

    def __init__(self, target: DockerTarget, *, client: docker.DockerClient | None = None) -> None:
        self.target = target
        self._client = client
        self._client_lock = threading.Lock()
        self.image_info: ImageInfo | None = None  # set by launcher_for_space after the image check

    @property
    def bind_host(self) -> str:
        """The ``--host`` the server must listen on in the container for the published port to reach it."""
        return "0.0.0.0" if self.target.network == "bridge" else self.target.url_host

    @property
    def client(self) -> docker.DockerClient:
        with self._client_lock:
            if self._client is None:
                self._client = connect(self.target.daemon)
            return self._client

    def start(self, spec: LaunchSpec) -> DockerHandle:
        """Create and start the container for ``spec``; raise LaunchError if it cannot start."""
        target = self.target
        self.require_image()
        name = container_name(spec.study, spec.trial)
        env = {**target.env, **spec.env}
        secrets = {**_host_secrets(target.secret_env_from_host), **spec.secret_env}
        labels = {**spec.labels(), ROLE_LABEL: "server", **_owner_labels()}
        cfg = self._container_config(env={**env, **secrets}, labels=labels, gpu_ids=spec.gpu_ids)
        if target.network == "bridge":
            cfg["ports"] = {spec.port: (target.publish_host, spec.port)}
        command = _command_line(name, cfg, target.image, spec.argv, secret_names=set(secrets))
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        started_at = time.perf_counter()
        with _daemon_call(f"create a container of {target.image}", target.daemon):
            container = _create(self.client.api, target.image, spec.argv, name, cfg)
        cid = container["Id"]
        try:
            with _daemon_call(f"start container {name} ({target.image})", target.daemon):
                self.client.api.start(cid)
        except LaunchError:
            with contextlib.suppress(*_DAEMON_ERRORS):
                self.client.api.remove_container(cid, force=True)
            raise
        base_url = f"http://{target.url_host}:{spec.port}"
        return DockerHandle(
            spec,
            self.client,
            cid,
            name,
            base_url=base_url,
            command=command,
            daemon=target.daemon,
            started_at=started_at,
        )

    def run_command(self, argv: list[str], *, timeout_s: float = 300.0) -> tuple[int, str]:
        """Run ``argv`` once in the target image (same mounts and env, no GPUs, no secrets, no ports).

        Returns ``(exit code, stdout+stderr)``; the container is removed either way. For image checks.
        """
        self.require_image()
        name = f"tuner-probe-{uuid.uuid4().hex[:10]}"
        labels = {TOOL_LABEL: "1", ROLE_LABEL: "probe", **_owner_labels()}
        cfg = self._container_config(env=dict(self.target.env), labels=labels, gpu_ids=())
        api = self.client.api
        with _daemon_call(f"run `{shlex.join(argv)}` in {self.target.image}", self.target.daemon):
            cid = _create(api, self.target.image, argv, name, cfg)["Id"]
            try:
                api.start(cid)
                try:
                    code = int(api.wait(cid, timeout=math.ceil(timeout_s))["StatusCode"])
                except requests.exceptions.ReadTimeout as e:
                    raise LaunchError(
                        f"`{shlex.join(argv)}` in {self.target.image} did not finish within {timeout_s:.0f}s"
                    ) from e
                out = api.logs(cid, stdout=True, stderr=True).decode("utf-8", "replace")
            finally:
                with contextlib.suppress(docker.errors.NotFound):
                    api.remove_container(cid, force=True)
        return code, out

    def require_image(self) -> dict[str, Any]:
        """The local image's ``docker inspect``; a LaunchError saying how to get it when it is missing."""
        image = self.target.image
        try:
            with _daemon_call(f"inspect image {image}", self.target.daemon):
                return self.client.api.inspect_image(image)
        except LaunchError as e:
            if isinstance(e.__cause__, docker.errors.ImageNotFound):
                raise LaunchError(missing_image_message(image)) from None
            raise

    def free_port(self, host: str | None = None) -> int:
        """A TCP port free now on the address the port will be published on (or ``host``)."""
        addr = self.target.publish_host if self.target.network == "bridge" else (host or self.target.url_host)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((addr or "0.0.0.0", 0))
            return int(s.getsockname()[1])

    def containers(self, study: str | None = None, worker: str | None = None) -> list[dict[str, Any]]:
        """Containers of ours (``tuner=1``) on the daemon, running or not, optionally of one study/worker."""
        filters = [f"{TOOL_LABEL}=1"]
        filters += [f"{STUDY_LABEL}={study}"] if study is not None else []
        filters += [f"{WORKER_LABEL}={worker}"] if worker is not None else []
        with _daemon_call("list containers", self.target.daemon):
            return list(self.client.api.containers(all=True, filters={"label": filters}))

    def reap_orphans(
        self, study: str | None = None, worker: str | None = None, *, include_live: bool = False
    ) -> int:
        """Remove containers a killed tuner left (of ``study`` and ``worker``, or all of ours). Returns how many.

        A container whose owner process still runs on this host is left alone unless
        ``include_live`` (another tuner process may be measuring with it).
        """
        n = 0
        for c in self.containers(study, worker):
            if not include_live and _owner_alive(c.get("Labels") or {}):
                continue
            with _daemon_call(f"remove container {c['Id'][:12]}", self.target.daemon):
                try:
                    self.client.api.remove_container(c["Id"], force=True)
                except docker.errors.NotFound:
                    continue
            log.info("removed orphaned container %s (%s)", (c.get("Names") or ["?"])[0], c.get("Labels"))
            n += 1
        return n

    def close(self) -> None:
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _container_config(
        self, *, env: Mapping[str, str], labels: Mapping[str, str], gpu_ids: tuple[int, ...] | None
    ) -> dict[str, Any]:
        """Container settings shared by trial servers and one-off probes (see :func:`_create`)."""
        target = self.target
        host: dict[str, Any] = {
            "binds": _binds(target.volumes),
            "init": target.init,
            "network_mode": target.network,
            "device_requests": _device_requests(target.gpus, gpu_ids),
        }
        if target.shm_size is not None:
            host["shm_size"] = target.shm_size
        if target.ipc is not None:
            host["ipc_mode"] = target.ipc
        if target.mem_limit is not None:
            host["mem_limit"] = target.mem_limit
            host["memswap_limit"] = target.mem_limit  # no swap: over the limit is an OOM kill
        return {
            "environment": dict(env),
            "labels": dict(labels),
            "entrypoint": target.entrypoint,
            "host": host,
        }


def _create(api: docker.APIClient, image: str, argv: list[str], name: str, cfg: Mapping[str, Any]) -> dict:
    """``docker create`` (never pulls: a missing image is a 404 here, unlike ``containers.run``)."""
    ports = cfg.get("ports") or {}
    host_config = api.create_host_config(
        **cfg["host"], port_bindings={c: b for c, b in ports.items()} if ports else None
    )
    return api.create_container(
        image,
        command=list(argv),
        name=name,
        environment=cfg["environment"],
        labels=cfg["labels"],
        entrypoint=cfg["entrypoint"],
        ports=[c for c in ports] or None,
        host_config=host_config,
    )


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
            with _daemon_call(f"stop container {self.name}", self._daemon):
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
        except _DAEMON_ERRORS as e:
            self._lost = (
                f"lost the Docker daemon at {_daemon_name(self._daemon)} while container {self.name} "
                f"ran ({_short(e)}); its state is unknown. Restart the daemon (scripts/setup-docker.sh), "
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
        except _DAEMON_ERRORS as e:  # the watcher reports a lost daemon; the log just ends here
            log.debug("log stream of %s ended: %s", self.name, e)
        finally:
            self._logs_done.set()


def missing_image_message(image: str) -> str:
    """What to say when ``image`` is not on the daemon (the tuner never pulls implicitly)."""
    how = (
        "build it with scripts/build-sim-image.sh"
        if image.startswith("sglang-tuner/")
        else f"pull it first (`docker pull {image}`) or load it (`docker load -i FILE`)"
    )
    return f"Docker image {image} is not present on the daemon and the tuner never pulls images: {how}"


def container_name(study: str, trial: int) -> str:
    """``tuner-<study>-t<trial>-<random>`` with the study reduced to Docker's name alphabet."""
    slug = re.sub(r"[^a-zA-Z0-9_.-]+", "-", study).strip("-.")[:40] or "study"
    return f"tuner-{slug}-t{trial}-{uuid.uuid4().hex[:6]}"


def sim_image_target(
    *, repo: Path | None = None, venv: Path | None = None, image: str = SIM_IMAGE
) -> DockerTarget:
    """The target running the simulated SGLang image on the host's Python (see docker-images/README.md)."""
    repo = (repo or Path(__file__).resolve().parents[2]).resolve()
    venv = (venv or repo / ".venv").absolute()
    volumes: dict[str, VolumeBind] = {
        p: VolumeBind(bind=p, mode="ro")
        for p in ("/usr", "/lib", "/lib64", "/bin", "/etc")
        if Path(p).exists()
    }
    home = _python_home(venv)
    if home is not None and not any(home == Path(p) or Path(p) in home.parents for p in volumes):
        volumes[str(home)] = VolumeBind(bind=str(home), mode="ro")
    volumes[str(venv)] = VolumeBind(bind="/opt/sim-venv", mode="ro")
    volumes[str(repo)] = VolumeBind(bind="/opt/tuner-src", mode="ro")
    return DockerTarget(image=image, gpus="none", shm_size="256m", volumes=volumes)


def _python_home(venv: Path) -> Path | None:
    """The installation prefix of the interpreter a virtualenv was made from (``home`` in pyvenv.cfg)."""
    try:
        for line in (venv / "pyvenv.cfg").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home":
                return Path(value.strip()).resolve().parent
    except FileNotFoundError:
        return None
    return None


def _binds(volumes: Mapping[str, VolumeBind]) -> dict[str, dict[str, str]]:
    binds: dict[str, dict[str, str]] = {}
    for host, vol in volumes.items():
        src = os.path.expanduser(os.path.expandvars(host))
        is_path = src.startswith(("/", ".")) or os.sep in src
        if is_path:
            src = str(Path(src).absolute())
            if not Path(src).exists():
                # Docker would create an empty root-owned directory: a model cache silently missing.
                raise LaunchError(
                    f"target.volumes: host path {host!r} ({src}) does not exist; create it or fix it"
                )
        binds[src] = {"bind": vol.bind, "mode": vol.mode}
    return binds


def _device_requests(
    gpus: Literal["all", "none"] | list[int], owned: tuple[int, ...] | None
) -> list[DeviceRequest]:
    if gpus == "none" or owned == ():
        return []
    ids = owned if owned is not None else (None if gpus == "all" else tuple(gpus))
    if ids is None:
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    return [DeviceRequest(device_ids=[str(i) for i in ids], capabilities=[["gpu"]])]


def _host_secrets(names: list[str]) -> dict[str, str]:
    out = {}
    for name in names:
        value = os.environ.get(name)
        if value:
            out[name] = value
        else:
            log.info("secret %s is not set on the host; the server runs without it", name)
    return out


def _owner_labels() -> dict[str, str]:
    return {OWNER_HOST_LABEL: socket.gethostname(), OWNER_PID_LABEL: str(os.getpid())}


def _owner_alive(labels: Mapping[str, str]) -> bool:
    """Whether the tuner process that started a container still runs (on this host)."""
    if labels.get(OWNER_HOST_LABEL) != socket.gethostname():
        return False
    try:
        os.kill(int(labels.get(OWNER_PID_LABEL, "")), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except ValueError:
        return False
    return True


def _command_line(
    name: str, cfg: Mapping[str, Any], image: str, argv: list[str], *, secret_names: set[str]
) -> str:
    """An equivalent ``docker run`` command, secret values replaced by ``***``: safe to log and store."""
    hc = cfg["host"]
    parts = ["docker", "run", "--rm", "--name", name]
    parts += [
        a
        for k, v in cfg["labels"].items()
        if k in (TOOL_LABEL, STUDY_LABEL, TRIAL_LABEL)
        for a in ("--label", f"{k}={v}")
    ]
    if hc.get("init"):
        parts.append("--init")
    if hc.get("network_mode") not in (None, "bridge"):
        parts += ["--network", hc["network_mode"]]
    for dr in hc.get("device_requests") or []:
        parts += [
            "--gpus",
            "all" if dr.get("Count") == -1 else f"device={','.join(dr.get('DeviceIDs') or [])}",
        ]
    for key, flag in (
        ("shm_size", "--shm-size"),
        ("ipc_mode", "--ipc"),
        ("mem_limit", "--memory"),
        ("memswap_limit", "--memory-swap"),
    ):
        if hc.get(key) is not None:
            parts += [flag, str(hc[key])]
    for k, v in cfg["environment"].items():
        parts += ["-e", f"{k}={REDACTED if k in secret_names else v}"]
    for src, b in hc.get("binds", {}).items():
        parts += ["-v", f"{src}:{b['bind']}:{b['mode']}"]
    for cport, (host, hport) in (cfg.get("ports") or {}).items():
        parts += ["-p", f"{host}:{hport}:{cport}"]
    if cfg.get("entrypoint"):
        parts += ["--entrypoint", shlex.join(cfg["entrypoint"])]
    return shlex.join([*parts, image, *argv])


def _daemon_name(daemon: str | None) -> str:
    return daemon or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def main(argv: list[str] | None = None) -> int:
    """``sim-target``: print the simulated image's target as YAML; ``reap``: remove orphaned containers."""
    import yaml

    p = argparse.ArgumentParser(prog="python -m tuner.launch.docker", description=main.__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sim-target", help="print the target: block for the simulated SGLang image")
    s.add_argument("--image", default=SIM_IMAGE)
    r = sub.add_parser("reap", help="remove containers a killed tuner left behind")
    r.add_argument("--study", default=None)
    r.add_argument("--include-live", action="store_true", help="also containers whose tuner still runs")
    args = p.parse_args(argv)
    if args.cmd == "sim-target":
        target = sim_image_target(image=args.image).model_dump(exclude_defaults=True)
        target = {"kind": "docker", **target}
        sys.stdout.write(yaml.safe_dump({"target": target}, sort_keys=False))
        return 0
    return run_cli("tuner.launch.docker", lambda: _reap(args.study, include_live=args.include_live))


def _reap(study: str | None, *, include_live: bool) -> int:
    n = DockerLauncher(DockerTarget(image="-")).reap_orphans(study, include_live=include_live)
    print(f"removed {n} container(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
