"""The Docker launcher against a real daemon: the simulated-SGLang image, OOM kills, exits, orphans, outages.

Needs a running Docker daemon (``scripts/setup-docker.sh``); skipped without one unless
``TUNER_REQUIRE_ALL=1``. The simulated image is built (or found up to date) by
``scripts/build-sim-image.sh``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tuner.core.errors import LaunchError
from tuner.core.failures import FailureKind, Phase, classify
from tuner.engines.sglang import ENGINE, READY_LINE
from tuner.launch.base import LaunchSpec
from tuner.launch.docker import DockerLauncher
from tuner.launch.docker_daemon import daemon_unavailable_reason
from tuner.launch.readiness import ProbeFailed, wait_ready
from tuner.launch.simulator import sim_image_target
from tuner.space.targets import DockerTarget
from tuner.testing.study_cli import popen_python, wait_for

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
DOCKER_PID_FILE = Path("/var/run/docker.pid")


@pytest.fixture
def study() -> str:
    return f"test-docker-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def launcher(sim_image: str, study: str) -> Iterator[DockerLauncher]:
    launcher = DockerLauncher(sim_image_target(image=sim_image))
    yield launcher
    with _daemon_back():
        launcher.reap_orphans(study, include_live=True)
    launcher.close()


def _spec(
    launcher: DockerLauncher, tmp_path: Path, study: str, argv: list[str], port: int, trial: int = 0
) -> LaunchSpec:
    return LaunchSpec(argv, launcher.bind_host, port, tmp_path / f"trial-{trial}.log", study, trial)


def _python(launcher: DockerLauncher, tmp_path: Path, study: str, code: str, trial: int = 0) -> LaunchSpec:
    """A spec running a Python snippet in the image (the host's interpreter, through the mounts)."""
    return _spec(
        launcher, tmp_path, study, ["python3", "-c", textwrap.dedent(code)], launcher.free_port(), trial
    )


async def _generate(base_url: str) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        body = {"text": "Hello", "sampling_params": {"max_new_tokens": 4}}
        async with s.post(base_url + "/generate", json=body) as r:
            if r.status != 200:
                raise ProbeFailed(f"HTTP {r.status}: {(await r.text())[:200]}")
            await r.json()


def test_sim_image_serves_like_sglang_and_stop_removes_the_container(
    launcher: DockerLauncher, tmp_path: Path, study: str
) -> None:
    port = launcher.free_port()
    argv = ENGINE.launch_argv(
        model="Qwen/Qwen2.5-0.5B-Instruct",
        host=launcher.bind_host,
        port=port,
        flags={
            "schedule-policy": "lof",
            "sim-gpu": "h100",
            "sim-startup-scale": 0.005,
            "sim-seed": 1,
        },
        version="0.5.23",
    )
    assert argv[:3] == ["python3", "-m", "sglang.launch_server"]  # exactly a real image's command
    spec = _spec(launcher, tmp_path, study, argv, port)
    handle = launcher.start(spec)
    assert handle.base_url == f"http://127.0.0.1:{port}"
    [container] = launcher.containers(study)
    assert container["Labels"]["tuner"] == "1" and container["Labels"]["tuner.trial"] == "0"

    ready_s = asyncio.run(
        wait_ready(handle, health_path="/health", probe=_generate, timeout_s=60, signatures=ENGINE.signatures)
    )
    assert ready_s < 30
    asyncio.run(_generate(handle.base_url))  # a request after readiness works too
    assert handle.exit_status() is None
    first = handle.first_output_at()
    assert first is not None and first >= handle.started_at

    status = handle.stop(timeout=5)
    assert status.code is not None and not status.oom_killed
    assert READY_LINE in handle.log_text()
    assert READY_LINE in spec.log_path.read_text()  # the log was written as it came, kept after removal
    assert launcher.containers(study) == []
    assert handle.stop() == status  # idempotent


def test_missing_image_is_a_launch_error_and_nothing_is_pulled(
    tmp_path: Path, study: str, sim_image: str
) -> None:
    for image, advice in (
        ("sglang-tuner/not-built:1", "scripts/build-sim-image.sh"),
        ("lmsysorg/sglang:v0.0.0-does-not-exist", "docker pull lmsysorg/sglang:v0.0.0-does-not-exist"),
    ):
        launcher = DockerLauncher(DockerTarget(image=image, gpus="none"))
        spec = LaunchSpec(["python3", "-V"], "0.0.0.0", launcher.free_port(), tmp_path / "x.log", study, 0)
        with pytest.raises(LaunchError, match="never pulls") as err:
            launcher.start(spec)
        assert image in str(err.value) and advice in str(err.value)
        assert launcher.containers(study) == []
        with pytest.raises(LaunchError, match="not present"):
            launcher.require_image()  # still absent: not pulled behind our back
        launcher.close()


def test_a_secret_reaches_the_container_and_is_redacted_in_its_command(
    launcher: DockerLauncher, tmp_path: Path, study: str
) -> None:
    spec = dataclasses.replace(
        _python(
            launcher, tmp_path, study, "import os; print('token', os.environ.get('HF_TOKEN'), flush=True)"
        ),
        secret_env={"HF_TOKEN": "s3cret"},
    )
    handle = launcher.start(spec)
    try:
        wait_for(lambda: handle.exit_status() is not None, 30, "the container to exit")
        assert "token s3cret" in handle.log_text()
        assert handle.command is not None and "HF_TOKEN=***" in handle.command
        assert "s3cret" not in handle.command
    finally:
        handle.stop(5)


def test_an_exit_is_seen_within_a_second_with_code_and_log(
    launcher: DockerLauncher, tmp_path: Path, study: str
) -> None:
    handle = launcher.start(
        _python(
            launcher,
            tmp_path,
            study,
            """
            import sys, time
            time.sleep(0.5)
            print("dying at", repr(time.time()), flush=True)
            print("some error text", file=sys.stderr, flush=True)
            sys.exit(3)
        """,
        )
    )
    deadline = time.monotonic() + 30
    while (status := handle.exit_status()) is None:
        assert time.monotonic() < deadline, handle.log_text()
        time.sleep(0.01)
    seen = time.time()
    died = float(handle.log_text().split("dying at ")[1].split()[0])
    assert seen - died < 1.0, f"exit seen {seen - died:.2f} s after it happened"
    assert status.code == 3 and not status.oom_killed
    assert "some error text" in handle.log_text()  # stderr is in the log
    assert handle.stop() == status
    assert launcher.containers(study) == []


def test_kernel_oom_kill_is_classified_from_oomkilled(sim_image: str, tmp_path: Path, study: str) -> None:
    target = sim_image_target(image=sim_image).model_copy(update={"mem_limit": "64m"})
    launcher = DockerLauncher(target)
    try:
        handle = launcher.start(
            _python(
                launcher,
                tmp_path,
                study,
                """
                print("allocating 1 GiB", flush=True)
                blob = b"x" * (1 << 30)
                print("survived", len(blob))
            """,
            )
        )
        deadline = time.monotonic() + 60
        while (status := handle.exit_status()) is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert status.oom_killed, status
        assert status.code == 137
        assert "survived" not in handle.log_text()
        failure = classify(ENGINE.signatures, phase=Phase.STARTUP, log_text=handle.log_text(), exit=status)
        assert failure.kind is FailureKind.KERNEL_OOM_KILLED
        handle.stop()
        assert launcher.containers(study) == []
    finally:
        launcher.reap_orphans(study, include_live=True)
        launcher.close()


def test_stop_kills_a_server_that_ignores_sigterm_and_is_safe_from_two_threads(
    launcher: DockerLauncher, tmp_path: Path, study: str
) -> None:
    handle = launcher.start(
        _python(
            launcher,
            tmp_path,
            study,
            """
            import signal, time
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print("ignoring SIGTERM", flush=True)
            time.sleep(600)
        """,
        )
    )
    while "ignoring SIGTERM" not in handle.log_text():
        assert handle.exit_status() is None
        time.sleep(0.05)
    results = []
    t0 = time.perf_counter()
    threads = [threading.Thread(target=lambda: results.append(handle.stop(timeout=1))) for _ in range(2)]
    for t in threads:
        t.start()
    results.append(handle.stop(timeout=1))
    for t in threads:
        t.join()
    took = time.perf_counter() - t0
    assert 1.0 <= took < 10, took
    assert len(results) == 3 and len(set(results)) == 1
    assert results[0].code == 137 and not results[0].oom_killed  # SIGKILLed after the grace period
    assert "ignoring SIGTERM" in handle.log_text()
    assert launcher.containers(study) == []


def test_reap_orphans_removes_the_containers_of_a_killed_tuner(
    launcher: DockerLauncher, tmp_path: Path, study: str
) -> None:
    # A separate tuner process starts a server, then is SIGKILLed: nothing stops its container.
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from tuner.launch.base import LaunchSpec
        from tuner.launch.docker import DockerLauncher
        from tuner.launch.simulator import sim_image_target
        launcher = DockerLauncher(sim_image_target(image={launcher.target.image!r}))
        argv = ["python3", "-c", "import time; time.sleep(600)"]
        launcher.start(LaunchSpec(argv, "0.0.0.0", launcher.free_port(), Path({str(tmp_path / "o.log")!r}),
                                  {study!r}, 7))
        print("started", flush=True)
        time.sleep(600)
    """)
    tuner = popen_python(script)
    try:
        assert tuner.stdout is not None and tuner.stdout.readline().strip() == b"started"
        # Our own live server of the same study is not an orphan.
        mine = launcher.start(_python(launcher, tmp_path, study, "import time; time.sleep(600)", trial=8))
        assert launcher.reap_orphans(study) == 0  # its owner still runs
    finally:
        tuner.send_signal(signal.SIGKILL)
        tuner.wait()
    assert len(launcher.containers(study)) == 2
    assert launcher.reap_orphans(study) == 1
    [left] = launcher.containers(study)
    assert left["Labels"]["tuner.trial"] == "8"
    mine.stop(timeout=1)
    assert launcher.containers(study) == []


def _dockerd_pid() -> int | None:
    try:
        return int(DOCKER_PID_FILE.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


class _daemon_back:
    """Make sure the daemon runs again when leaving the block (after a test killed it)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        if daemon_unavailable_reason() is not None:
            subprocess.run([str(REPO / "scripts" / "setup-docker.sh")], check=True, timeout=120)


@pytest.mark.exclusive("docker")  # kills the daemon
def test_a_daemon_killed_mid_trial_is_a_clear_launch_error(
    launcher: DockerLauncher, tmp_path: Path, study: str
) -> None:
    pid = _dockerd_pid()
    if pid is None or os.geteuid() != 0 or os.environ.get("DOCKER_HOST"):
        pytest.skip("needs a local dockerd this test may kill and restart (root, /var/run/docker.pid)")
    handle = launcher.start(
        _python(launcher, tmp_path, study, "print('up', flush=True); import time; time.sleep(600)")
    )
    while "up" not in handle.log_text():
        time.sleep(0.05)
    with _daemon_back():
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        with pytest.raises(LaunchError, match="lost the Docker daemon") as err:
            while time.monotonic() < deadline:
                handle.exit_status()
                time.sleep(0.05)
        assert "scripts/setup-docker.sh" in str(err.value)
        assert "up" in handle.log_text()  # the evidence gathered so far stays readable
        with pytest.raises(LaunchError, match="Docker daemon"):
            handle.stop(timeout=1)
        with pytest.raises(LaunchError, match="Docker daemon"):
            launcher.start(_python(launcher, tmp_path, study, "pass", trial=1))
    # The daemon is back: the orphan of the lost trial is found and removed.
    launcher.reap_orphans(study, include_live=True)
    assert launcher.containers(study) == []


def test_gpus_on_a_daemon_without_nvidia_runtime_is_a_launch_error(
    launcher: DockerLauncher, tmp_path: Path, study: str
) -> None:
    if "nvidia" in (launcher.client.info().get("Runtimes") or {}):
        pytest.skip("this daemon has the NVIDIA runtime")
    gpu_launcher = DockerLauncher(launcher.target.model_copy(update={"gpus": "all"}))
    with pytest.raises(LaunchError, match=r"no NVIDIA runtime.*target\.gpus: none"):
        gpu_launcher.start(_python(gpu_launcher, tmp_path, study, "pass"))
    assert launcher.containers(study) == []  # the created container was removed again
    gpu_launcher.close()
