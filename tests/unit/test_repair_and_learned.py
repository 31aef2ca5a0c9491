"""Evidence-guided repair (engine tables -> moves inside the space) and constraints learned from repairs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from tuner.core.failures import Failure, FailureKind, Phase
from tuner.core.repairs import oom_shortfall_fraction
from tuner.engines.llamacpp import REPAIRS as LLAMA_REPAIRS
from tuner.engines.sglang import REPAIRS
from tuner.search.guide import SearchGuide
from tuner.search.learned import learned_constraints
from tuner.search.neighbours import configuration_key, configurations, neighbour
from tuner.space import load_space
from tuner.space.constraints import violated_constraint
from tuner.space.repair import repairs_for
from tuner.space.sample import params_to_flags
from tuner.space.schema import KnownConstraint
from tuner.store.attrs import TrialAttr
from tuner.testing import ROOT

SPACE = load_space(ROOT / "search_spaces" / "sglang-rtx5090-qwen3-32b-awq.yaml")
BASELINE = dict(SPACE.seed_trials[0].params)
OOM_LINE = (
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 6.00 GiB. GPU 0 has a total "
    "capacity of 31.40 GiB of which 0.00 GiB is free."
)


def _oom(phase: Phase = Phase.STARTUP) -> Failure:
    return Failure(FailureKind.CUDA_OOM, phase, matched_lines=(OOM_LINE,))


def test_pytorch_oom_message_gives_the_missing_share_in_any_unit() -> None:
    assert oom_shortfall_fraction(_oom()) == 6.0 / 31.4
    mib = Failure(FailureKind.CUDA_OOM, Phase.LOAD, log_tail="x\nTried to allocate 512.00 MiB. GPU 3 has a total "
                  "capacity of 79.19 GiB of which 256.00 MiB is free. Of the allocated memory ...")  # fmt: skip
    assert abs(oom_shortfall_fraction(mib) - 0.25 / 79.19) < 1e-12  # type: ignore[operator]
    assert (
        oom_shortfall_fraction(
            Failure(FailureKind.CUDA_OOM, Phase.LOAD, matched_lines=("CUDA error: out of memory",))
        )
        is None
    )


def test_cuda_oom_lowers_mem_fraction_by_what_the_evidence_says_was_missing() -> None:
    params = {**BASELINE, "quantization": "awq_marlin", "mem-fraction-static": 0.85}
    first = repairs_for(SPACE, params, _oom(), REPAIRS)[0]
    # 6.00 of 31.40 GiB missing (0.191) + 0.02 margin, onto the 0.01 grid, downwards
    assert first.params["mem-fraction-static"] == 0.63
    assert [c.describe() for c in first.changes] == ["mem-fraction-static 0.85 -> 0.63"]
    assert first.scope["quantization"] == "awq_marlin"  # what the memory crash depends on
    assert {k: v for k, v in first.params.items() if k != "mem-fraction-static"} == {
        k: v for k, v in params.items() if k != "mem-fraction-static"
    }


def test_repairs_never_leave_the_space() -> None:
    at_floor = {**BASELINE, "mem-fraction-static": 0.5}
    assert all(
        r.changes[0].param != "mem-fraction-static" for r in repairs_for(SPACE, at_floor, _oom(), REPAIRS)
    )
    # not enough memory asks for a larger pool: from 0.95 (the top of the range) there is none
    nem = Failure(FailureKind.NOT_ENOUGH_MEMORY, Phase.STARTUP)
    assert repairs_for(SPACE, {**BASELINE, "mem-fraction-static": 0.95}, nem, REPAIRS) == []
    up = repairs_for(SPACE, {**BASELINE, "mem-fraction-static": 0.55}, nem, REPAIRS)[0]
    assert (
        up.params["mem-fraction-static"] == 0.6
    )  # the rule's fallback step: 10 % of the 0.45 range, on grid
    # halving a categorical picks the largest choice at most half: 4096 -> 2048; None (default) has no half
    load_oom = _oom(Phase.LOAD)
    halves = {
        r.changes[0].param: r
        for r in repairs_for(SPACE, {**BASELINE, "chunked-prefill-size": 4096}, load_oom, REPAIRS)
    }
    assert halves["chunked-prefill-size"].params["chunked-prefill-size"] == 2048
    assert "chunked-prefill-size" not in {
        r.changes[0].param for r in repairs_for(SPACE, BASELINE, load_oom, REPAIRS)
    }


def test_segfault_with_graphs_switches_them_off_and_drops_their_conditional_parameter() -> None:
    params = {**BASELINE, "cuda-graph-backend-decode": "full", "cuda-graph-max-bs-decode": 16}
    seg = Failure(FailureKind.SEGFAULT, Phase.STARTUP)
    repair = repairs_for(SPACE, params, seg, REPAIRS)[0]
    assert repair.params["cuda-graph-backend-decode"] == "disabled"
    assert "cuda-graph-max-bs-decode" not in repair.params  # inactive without graphs
    assert repairs_for(SPACE, BASELINE, seg, REPAIRS) == []  # graphs already off: nothing the table knows


def test_llamacpp_quantized_v_cache_gets_flash_attention(tmp_path: Path) -> None:
    space = load_space(ROOT / "search_spaces" / "llamacpp-cpu-tiny.yaml")
    params = {"parallel": 4, "cont-batching": True, "threads": 1, "poll": None, "flash-attn": "off",
              "cache-type-k": None, "cache-type-v": "q4_0"}  # fmt: skip
    failure = Failure(FailureKind.UNSUPPORTED, Phase.STARTUP,
                      matched_lines=("llama_init_from_model: V cache quantization requires flash_attn to be enabled",))  # fmt: skip
    (repair,) = repairs_for(space, params, failure, LLAMA_REPAIRS)
    assert repair.params["flash-attn"] == "on"


def _trial(number: int, params: dict[str, Any], state: TrialState, **attrs: Any) -> optuna.trial.FrozenTrial:
    dists = {k: CategoricalDistribution([v]) if not isinstance(v, float) else FloatDistribution(0.0, 1.0)
             for k, v in params.items()}  # fmt: skip
    t = create_trial(params=params, distributions=dists, state=state, user_attrs=attrs,
                     value=1.0 if state is TrialState.COMPLETE else None)  # fmt: skip
    t.number = number
    return t


def _repair_pair(
    crash_n: int, old: float, new: float, quant: str = "awq_marlin"
) -> list[optuna.trial.FrozenTrial]:
    crash = {**BASELINE, "quantization": quant, "mem-fraction-static": old}
    repair = repairs_for(SPACE, crash, _oom(), REPAIRS)[0]
    repaired = {**repair.params, "mem-fraction-static": new}
    attrs = {**repair.to_attrs(), "of": crash_n, "depth": 1}
    attrs["changes"][0]["new"] = new
    return [
        _trial(crash_n, crash, TrialState.PRUNED, failure_kind="cuda_oom"),
        _trial(crash_n + 1, repaired, TrialState.COMPLETE, **{TrialAttr.REPAIR: attrs}),
    ]


def test_a_repaired_crash_teaches_a_scoped_bound_and_merges_with_the_next() -> None:
    trials = _repair_pair(3, 0.85, 0.63) + _repair_pair(9, 0.80, 0.58)
    (c,) = learned_constraints(trials)
    assert (c.param, c.op, c.value, c.kind) == ("mem-fraction-static", ">=", 0.80, "cuda_oom")
    assert c.scope["quantization"] == "awq_marlin" and (c.crashed, c.repaired_by) == ([3, 9], [4, 10])
    assert c.covers({**BASELINE, "quantization": "awq_marlin", "mem-fraction-static": 0.9})
    assert not c.covers({**BASELINE, "quantization": "awq", "mem-fraction-static": 0.9})  # outside its scope
    assert not c.covers({**BASELINE, "quantization": "awq_marlin", "mem-fraction-static": 0.79})
    assert "crashed: trials #3, #9; repaired and ran: #4, #10" in c.describe()
    # written out, the space's own constraint check gives the same region
    entry = c.to_space_entry(SPACE)
    space = SPACE.model_copy(update={"constraints": [KnownConstraint(**entry)]})
    inside = dict(
        params_to_flags(SPACE, {**BASELINE, "quantization": "awq_marlin", "mem-fraction-static": 0.9})
    )
    assert violated_constraint(space, inside) is not None
    assert violated_constraint(space, dict(params_to_flags(SPACE, BASELINE))) is None


def test_a_configuration_that_ran_inside_the_region_drops_the_constraint() -> None:
    trials = _repair_pair(3, 0.85, 0.63)
    assert learned_constraints(trials)
    ran = {**BASELINE, "quantization": "awq_marlin", "mem-fraction-static": 0.88}
    assert learned_constraints([*trials, _trial(7, ran, TrialState.COMPLETE)]) == []
    # a repair that crashed the same way teaches nothing
    failed = _repair_pair(3, 0.85, 0.63)
    failed[1] = _trial(
        4,
        failed[1].params,
        TrialState.PRUNED,
        failure_kind="cuda_oom",
        **{TrialAttr.REPAIR: failed[1].user_attrs[TrialAttr.REPAIR]},
    )
    assert learned_constraints(failed) == []


def test_guide_neighbour_is_unseen_inside_the_space_and_outside_learned_regions() -> None:
    import random

    trials = _repair_pair(3, 0.85, 0.63)
    seen = configurations(SPACE, trials)
    learned = learned_constraints(trials)
    for seed in range(20):
        n = neighbour(SPACE, trials[0].params, seen, learned, random.Random(seed))
        assert n is not None and configuration_key(SPACE, n) not in seen
        assert not learned[0].covers(n)
        assert all(k in SPACE.parameters for k in n)


def _segfault_pair(crash_n: int, compile_on: bool, backend: str = "full") -> list[optuna.trial.FrozenTrial]:
    crash = {**BASELINE, "cuda-graph-backend-decode": backend, "cuda-graph-max-bs-decode": 8,
             "enable-torch-compile": compile_on}  # fmt: skip
    if compile_on:
        crash["torch-compile-max-bs"] = 4
    repair = repairs_for(SPACE, crash, Failure(FailureKind.SEGFAULT, Phase.STARTUP), REPAIRS)[0]
    attrs = {**repair.to_attrs(), "of": crash_n, "chain": [["segfault", 0]]}
    return [
        _trial(crash_n, crash, TrialState.PRUNED, failure_kind="segfault"),
        _trial(crash_n + 1, repair.params, TrialState.COMPLETE, **{TrialAttr.REPAIR: attrs}),
    ]


def test_crashes_cured_by_one_move_in_two_contexts_generalise_over_what_differs() -> None:
    one = learned_constraints(_segfault_pair(3, compile_on=True))
    assert [(c.param, c.op, c.value, c.scope) for c in one] == [
        ("cuda-graph-backend-decode", "==", "full", {"enable-torch-compile": True})
    ]
    (both,) = learned_constraints(_segfault_pair(3, compile_on=True) + _segfault_pair(7, compile_on=False))
    assert both.scope == {} and both.crashed == [3, 7]  # torch.compile does not matter: seen both ways
    # another value of the graph backend is another constraint (== is exact)
    three = learned_constraints(
        _segfault_pair(3, True) + _segfault_pair(7, False) + _segfault_pair(11, True, "breakable")
    )
    assert sorted(c.value for c in three) == ["breakable", "full"]
    # a configuration with graphs "full" that ran contradicts the general constraint: back to the scoped ones
    ran = _trial(20, {**BASELINE, "cuda-graph-backend-decode": "full", "cuda-graph-max-bs-decode": 8,
                      "enable-torch-compile": False}, TrialState.COMPLETE)  # fmt: skip
    scoped = learned_constraints([*_segfault_pair(3, True), *_segfault_pair(7, False), ran])
    assert [(c.value, c.scope) for c in scoped] == [("full", {"enable-torch-compile": True})]


def test_feasibility_model_learns_a_crash_region_from_launched_trials_only() -> None:
    import random

    from tuner.search.feasibility import MIN_LAUNCHED, FeasibilityModel

    rng = random.Random(0)

    def sample() -> dict[str, Any]:
        return {**BASELINE, "quantization": rng.choice(["awq", "awq_marlin"]),
                "mem-fraction-static": round(rng.uniform(0.5, 0.95), 2)}  # fmt: skip

    def crashes(p: dict[str, Any]) -> bool:  # the simulated 5090's marlin band
        return p["quantization"] == "awq_marlin" and p["mem-fraction-static"] > 0.76

    def trial(n: int, p: dict[str, Any]) -> optuna.trial.FrozenTrial:
        if crashes(p):
            return _trial(n, p, TrialState.PRUNED, failure_kind="cuda_oom", failure={"phase": "startup"})
        return _trial(n, p, TrialState.COMPLETE)

    model = FeasibilityModel(SPACE)
    few = [trial(n, sample()) for n in range(MIN_LAUNCHED - 1)]
    assert not model.fit(few) and model.crash_probability(BASELINE) is None  # too little to trust
    pruned_before_launch = _trial(99, sample(), TrialState.PRUNED, failure_kind="infeasible_config",
                                  failure={"phase": "precheck"})  # fmt: skip
    history = [trial(n, sample()) for n in range(40)] + [pruned_before_launch]
    assert model.fit(history) and model.launched == 40  # the prune before launch is not evidence
    held_out = [sample() for _ in range(200)]
    bad = [model.crash_probability(p) for p in held_out if crashes(p)]
    good = [model.crash_probability(p) for p in held_out if not crashes(p)]
    auc = sum((b > g) + 0.5 * (b == g) for b in bad for g in good) / (len(bad) * len(good))  # type: ignore[operator]
    assert auc > 0.9, auc


def _marlin(mem: float) -> dict[str, Any]:
    return {**BASELINE, "quantization": "awq_marlin", "mem-fraction-static": mem}


def _not_enough(n: int, mem: float) -> optuna.trial.FrozenTrial:
    return _trial(n, _marlin(mem), TrialState.PRUNED, failure_kind="not_enough_memory")


def test_a_repair_bisects_between_the_crash_and_what_its_siblings_already_showed() -> None:
    from tuner.search.bracket import bracketed

    proposed = repairs_for(SPACE, _marlin(0.85), _oom(), REPAIRS)[0]
    assert proposed.params["mem-fraction-static"] == 0.63  # what the evidence alone says
    # nothing known below: the evidence's value stands
    assert bracketed(SPACE, proposed, []) == proposed
    # 0.70 ran: the edge lies between 0.70 and 0.85 -> the middle grid point, not below what ran
    ran = _trial(1, _marlin(0.70), TrialState.COMPLETE)
    (change,) = bracketed(SPACE, proposed, [ran]).changes  # type: ignore[union-attr]
    assert (change.old, change.new) == (0.85, 0.77)
    # 0.66 did not start (too little memory): the gap is (0.66, 0.85) -> its middle, 0.75
    assert bracketed(SPACE, proposed, [_not_enough(2, 0.66)]).params["mem-fraction-static"] == 0.75  # type: ignore[union-attr]
    # a crash at 0.80 on the same side as 0.85 narrows the gap to (0.70, 0.80)
    crashed_high = _trial(3, _marlin(0.80), TrialState.PRUNED, failure_kind="cuda_oom")
    assert bracketed(SPACE, proposed, [ran, crashed_high]).params["mem-fraction-static"] == 0.75  # type: ignore[union-attr]
    # crashes on both sides one grid step apart: no window, no repair
    assert bracketed(SPACE, proposed, [_not_enough(4, 0.84)]) is None
    # a sibling differs elsewhere (another KV cache type): it says nothing about this configuration
    other = _trial(5, {**_marlin(0.84), "kv-cache-dtype": "fp8_e4m3"}, TrialState.PRUNED, failure_kind="x")
    assert bracketed(SPACE, proposed, [other]) == proposed


def test_the_guide_queues_the_bisected_repair() -> None:
    study = optuna.create_study(direction="maximize")
    guide = SearchGuide(SPACE, feasibility=False)
    study.add_trial(_not_enough(0, 0.66))
    trial = study.ask()  # the crashed trial (its own parameters do not matter to the repair)
    repair = guide.after_crash(trial, _marlin(0.85), _oom())
    assert repair is not None and repair.params["mem-fraction-static"] == 0.75
    (queued,) = [t for t in study.get_trials() if t.state is TrialState.WAITING]
    assert queued.system_attrs["fixed_params"]["mem-fraction-static"] == 0.75


def test_without_bisection_the_repair_takes_the_rules_step() -> None:
    study = optuna.create_study(direction="maximize")
    study.add_trial(_not_enough(0, 0.66))
    repair = SearchGuide(SPACE, feasibility=False, bisect=False).after_crash(
        study.ask(), _marlin(0.85), _oom()
    )
    assert repair is not None and repair.params["mem-fraction-static"] == 0.63


def test_local_moves_start_from_a_top_trial_and_skip_what_the_model_calls_unsafe() -> None:
    import random

    from tuner.search.feasibility import MIN_LAUNCHED
    from tuner.search.local import LOCAL_SAFE

    rng = random.Random(1)
    study = optuna.create_study(direction="maximize")
    for n in range(30):
        p = {**BASELINE, "quantization": rng.choice(["awq", "awq_marlin"]),
             "mem-fraction-static": round(rng.uniform(0.5, 0.95), 2)}  # fmt: skip
        if p["quantization"] == "awq_marlin" and p["mem-fraction-static"] > 0.76:  # the 5090's marlin band
            t = _trial(n, p, TrialState.PRUNED, failure_kind="cuda_oom", failure={"phase": "startup"})
        else:
            t = _trial(n, p, TrialState.COMPLETE)
            t.values = [(2.0 if p["quantization"] == "awq_marlin" else 1.0) + p["mem-fraction-static"] / 100]
        study.add_trial(t)
    ranked = sorted(
        (t for t in study.get_trials() if t.state is TrialState.COMPLETE), key=lambda t: -t.values[0]
    )
    guide = SearchGuide(SPACE)
    seen = configurations(SPACE, study.get_trials())
    queued_from = []
    for _ in range(6):
        trial = study.ask()
        near = guide.after_run(trial, ranked)
        assert near in [t.number for t in ranked[:3]]
        (waiting,) = [t for t in study.get_trials() if t.state is TrialState.WAITING]
        params = waiting.system_attrs["fixed_params"]
        base = study.trials[near].params
        assert 1 <= sum(params.get(k) != base.get(k) for k in {*params, *base}) <= 2  # one or two moves
        assert configuration_key(SPACE, params) not in seen
        assert guide.model is not None and guide.model.crash_probability(params) < LOCAL_SAFE
        assert guide.after_run(trial, ranked) is None  # one at a time: the queue is not empty
        study.tell(trial, state=TrialState.FAIL)
        queued_from.append(near)
        local = study.ask()  # the queued move itself: the next local move waits for a sampler proposal
        assert local.user_attrs[TrialAttr.NEAR] == near and guide.after_run(local, ranked) is None
        study.tell(local, state=TrialState.FAIL)
    assert queued_from.count(ranked[0].number) >= 2  # mostly from the best
    # too few launched trials: the model is not trusted and no move is queued
    young = optuna.create_study(direction="maximize")
    for t in study.get_trials()[: MIN_LAUNCHED - 1]:
        young.add_trial(t)
    assert SearchGuide(SPACE).after_run(young.ask(), ranked) is None


def _memory_history(
    study: optuna.Study, seed: int, crashes: Callable[[dict[str, Any]], bool]
) -> list[optuna.trial.FrozenTrial]:
    """24 trials of both AWQ kernels at random memory fractions: those ``crashes`` picks crashed with a
    CUDA OOM at start-up, the rest ran at 1 + their fraction. Returns the ones that ran, best first."""
    import random

    rng = random.Random(seed)
    for n in range(24):
        p = {**BASELINE, "quantization": rng.choice(["awq", "awq_marlin"]),
             "mem-fraction-static": round(rng.uniform(0.5, 0.95), 2)}  # fmt: skip
        if crashes(p):
            study.add_trial(
                _trial(n, p, TrialState.PRUNED, failure_kind="cuda_oom", failure={"phase": "startup"})
            )
        else:
            t = _trial(n, p, TrialState.COMPLETE)
            t.values = [1.0 + p["mem-fraction-static"]]
            study.add_trial(t)
    return sorted(
        (t for t in study.get_trials() if t.state is TrialState.COMPLETE), key=lambda t: -t.values[0]
    )


def test_second_half_of_the_budget_leans_on_local_moves() -> None:
    from tuner.search.local import LATE_LOCAL

    def history(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
        return _memory_history(
            study, 2, lambda p: p["quantization"] == "awq_marlin" and p["mem-fraction-static"] > 0.76
        )

    def streak(guide: SearchGuide, study: optuna.Study, ranked: list[optuna.trial.FrozenTrial]) -> int:
        """Local moves queued in a row after one sampler proposal, each run as it comes."""
        trial = study.ask()  # the sampler's
        queued = 0
        while guide.after_run(trial, ranked) is not None:
            study.tell(trial, 1.0)
            trial = study.ask()  # the queued local move
            assert TrialAttr.NEAR in trial.user_attrs
            queued += 1
        study.tell(trial, 1.0)
        return queued

    late = optuna.create_study(direction="maximize")
    ranked = history(late)
    assert streak(SearchGuide(SPACE, budget=40), late, ranked) == LATE_LOCAL  # 24 launched >= 40 / 2
    early = optuna.create_study(direction="maximize")
    ranked = history(early)
    assert streak(SearchGuide(SPACE, budget=100), early, ranked) == 1  # first half: one per proposal
    assert streak(SearchGuide(SPACE), early, ranked) == 1  # no budget known: one per proposal


HAZARDS = {"kv-cache-dtype": "fp8_e4m3", "cuda-graph-backend-decode": "breakable", "cuda-graph-max-bs-decode": 16,
           "enable-two-batch-overlap": True, "enable-mixed-chunk": True, "enable-hierarchical-cache": True}  # fmt: skip


def test_the_first_repair_turns_every_other_known_hazard_off() -> None:
    """A CUDA OOM of a configuration drawn with an FP8 KV cache, graphs, two-batch overlap, mixed chunks
    and the hierarchical cache: the first repair lowers the memory fraction (the rule for the crash)
    and sets every other value the engine's table knows to crash to its cure, in one trial."""
    crashed = {**_marlin(0.85), **HAZARDS}
    study = optuna.create_study(direction="maximize")
    repair = SearchGuide(SPACE, feasibility=False).after_crash(study.ask(), crashed, _oom())
    assert repair is not None and repair.stripped
    assert [c.describe() for c in repair.changes] == [
        "mem-fraction-static 0.85 -> 0.63", "kv-cache-dtype fp8_e4m3 -> auto",
        "cuda-graph-backend-decode breakable -> disabled", "enable-two-batch-overlap True -> False",
        "enable-mixed-chunk True -> False", "enable-hierarchical-cache True -> False",
    ]  # fmt: skip
    assert "cuda-graph-max-bs-decode" not in repair.params  # inactive once graphs are off
    assert repair.params["quantization"] == "awq_marlin"  # the core stays
    assert "every other known hazard off" in repair.describe()
    (queued,) = [t for t in study.get_trials() if t.state is TrialState.WAITING]
    assert queued.user_attrs[TrialAttr.REPAIR]["stripped"] is True
    # without stripping, the rule's own move only; a chain's later repairs never strip
    plain = SearchGuide(SPACE, feasibility=False, strip=False).after_crash(
        optuna.create_study(direction="maximize").ask(), crashed, _oom()
    )
    assert plain is not None and not plain.stripped and len(plain.changes) == 1


