"""Issue 14: the REAL SGLang 0.5.23 (CPU engine) as a target of the tuner, on the 2-core machines here.

The server, its parser, scheduler, HTTP API and crashes are SGLang's own (docs/sglang-cpu.md); the
model is the tiny random Llama of ``scripts/setup-sglang-cpu-model.sh``. What is checked:

(a) every real failure signature, provoked on purpose, is classified by the tuner's own code path
    (``ConfigRunner.measure`` or a study through the CLI):
    * an argparse error (``sglang serve: error: argument --schedule-policy: invalid choice``, exit 2)
      -> ``flag_rejected``;
    * the scheduler SIGKILLed while the benchmark runs (found as ``sglang::scheduler`` in the server's
      process group) -> ``crashed``, with SGLang's ``Subprocess scheduler_0 (pid=…) crashed with exit
      code -9`` as evidence;
    * ``--attention-backend triton`` (``RuntimeError: 0 active drivers`` at the first prefill, exit 137)
      -> ``unsupported_on_gpu``, and a 64-token KV pool (``Input length (64 tokens) exceeds the
      maximum allowed length``: HTTP 400, in the /v1/completions stream an error event with code 400)
      -> ``healthy_but_failing``: both are seeds of the study in (b), so they cost no extra launch;
(b) a real study through ``python -m tuner.study --measure-all`` (bench/llamacpp_study.run_study) on the
    process target, 7 trials (the seeds float32 - the quality gate's reference, queued first - defaults,
    triton, small-pool and, added by this file, one-at-a-time, then TPE), and one of 3 trials
    in Docker (the sim image running the host's venv through read-only mounts; seeds defaults,
    float32, triton), the image's own ``--help`` checking the flags;
(c) the study's two best trials, SGLang's defaults and the one-at-a-time seed (float32 with
    ``--max-running-requests 1``: 4 clients served one after the other) re-measured in interleaved
    rounds, each a fresh server (bench/llamacpp_study.remeasure_best_vs_defaults): the best re-measured
    mean must beat one-at-a-time by MIN_RATIO with a paired interval above 1, so the study's ranking
    holds on fresh servers. Its ratio to the defaults is printed, not asserted: the defaults serve this
    float32 checkpoint in float16, and whether that is slower depends on the CPU. Where float16 is
    emulated (no AVX512-FP16) float32 measured 1.40-1.57x the defaults; on CPUs that compute float16
    natively the two are within the noise of fresh servers, either ahead (a CI run measured the
    defaults faster in all 3 rounds). The defaults change the answers (d), so they never win here
    anyway. Each server gets 16 warm-up requests (a fresh server's first requests run slow: one
    server gave 152, 273, 428 tok/s on successive benchmarks). OMP_NUM_THREADS=1 is pinned by the
    space's env for every server;
(d) the shipped space's quality gate: lower precision than the float32 checkpoint changes the answers
    of real SGLang (the defaults' float16 included) and is never ranked;
(e) nothing is left behind: no process of these studies (``sglang::scheduler`` and
    ``sglang::detokenizer`` included) and no container labelled with them.

Servers are started without ``--skip-server-warmup``: SGLang's own warm-up request takes about a
second here, and skipping it would move the triton crash from SGLang's warm-up to the tuner's
readiness probe, i.e. change what the triton case tests. Each launch costs 20-60 s and ~2.3 GB; the
file makes 22 of them, one at a time (one exits at argparse after ~6-12 s, three crash at warm-up).

Markers ``sglang_cpu`` (and ``docker``); skipped without the SGLang CPU venv and model, or the
Docker daemon, unless ``TUNER_REQUIRE_ALL=1``, where they fail.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from optuna.trial import FrozenTrial, TrialState

from bench.llamacpp_study import (
    DEFAULTS,
    StudyRun,
    remeasure_best_vs_defaults,
    run_study,
    study_space,
)
from tuner.core.errors import LaunchError
from tuner.core.failures import FailureKind, Phase
from tuner.engines import sglang
from tuner.launch.docker import DockerLauncher
from tuner.launch.process import ProcessLauncher
from tuner.launch.simulator import SIM_IMAGE, sim_image_target
from tuner.loadgen.benchmark import run_benchmark_sync
from tuner.space import SearchSpace, load_space
from tuner.space.sample import params_to_flags
from tuner.space.targets import DockerTarget
from tuner.space.workload import WorkloadSpec
from tuner.testing.require import missing
from tuner.testing.sglang_servers import REAL, ServerRun, running_server
from tuner.testing.study_cli import ROOT, server_pids
from tuner.trial.measure import ConfigRunner

pytestmark = pytest.mark.sglang_cpu

VERSION = "0.5.23"
PROCESS_SPACE = ROOT / "search_spaces" / "sglang-cpu-tiny.yaml"
DOCKER_SPACE = ROOT / "search_spaces" / "sglang-cpu-docker.yaml"
MODEL = sglang.cpu_model_dir()
PYTHON = sglang.find_cpu_python(VERSION)  # TUNER_SGLANG_CPU_PYTHON, else the cache of setup-sglang-cpu.sh

PROCESS_TRIALS = 7
DOCKER_TRIALS = 3
ROUNDS = 3
TOP_K = 2  # the study measured each trial once: re-measure its two best, the best re-measured mean wins
MIN_RATIO = 1.2  # best / one-at-a-time, re-measured (a CPU without AVX512-FP16: about 1.33)
ONE_AT_A_TIME = "one-at-a-time"  # float32 with --max-running-requests 1, a seed of this file's study only
# The shipped workload as it is: 64 requests (after 16 of warm-up) of 64 tokens in and 16 out, a closed
# loop of 4 clients, 2-5 s of load per server, so start-up (20-60 s) dominates the file's wall time.
WORKLOAD: dict[str, object] = {}
STUDIES = (
    "sglang-flag",
    "sglang-kill",
    "sglang-proc",
    "sglang-proc-remeasure",
    "sglang-docker",
)


def _missing() -> str | None:
    """What of the SGLang CPU set-up is missing (None: nothing)."""
    if PYTHON is None:
        return f"SGLang CPU venv ({sglang.default_cpu_python(VERSION)}; scripts/setup-sglang-cpu.sh)"
    if not (MODEL / "config.json").is_file():
        return f"tiny SGLang model ({MODEL}; scripts/setup-sglang-cpu-model.sh)"
    return None


if (_what := _missing()) is not None:
    missing(f"{_what} missing", allow_module_level=True)


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> SearchSpace:
    """The shipped process space with this machine's model and the short workload."""
    d = tmp_path_factory.mktemp("sglang-space")
    return load_space(study_space(PROCESS_SPACE, d / "space.yaml", model=MODEL, workload=WORKLOAD))


