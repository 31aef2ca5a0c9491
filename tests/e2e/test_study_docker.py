"""Issue 4 end to end: the real ``python -m tuner.study`` CLI with every trial's server in a Docker container.

The space is ``search_spaces/sglang-rtx5090-docker-sim.yaml`` (the RTX 5090 space with a Docker target of
the simulated-SGLang image) with this checkout's bind mounts from ``sim_image_target()`` and a short
workload. Each test talks to the real daemon: a study with crashes, a kernel OOM kill of a memory-limited
container, an image of an older SGLang that rejects flags, a SIGKILLed tuner whose orphan is reaped on
restart, and a Docker daemon killed mid-study (restarted afterwards with scripts/setup-docker.sh).

Needs a running Docker daemon (``scripts/setup-docker.sh``); skipped without one unless
``TUNER_REQUIRE_ALL=1``. The images are built (or found up to date) by ``scripts/build-sim-image.sh``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tuner.engines.sglang import ENGINE as SGLANG
from tuner.launch.docker import DockerLauncher
from tuner.launch.docker_daemon import daemon_unavailable_reason
from tuner.launch.image_check import inspect_image
from tuner.launch.simulator import SIM_IMAGE, sim_image_target
from tuner.space import load_space
from tuner.space.targets import DockerTarget
from tuner.testing.docker import sim_image as sim_image_build
from tuner.testing.study_cli import ROOT, assert_seeds_crashed, seed, wait_for

assert SGLANG.image_probe is not None
SGLANG_PROBE = SGLANG.image_probe

pytestmark = pytest.mark.docker

SPACE = ROOT / "search_spaces" / "sglang-rtx5090-docker-sim.yaml"
OLD_IMAGE = "sglang-tuner/sim:0.4.10"  # the simulator with SGLang 0.4.10's flag table and --help
DOCKER_PID_FILE = Path("/var/run/docker.pid")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Measured here: the simulated server is OOM-killed at start-up with a limit of 24 MiB or less and runs
# at 28 MiB; the image's --help (the flag check) still runs at 16 MiB.
OOM_LIMIT = "20m"


@pytest.fixture(scope="module")
def images(sim_image: str) -> dict[str, str]:
    return {"dev": sim_image, "old": sim_image_build(OLD_IMAGE, sglang_version="0.4.10")}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image-check cache of these tests (not the user's ~/.cache)."""
    return tmp_path_factory.mktemp("tuner-cache")


@pytest.fixture
def study(images: dict[str, str]) -> Iterator[str]:
    """A study name unique on the daemon; its containers are removed whatever the test did."""
    name = f"dock-{uuid.uuid4().hex[:8]}"
    yield name
    launcher = DockerLauncher(sim_image_target())
    try:
        launcher.reap_orphans(name, include_live=True)
    finally:
        launcher.close()


def docker_space(
    tmp_path: Path,
    *,
    seeds: list[dict[str, Any]] | None = None,
    target: dict[str, Any] | None = None,
    **workload: Any,
) -> Path:
    """The shipped Docker space with this checkout's mounts, fast start-up and a short workload."""
    data = yaml.safe_load(SPACE.read_text())
    sim = sim_image_target()
    data["target"]["volumes"] = {host: v.model_dump() for host, v in sim.volumes.items()}
    sim_args = data["target"]["env"]["TUNER_SIM_ARGS"].replace(
        "--sim-startup-scale 0.02", "--sim-startup-scale 0.01"
    )
    data["target"]["env"]["TUNER_SIM_ARGS"] = sim_args
    data["target"].update(target or {})
    data["workload"].update(
        {"num_requests": 4, "warmup_requests": 0, "output_len": 4, "stall_timeout_s": 8, **workload}
    )
    data["launch"]["stop_timeout_s"] = 5
    if seeds is not None:
        data["seed_trials"] = seeds
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def study_cmd(space: Path, tmp_path: Path, study: str, *extra: str, trials: int) -> list[str]:
    return [
        sys.executable, "-m", "tuner.study", "--space", str(space), "--storage", f"sqlite:///{tmp_path}/t.db",
        "--study", study, "--trials", str(trials), "--out", str(tmp_path / "out"), "--seed", "0", *extra,
    ]  # fmt: skip


def study_env(cache_dir: Path) -> dict[str, str]:
    return {**os.environ, "TUNER_CACHE": str(cache_dir), "PYTHONUNBUFFERED": "1"}


def run_study(cmd: list[str], cache_dir: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=study_env(cache_dir)
    )


def popen_study(cmd: list[str], cache_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    """The study in the background, its output (progress lines included) going to ``log``."""
    out = log.open("wb")
    return subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=study_env(cache_dir))


def load(tmp_path: Path, study: str) -> optuna.Study:
    return optuna.load_study(study_name=study, storage=f"sqlite:///{tmp_path}/t.db")


