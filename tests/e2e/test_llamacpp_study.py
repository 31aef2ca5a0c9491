"""Issue 5.2: a real study of llama.cpp's ``llama-server`` on the CPU, as local processes and in Docker.

Each test writes a small random-weight GGUF, runs the real ``python -m tuner.study`` CLI for 12
trials (seeds included) with a short workload, and checks what the study found:

* process target (``search_spaces/llamacpp-cpu-tiny.yaml`` with ``--threads 1`` pinned, see
  :data:`PIN`): the ``defaults`` seed (llama-server with no tuning flag) is measured, and the
  study's ranking holds when measured again: the :data:`TOP_K` best feasible trials, the defaults
  and the ``single-slot`` seed (``--parallel 1``), :data:`ROUNDS` interleaved rounds each (a fresh
  server every time); the candidate with the best re-measured mean must exceed single-slot by
  :data:`MIN_RATIO` with a paired interval above 1, and must not fall clearly below the defaults
  (:data:`MIN_VS_DEFAULTS`). Its ratio to the defaults is printed: how far the slots beyond the 4
  automatic ones pay depends on the CPU (1.2-1.34x on the machines this was written on, ~1.07x on
  one with AVX512-FP16 and AMX), the gain of batching over one slot does not.
* Docker target (``search_spaces/llamacpp-cpu-docker.yaml``, the host's llama-server in the almost
  empty local image through read-only mounts, 512 MiB memory limit): the ``big-context`` seed
  (65536 tokens of f16 KV = 1 GiB) is OOM-killed by the kernel and classified ``kernel_oom_killed``
  with Docker's OOMKilled as evidence; the defaults are measured in their container.

Markers ``llamacpp`` (and ``docker``); skipped without the binary or the daemon unless
``TUNER_REQUIRE_ALL=1``. About 2-7 minutes each on 2 cores, depending on what else runs there.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import pytest
import yaml
from optuna.trial import TrialState

from bench.llamacpp_study import (
    DEFAULTS,
    DOCKER_SPACE,
    MODEL_FILE,
    PROCESS_SPACE,
    StudyRun,
    remeasure_best_vs_defaults,
    run_study,
    study_space,
)
from tuner.engines import llamacpp
from tuner.launch.docker import DockerLauncher
from tuner.models.gguf_llama import PRESETS, write
from tuner.space.targets import DockerTarget
from tuner.testing.require import missing

pytestmark = pytest.mark.llamacpp
TRIALS = 12
ROUNDS = 4
TOP_K = 2  # the candidates re-measured: the study's single measurements pick them, the rounds decide
# The landscape of the test must have a gap far above the noise of a shared machine. llama-server's
# default thread count (every core, busy-waiting at each step's barrier) is the noise: when another
# process takes a core it collapses several-fold, so which configuration wins flips with the load.
# With one thread per server it does not fight for the second core. The gap asserted is batching's:
# the best against one slot for 16 clients. The slots beyond llama-server's 4 automatic ones gained
# 1.20-1.34x on older CPUs but only ~1.07x (paired interval [1.00, 1.11]) on one with AVX512-FP16,
# too thin for 4 rounds: that ratio is printed, and only a best clearly below the defaults fails.
PIN = {"threads": 1}
SINGLE_SLOT = "single-slot"  # --parallel 1, a seed of the shipped space
MIN_RATIO = 1.2  # best / single-slot, re-measured
MIN_VS_DEFAULTS = 0.9  # best / defaults, re-measured: the study must not crown a clearly slower server
# Short trials: ~1-10 s of load each on 2 cores, so 12 trials and the re-measurement fit in minutes.
WORKLOAD = {
    "num_requests": 48,
    "warmup_requests": 4,
    "input_len": 64,
    "output_len": 16,
    "stall_timeout_s": 15,
}


def _missing(what: str) -> NoReturn:
    missing(f"{what} missing")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the random 58 M Llama as the spaces name it (``llama-small.gguf``)."""
    if llamacpp.find_binary() is None:
        _missing("llama-server (scripts/build-llama-server.sh or TUNER_LLAMA_SERVER)")
    d = tmp_path_factory.mktemp("models")
    write(d / MODEL_FILE, PRESETS["small"])
    return d


def _far_slo(space: Path) -> None:
    """The shipped p99 TTFT SLO of 5 s is what the defaults' 16 clients queueing for 4 slots reach when
    another job takes a core (seen: 5.0-5.3 s, in the docker test and beside the suite's other worker):
    these tests are about what the study finds and its records, so the SLO sits far above that."""
    raw = yaml.safe_load(space.read_text())
    raw["slos"]["ttft_p99_ms"] = 60_000
    space.write_text(yaml.safe_dump(raw, sort_keys=False))


