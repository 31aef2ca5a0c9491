"""Search efficiency: pruner construction, window checks, intervals, ranking, crash halves (pure logic)."""

from __future__ import annotations

import math
import subprocess
import sys
from itertools import pairwise

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from tuner.core.errors import ConfigError
from tuner.report.learning import crash_rate_by_half
from tuner.space.sections import ConfirmSpec, PruningSpec
from tuner.space.workload import WorkloadSpec
from tuner.study.confirm import Candidate, mean_ci, rank
from tuner.trial.pruning import build_pruner, check_windows, earliest_prune_window


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("wilcoxon", optuna.pruners.WilcoxonPruner),
        ("median", optuna.pruners.MedianPruner),
        ("patient", optuna.pruners.PatientPruner),
        ("none", optuna.pruners.NopPruner),
    ],
)
def test_build_pruner_by_name(name: str, cls: type) -> None:
    assert isinstance(build_pruner(PruningSpec(pruner=name), n_objectives=1), cls)


def test_pruning_a_multi_objective_study_is_a_config_error_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"space.yaml: pruning.pruner: .*single objective, the space has 2"):
        build_pruner(PruningSpec(), n_objectives=2, source="space.yaml")
    assert isinstance(build_pruner(PruningSpec(pruner="none"), n_objectives=2), optuna.pruners.NopPruner)


def _windows_pruned(
    pruner: optuna.pruners.BasePruner, best: list[float], trial: list[float], direction: str
) -> bool:
    """Whether ``pruner`` stops a trial with per-window values ``trial`` after a complete best trial."""
    study = optuna.create_study(direction=direction, pruner=pruner)
    study.add_trial(
        create_trial(
            value=sum(best) / len(best),
            intermediate_values=dict(enumerate(best)),
            distributions={},
            params={},
        )
    )
    t = study.ask()
    for step, v in enumerate(trial):
        t.report(v, step)
    return t.should_prune()


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_wilcoxon_stops_only_trials_worse_than_the_best_by_more_than_its_tolerance(direction: str) -> None:
    best = [10.0, 10.2, 9.9, 10.1, 10.0, 9.8]
    worse = 1.0 if direction == "maximize" else -1.0  # "3 % worse" means lower throughput, higher latency
    near = [v * (1 - worse * 0.03) for v in best]  # as good, its server drew 3 % worse on every window
    far = [v * (1 - worse * 0.15) for v in best]
    tolerant = build_pruner(PruningSpec(), n_objectives=1)
    strict = build_pruner(PruningSpec(tolerance=0.0), n_objectives=1)
    assert _windows_pruned(strict, best, near, direction)  # Optuna's test: worse on every window, stopped
    assert not _windows_pruned(tolerant, best, near, direction)
    assert _windows_pruned(tolerant, best, far, direction)
    assert not _windows_pruned(tolerant, best, far[:3], direction)  # 3 windows: 2**-3 > p 0.1