def _flags(space: SearchSpace, seed: str = DEFAULTS, **changes: object) -> dict[str, object]:
    """The flags of one of the space's seeds, with some changed (flag names as keys)."""
    params = next(s.params for s in space.seed_trials if s.name == seed)
    return {**params_to_flags(space, params), **changes}


# ---------------------------------------------------------------- every dataset kind, exact prompt lengths


@pytest.fixture(scope="module")
def metrics_server() -> Iterator[ServerRun]:
    """One real SGLang server (float32, 2048-token pool) with ``--enable-metrics``: its prefix-cache counters."""
    with running_server(REAL, ["--enable-metrics"]) as run:
        yield run


def _cache_counters(url: str) -> tuple[float, float]:
    """SGLang's ``sglang:cached_tokens_total`` and ``sglang:prompt_tokens_total`` (summed over labels)."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        lines = r.read().decode().splitlines()

    def total(name: str) -> float:
        return sum(
            float(x.split()[-1]) for x in lines if x.startswith(name + "{") or x.startswith(name + " ")
        )

    return total("sglang:cached_tokens_total"), total("sglang:prompt_tokens_total")


DATA = ROOT / "search_spaces" / "data"
DATASETS: dict[str, tuple[dict[str, Any] | None, dict[str, Any], tuple[float, float]]] = {
    # dataset, arrival, (lowest, highest) share of the prompt tokens SGLang's radix cache served. Measured
    # once (one server, 12 requests after 1 of warm-up): words 0.00, ShareGPT first turns 0.00, sessions
    # 0.40, shared prefixes 0.53 (the first four requests of the closed loop arrive together, before
    # either prefix is cached: at most ~0.6 of 13), the trace (its prefix blocks) 0.31.
    "words": (None, {"kind": "closed", "clients": 4}, (0.0, 0.2)),
    "sharegpt": ({"kind": "sharegpt", "path": str(DATA / "sharegpt-small.json"), "output_len": 8},
                 {"kind": "closed", "clients": 4}, (0.0, 0.5)),
    "sessions": ({"kind": "sharegpt", "path": str(DATA / "sharegpt-small.json"), "turns": "all", "output_len": 8},
                 {"kind": "sessions", "clients": 2, "think_time_s": 0.1}, (0.25, 1.0)),
    "shared_prefix": ({"kind": "shared_prefix", "groups": 2, "prefix_len": 200, "share": 1.0},
                      {"kind": "closed", "clients": 4}, (0.4, 1.0)),
    "trace": ({"kind": "trace", "path": str(DATA / "trace-small.jsonl"), "block_size": 64},
              {"kind": "trace", "speed": 8.0}, (0.1, 1.0)),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(DATASETS))
def test_each_dataset_kind_against_real_sglang(metrics_server: ServerRun, kind: str) -> None:
    """Every workload kind through the load generator against real SGLang, lengths in the model's own
    tokens (workload.tokenizer): every request served, SGLang counting the prompt tokens meant (for
    words: exactly, the BOS its tokenizer adds aside), and its radix cache serving the reuse the kind has
    (shared system prompts and conversations whose turns repeat their history) and not what it lacks."""
    dataset, arrival, (low, high) = DATASETS[kind]
    workload = WorkloadSpec.model_validate(
        {"api": "completions", "input_len": 32, "output_len": 8, "num_requests": 12, "warmup_requests": 1,
         "arrival": arrival, "tokenizer": str(MODEL), "request_timeout_s": 120, "stall_timeout_s": 60,
         **({"dataset": dataset} if dataset else {})}
    )  # fmt: skip
    cached0, prompt0 = _cache_counters(metrics_server.url)
    result = run_benchmark_sync(metrics_server.url, workload, model=metrics_server.model_path)
    cached1, prompt1 = _cache_counters(metrics_server.url)
    hit = (cached1 - cached0) / max(1.0, prompt1 - prompt0)
    print(f"{kind}: {result.completed} served, prompt tokens counted/meant {result.prompt_len_ratio:.3f}, "
          f"radix cache served {hit:.2f} of the prompt tokens")  # fmt: skip
    assert (result.completed, result.failed) == (12, 0), result.errors()
    high_ratio = 1.0 + 1.5 / 32 if dataset is None else 1.05
    assert 0.95 <= result.prompt_len_ratio <= high_ratio, result.prompt_len_ratio
    assert low <= hit <= high, hit


def test_an_idle_server_leaves_the_cpu_alone(metrics_server: ServerRun) -> None:
    """With ``--sleep-on-idle`` (the test servers' and the CPU spaces' flag) SGLang's idle scheduler
    waits on its sockets; without it, it spins a whole core (bench/results/sglang_idle_cpu.md), the one
    the load generator and the next server's start-up need on this 2-core machine."""
    assert "--sleep-on-idle" in metrics_server.argv
    assert (
        metrics_server.post("/generate", {"text": "Hello", "sampling_params": {"max_new_tokens": 2}}).status
        == 200
    )
    time.sleep(2.0)  # the request's tail
    cpu0, t0 = metrics_server.cpu_seconds(), time.monotonic()
    time.sleep(4.0)
    share = (metrics_server.cpu_seconds() - cpu0) / (time.monotonic() - t0)
    assert share < 0.25, f"idle server used {share:.2f} of a core"


