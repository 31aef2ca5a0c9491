"""A real study of llama.cpp's ``llama-server`` on the CPU, and its best configuration against the defaults.

One command: write a random-weight GGUF, run ``python -m tuner.study`` (the real CLI) for ``--trials``
trials on ``search_spaces/llamacpp-cpu-tiny.yaml`` (a local process per trial), then measure the best
feasible trial and the ``defaults`` seed (llama-server with no tuning flag) again in interleaved
rounds (defaults, best, best, defaults, …: drift of the shared machine cancels), each a fresh server,
and report the ratio of means with a paired bootstrap 95 % CI
(:func:`tuner.core.stats.paired_ratio_ci`), the trials the study took and its failures by kind.

    .venv/bin/python bench/llamacpp_study.py                 # writes bench/results/llamacpp_study.md
    .venv/bin/python bench/llamacpp_study.py --trials 12 --rounds 5 --preset small

The helpers here (a study's space file, its Docker target, the CLI run, the re-measurement) are
also what ``tests/e2e/test_llamacpp_study.py`` runs, with a shorter workload.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from tuner.core.stats import RatioCI, paired_ratio_ci  # noqa: E402
from tuner.engines import llamacpp  # noqa: E402
from tuner.launch.base import Launcher  # noqa: E402
from tuner.launch.docker import DockerLauncher  # noqa: E402
from tuner.launch.process import ProcessLauncher  # noqa: E402
from tuner.models.gguf_llama import PRESETS, write  # noqa: E402
from tuner.nightly.remeasure import Measurement, Remeasurer, paired_values, values  # noqa: E402
from tuner.objective.ranking import ranked_trials  # noqa: E402
from tuner.space import SearchSpace, load_space  # noqa: E402
from tuner.space.targets import DockerTarget  # noqa: E402
from tuner.trial.measure import ConfigRunner  # noqa: E402

PROCESS_SPACE = ROOT / "search_spaces" / "llamacpp-cpu-tiny.yaml"
DOCKER_SPACE = ROOT / "search_spaces" / "llamacpp-cpu-docker.yaml"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
DEFAULTS = "defaults"
MODEL_FILE = "llama-small.gguf"  # the name both shipped spaces expect (storage/models/, /models/)


def study_space(
    base: Path,
    dest: Path,
    *,
    model_dir: Path | None = None,
    workload: Mapping[str, Any] | None = None,
    mem_limit: str | None = None,
    pin: Mapping[str, Any] | None = None,
    model: Path | None = None,
    mounts: Mapping[str, Path] | None = None,
) -> Path:
    """Copy the shipped space ``base`` to ``dest`` with this machine's paths and ``workload`` merged in.

    ``pin`` turns parameters into fixed flags (``{"threads": 1}``): they leave the search and every
    seed, and every server of the study, the defaults' included, runs with them.

    A process space gets ``model`` as its model; a Docker space keeps its in-container model path and
    has each volume whose path inside the container is a key of ``mounts`` pointed at that host path (a
    key no volume has is added, read-only). Both default to llama.cpp's: ``model_dir/llama-small.gguf``,
    and the two mounts ``/models`` (``model_dir``) and ``/opt/llama-server/bin`` (the directory of the
    binary :func:`tuner.engines.llamacpp.find_binary` found). Works for any engine's space.
    """
    raw = yaml.safe_load(base.read_text())
    raw["workload"].update(workload or {})
    for name, value in (pin or {}).items():
        del raw["parameters"][name]
        raw["fixed_flags"][name] = value
        for seed in raw.get("seed_trials", []):
            seed["params"].pop(name, None)
    if raw["target"]["kind"] == "docker":
        if mounts is None:
            mounts = _llamacpp_mounts(model_dir)
        volumes = {}
        for host, vol in raw["target"]["volumes"].items():
            if vol["bind"] in mounts:
                host = str(Path(mounts[vol["bind"]]).resolve())
            volumes[host] = vol
        for bind, host_path in mounts.items():
            if not any(v["bind"] == bind for v in volumes.values()):
                volumes[str(Path(host_path).resolve())] = {"bind": bind, "mode": "ro"}
        raw["target"]["volumes"] = volumes
        if mem_limit is not None:
            raw["target"]["mem_limit"] = mem_limit
    else:
        if model is None:
            if model_dir is None:
                raise TypeError("study_space needs model= or model_dir= for a process space")
            model = model_dir / MODEL_FILE
        raw["model"] = str(model.resolve())
    dest.write_text(yaml.safe_dump(raw, sort_keys=False))
    return dest


def _llamacpp_mounts(model_dir: Path | None) -> dict[str, Path]:
    """The host side of llamacpp-cpu-docker.yaml's two machine-specific volumes."""
    binary = llamacpp.find_binary()
    if binary is None:
        raise FileNotFoundError("llama-server is not built: run scripts/build-llama-server.sh")
    if model_dir is None:
        raise TypeError("study_space needs model_dir= (or mounts=) for a llama.cpp Docker space")
    return {"/models": model_dir, "/opt/llama-server/bin": binary.resolve().parent}