def test_a_stripped_repair_that_ran_teaches_only_the_crashed_combination() -> None:
    """What a stripped repair that ran proves: the memory fraction crashed *with* those hazards on. The
    learned region keeps their values in its scope, so it does not cover the hazard-free core."""
    crashed = {**_marlin(0.85), **HAZARDS}
    repair = SearchGuide(SPACE, feasibility=False).after_crash(
        optuna.create_study(direction="maximize").ask(), crashed, _oom()
    )
    assert repair is not None
    trials = [
        _trial(0, crashed, TrialState.PRUNED, failure_kind="cuda_oom"),
        _trial(1, repair.params, TrialState.COMPLETE, repair={**repair.to_attrs(), "of": 0}),
    ]
    (learned,) = learned_constraints(trials)
    assert (learned.param, learned.op, learned.value) == ("mem-fraction-static", ">=", 0.85)
    assert learned.scope["kv-cache-dtype"] == "fp8_e4m3" and learned.scope["enable-two-batch-overlap"] is True
    assert learned.covers(crashed) and not learned.covers({**repair.params, "mem-fraction-static": 0.9})


def test_a_repair_that_ran_is_followed_by_a_probe_half_way_back_to_the_crash() -> None:
    """0.85 crashed (CUDA OOM), its repair at 0.63 ran: the next trial is the repair at 0.74 (the grid
    point half-way back), once; a probe the study already has, or a repair that switched a value
    rather than moving a number, queues nothing."""
    from tuner.space.sample import sample_params

    study = optuna.create_study(direction="maximize")
    crashed = _marlin(0.85)
    study.add_trial(_trial(0, crashed, TrialState.PRUNED, failure_kind="cuda_oom"))
    guide = SearchGuide(SPACE, feasibility=False)
    repair = guide.after_crash(study.ask(), crashed, _oom())
    assert repair is not None
    ran_trial = study.ask()  # the queued repair, as the study runs it
    sample_params(SPACE, ran_trial)
    assert ran_trial.params["mem-fraction-static"] == 0.63
    assert guide.edge_probe(ran_trial) == ("mem-fraction-static", 0.63, 0.74)
    probe = study.ask()
    sample_params(SPACE, probe)
    assert probe.user_attrs[TrialAttr.NEAR] == ran_trial.number
    assert {**ran_trial.params, "mem-fraction-static": 0.74} == probe.params
    assert guide.edge_probe(ran_trial) is None  # queued already: not twice
    assert guide.edge_probe(probe) is None  # the probe is no repair: it probes nothing further
    assert SearchGuide(SPACE, feasibility=False, edge=False).edge_probe(ran_trial) is None