# ---------------------------------------------------------------- (a) signatures, one server each


def test_argparse_error_is_flag_rejected(space: SearchSpace, tmp_path: Path) -> None:
    runner = ConfigRunner(space, ProcessLauncher(), study="sglang-flag", log_dir=tmp_path)
    outcome = runner.measure(_flags(space, **{"schedule-policy": "bogus"}), run_index=0)
    failure = outcome.failure
    assert failure is not None, outcome.metrics
    assert failure.kind is FailureKind.FLAG_REJECTED and failure.phase is Phase.STARTUP, failure.summary()
    assert failure.exit is not None and failure.exit.code == 2, failure.summary()
    assert any(
        "sglang serve: error: argument --schedule-policy: invalid choice: 'bogus'" in line
        for line in failure.matched_lines
    ), failure.matched_lines
    assert outcome.argv[:3] == [str(PYTHON), "-m", "sglang.launch_server"]  # the CPU venv's python


def test_fp8_kv_cache_on_a_cpu_is_unsupported_and_its_repair_is_named(
    space: SearchSpace, tmp_path: Path
) -> None:
    """SGLang's usual lossy option refuses a CPU at start-up (``ValueError: --kv-cache-dtype fp8_e5m2 is
    not supported on CPU.``, then the scheduler's SIGQUIT): unsupported_on_gpu, with the line as
    evidence, and the engine's repair table answers it with the model's own dtype."""
    from tuner.core.repairs import RepairRule

    runner = ConfigRunner(space, ProcessLauncher(), study="sglang-flag", log_dir=tmp_path)
    outcome = runner.measure(_flags(space, **{"kv-cache-dtype": "fp8_e5m2"}), run_index=1)
    failure = outcome.failure
    assert failure is not None, outcome.metrics
    assert failure.kind is FailureKind.UNSUPPORTED, failure.summary()
    assert any(
        "--kv-cache-dtype fp8_e5m2 is not supported on CPU" in line for line in failure.matched_lines
    ), failure.matched_lines
    rules: list[RepairRule] = [r for r in sglang.REPAIRS if r.applies(failure, outcome.flags)]
    assert [m.value for r in rules for m in r.moves] == ["auto"], rules