@dataclass
class StudyRun:
    """One run of the ``python -m tuner.study`` CLI and the study it left in storage."""

    returncode: int
    output: str
    elapsed_s: float
    study: optuna.Study
    space: SearchSpace

    @property
    def finished(self) -> list[FrozenTrial]:
        return [t for t in self.study.get_trials(deepcopy=False) if t.state in FINISHED]

    def seed(self, name: str) -> FrozenTrial:
        """The trial of seed ``name`` (KeyError when the study has none)."""
        for t in self.study.get_trials(deepcopy=False):
            if t.user_attrs.get("seed_name") == name:
                return t
        raise KeyError(f"no trial of seed {name!r} in study {self.study.study_name}")

    def failures_by_kind(self) -> Counter[str]:
        return Counter(
            str(t.user_attrs["failure_kind"])
            for t in self.study.get_trials(deepcopy=False)
            if "failure_kind" in t.user_attrs
        )

    def best(self) -> FrozenTrial:
        ranked = ranked_trials(self.study)
        if not ranked:
            raise LookupError(f"study {self.study.study_name} has no feasible trial:\n{self.output[-3000:]}")
        return ranked[0]


def run_study(
    space_file: Path,
    work: Path,
    *,
    trials: int,
    study: str,
    seed: int = 0,
    timeout_s: float = 1800,
    extra: Sequence[str] = (),
) -> StudyRun:
    """Run the real CLI (``python -m tuner.study``, plus ``extra`` options) with SQLite under ``work``;
    never raises for its exit code."""
    storage = f"sqlite:///{work / 'study.db'}"
    cmd = [
        sys.executable, "-m", "tuner.study", "--space", str(space_file), "--storage", storage,
        "--study", study, "--trials", str(trials), "--seed", str(seed), "--out", str(work / "out"), *extra,
    ]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    elapsed = time.perf_counter() - t0
    loaded = optuna.load_study(study_name=study, storage=storage)
    return StudyRun(proc.returncode, proc.stdout + proc.stderr, elapsed, loaded, load_space(space_file))


def launcher_for(space: SearchSpace) -> Launcher:
    """The launcher the study used for this space's target."""
    if isinstance(space.target, DockerTarget):
        return DockerLauncher(space.target)
    return ProcessLauncher()


@dataclass
class Comparison:
    """The study's top candidates, the defaults and any other named seeds, measured again in
    interleaved rounds.

    The study measured each trial once, so its single best value is biased upwards (the winner's
    curse on a noisy machine): the top ``k`` feasible trials are re-measured and the one with the
    best re-measured mean is the best. Candidates are labelled ``#<trial>``, the seeds measured
    beside them (the defaults first) by their names.
    """

    candidates: list[FrozenTrial]
    defaults: FrozenTrial
    measured: dict[str, list[Measurement]]  # label -> measurements; DEFAULTS first, seeds, then "#<trial>"
    elapsed_s: float
    maximize: bool = True

    def mean(self, label: str) -> float:
        vals = values(self.measured[label])
        return sum(vals) / len(vals) if vals else float("nan")

    @property
    def best_label(self) -> str:
        labels = [label for label in self.measured if label.startswith("#")]
        sign = 1.0 if self.maximize else -1.0
        return max(
            labels, key=lambda label: sign * self.mean(label) if values(self.measured[label]) else -1e300
        )

    @property
    def best(self) -> FrozenTrial:
        number = int(self.best_label.lstrip("#"))
        return next(t for t in self.candidates if t.number == number)

    def ratio_to(self, label: str) -> float:
        """Oriented mean(best) / mean(``label``) over the re-measurements (NaN when a side has none)."""
        r = self.mean(self.best_label) / self.mean(label)
        return r if self.maximize else 1.0 / r

    def ci_to(self, label: str) -> RatioCI | None:
        """Paired bootstrap CI of the best's ratio to ``label`` over the rounds both were measured in."""
        ref, cand = paired_values(self.measured[label], self.measured[self.best_label])
        return paired_ratio_ci(ref, cand, maximize=self.maximize)

    @property
    def ratio(self) -> float:
        """The best's ratio to the defaults."""
        return self.ratio_to(DEFAULTS)

    @property
    def ci(self) -> RatioCI | None:
        """The best's ratio to the defaults with its paired interval."""
        return self.ci_to(DEFAULTS)