def test_the_wilcoxon_pruner_imports_its_test_before_any_trial_is_measured() -> None:
    # Optuna imports scipy.stats lazily at the first decision, which runs in a measured window
    code = (
        "import sys; from tuner.space.sections import PruningSpec; from tuner.trial.pruning import build_pruner; "
        "build_pruner(PruningSpec(), n_objectives=1); print('scipy.stats' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_wilcoxon_cannot_decide_before_log2_of_one_over_p_windows() -> None:
    assert earliest_prune_window(PruningSpec(pruner="wilcoxon", p_threshold=0.1)) == 4
    assert earliest_prune_window(PruningSpec(pruner="wilcoxon", p_threshold=0.05)) == 5
    assert earliest_prune_window(PruningSpec(pruner="wilcoxon", warmup_windows=6)) == 6
    assert earliest_prune_window(PruningSpec(pruner="median", warmup_windows=1)) == 2
    assert earliest_prune_window(PruningSpec(pruner="none")) is None


def test_too_few_windows_for_the_pruner_is_refused_with_a_fix() -> None:
    few = WorkloadSpec(num_requests=16, window_requests=4)  # 4 windows: Wilcoxon would decide at the end
    with pytest.raises(
        ConfigError, match=r"workload.window_requests: .*only 4.*lower workload.window_requests"
    ):
        check_windows(PruningSpec(), few)
    check_windows(PruningSpec(), WorkloadSpec(num_requests=32, window_requests=4))
    check_windows(PruningSpec(pruner="median", warmup_windows=1), few)
    check_windows(PruningSpec(), WorkloadSpec(duration_s=30, window_requests=4))  # unknown count: no check


def test_pruning_spec_rejects_unknown_keys_and_pruners() -> None:
    with pytest.raises(ValueError):
        PruningSpec.model_validate({"pruner": "hyperband"})
    with pytest.raises(ValueError):
        PruningSpec.model_validate({"pruner": "median", "n_warmup": 3})
    with pytest.raises(ValueError):
        ConfirmSpec.model_validate({"repeats": 1})


def test_mean_ci_is_the_student_t_interval() -> None:
    ci = mean_ci([10.0, 12.0, 14.0, 16.0], confidence=0.95)
    assert ci is not None
    # mean 13, s = 2.582, t(0.975, 3) = 3.182 -> half width 4.108
    assert ci.mean == pytest.approx(13.0)
    assert ci.high - ci.mean == pytest.approx(3.1824 * 2.5820 / 2, rel=1e-3)
    assert mean_ci([1.0]) is None
    assert "n=4" in ci.describe()


def test_rank_puts_stable_candidates_first_and_compares_each_with_the_winner() -> None:
    fast = Candidate(1, {}, 50.0, [40.0, 41.0, 40.5])
    slow = Candidate(2, {}, 30.0, [30.0, 30.5, 29.5])
    flaky = Candidate(3, {}, 60.0, [60.0, None, 61.0], failures=["hang"])
    ranked = rank([slow, flaky, fast], maximize=True, confidence=0.95)
    assert [c.trial_number for c in ranked] == [1, 2, 3]
    assert ranked[1].vs_winner is not None and ranked[1].vs_winner.low > 1.2
    assert ranked[2].vs_winner is not None  # two common rounds with the winner
    assert not flaky.stable and fast.stable
    ranked_min = rank(
        [Candidate(1, {}, 1, [2.0, 2.1]), Candidate(2, {}, 1, [1.0, 1.1])], maximize=False, confidence=0.9
    )
    assert ranked_min[0].trial_number == 2


def _trial(
    number: int, kind: str | None = None, *, seed: bool = False, slow: bool = False
) -> optuna.trial.FrozenTrial:
    attrs: dict[str, object] = {}
    if kind:
        attrs["failure_kind"] = kind
    if seed:
        attrs["seed_name"] = "baseline"
    if slow:
        attrs["pruned_by"] = "slow"
    state = TrialState.PRUNED if kind or slow else TrialState.COMPLETE
    t = create_trial(state=state, value=None if state is TrialState.PRUNED else 1.0, user_attrs=attrs)
    t.number = number
    return t


def test_crash_halves_count_crashes_per_launched_server() -> None:
    first = [_trial(0, "segfault"), _trial(1, "hang"), _trial(2, "cuda_oom"), _trial(3, "infeasible_config"),
             _trial(4), _trial(5, "crashed")]  # fmt: skip
    second = [
        _trial(6),
        _trial(7, slow=True),
        _trial(8),
        _trial(9, "infeasible_config"),
        _trial(10),
        _trial(11),
    ]
    seeds = [_trial(12, "segfault", seed=True)]
    h = crash_rate_by_half([*reversed(second), *seeds, *first])
    assert (h.first.trials, h.first.launched, h.first.crashes, h.first.infeasible) == (6, 5, 4, 1)
    assert (h.second.trials, h.second.launched, h.second.crashes) == (6, 5, 0)
    assert h.first.crash_rate == pytest.approx(0.8) and h.second.crash_rate == 0.0
    assert h.learned and h.p_value < 0.05
    assert "4/5 (80%)" in h.describe() and "0/5 (0%)" in h.describe()
    with_seed = crash_rate_by_half([*first, *second, *seeds], include_seeded=True)
    assert with_seed.first.trials == 7


def test_crash_halves_of_a_flat_rate_is_not_learning() -> None:
    trials = [_trial(i, "hang" if i % 2 else None) for i in range(20)]
    h = crash_rate_by_half(trials)
    assert h.first.crash_rate == h.second.crash_rate == 0.5
    assert not h.learned
    empty = crash_rate_by_half([])
    assert empty.p_value == 1.0 and math.isnan(empty.first.crash_rate)


def test_a_swallowed_interrupt_stops_the_trial_at_its_next_phase(tmp_path) -> None:
    """The handler's KeyboardInterrupt can land in a hook whose exceptions Python ignores (logging's
    at-fork handler while a server is launched); the mark it leaves stops the trial at the next phase."""
    import pytest

    from tuner.core import interrupts
    from tuner.launch.process import ProcessLauncher
    from tuner.space import load_space
    from tuner.testing import ROOT
    from tuner.trial.measure import ConfigRunner

    space = load_space(ROOT / "search_spaces" / "sglang-rtx5090-qwen3-32b-awq.yaml")
    runner = ConfigRunner(space, ProcessLauncher(), study="t", log_dir=tmp_path)
    runner._phase("warming")  # nothing pending: goes on
    interrupts.mark()
    try:
        with pytest.raises(KeyboardInterrupt):
            runner._phase("measuring")
    finally:
        interrupts.clear()
    runner._phase("measuring")


def test_covering_start_tries_every_choice_before_repeating_one() -> None:
    """TPE's start-up draws of a choice take a value proposed least often so far: seeds count, a repair
    (derived from another trial) does not; after the start-up, TPE decides."""
    from tuner.search.startup import CoveringStart, proposed_counts
    from tuner.store.attrs import TrialAttr

    kinds = ["awq", "awq_marlin", "gptq"]

    def start(seed: int) -> tuple[optuna.Study, list[str]]:
        sampler = CoveringStart(optuna.samplers.TPESampler(seed=seed, n_startup_trials=10), seed=seed)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        for _ in range(2):  # the space's seed trials, both on one kernel
            study.enqueue_trial({"quantization": "awq"}, user_attrs={TrialAttr.SEED_NAME: "seed"})
        drawn = []
        for n in range(7):
            trial = study.ask()
            drawn.append(trial.suggest_categorical("quantization", kinds))
            study.tell(trial, 1.0)
            if n == 2:  # a repair of the first draw, on its kernel: not a proposal of its own
                study.enqueue_trial({"quantization": drawn[2]}, user_attrs={TrialAttr.REPAIR: {"of": 2}})
        return study, drawn

    for seed in range(5):
        study, drawn = start(seed)
        seeds, first, repair, second = drawn[:2], drawn[2], drawn[3], drawn[4]
        assert seeds == ["awq", "awq"] and sorted([first, second]) == ["awq_marlin", "gptq"], (seed, drawn)
        assert repair == first
        counts = proposed_counts(study.get_trials(), "quantization", kinds)
        assert max(counts) - min(counts) <= 1, (seed, counts)  # even after 6 proposals of 3 kinds
    # past the start-up, TPE's own choice: the best value's kernel
    for _ in range(10):
        trial = study.ask()
        kind = trial.suggest_categorical("quantization", kinds)
        study.tell(trial, 2.0 if kind == "gptq" else 1.0)
    tail = [t.params["quantization"] for t in study.get_trials()[-5:]]
    assert tail.count("gptq") >= 3, tail


def test_careful_start_leaves_known_hazards_off_and_puts_numbers_in_the_widest_gap() -> None:
    """With the engine's hazards named, a start-up draw of a choice covers only the other values; a number
    lands in the middle half of the widest gap the proposals so far leave (the range's ends count)."""
    from tuner.search.startup import CoveringStart
    from tuner.store.attrs import TrialAttr

    kv = ["auto", "fp8_e5m2", "fp8_e4m3"]
    for seed in range(5):
        sampler = CoveringStart(
            optuna.samplers.TPESampler(seed=seed, n_startup_trials=10),
            seed=seed,
            hazards={"kv": ("fp8_e5m2", "fp8_e4m3")},
            gaps=True,
        )
        study = optuna.create_study(direction="maximize", sampler=sampler)
        for m in (0.85, 0.87):  # the seed trials
            study.enqueue_trial(
                {"kv": "auto", "mem": m, "kind": "awq"}, user_attrs={TrialAttr.SEED_NAME: "s"}
            )
        drawn = []
        for _ in range(6):
            trial = study.ask()
            drawn.append(
                (
                    trial.suggest_categorical("kv", kv),
                    trial.suggest_float("mem", 0.5, 0.95, step=0.01),
                    trial.suggest_categorical("kind", ["awq", "awq_marlin"]),
                )
            )
            study.tell(trial, 1.0)
        first = drawn[2]
        assert first[0] == "auto" and first[2] == "awq_marlin", (seed, drawn)  # no hazard; the untried kernel
        assert 0.5875 <= first[1] <= 0.7625, (seed, drawn)  # the middle half of [0.50, 0.85]
        mems = sorted(d[1] for d in drawn)
        assert all(b - a >= 0.02 for a, b in pairwise(mems)), (seed, mems)  # spread out
        assert all(d[0] == "auto" for d in drawn), (seed, drawn)
        assert all(abs((d[1] - 0.5) / 0.01 - round((d[1] - 0.5) / 0.01)) < 1e-6 for d in drawn)  # on the grid
    # past the start-up, TPE decides: the hazard is proposed when it is where the values are
    for _ in range(12):
        trial = study.ask()
        value = trial.suggest_categorical("kv", kv)
        trial.suggest_float("mem", 0.5, 0.95, step=0.01)
        trial.suggest_categorical("kind", ["awq", "awq_marlin"])
        study.tell(trial, 2.0 if value != "auto" else 1.0)
    assert any(t.params["kv"] != "auto" for t in study.get_trials()[8:])


def test_the_sglang_tables_hazards_are_the_values_a_start_up_leaves_off() -> None:
    from tuner.engines import get_engine
    from tuner.space.load import load_space
    from tuner.space.repair import hazard_choices

    space = load_space("search_spaces/sglang-rtx5090-qwen3-32b-awq.yaml")
    hazards = hazard_choices(space, get_engine("sglang").repairs)
    assert hazards["kv-cache-dtype"] == ("fp8_e5m2", "fp8_e4m3")
    assert hazards["cuda-graph-backend-decode"] == ("full", "breakable")
    assert hazards["enable-torch-compile"] == (True,) and hazards["enable-two-batch-overlap"] == (True,)
    assert "quantization" not in hazards and "mem-fraction-static" not in hazards
    llama = load_space("search_spaces/llamacpp-cpu-tiny.yaml")
    assert hazard_choices(llama, get_engine("llamacpp").repairs) == {}