def _finished(run: StudyRun) -> list:  # type: ignore[type-arg]
    return [t for t in run.finished if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def _check_study(run: StudyRun, fixed: list[str] | None = None) -> None:
    """≥ 12 finished trials, every one with its command; the defaults seed measured and feasible (or
    stopped as slower than the best, which a re-measurement checks)."""
    assert run.returncode == 0, run.output[-4000:]
    assert len(_finished(run)) >= TRIALS, run.output[-4000:]
    for t in _finished(run):  # every server that was started left its command (a constraint starts none)
        assert t.user_attrs.get("command") or t.user_attrs.get("failure_kind") == "infeasible_config", (
            t.number
        )
    defaults = run.seed(DEFAULTS)
    # measured: to the end, or until its benchmark ran 1.25x longer than the best's (it cannot win; with
    # 16 clients the 4 automatic slots are often that much slower than a slot per client)
    slow = defaults.state is TrialState.PRUNED and defaults.user_attrs.get("pruned_by") == "slow"
    assert defaults.state is TrialState.COMPLETE or slow, defaults.user_attrs.get("failure")
    assert all(v <= 0 for v in defaults.constraints.values()), (
        defaults.constraints,
        defaults.user_attrs.get("request_errors"),
    )
    # "no tuning flag": only the space's fixed flag and the default-on switch are rendered
    argv = defaults.user_attrs["command"]
    want = ["--metrics", *(fixed or []), "--cont-batching"]
    assert [a for a in argv[argv.index("--port") + 2 :]] == want, argv


def test_process_study_best_holds_when_remeasured(model_dir: Path, tmp_path: Path) -> None:
    space = study_space(
        PROCESS_SPACE, tmp_path / "space.yaml", model_dir=model_dir, workload=WORKLOAD, pin=PIN
    )
    _far_slo(space)
    run = run_study(space, tmp_path, trials=TRIALS, study="llama-proc", timeout_s=600)
    _check_study(run, fixed=["--threads", "1"])
    assert "failures by kind" in run.output or not run.failures_by_kind()

    cmp = remeasure_best_vs_defaults(
        run, rounds=ROUNDS, log_dir=tmp_path / "remeasure", top_k=TOP_K, seeds=[SINGLE_SLOT]
    )
    for label, ms in cmp.measured.items():
        assert len(ms) == ROUNDS and all(m.ok for m in ms), (label, [m.failure for m in ms])
    detail = {k: [round(m.value or 0, 1) for m in ms] for k, ms in cmp.measured.items()}
    print(
        f"re-measured {detail}; best {cmp.best_label} {cmp.best.user_attrs['flags']}: "
        f"against {SINGLE_SLOT}: {cmp.ci_to(SINGLE_SLOT)}; against the defaults: {cmp.ci}"
    )
    ratio, ci = cmp.ratio_to(SINGLE_SLOT), cmp.ci_to(SINGLE_SLOT)
    assert ratio > MIN_RATIO, (ratio, ci, detail, cmp.best.user_attrs["flags"])
    assert ci is not None and ci.n == ROUNDS and ci.low > 1.0, (ci, detail)
    assert cmp.ratio > MIN_VS_DEFAULTS, (cmp.ratio, cmp.ci, detail, cmp.best.user_attrs["flags"])


@pytest.mark.docker
def test_docker_study_classifies_the_kernel_oom_kill(model_dir: Path, sim_image: str, tmp_path: Path) -> None:
    space = study_space(
        DOCKER_SPACE, tmp_path / "space.yaml", model_dir=model_dir, workload=WORKLOAD, pin=PIN
    )
    # This test is about the kernel's OOM kill, not speed. One thread per server (PIN) as in the process
    # test: llama-server's default of every core, busy-waiting at each step, collapses to ~9 tok/s
    # (16x below the others, p99 TTFT 51 s) beside a busy loop, and failed 8 of 48 requests once under a
    # loaded suite.
    _far_slo(space)
    run = run_study(space, tmp_path, trials=TRIALS, study="llama-docker", timeout_s=600)
    _check_study(run, fixed=["--threads", "1"])
    assert isinstance(run.space.target, DockerTarget) and run.space.target.mem_limit == "512m"

    big = run.seed("big-context")
    assert big.state is TrialState.PRUNED, big.state
    assert big.user_attrs["failure_kind"] == "kernel_oom_killed", big.user_attrs.get("failure")
    evidence = big.user_attrs["failure"]
    assert evidence["exit"]["code"] == 137 and evidence["exit"]["oom_killed"] is True, evidence
    assert "--ctx-size 65536" in big.user_attrs["docker_command"]
    assert "--memory 512m" in big.user_attrs["docker_command"]
    assert run.failures_by_kind()["kernel_oom_killed"] >= 1
    assert "kernel_oom_killed" in run.output  # the end-of-study summary names it

    assert run.best().values[0] > 0  # the feasible trials were measured in their containers
    assert not DockerLauncher(run.space.target).containers("llama-docker"), "a container outlived the study"