def containers_of(study: str) -> list[dict[str, str]]:
    """``docker ps -a`` (the CLI, not our launcher) for the tuner's containers of ``study``."""
    out = subprocess.run(
        ["docker", "ps", "-a", "--filter", "label=tuner", "--filter", f"label=tuner.study={study}",
         "--format", "{{json .}}"],
        check=True, capture_output=True, text=True, timeout=30,
    ).stdout  # fmt: skip
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_space_file_matches_the_sim_image_target(images: dict[str, str]) -> None:
    target = load_space(SPACE).target  # valid as shipped
    assert isinstance(target, DockerTarget)
    assert target.image == SIM_IMAGE and target.gpus == "none"
    assert "--sim-gpu rtx5090" in target.env["TUNER_SIM_ARGS"]
    # the same things mounted in the same places as sim_image_target() (host paths differ per machine)
    assert {v.bind for v in target.volumes.values()} == {v.bind for v in sim_image_target().volumes.values()}


def test_study_through_docker_prunes_crashes_with_kinds_and_leaves_no_container(
    tmp_path: Path, study: str, cache_dir: Path, images: dict[str, str]
) -> None:
    seeds = [
        seed("baseline"),
        seed("cuda-graphs-on-sm120", **{"cuda-graph-backend-decode": "full", "cuda-graph-max-bs-decode": 8}),
        seed("fp8-kv", **{"kv-cache-dtype": "fp8_e5m2"}),
        seed("too-much-memory", **{"mem-fraction-static": 0.95, "max-total-tokens": None}),
    ]
    space = docker_space(tmp_path, seeds=seeds)
    proc = run_study(study_cmd(space, tmp_path, study, trials=8), cache_dir, timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out

    s = load(tmp_path, study)
    trials = s.get_trials()
    assert len([t for t in trials if t.state in FINISHED]) == 8
    image_id = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Id}}", SIM_IMAGE], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert s.user_attrs["image_digest"] == image_id  # which image produced the numbers
    assert s.user_attrs["image"]["engine_version"] == "0.5.23"

    by_seed = assert_seeds_crashed(
        trials,
        {"cuda-graphs-on-sm120": "segfault", "fp8-kv": "cuda_oom", "too-much-memory": "not_enough_memory"},
    )
    assert by_seed["baseline"].state is TrialState.COMPLETE
    for t in trials:  # every server ran in a container of the image; the stored command is replayable
        if t.state not in FINISHED or t.user_attrs.get("failure_kind") == "infeasible_config":
            continue  # a repair queued by the last crash, or a prune before launch: no container
        command = t.user_attrs["docker_command"]
        assert (
            command.startswith("docker run --rm --name tuner-")
            and f" {SIM_IMAGE} python3 -m sglang" in command
        )
        assert f"tuner.study={study}" in command
    assert "failures by kind" in out and "segfault" in out

    best = tmp_path / "out" / study
    for name in ("best-launch.sh", "best-docker-run.sh", "best-flags.yaml"):
        assert (best / name).stat().st_size > 0
    assert f"{SIM_IMAGE} \\\n  python3 -m sglang.launch_server" in (best / "best-docker-run.sh").read_text()
    assert containers_of(study) == []


def test_kernel_oom_kill_of_a_memory_limited_container(
    tmp_path: Path, study: str, cache_dir: Path, images: dict[str, str]
) -> None:
    space = docker_space(tmp_path, seeds=[seed("baseline")], target={"mem_limit": OOM_LIMIT})
    # The flag check's answer is cached per image id; ask it once without the limit so that the
    # study's check is answered from the cache and only the server meets the limit.
    target = load_space(space).target
    assert isinstance(target, DockerTarget)
    inspect_image(target.model_copy(update={"mem_limit": None}), SGLANG_PROBE, cache_dir=cache_dir)
    proc = run_study(study_cmd(space, tmp_path, study, trials=1), cache_dir, timeout=90)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 5, out  # no feasible trial
    [t] = load(tmp_path, study).get_trials()
    assert t.state is TrialState.PRUNED
    assert t.user_attrs["failure_kind"] == "kernel_oom_killed", t.user_attrs.get("failure")
    evidence = t.user_attrs["failure"]
    assert evidence["exit"] == {"code": 137, "signal": None, "oom_killed": True}
    assert f"--memory {OOM_LIMIT} --memory-swap {OOM_LIMIT}" in t.user_attrs["docker_command"]
    assert "kernel_oom_killed 1" in out
    assert containers_of(study) == []