def test_real_sglang_cpu_crashes_are_repaired_by_what_their_message_says() -> None:
    """The real SGLang 0.5.23 CPU messages (docs/sglang-cpu.md): triton without a GPU driver gets the
    pure-torch attention; an FP8 KV cache "not supported on CPU" gets the model's dtype. Neither is a
    hazard to strip elsewhere: triton runs on a GPU."""
    cpu = load_space(ROOT / "search_spaces" / "sglang-cpu-tiny.yaml")
    triton = {**cpu.seed_trials[0].params, "attention-backend": "triton", "dtype": "bfloat16"}
    failure = Failure(FailureKind.UNSUPPORTED, Phase.WARMUP,
                      matched_lines=("RuntimeError: 0 active drivers ([]). There should only be one.",))  # fmt: skip
    (repair,) = repairs_for(cpu, triton, failure, REPAIRS)
    assert [c.describe() for c in repair.changes] == ["attention-backend triton -> torch_native"]
    assert repair.params["dtype"] == "bfloat16"
    fp8 = Failure(FailureKind.UNSUPPORTED, Phase.STARTUP,
                  log_tail="ValueError: --kv-cache-dtype fp8_e5m2 is not supported on CPU.")  # fmt: skip
    (kv,) = repairs_for(SPACE, {**BASELINE, "kv-cache-dtype": "fp8_e5m2"}, fp8, REPAIRS)
    assert [c.describe() for c in kv.changes] == ["kv-cache-dtype fp8_e5m2 -> auto"]
    assert not any(r.hazard for r in REPAIRS if r.kind is FailureKind.UNSUPPORTED)


