"""The whole measuring loop (launcher -> readiness -> benchmark -> classification) against REAL engines.

- llama.cpp ``llama-server`` on the CPU (marker ``llamacpp``): runs everywhere once
  ``scripts/build-llama-server.sh`` has built the binary.
- ``transformers serve``: needs a Python with ``transformers[serving]`` (``TUNER_TRANSFORMERS_PYTHON``,
  or the ``python`` beside a ``transformers`` on PATH). On the CPU with a tiny model here; on the GPU
  (marker ``gpu``) with the space's 1 B model on the H100 machine.

Each test measures one configuration through :class:`tuner.trial.measure.ConfigRunner`, exactly as a trial
does, on a copy of the shipped search space with a small workload.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

from tuner.core.failures import FailureKind
from tuner.engines import llamacpp, transformers_serve
from tuner.launch.process import ProcessLauncher
from tuner.models.gguf_llama import PRESETS, write
from tuner.space.load import load_space, parse_space
from tuner.space.sample import params_to_flags
from tuner.space.schema import SearchSpace
from tuner.space.vectors import space_flag_vectors
from tuner.testing.require import missing
from tuner.trial.measure import ConfigRunner, Outcome

ROOT = Path(__file__).resolve().parents[2]
LLAMA_SPACE = ROOT / "search_spaces" / "llamacpp-cpu-tiny.yaml"
TF_SPACE = ROOT / "search_spaces" / "transformers-h100-tiny.yaml"


def _missing(what: str) -> NoReturn:
    missing(f"{what} missing")


def _space(path: Path, **changes: Any) -> SearchSpace:
    """The shipped space with top-level fields replaced and ``workload`` keys merged."""
    raw = yaml.safe_load(path.read_text())
    workload = changes.pop("workload", {})
    raw.update(changes)
    raw["workload"].update(workload)
    return parse_space(raw, source=f"{path.name} (test copy)")


def _measure(space: SearchSpace, flags: dict[str, Any], tmp_path: Path) -> Outcome:
    launcher = ProcessLauncher()
    try:
        return ConfigRunner(space, launcher, study="test-real", log_dir=tmp_path).measure(flags, run_index=0)
    finally:
        launcher.close()


# ---------------------------------------------------------------- llama.cpp on the CPU


@pytest.fixture(scope="module")
def gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if llamacpp.find_binary() is None:
        _missing("llama-server (scripts/build-llama-server.sh)")
    return write(tmp_path_factory.mktemp("gguf") / "tiny.gguf", PRESETS["tiny"])


def _llama_space(gguf: Path, **changes: Any) -> SearchSpace:
    small = {"num_requests": 8, "warmup_requests": 1, "output_len": 16, "input_len": 32}
    return _space(LLAMA_SPACE, model=str(gguf), workload=small, **changes)


@pytest.mark.llamacpp
def test_llamacpp_seed_config_measures_exact_tokens(gguf: Path, tmp_path: Path) -> None:
    space = _llama_space(gguf)
    flags = params_to_flags(space, space.seed_trials[0].params)
    out = _measure(space, dict(flags), tmp_path)
    assert out.failure is None, out.failure and out.failure.summary()
    assert out.metrics is not None
    assert out.metrics["completed"] == 8 and out.metrics["failed"] == 0
    assert out.bench is not None
    measured = [r for r in out.bench.records if not r.warmup]
    assert all(r.output_tokens == 16 for r in measured)  # ignore_eos honoured
    assert out.metrics["output_throughput"] > 0
    assert "--parallel" in out.argv and "--cont-batching" in out.argv


@pytest.mark.llamacpp
def test_llamacpp_many_slots_without_cont_batching(gguf: Path, tmp_path: Path) -> None:
    space = _llama_space(gguf)
    params = {**space.seed_trials[0].params, "parallel": 8, "cont-batching": False, "flash-attn": "on",
              "cache-type-k": "q8_0", "cache-type-v": "q4_0"}  # fmt: skip
    out = _measure(space, dict(params_to_flags(space, params)), tmp_path)
    assert out.failure is None, out.failure and out.failure.summary()
    assert "--no-cont-batching" in out.argv
    assert out.metrics is not None and out.metrics["completed"] == 8


@pytest.mark.llamacpp
def test_llamacpp_real_startup_crash_is_classified(gguf: Path, tmp_path: Path) -> None:
    # Without the space's constraint the combination reaches the server, which refuses to start.
    space = _llama_space(gguf, constraints=[])
    params = {**space.seed_trials[0].params, "flash-attn": "off", "cache-type-v": "q8_0"}
    out = _measure(space, dict(params_to_flags(space, params)), tmp_path)
    assert out.failure is not None and out.failure.kind is FailureKind.UNSUPPORTED
    assert out.failure.exit is not None and out.failure.exit.code == 1
    assert "requires flash_attn" in out.failure.matched_lines[0]


@pytest.mark.llamacpp
def test_llamacpp_constraint_prunes_before_launch(gguf: Path, tmp_path: Path) -> None:
    space = _llama_space(gguf)
    params = {**space.seed_trials[0].params, "flash-attn": "off", "cache-type-v": "q4_0"}
    out = _measure(space, dict(params_to_flags(space, params)), tmp_path)
    assert out.failure is not None and out.failure.kind is FailureKind.INFEASIBLE
    assert out.argv == []  # nothing was started


@pytest.mark.llamacpp
def test_llamacpp_every_space_vector_parses_with_the_binary(gguf: Path) -> None:
    space = load_space(LLAMA_SPACE)
    rejected = []
    for v in space_flag_vectors(space):
        r = llamacpp.probe_flags(list(v.argv))
        if not r.ok:
            rejected.append(f"{v.label}: {r.message}")
    assert not rejected, "\n".join(rejected)


# ---------------------------------------------------------------- transformers serve


def _transformers_python() -> Path | None:
    env = os.environ.get("TUNER_TRANSFORMERS_PYTHON")
    if env:
        return Path(env)
    exe = shutil.which("transformers")
    return Path(exe).parent / "python" if exe else None


@pytest.fixture(scope="module")
def tf_python() -> Path:
    py = _transformers_python()
    if py is None or not py.exists():
        _missing("transformers serve (set TUNER_TRANSFORMERS_PYTHON to a python with transformers[serving])")
    assert py is not None
    return py


# Parses argv lists with the real CLI definition (typer) of `transformers serve`, without starting it.
_TF_PARSE = r"""
import json, sys, typer
from transformers.cli.serve import Serve
app = typer.Typer(); app.command(name="serve")(Serve); app.command(name="unused")(lambda: None)
serve = typer.main.get_command(app).commands["serve"]
out = []
for argv in json.load(sys.stdin):
    try:
        serve.make_context("serve", list(argv)); out.append("")
    except Exception as e:
        out.append(getattr(e, "format_message", lambda: str(e))())