class _Measuring:
    """Stands in for tuner.trial.progress.Progress: sets an event when the runner starts the benchmark."""

    live = None  # no per-window progress callback

    def __init__(self) -> None:
        self.started = threading.Event()

    def phase(self, name: str, detail: str = "") -> None:
        if name == "measuring":
            self.started.set()


def _scheduler_pid(study: str) -> int:
    """The ``sglang::scheduler`` process in the process group of ``study``'s server."""
    leaders = [p for p in server_pids(study) if _pgid(p) == p]
    assert len(leaders) == 1, leaders
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _pgid(int(entry.name)) == leaders[0]:
            try:
                if (entry / "cmdline").read_bytes().startswith(b"sglang::scheduler"):
                    return int(entry.name)
            except OSError:
                continue
    raise AssertionError(f"no sglang::scheduler in process group {leaders[0]}")


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_scheduler_killed_while_serving_is_crashed(space: SearchSpace, tmp_path: Path) -> None:
    # enough requests to still be running when the scheduler is killed 2 s into the benchmark
    long = space.model_copy(update={"workload": space.workload.model_copy(update={"num_requests": 1000})})
    progress = _Measuring()
    runner = ConfigRunner(long, ProcessLauncher(), study="sglang-kill", log_dir=tmp_path, progress=progress)
    killed: dict[str, int] = {}

    def kill_scheduler() -> None:
        if progress.started.wait(300):
            time.sleep(2.0)
            killed["pid"] = _scheduler_pid("sglang-kill")
            os.kill(killed["pid"], signal.SIGKILL)

    killer = threading.Thread(target=kill_scheduler, daemon=True)
    killer.start()
    t0 = time.perf_counter()
    outcome = runner.measure(_flags(space, "float32"), run_index=0)
    killer.join(10)
    failure = outcome.failure
    assert "pid" in killed, (failure and failure.summary(), outcome.metrics)
    assert failure is not None, outcome.metrics
    assert failure.kind is FailureKind.CRASHED and failure.phase is Phase.LOAD, failure.summary()
    expected = f"Subprocess scheduler_0 (pid={killed['pid']}) crashed with exit code -9"
    assert any(expected in line for line in failure.matched_lines), failure.matched_lines
    assert failure.exit is not None, failure.summary()  # SGLang's parent took itself down
    print(f"scheduler killed: classified in {time.perf_counter() - t0:.0f} s, {failure.summary()[:200]}")


