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
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import docker
import docker.errors
import requests
from docker.types import DeviceRequest

from tuner.core.cli import run_cli
from tuner.core.errors import LaunchError
from tuner.launch.base import TOOL_LABEL, ImageInfo, LaunchSpec
from tuner.launch.docker_daemon import (
    DAEMON_ERRORS,
    connect,
    daemon_call,
    missing_image_message,
)
from tuner.launch.docker_handle import DockerHandle
from tuner.launch.simulator import SIM_IMAGE, sim_image_target
from tuner.space.targets import DockerTarget, VolumeBind

log = logging.getLogger(__name__)

STUDY_LABEL = "tuner.study"
TRIAL_LABEL = "tuner.trial"
WORKER_LABEL = "tuner.worker"
ROLE_LABEL = "tuner.role"  # "server" for trial servers, "probe" for one-off commands (image checks)
OWNER_HOST_LABEL = "tuner.owner.host"
OWNER_PID_LABEL = "tuner.owner.pid"
REDACTED = "***"


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
        secrets = dict(spec.secret_env)  # read from the host by the caller (launch.base.host_secrets)
        labels = {**spec.labels(), ROLE_LABEL: "server", **_owner_labels()}
        cfg = self._container_config(env={**env, **secrets}, labels=labels, gpu_ids=spec.gpu_ids)
        if target.network == "bridge":
            cfg["ports"] = {spec.port: (target.publish_host, spec.port)}
        command = _command_line(name, cfg, target.image, spec.argv, secret_names=set(secrets))
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        started_at = time.perf_counter()
        with daemon_call(f"create a container of {target.image}", target.daemon):
            container = _create(self.client.api, target.image, spec.argv, name, cfg)
        cid = container["Id"]
        try:
            with daemon_call(f"start container {name} ({target.image})", target.daemon):
                self.client.api.start(cid)
        except LaunchError:
            with contextlib.suppress(*DAEMON_ERRORS):
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
        with daemon_call(f"run `{shlex.join(argv)}` in {self.target.image}", self.target.daemon):
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
            with daemon_call(f"inspect image {image}", self.target.daemon):
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
        with daemon_call("list containers", self.target.daemon):
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
            with daemon_call(f"remove container {c['Id'][:12]}", self.target.daemon):
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


def container_name(study: str, trial: int) -> str:
    """``tuner-<study>-t<trial>-<random>`` with the study reduced to Docker's name alphabet."""
    slug = re.sub(r"[^a-zA-Z0-9_.-]+", "-", study).strip("-.")[:40] or "study"
    return f"tuner-{slug}-t{trial}-{uuid.uuid4().hex[:6]}"


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