print(json.dumps(out))
"""


def test_transformers_flag_table_and_space_parse_with_real_cli(tf_python: Path) -> None:
    import json

    version = transformers_serve.DEFAULT_VERSION
    cases: list[tuple[str, list[str]]] = []
    for name, spec in transformers_serve.flag_specs(version).items():
        values = (
            [[]]
            if spec.kind == "switch"
            else [[c] for c in spec.choices or ()] or [[{int: "4", float: "0.5"}.get(spec.type, "x")]]
        )
        cases += [(f"--{name} {' '.join(v)}", ["/model", f"--{name}", *v]) for v in values]
    cases += [(f"space {v.label}", list(v.argv)) for v in space_flag_vectors(load_space(TF_SPACE))]
    proc = subprocess.run(
        [str(tf_python), "-c", _TF_PARSE],
        input=json.dumps([argv for _, argv in cases]),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    errors = json.loads(proc.stdout.strip().splitlines()[-1])
    bad = [f"{label}: {err}" for (label, _), err in zip(cases, errors, strict=True) if err]
    assert not bad, "\n".join(bad)


def test_transformers_unknown_option_exits_2_and_is_flag_rejected(tf_python: Path, tmp_path: Path) -> None:
    from tuner.core.failures import ExitStatus, Phase, classify

    argv = transformers_serve.launch_argv(
        model=str(tmp_path), host="127.0.0.1", port=9, flags={"no-such-option": True}, version="5.17.0",
        program=[str(tf_python.parent / "transformers"), "serve"],
    )  # fmt: skip
    env = {**os.environ, **transformers_serve.ENV}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, check=False)
    log = proc.stdout + proc.stderr
    failure = classify(
        transformers_serve.SIGNATURES, phase=Phase.STARTUP, log_text=log, exit=ExitStatus(proc.returncode)
    )
    assert proc.returncode == 2
    assert failure.kind is FailureKind.FLAG_REJECTED
    assert "No such option" in failure.matched_lines[0] and "--no-such-option" in failure.matched_lines[0]


def _tf_space(model: Path, tf_python: Path, *, gpu: bool) -> SearchSpace:
    fixed = {"dtype": "bfloat16", "device": "cuda:0"} if gpu else {"dtype": "float32", "device": "cpu"}
    small = {"num_requests": 6, "warmup_requests": 1, "output_len": 8, "input_len": 16,
             "arrival": {"kind": "closed", "clients": 2}}  # fmt: skip
    target = {"kind": "process", "command": [str(tf_python.parent / "transformers"), "serve"],
              "env": {"HF_HUB_OFFLINE": "1"}}  # fmt: skip
    # A dead CB worker turns /health to 503 after the first failed request: a short start-up limit keeps a
    # misclassification (startup_timeout instead of healthy_but_failing) from costing minutes.
    launch = {"host": "127.0.0.1", "startup_timeout_s": 60 if not gpu else 180, "stop_timeout_s": 10}
    return _space(TF_SPACE, model=str(model), fixed_flags=fixed, workload=small, target=target, launch=launch)


def _write_hf_model(tf_python: Path, out: Path, preset: str, *extra: str) -> Path:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    cmd = [str(tf_python), "-m", "tuner.models.hf_random", str(out), "--preset", preset, *extra]
    proc = subprocess.run(cmd, env=env, timeout=300, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


# A KV cache of more blocks than the machine holds kills the continuous-batching worker while /health
# stays 200. On the GPU 1e8 blocks fail the allocation at once; on the CPU the kernel grants memory
# lazily, so the CPU asks for 1e12, which fails the cache sizing itself ("No positive solution")
# without allocating anything.
TOO_MANY_BLOCKS = {"cpu": 1_000_000_000_000, "gpu": 100_000_000}
# On the CPU, continuous batching sizes its batch buffers from a share of the machine's RAM unless
# told otherwise: 64 blocks of a 0.4 M-parameter model reached 21.6 GB resident. 256 tokens per
# batch keeps the server at ~0.4 GB (tests/conftest.py caps every process at 4 GiB).
CPU_BATCH_TOKENS = {"cb-max-batch-tokens": 256}


def _tf_cases(space: SearchSpace) -> list[tuple[dict[str, Any], FailureKind | None]]:
    cb = {
        "continuous-batching": True,
        "attn-implementation": "sdpa",
        "cb-block-size": 32,
        "cb-num-blocks": 64,
    }
    device = "cpu" if space.fixed_flags.get("device") == "cpu" else "gpu"
    if device == "cpu":
        cb |= CPU_BATCH_TOKENS
    return [
        (dict(params_to_flags(space, space.seed_trials[0].params)), None),
        ({**space.fixed_flags, **cb}, None),
        # shared/facts: starts, /health 200, every request fails ("CB worker is dead")
        (
            {**space.fixed_flags, **cb, "cb-num-blocks": TOO_MANY_BLOCKS[device]},
            FailureKind.HEALTHY_BUT_FAILING,
        ),
    ]


def _check_tf(space: SearchSpace, tmp_path: Path) -> None:
    for flags, want in _tf_cases(space):
        out = _measure(space, flags, tmp_path)
        if want is None:
            assert out.failure is None, out.failure and out.failure.summary()
            assert out.metrics is not None and out.metrics["failed"] == 0
            assert out.bench is not None
            assert all(r.output_tokens == 8 for r in out.bench.records if not r.warmup)
        else:
            assert out.failure is not None and out.failure.kind is want, out.failure


@pytest.mark.slow
def test_transformers_serve_cpu(tf_python: Path, tmp_path: Path) -> None:
    model = _write_hf_model(tf_python, tmp_path / "hf-tiny", "tiny", "--device", "cpu", "--dtype", "float32")
    _check_tf(_tf_space(model, tf_python, gpu=False), tmp_path)


def _has_gpu() -> bool:
    return (
        shutil.which("nvidia-smi") is not None
        and subprocess.run(["nvidia-smi", "-L"], capture_output=True, check=False).returncode == 0
    )


@pytest.mark.gpu
@pytest.mark.skipif(not _has_gpu(), reason="no NVIDIA GPU")
def test_transformers_serve_gpu(tf_python: Path, tmp_path: Path) -> None:
    model = _write_hf_model(tf_python, tmp_path / "hf-small", "small")
    _check_tf(_tf_space(model, tf_python, gpu=True), tmp_path)


if __name__ == "__main__":  # pragma: no cover - lets the device machine run just this file
    sys.exit(pytest.main([__file__, "-v"]))


@pytest.mark.llamacpp
def test_quality_gate_catches_a_q4_0_kv_cache_that_changes_the_answers(gguf: Path, tmp_path: Path) -> None:
    """The output-quality gate on a real engine: f16 KV cache (the reference) against q4_0 K and V, the
    same flash attention for both, 8 greedy probes of 32 tokens each."""
    import optuna

    from tuner.trial.objective import TrialRunner

    f16 = {"parallel": 1, "cont-batching": True, "threads": None, "poll": None, "flash-attn": "on",
           "cache-type-k": None, "cache-type-v": None}  # fmt: skip
    q4 = {**f16, "cache-type-k": "q4_0", "cache-type-v": "q4_0"}  # -ctk q4_0 -ctv q4_0
    q8 = {**f16, "cache-type-k": "q8_0", "cache-type-v": "q8_0"}
    seeds = [{"name": "f16", "params": f16}, {"name": "q4_0", "params": q4}, {"name": "q8_0", "params": q8}]
    params = yaml.safe_load(LLAMA_SPACE.read_text())["parameters"]
    params["cache-type-k"]["choices"] = [None, "q8_0", "q4_0"]
    quality = {"reference": "f16", "probes": 8, "max_tokens": 32}
    space = _llama_space(gguf, parameters=params, seed_trials=seeds, quality=quality)
    study = optuna.create_study(direction="maximize")
    for s in seeds:
        study.enqueue_trial(s["params"], user_attrs={"seed_name": s["name"]})
    launcher = ProcessLauncher()
    try:
        runner = TrialRunner(ConfigRunner(space, launcher, study="test-quality", log_dir=tmp_path))
        study.optimize(runner, n_trials=3)
    finally:
        launcher.close()
    ref, lossy, q8_trial = study.trials
    assert (
        ref.user_attrs["quality"]["agreement"] == 1.0 and ref.constraints["quality"] <= 0
    )  # the reference itself
    answers = ref.user_attrs["probe_answers"]
    assert len(answers) == 8 and all(a and a.split() for a in answers), answers
    verdict = lossy.user_attrs["quality"]
    print("q4_0 KV against f16:", verdict, "\nq8_0 KV against f16:", q8_trial.user_attrs["quality"])
    assert verdict["agreement"] < 0.9 and verdict["divergences"], verdict  # the answers changed
    assert study.best_trial.number == ref.number  # the lossy configuration cannot be crowned
    from tuner.report.sections import quality_section

    table = "".join(quality_section(study, ["output_throughput"]))
    assert f"| {lossy.number} | q4_0 |" in table and table.count("| no |") >= 1, table


@pytest.mark.llamacpp
@pytest.mark.parametrize(
    ("dataset", "arrival"),
    [
        ({"kind": "sharegpt", "path": str(ROOT / "search_spaces/data/sharegpt-small.json"), "output_len": 8},
         {"kind": "closed", "clients": 4}),
        ({"kind": "sharegpt", "path": str(ROOT / "search_spaces/data/sharegpt-small.json"), "turns": "all",
          "output_len": 8}, {"kind": "sessions", "clients": 2, "think_time_s": 0.1}),
        ({"kind": "shared_prefix", "groups": 2, "prefix_len": 200}, {"kind": "closed", "clients": 4}),
        ({"kind": "trace", "path": str(ROOT / "search_spaces/data/trace-small.jsonl"), "block_size": 64},
         {"kind": "trace", "speed": 8.0}),
    ],
    ids=["sharegpt", "sessions", "shared_prefix", "trace"],
)  # fmt: skip
def test_llamacpp_serves_each_dataset_kind(
    gguf: Path, tmp_path: Path, dataset: dict[str, Any], arrival: dict[str, Any]
) -> None:
    """Every workload kind against a real engine: all requests served, the server counting the prompts."""
    small = {"num_requests": 8, "warmup_requests": 1, "output_len": 8, "dataset": dataset, "arrival": arrival}
    space = _space(LLAMA_SPACE, model=str(gguf), workload=small)
    outcome = _measure(space, params_to_flags(space, space.seed_trials[0].params), tmp_path)
    assert outcome.failure is None and outcome.metrics is not None, outcome.failure
    assert outcome.metrics["completed"] == 8, outcome.bench.errors() if outcome.bench else None
    ratio = outcome.metrics["prompt_len_ratio"]
    assert 0.5 < ratio < 4, ratio  # words on llama.cpp's own tokenizer: counted, and roughly the size meant