# ---------------------------------------------------------------- (b) and (c): a real study, process target


@pytest.fixture(scope="module")
def process_run(tmp_path_factory: pytest.TempPathFactory) -> StudyRun:
    work = tmp_path_factory.mktemp("sglang-proc")
    space_file = study_space(PROCESS_SPACE, work / "space.yaml", model=MODEL, workload=WORKLOAD)
    raw = yaml.safe_load(space_file.read_text())
    float32 = next(seed for seed in raw["seed_trials"] if seed["name"] == "float32")
    raw["seed_trials"].append(
        {"name": ONE_AT_A_TIME, "params": {**float32["params"], "max-running-requests": 1}}
    )
    space_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    # --measure-all: float32, the quality gate's reference, runs first, and the defaults (float16, ~0.7x)
    # would be stopped early as slower - unprobed, so unjudged; here every configuration is measured
    # to the end and answers the probes (early stops are tested on the simulator and llama.cpp)
    return run_study(
        space_file, work, trials=PROCESS_TRIALS, study="sglang-proc", timeout_s=900, extra=["--measure-all"]
    )


def _startup_summary(run: StudyRun) -> str:
    ready = sorted(
        t.user_attrs["timings"]["ready_s"]
        for t in run.finished
        if "ready_s" in t.user_attrs.get("timings", {})
    )
    if not ready:
        return "no trial became ready"
    return f"start-up to ready: median {ready[len(ready) // 2]:.1f} s, range {ready[0]:.1f}-{ready[-1]:.1f} s"


def _check_defaults(run: StudyRun, **explicit: object) -> FrozenTrial:
    """The defaults seed ran with exactly the CPU flags, its KV pool and ``explicit``, and was measured
    feasible."""
    assert run.returncode == 0, run.output[-4000:]
    defaults = run.seed(DEFAULTS)
    assert defaults.state is TrialState.COMPLETE, defaults.user_attrs.get("failure")
    # the SLOs hold; the quality gate (process space) is test_process_study_gates_lower_precision's
    assert all(v <= 0 for k, v in defaults.constraints.items() if k != "quality"), defaults.constraints
    argv = defaults.user_attrs["command"]
    rendered = argv[argv.index("--port") + 2 :]
    want = {**sglang.CPU_FLAGS, "max-total-tokens": 8192, **explicit}
    assert _options(rendered) == {f"--{k}": True if v is True else str(v) for k, v in want.items()}
    return defaults


def _options(argv: list[str]) -> dict[str, object]:
    """``--flag value`` pairs and ``--switch`` (True) of a command line's tail."""
    options: dict[str, object] = {}
    i = 0
    while i < len(argv):
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            options[argv[i]], i = argv[i + 1], i + 2
        else:
            options[argv[i]], i = True, i + 1
    return options