def test_flag_rejected_by_the_image_stops_the_study_before_any_trial(
    tmp_path: Path, study: str, cache_dir: Path, images: dict[str, str]
) -> None:
    space = docker_space(tmp_path, target={"image": images["old"]})
    proc = run_study(study_cmd(space, tmp_path, study, trials=2), cache_dir, timeout=90)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr
    assert str(space) in err and f"image {images['old']}" in err and "0.4.10" in err
    # the 0.5.15+ CUDA-graph flags of the space, named, in one message
    assert "cuda-graph-backend-decode" in err and "cuda-graph-max-bs-decode" in err
    assert "Traceback" not in err
    assert "trial 0" not in err  # no trial started
    db = tmp_path / "t.db"
    assert not db.exists() or not optuna.get_all_study_names(f"sqlite:///{db}")
    assert containers_of(study) == []


def test_sigkilled_tuner_restarts_reaps_its_orphan_container_and_resumes(
    tmp_path: Path, study: str, cache_dir: Path, images: dict[str, str]
) -> None:
    space = docker_space(tmp_path, seeds=[seed("baseline")], num_requests=48)
    cmd = study_cmd(space, tmp_path, study, "--heartbeat", "1", trials=2)
    log = tmp_path / "first.log"
    first = popen_study(cmd, cache_dir, log)
    try:
        wait_for(lambda: "measuring" in log.read_text(), 60, "the first trial to start measuring")
        [running] = containers_of(study)
        assert running["State"] == "running"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    [orphan] = containers_of(study)  # nothing stopped it: the tuner was SIGKILLed
    assert orphan["ID"] == running["ID"]
    time.sleep(2.5)  # past the heartbeat grace period (2 x 1 s): the killed trial is stale

    second = run_study(cmd, cache_dir, timeout=120)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out
    assert "stopped 1 server(s) left running by an earlier, killed run" in out
    s = load(tmp_path, study)
    states = [t.state for t in s.get_trials()]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 2
    assert TrialState.RUNNING not in states
    assert TrialState.FAIL in states  # the killed trial, failed by the heartbeat check
    assert containers_of(study) == []


def _dockerd_pid() -> int | None:
    try:
        return int(DOCKER_PID_FILE.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


@pytest.mark.exclusive("docker")  # kills the daemon
def test_docker_daemon_killed_mid_study_is_exit_4_with_records_intact(
    tmp_path: Path, study: str, cache_dir: Path, images: dict[str, str]
) -> None:
    pid = _dockerd_pid()
    if pid is None or os.geteuid() != 0 or os.environ.get("DOCKER_HOST"):
        pytest.skip("needs a local dockerd this test may kill and restart (root, /var/run/docker.pid)")
    space = docker_space(tmp_path, seeds=[seed("baseline"), seed("balanced-v2", base="balanced-v2")],
                         num_requests=48)  # fmt: skip
    log = tmp_path / "run.log"
    proc = popen_study(study_cmd(space, tmp_path, study, trials=3), cache_dir, log)
    try:
        wait_for(lambda: "trial 1    measuring" in log.read_text(), 90, "the second trial to start measuring")
        os.kill(pid, signal.SIGKILL)
        t_kill = time.monotonic()
        code = proc.wait(timeout=60)
        took = time.monotonic() - t_kill
    finally:
        if proc.poll() is None:
            proc.kill()
        if daemon_unavailable_reason() is not None:
            subprocess.run([str(ROOT / "scripts" / "setup-docker.sh")], check=True, timeout=120)
    out = log.read_text()
    assert code == 4, out
    assert took < 20, f"the study took {took:.1f} s to notice the daemon was gone"
    # The loss is seen by the container's watcher (then the message says how to reap) or, when the
    # load generator's errors come first, by stop(); either way one line names the daemon and container.
    [error] = [line for line in out.splitlines() if line.startswith("tuner.study: launch error:")]
    assert error.startswith(
        "tuner.study: launch error: lost the Docker daemon at unix:///var/run/docker.sock while"
    )
    assert f"container tuner-{study}-t1-" in error and "scripts/setup-docker.sh" in error
    assert "Traceback" not in out
    trials = {t.number: t for t in load(tmp_path, study).get_trials()}
    assert trials[0].state is TrialState.COMPLETE and trials[0].values  # the finished trial is intact
    assert trials[1].state is TrialState.FAIL  # interrupted: not RUNNING forever
    assert 2 not in trials
    # The daemon is back (and works for later tests): the lost trial's container is still on it, and
    # the same command reaps it and finishes the study.
    [lost] = containers_of(study)
    assert lost["Names"].startswith(f"tuner-{study}-t1-")
    again = run_study(study_cmd(space, tmp_path, study, trials=2), cache_dir, timeout=90)
    out = again.stdout + again.stderr
    assert again.returncode == 0, out
    assert "stopped 1 server(s) left running by an earlier, killed run" in out
    states = [t.state for t in load(tmp_path, study).get_trials()]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 2
    assert containers_of(study) == []
