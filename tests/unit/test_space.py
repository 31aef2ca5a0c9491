"""Search-space files: parsing, validation errors naming file and field, sampling, flag rendering."""

from __future__ import annotations

import copy
from pathlib import Path

import optuna
import pytest
import yaml

from tuner.core.errors import ConfigError, UnknownFlagError
from tuner.engines import render_flags
from tuner.engines.sglang import launch_argv
from tuner.space import load_space, params_to_flags, parse_space, sample_params
from tuner.space.constraints import violated_constraint

ROOT = Path(__file__).resolve().parents[2]
SPACE = ROOT / "search_spaces" / "sglang-rtx5090-qwen3-32b-awq.yaml"


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load(SPACE.read_text())


def write(tmp_path: Path, data: dict | str) -> Path:
    p = tmp_path / "space.yaml"
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def test_shipped_spaces_load() -> None:
    for path in sorted((ROOT / "search_spaces").glob("*.yaml")):
        space = load_space(path)
        assert space.parameters, path


def test_seed_trials_are_the_reports_configurations() -> None:
    space = load_space(SPACE)
    seeds = {s.name: params_to_flags(space, s.params) for s in space.seed_trials}
    assert set(seeds) == {"baseline", "balanced-v2"}
    balanced = seeds["balanced-v2"]
    assert balanced["schedule-policy"] == "lof"
    assert balanced["num-continuous-decode-steps"] == 2
    assert balanced["torch-compile-max-bs"] == 6
    assert balanced["mem-fraction-static"] == 0.87
    assert "torch-compile-max-bs" not in seeds["baseline"]  # compile is off: its max-bs is not set
    assert "disable-flashinfer" not in balanced  # translated away for 0.5.23


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    p = write(tmp_path, "name: x\nparameters: [unclosed\n")
    with pytest.raises(ConfigError) as e:
        load_space(p)
    assert str(p) in str(e.value) and "line" in str(e.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such search-space file"):
        load_space(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("mutate", "field", "message"),
    [
        (lambda d: d["parameters"]["num-continuous-decode-steps"].update(low="two"), "parameters.num-continuous-decode-steps",
         "integer"),
        (lambda d: d["parameters"]["mem-fraction-static"].update(low=0.99), "mem-fraction-static", "must not exceed"),
        (lambda d: d["workload"].update(num_request=3), "workload.num_request", "unknown key 'num_request' (did you mean 'num_requests'?)"),
        (lambda d: d["objectives"][0].update(metric="tok_per_s"), "objectives.0.metric", "unknown metric"),
        (lambda d: d["parameters"]["torch-compile-max-bs"].update(when={"enable-compile": True}),
         "parameters.torch-compile-max-bs.when", "not a parameter declared above"),
        (lambda d: d["seed_trials"][0]["params"].update({"schedule-policy": "lifo"}), "seed_trials.0(baseline)",
         "outside its range"),
        (lambda d: d["seed_trials"][0]["params"].update({"torch-compile-max-bs": 4}), "seed_trials.0(baseline)",
         "condition does not hold"),
        (lambda d: d["fixed_flags"].update({"attention-backend": "flashinfer2"}), "fixed_flags.attention-backend",
         "not one of"),
        (lambda d: d.update(engine_version="0.9.0"), "engine_version", "unknown sglang version"),
    ],
)  # fmt: skip
def test_bad_fields_are_named(tmp_path: Path, raw: dict, mutate, field: str, message: str) -> None:
    data = copy.deepcopy(raw)
    mutate(data)
    p = write(tmp_path, data)
    with pytest.raises(ConfigError) as e:
        load_space(p)
    text = str(e.value)
    assert str(p) in text and field in text and message in text, text


def test_unknown_flag_is_named(tmp_path: Path, raw: dict) -> None:
    data = copy.deepcopy(raw)
    data["fixed_flags"]["disable-flashinfer"] = True  # removed in 0.4.x
    data["parameters"]["cuda-graph-max-bs"] = {"type": "int", "low": 1, "high": 8}  # removed in 0.5.20
    with pytest.raises(UnknownFlagError) as e:
        load_space(write(tmp_path, data))
    assert e.value.flags == ["cuda-graph-max-bs", "disable-flashinfer"]
    assert "sglang 0.5.23" in str(e.value)


def test_older_version_has_its_own_flag_set(tmp_path: Path, raw: dict) -> None:
    data = copy.deepcopy(raw)
    data["engine_version"] = "0.5.14"
    with pytest.raises(UnknownFlagError) as e:  # the 0.5.15+ CUDA-graph names do not exist yet
        load_space(write(tmp_path, data))
    assert e.value.flags == ["cuda-graph-backend-decode", "cuda-graph-max-bs-decode"]
    for name in ("cuda-graph-backend-decode", "cuda-graph-max-bs-decode"):
        del data["parameters"][name]
        for seed in data["seed_trials"]:
            seed["params"].pop(name, None)
    data["parameters"]["cuda-graph-max-bs"] = {"type": "int", "low": 1, "high": 8}
    for seed in data["seed_trials"]:
        seed["params"]["cuda-graph-max-bs"] = 4
    assert "cuda-graph-max-bs" in load_space(write(tmp_path, data)).parameters


def test_conditional_parameters_are_sampled_only_when_active() -> None:
    space = load_space(SPACE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen_on = seen_off = 0
    for _ in range(40):
        trial = study.ask()
        params = sample_params(space, trial)
        if params["enable-torch-compile"]:
            assert "torch-compile-max-bs" in params
            seen_on += 1
        else:
            assert "torch-compile-max-bs" not in params and "torch-compile-max-bs" not in trial.params
            seen_off += 1
        assert ("cuda-graph-max-bs-decode" in params) == (params["cuda-graph-backend-decode"] != "disabled")
        study.tell(trial, 1.0)
    assert seen_on and seen_off


def test_flag_rendering_is_sglang_argv() -> None:
    space = load_space(SPACE)
    balanced = next(s for s in space.seed_trials if s.name == "balanced-v2")
    flags = params_to_flags(space, balanced.params)
    argv = launch_argv(model=space.model, host="127.0.0.1", port=30001, flags=flags, version="0.5.23")
    assert argv[:3] == ["python3", "-m", "sglang.launch_server"]
    joined = " ".join(argv)
    for piece in ("--schedule-policy lof", "--num-continuous-decode-steps 2", "--enable-torch-compile",
                  "--torch-compile-max-bs 6", "--mem-fraction-static 0.87", "--allow-auto-truncate",
                  "--cuda-graph-backend-decode disabled", "--port 30001"):  # fmt: skip
        assert piece in joined, piece
    assert "--enable-two-batch-overlap" not in joined  # False switches are omitted
    assert "--chunked-prefill-size" not in joined  # None = engine default, omitted
    assert render_flags({"cuda-graph-bs-decode": [1, 2, 4]}) == ["--cuda-graph-bs-decode", "1", "2", "4"]


def test_known_constraints_prune_before_launch(raw: dict) -> None:
    data = copy.deepcopy(raw)
    data["hardware"] = {"gpu_memory_gb": 32, "weights_gb": 19}
    data["constraints"] = [
        {
            "name": "weights-fit",
            "expr": "mem_fraction_static * gpu_memory_gb < weights_gb + 1",
            "reason": "no room",
        },
        {"name": "no-fp8", "when": {"kv-cache-dtype": ["fp8_e5m2", "fp8_e4m3"]}, "reason": "5090 lacks it"},
    ]
    space = parse_space(data)
    assert violated_constraint(space, {"mem-fraction-static": 0.6}) == "weights-fit: no room"
    assert violated_constraint(space, {"mem-fraction-static": 0.9}) is None
    assert violated_constraint(space, {"mem-fraction-static": 0.9, "kv-cache-dtype": "fp8_e5m2"}).startswith(
        "no-fp8"
    )


@pytest.mark.parametrize("expr", ["__import__('os').system('true')", "open('x')", "a.b > 1", "x[0] > 1"])
def test_constraint_expressions_are_not_eval(raw: dict, expr: str) -> None:
    data = copy.deepcopy(raw)
    data["constraints"] = [{"name": "evil", "expr": expr}]
    with pytest.raises(ConfigError, match=r"constraints\.0\(evil\)\.expr"):
        parse_space(data)


def test_stepped_floats_become_clean_flags() -> None:
    space = load_space(SPACE)
    seed = dict(space.seed_trials[0].params)
    seed["mem-fraction-static"] = 0.7799999999999999
    seed["schedule-conservativeness"] = 1.1000000000000001
    flags = params_to_flags(space, seed)
    assert flags["mem-fraction-static"] == 0.78 and flags["schedule-conservativeness"] == 1.1


def test_warm_start_tiers_expand_over_the_first_seed(raw: dict) -> None:
    from tuner.space.sample import warm_start_points

    data = copy.deepcopy(raw)
    data["warm_start"] = [{"quantization": ["awq", "awq_marlin"], "enable-torch-compile": [False, True]}]
    points = warm_start_points(parse_space(data))
    assert [n for n, _ in points] == [
        "warm:quantization=awq,enable-torch-compile=False",
        "warm:quantization=awq,enable-torch-compile=True",
        "warm:quantization=awq_marlin,enable-torch-compile=False",
        "warm:quantization=awq_marlin,enable-torch-compile=True",
    ]
    for _, params in points:
        assert params["mem-fraction-static"] == 0.85  # the rest as in the first seed (the Baseline)
        assert "torch-compile-max-bs" not in params  # inactive or left to the sampler
    data["warm_start"] = [{"quantization": ["awq", "gptq"]}]
    with pytest.raises(ConfigError, match=r"warm_start\.0.*gptq"):
        parse_space(data)


def test_a_confirmation_baseline_must_name_a_seed_trial(raw: dict) -> None:
    data = copy.deepcopy(raw)
    data["confirm"] = {"baselines": ["balanced-v3"]}
    with pytest.raises(
        ConfigError,
        match=r"confirm\.baselines\.0: 'balanced-v3' is not a seed trial; seed_trials: baseline, balanced-v2",
    ):
        parse_space(data)
    data["confirm"] = {"baselines": ["balanced-v2"]}
    assert parse_space(data).confirm.baselines == ["balanced-v2"]  # type: ignore[union-attr]
