"""The space file's ``target:`` block: where each trial's server runs (simulator, local process, Docker).

Models only; the launchers that act on them are in ``tuner/launch/``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SimulatorTarget(_Strict):
    """Run each trial's server as the shipped simulator (``python -m tuner.sim``)."""

    kind: Literal["simulator"]
    gpu: str = "rtx5090"
    model: str = "qwen3-32b-awq"
    noise: float = Field(default=0.03, ge=0, le=1)  # relative spread of the simulated measurements
    seed: int | None = None  # None: a fresh seed per trial, so repeats differ as real runs do
    startup_scale: float = Field(default=0.02, gt=0, le=10)  # start-up milestones at this share of their time
    extra_args: list[str] = []


class ProcessTarget(_Strict):
    """Run the engine as a local process. ``command`` replaces the engine's default program."""

    kind: Literal["process"]
    command: list[str] | None = None
    env: dict[str, str] = {}
    secret_env_from_host: list[str] = []


class VolumeBind(BaseModel):
    """Where a host path (or a named Docker volume) appears in the container."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    bind: str = Field(description="absolute path inside the container")
    mode: Literal["ro", "rw"] = "rw"


class DockerTarget(BaseModel):
    """The search space's ``target:`` block for servers in Docker containers.

    ``gpus``: ``all``, ``none`` or a list of GPU ids; a worker that owns GPUs passes them in
    ``LaunchSpec.gpu_ids``, which wins. ``shm_size`` and ``ipc: host`` are alternatives (SGLang's
    docs use either). ``secret_env_from_host`` names host environment variables (``HF_TOKEN``) passed to
    the server when set and never logged or stored. ``volumes`` maps a host path (``~`` and ``$VARS``
    expanded; it must exist) or a named volume to ``{bind, mode}``. ``mem_limit`` (``"64g"``) also caps
    swap, so a server over it is OOM-killed by the kernel. ``daemon`` is the Docker endpoint
    (default: ``DOCKER_HOST`` or the local socket).

    >>> DockerTarget(image="lmsysorg/sglang:v0.5.4", ipc="host", volumes={"~/.cache/huggingface":
    ...     {"bind": "/root/.cache/huggingface", "mode": "ro"}}).shm_size is None
    True
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kind: Literal["docker"] = "docker"
    image: str
    gpus: Literal["all", "none"] | list[int] = "all"
    shm_size: str | None = "16g"
    ipc: Literal["host", "private", "shareable"] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    secret_env_from_host: list[str] = Field(default_factory=list)
    volumes: dict[str, VolumeBind] = Field(default_factory=dict)
    mem_limit: str | None = None
    network: Literal["bridge", "host"] = "bridge"
    publish_host: str = "127.0.0.1"
    init: bool = True  # docker-init as PID 1 forwards SIGTERM to the server and reaps its children
    entrypoint: list[str] | None = None
    daemon: str | None = None

    @model_validator(mode="after")
    def _ipc_or_shm(self) -> DockerTarget:
        if self.ipc == "host" and self.shm_size is not None:
            if "shm_size" in self.model_fields_set:
                raise ValueError("set either shm_size or ipc: host (the host's /dev/shm has its own size)")
            object.__setattr__(self, "shm_size", None)
        return self

    @property
    def url_host(self) -> str:
        """The address clients use to reach a published port."""
        return "127.0.0.1" if self.publish_host in ("0.0.0.0", "") else self.publish_host


Target = Annotated[SimulatorTarget | ProcessTarget | DockerTarget, Field(discriminator="kind")]