def remeasure_best_vs_defaults(
    run: StudyRun, *, rounds: int, log_dir: Path, top_k: int = 3, seeds: Sequence[str] = ()
) -> Comparison:
    """Measure the study's ``top_k`` feasible trials (seeds excluded), the ``defaults`` seed and the
    named ``seeds`` ``rounds`` times each, interleaved (defaults first, order reversed every other
    round)."""
    defaults = run.seed(DEFAULTS)
    baselines = {DEFAULTS: defaults, **{name: run.seed(name) for name in seeds}}
    skip = {t.number for t in baselines.values()}
    candidates = [t for t in ranked_trials(run.study) if t.number not in skip][:top_k]
    if not candidates:
        raise LookupError(
            f"study {run.study.study_name} has no feasible trial besides {', '.join(baselines)}"
        )
    configs = {label: t.user_attrs["flags"] for label, t in baselines.items()}
    configs.update({f"#{t.number}": t.user_attrs["flags"] for t in candidates})
    space = run.space
    launcher = launcher_for(space)
    t0 = time.perf_counter()
    try:
        runner = ConfigRunner(space, launcher, study=f"{run.study.study_name}-remeasure", log_dir=log_dir)
        measured = Remeasurer(runner, space).interleaved(configs, rounds)
    finally:
        launcher.close()
    maximize = space.objectives[0].direction == "maximize"
    return Comparison(candidates, defaults, measured, time.perf_counter() - t0, maximize)


def _flags_text(trial: FrozenTrial, space: SearchSpace) -> str:
    fixed = set(space.fixed_flags)
    shown = [
        f"--{k}" if v is True else f"--{k} {v}"
        for k, v in (trial.user_attrs.get("flags") or {}).items()
        if k not in fixed and v is not False
    ]
    return " ".join(shown) or "(no tuning flag)"