def test_a_breakthrough_is_exploited_before_the_model_is_trusted() -> None:
    from tuner.search.local import BREAKTHROUGH, EXPLOIT

    def study_with_awq() -> tuple[optuna.Study, list[optuna.trial.FrozenTrial]]:
        study = optuna.create_study(direction="maximize")
        for n, mf in enumerate((0.85, 0.87)):
            t = _trial(n, {**BASELINE, "mem-fraction-static": mf}, TrialState.COMPLETE)
            t.values = [1.0 + n / 100]
            study.add_trial(t)
        return study, sorted(study.get_trials(), key=lambda t: -t.values[0])

    def ask(study: optuna.Study, params: dict[str, Any]) -> optuna.Trial:
        study.enqueue_trial(params)
        return study.ask({k: CategoricalDistribution([v]) for k, v in params.items()})

    # graphs and an FP8 KV cache are known hazards on this card: a move never adds one
    marlin = {**BASELINE, "quantization": "awq_marlin", "mem-fraction-static": 0.7}
    study, ranked = study_with_awq()
    guide = SearchGuide(SPACE)
    trial = ask(study, marlin)
    found = trial.number
    assert guide.after_run(trial, ranked, value=1.01 * BREAKTHROUGH) == found
    for k in range(EXPLOIT):
        (waiting,) = [t for t in study.get_trials() if t.state is TrialState.WAITING]
        move = waiting.system_attrs["fixed_params"]
        assert 1 <= sum(move.get(p) != marlin.get(p) for p in {*move, *marlin}) <= 2
        assert not guide.moves.adds_hazard(marlin, move)
        study.tell(trial, 1.5 if k == 0 else 1.4)
        trial = study.ask()  # the queued local move
        assert trial.user_attrs[TrialAttr.NEAR] == found  # from the breakthrough, still the best
        ranked_now = sorted(
            (t for t in study.get_trials() if t.state is TrialState.COMPLETE), key=lambda t: -t.values[0]
        )
        queued = guide.after_run(trial, ranked_now, value=1.3)
        assert (queued is None) == (k == EXPLOIT - 1), (k, queued)  # EXPLOIT moves, then the sampler's turn
    # a best within noise of the one before it is no breakthrough; nor is anything with exploit off
    study, ranked = study_with_awq()
    assert guide.after_run(ask(study, marlin), ranked, value=1.05) is None
    study, ranked = study_with_awq()
    assert SearchGuide(SPACE, exploit=False).after_run(ask(study, marlin), ranked, value=2.0) is None