def _check_triton(run: StudyRun, *, exit_code: int | None) -> None:
    triton = run.seed("triton")
    assert triton.state is TrialState.PRUNED, triton.state
    assert triton.user_attrs["failure_kind"] == "unsupported_on_gpu", triton.user_attrs.get("failure")
    evidence = triton.user_attrs["failure"]
    assert any("RuntimeError: 0 active drivers" in line for line in evidence["matched_lines"]), evidence
    assert "Scheduler hit an exception" in evidence["log_tail"] or "SIGQUIT" in evidence["log_tail"]
    if exit_code is not None:
        assert evidence["exit"]["code"] == exit_code, evidence["exit"]


def test_process_study_classifies_real_failures(process_run: StudyRun) -> None:
    run = process_run
    print(
        f"process study: {run.elapsed_s:.0f} s, {_startup_summary(run)}, kinds {dict(run.failures_by_kind())}"
    )
    _check_defaults(run)
    assert len(run.finished) >= PROCESS_TRIALS, run.output[-4000:]
    assert run.seed(DEFAULTS).user_attrs["command"][:3] == [str(PYTHON), "-m", "sglang.launch_server"]

    # SGLang's parent SIGKILLs its own tree (itself included) after a child dies: -9 from Popen
    _check_triton(run, exit_code=None)
    assert run.seed("triton").user_attrs["failure"]["exit"]["signal"] == signal.SIGKILL

    small = run.seed("small-pool")
    assert small.state is TrialState.PRUNED, small.state
    assert small.user_attrs["failure_kind"] == "healthy_but_failing", small.user_attrs.get("failure")
    lines = small.user_attrs["failure"]["matched_lines"]
    # SGLang's error event (code 400) in the /v1/completions stream, as the load generator recorded it
    assert any("Input length (64 tokens) exceeds the maximum allowed length" in line for line in lines), lines
    assert "unsupported_on_gpu" in run.output and "healthy_but_failing" in run.output  # the summary


def test_process_study_gates_lower_precision(process_run: StudyRun) -> None:
    """The shipped space's quality gate on real SGLang: float32 (the checkpoint's precision) is the
    reference and runs first; the defaults (SGLang's auto dtype: float16 for this checkpoint) answer
    differently (bench/results/quality_gate.md: 21 of 24 probes word for word) and cannot win; no trial
    in lower precision is ranked, every float32 one that served is."""
    from tuner.objective.ranking import ranked_trials

    run = process_run
    reference = run.seed("float32")
    assert reference.number == 0, [t.user_attrs.get("seed_name") for t in run.study.trials]
    assert reference.user_attrs["quality"]["exact"] == 1.0 and reference.constraints["quality"] <= 0
    assert all(a and a.strip() for a in reference.user_attrs["probe_answers"]), reference.user_attrs
    defaults = run.seed(DEFAULTS).user_attrs["quality"]
    print("float16 (SGLang's auto) against float32:", defaults)
    assert defaults["exact"] < 1.0 and defaults["divergences"], defaults
    assert run.seed(DEFAULTS).constraints["quality"] > 0
    ranked = {t.number for t in ranked_trials(run.study)}
    served = [t for t in run.study.trials if "quality" in t.user_attrs]
    assert ranked and ranked <= {t.number for t in served}
    for t in served:
        lossless = t.params["dtype"] == "float32" and t.user_attrs["quality"]["exact"] == 1.0
        feasible = t.state is TrialState.COMPLETE and all(v <= 0 for v in t.constraints.values())
        assert (t.number in ranked) == (lossless and feasible), (t.number, t.state, t.user_attrs)
        if t.params["dtype"] != "float32":
            assert t.number not in ranked, (t.params, t.user_attrs["quality"])
    assert "quality gate:" in run.output and "changed the answers" in run.output, run.output[-3000:]