def render(run: StudyRun, cmp: Comparison, *, preset: str, machine: str) -> str:
    """The results page (Markdown)."""
    space = run.space
    metric = space.objectives[0].metric
    w = space.workload
    states = Counter(t.state.name for t in run.study.get_trials(deepcopy=False))
    kinds = run.failures_by_kind()
    lines = [
        "# llama.cpp on the CPU: a real study, best vs llama-server's defaults",
        "",
        f"Machine: {machine}. Engine: llama-server built from llama-cpp-python {space.engine_version} "
        f"(scripts/build-llama-server.sh). Model: random-weight Llama GGUF, preset `{preset}` "
        f"({PRESETS[preset].n_params / 1e6:.0f} M parameters, F16), written by tuner.models.gguf_llama.",
        f"Space: `search_spaces/llamacpp-cpu-tiny.yaml`, each trial a fresh local llama-server process. "
        f"Workload: {w.num_requests} requests of {w.input_len} tokens in / {w.output_len} out, "
        f"closed loop with {getattr(w.arrival, 'clients', '?')} clients, {w.warmup_requests} warm-up. "
        f"Objective: maximize `{metric}` (tok/s) with TTFT p99 <= {space.slos.ttft_p99_ms} ms.",
        "",
        "## The study",
        "",
        f"`python -m tuner.study --trials {len(run.finished)} --seed 0`: exit code {run.returncode}, "
        f"{run.elapsed_s / 60:.1f} min, trials by state: "
        + ", ".join(f"{k} {v}" for k, v in sorted(states.items()))
        + ".",
        "Failures by kind: " + (", ".join(f"{k} {v}" for k, v in kinds.most_common()) or "none") + ".",
        "Top feasible trials (re-measured below): "
        + "; ".join(
            f"#{t.number}{' (seed ' + t.user_attrs['seed_name'] + ')' if 'seed_name' in t.user_attrs else ''} "
            f"{metric} {t.values[0]:.1f}: `{_flags_text(t, space)}`"
            for t in cmp.candidates
        )
        + ".",
        f"Defaults seed: trial #{cmp.defaults.number} "
        + (
            f"({metric} {cmp.defaults.values[0]:.1f} in the study)"
            if cmp.defaults.values
            else f"(failed: {cmp.defaults.user_attrs.get('failure_kind')})"
        )
        + ".",
        "",
        "| trial | seed | state | " + metric + " | flags (besides fixed ones) |",
        "|---|---|---|---|---|",
    ]
    for t in run.study.get_trials(deepcopy=False):
        value = f"{t.values[0]:.1f}" if t.values else t.user_attrs.get("failure_kind", "-")
        lines.append(
            f"| {t.number} | {t.user_attrs.get('seed_name', '')} | {t.state.name} | {value} | "
            f"`{_flags_text(t, space)}` |"
        )
    rounds = max(len(ms) for ms in cmp.measured.values())
    best = cmp.best
    origin = f"seed {best.user_attrs['seed_name']}" if "seed_name" in best.user_attrs else "sampled by TPE"
    lines += [
        "",
        f"## Re-measured: {rounds} interleaved rounds, each a fresh server ({cmp.elapsed_s / 60:.1f} min)",
        "",
        f"Best after re-measurement: trial #{best.number} ({origin}, reached after {best.number + 1} "
        f"trials): `{_flags_text(best, space)}`.",
        "",
        f"| configuration | {metric} per round | mean | failures |",
        "|---|---|---|---|",
    ]
    for label, ms in cmp.measured.items():
        vals = values(ms)
        fails = [m.failure_kind for m in ms if not m.ok]
        lines.append(
            f"| {label} | {', '.join(f'{v:.1f}' for v in vals)} | {cmp.mean(label):.1f} | {len(fails)} |"
        )
    sampled = [t for t in run.finished if "seed_name" not in t.user_attrs]
    d_value = cmp.defaults.values[0] if cmp.defaults.values else float("inf")
    beat = [t for t in sampled if t.values and t.values[0] > d_value]
    lines += [
        "",
        f"Sampled (non-seed) trials: {len(sampled)}, of which {len(beat)} measured above the defaults' "
        "single study measurement. TPE samples its first 10 trials (seeds included) at random, and a "
        "random draw usually changes several flags at once (quantized KV, one thread), most of which cost "
        "throughput on this CPU; its model-based trials then start from noisy single measurements.",
    ]
    ci = cmp.ci.describe() if cmp.ci is not None else "no interval (fewer than two paired rounds)"
    lines += [
        "",
        f"**Best (#{best.number}) / defaults: {ci}** (ratio of means, blocked bootstrap over rounds, "
        "tuner.core.stats.paired_ratio_ci).",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=12, help="finished trials of the study (seeds included)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved re-measurement rounds")
    p.add_argument("--preset", choices=sorted(PRESETS), default="small")
    p.add_argument("--machine", default=f"{os.cpu_count()} CPU cores, no GPU, shared with other jobs")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "llamacpp_study.md"))
    args = p.parse_args()
    if llamacpp.find_binary() is None:
        print("llama-server is not built: run scripts/build-llama-server.sh", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="llamacpp-study-") as tmp:
        work = Path(tmp)
        write(work / MODEL_FILE, PRESETS[args.preset])
        space_file = study_space(PROCESS_SPACE, work / "space.yaml", model_dir=work)
        run = run_study(space_file, work, trials=args.trials, study="llamacpp-bench")
        print(run.output[-2500:])
        if run.returncode != 0:
            return run.returncode
        cmp = remeasure_best_vs_defaults(run, rounds=args.rounds, log_dir=work / "remeasure")
        text = render(run, cmp, preset=args.preset, machine=args.machine)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