def test_a_run_inside_a_learned_region_moves_its_bound_past_the_run() -> None:
    """OOMs at 0.63 and 0.85 (both repaired and run lower) merge into ``>= 0.63``; a run at 0.75 inside
    it leaves ``>= 0.85``, kept by the crash at 0.85 alone."""
    trials = _repair_pair(3, 0.63, 0.55) + _repair_pair(9, 0.85, 0.6)
    (wide,) = learned_constraints(trials)
    assert wide.value == 0.63
    ran = _trial(
        20, {**BASELINE, "quantization": "awq_marlin", "mem-fraction-static": 0.75}, TrialState.COMPLETE
    )
    (c,) = learned_constraints([*trials, ran])
    assert (c.op, c.value, c.crashed, c.repaired_by) == (">=", 0.85, [9], [10])
    assert c.covers({**BASELINE, "quantization": "awq_marlin", "mem-fraction-static": 0.9})
    assert not c.covers({**BASELINE, "quantization": "awq_marlin", "mem-fraction-static": 0.8})
    # a run beyond every crash leaves nothing
    beyond = _trial(
        21, {**BASELINE, "quantization": "awq_marlin", "mem-fraction-static": 0.9}, TrialState.COMPLETE
    )
    assert learned_constraints([*trials, ran, beyond]) == []