def test_process_study_best_holds_when_remeasured(process_run: StudyRun, tmp_path: Path) -> None:
    _check_defaults(process_run)
    cmp = remeasure_best_vs_defaults(
        process_run, rounds=ROUNDS, log_dir=tmp_path, top_k=TOP_K, seeds=[ONE_AT_A_TIME]
    )
    detail = {k: [round(m.value or 0, 1) for m in ms] for k, ms in cmp.measured.items()}
    print(
        f"re-measured ({cmp.elapsed_s:.0f} s): {detail}; best {cmp.best.user_attrs['flags']}; "
        f"against {ONE_AT_A_TIME}: {cmp.ci_to(ONE_AT_A_TIME)}; against the defaults (float16): {cmp.ci}"
    )
    for label, ms in cmp.measured.items():
        assert len(ms) == ROUNDS and all(m.ok for m in ms), (label, [m.failure for m in ms])
    assert cmp.best.params["dtype"] == "float32", cmp.best.params  # the gate: nothing else is ranked
    ratio, ci = cmp.ratio_to(ONE_AT_A_TIME), cmp.ci_to(ONE_AT_A_TIME)
    assert ratio > MIN_RATIO, (ratio, ci, detail, cmp.best.user_attrs["flags"])
    assert ci is not None and ci.low > 1.0, (ci, detail)


# ---------------------------------------------------------------- (b) in Docker


def _docker_mounts() -> dict[str, Path]:
    """Host sides of sglang-cpu-docker.yaml's machine-specific volumes: venv, model, interpreter home."""
    assert PYTHON is not None
    venv = PYTHON.parent.parent
    system = {"/usr", "/lib", "/lib64", "/bin", "/etc"}
    # the interpreter's home as the simulator image mounts it (at its own path; none under /usr)
    home = {v.bind: Path(h) for h, v in sim_image_target(venv=venv).volumes.items() if v.bind == h}
    mounts = {bind: host for bind, host in home.items() if bind not in system}
    return {**mounts, "/opt/sglang-cpu-venv": venv, "/models/sglang-tiny-llama": MODEL}


@pytest.mark.docker
@pytest.mark.usefixtures("sim_image")
def test_docker_study_runs_real_sglang_in_containers(tmp_path: Path) -> None:
    space_file = study_space(
        DOCKER_SPACE, tmp_path / "space.yaml", workload=WORKLOAD, mounts=_docker_mounts()
    )
    run = run_study(space_file, tmp_path, trials=DOCKER_TRIALS, study="sglang-docker", timeout_s=600)
    print(
        f"docker study: {run.elapsed_s:.0f} s, {_startup_summary(run)}, kinds {dict(run.failures_by_kind())}"
    )
    # the Docker space names SGLang's defaults of its choice flags (its header says why)
    defaults = _check_defaults(run, **{"schedule-policy": "fcfs", "dtype": "auto"})
    assert len(run.finished) >= DOCKER_TRIALS, run.output[-4000:]
    assert isinstance(run.space.target, DockerTarget) and run.space.target.image == SIM_IMAGE
    command = defaults.user_attrs["docker_command"]
    assert "-e SGLANG_USE_CPU_ENGINE=1" in command and ":/opt/sglang-cpu-venv:ro" in command, command
    # the image's own --help decided which flags pass, and reported the real version
    assert run.study.user_attrs["image"]["engine_version"] == VERSION, run.study.user_attrs.get("image")
    _check_triton(run, exit_code=137)  # the container's exit code
    assert not DockerLauncher(run.space.target).containers("sglang-docker"), "a container outlived the study"


# ---------------------------------------------------------------- (d)


def test_nothing_left_behind() -> None:
    """No process of these tests' servers (SGLang's ``sglang::`` children included), no container."""
    left = {study: server_pids(study) for study in STUDIES}
    named = {
        pid: (Path(f"/proc/{pid}/cmdline").read_bytes()[:40] if Path(f"/proc/{pid}").exists() else b"")
        for pids in left.values()
        for pid in pids
    }
    assert not any(left.values()), (left, named)
    target = load_space(DOCKER_SPACE).target
    assert isinstance(target, DockerTarget)
    try:
        containers = DockerLauncher(target).containers("sglang-docker")
    except LaunchError as e:  # no daemon: the Docker test skipped, nothing to check there
        pytest.skip(f"Docker daemon: {e}")
    assert not containers, containers
