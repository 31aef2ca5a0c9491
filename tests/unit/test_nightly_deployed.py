"""The deployed file, recovering parameters from flags, and tonight's engine-version check."""

from __future__ import annotations

from pathlib import Path

import yaml

from tuner.nightly.compat import rejection
from tuner.nightly.deployed import (
    DeployedConfig,
    params_from_flags,
    read_deployed,
    same_config,
    write_deployed,
)
from tuner.space import load_space, params_to_flags

SPACE = Path("search_spaces/sglang-rtx5090-qwen3-32b-awq.yaml")


def test_deployed_file_round_trip_is_flags_yaml_plus_params(tmp_path: Path) -> None:
    space = load_space(SPACE)
    seed = space.seed_trials[0]
    flags = dict(params_to_flags(space, seed.params))
    path = tmp_path / "deployed" / "s.yaml"
    write_deployed(path, space, DeployedConfig(flags, dict(seed.params), "s", 3, "test"), header="hello")
    raw = yaml.safe_load(path.read_text())
    assert raw["engine"] == "sglang" and raw["engine_version"] == space.engine_version
    assert raw["model"] == space.model and raw["flags"] == flags
    back = read_deployed(path)
    assert back is not None and back.flags == flags and back.params == seed.params
    assert back.trial_number == 3 and back.deployed_at
    assert not list(path.parent.glob(".*.tmp"))  # the atomic write left nothing behind


def test_params_recovered_from_a_hand_written_file() -> None:
    space = load_space(SPACE)
    seed = space.seed_trials[1]  # balanced-v2
    flags = {k: v for k, v in params_to_flags(space, seed.params).items() if v is not False}
    assert params_from_flags(space, flags) == {k: v for k, v in seed.params.items()}
    # a flag the space cannot express: not silently dropped
    assert params_from_flags(space, {**flags, "decode-log-interval": 30}) is None


def test_same_config_ignores_false_switches_and_order() -> None:
    assert same_config({"a": 1, "b": False}, {"a": 1})
    assert not same_config({"a": 1}, {"a": 2})


def test_flags_rejected_by_the_engine_version_are_named() -> None:
    space = load_space(SPACE)  # sglang 0.5.23
    good = dict(params_to_flags(space, space.seed_trials[0].params))
    assert rejection(space, good) is None
    why = rejection(space, {**good, "disable-flashinfer": True, "cuda-graph-max-bs": 4})
    assert why is not None and "cuda-graph-max-bs" in why and "disable-flashinfer" in why
    assert rejection(space, {**good, "disable-flashinfer": False}) is None  # an absent switch is fine
    bad_choice = rejection(space, {**good, "schedule-policy": "least-outstanding"})
    assert bad_choice is not None and "schedule-policy" in bad_choice


def test_flags_the_image_rejects_are_named() -> None:
    """The image's own --help (as the launcher's image check read it) is checked after the flag table."""
    from tuner.engines import get_engine
    from tuner.launch.base import ImageInfo

    space = load_space(SPACE)
    good = dict(params_to_flags(space, space.seed_trials[0].params))
    table = get_engine("sglang").flag_specs(space.engine_version)
    image = ImageInfo(
        image="lmsysorg/sglang:v0.5.23",
        image_id="sha256:0",
        repo_digests=(),
        engine="sglang",
        engine_version="0.5.23",
        flags=frozenset(table) - {"enable-mixed-chunk"},  # an image built without one flag
        choices={"schedule-policy": ("lpm", "fcfs")},
    )
    assert rejection(space, {**good, "enable-mixed-chunk": False}, image) is None
    why = rejection(space, {**good, "enable-mixed-chunk": True, "schedule-policy": "random"}, image)
    assert why is not None and why.startswith("image lmsysorg/sglang:v0.5.23 (sglang 0.5.23) rejects")
    assert (
        "--enable-mixed-chunk: not in its --help" in why and "--schedule-policy: random is not one of" in why
    )
    assert rejection(space, {**good, "schedule-policy": "fcfs"}, image) is None