def test_late_local_moves_add_no_known_hazard() -> None:
    """In the second half of the budget a local move refines the top trials and leaves trying the
    engine's known hazards (FP8 KV, graphs, overlap, ...) to the sampler; in the first half it may add one."""

    def history() -> tuple[optuna.Study, list[optuna.trial.FrozenTrial]]:
        study = optuna.create_study(direction="maximize")
        return study, _memory_history(study, 5, lambda p: p["mem-fraction-static"] > 0.8)

    def moves(guide: SearchGuide) -> list[bool]:
        """Whether each of 12 local moves adds a hazard its base lacks."""
        study, ranked = history()
        base = {t.number: t.params for t in ranked}
        added = []
        for _ in range(12):
            trial = study.ask()  # the sampler's
            if guide.after_run(trial, ranked) is not None:
                (waiting,) = [t for t in study.get_trials() if t.state is TrialState.WAITING]
                move = waiting.system_attrs["fixed_params"]
                added.append(guide.moves.adds_hazard(base[waiting.user_attrs[TrialAttr.NEAR]], move))
            study.tell(trial, state=TrialState.FAIL)
            if any(t.state is TrialState.WAITING for t in study.get_trials()):
                study.tell(study.ask(), state=TrialState.FAIL)  # the move: measured nothing here
        return added

    late = moves(SearchGuide(SPACE, budget=40))  # 24 launched >= 40 / 2
    assert len(late) >= 8 and not any(late)
    assert any(moves(SearchGuide(SPACE, budget=100)))  # first half: the forest alone decides
