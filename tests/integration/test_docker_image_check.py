"""Flags checked against the engine inside the image before any trial.

``parse_help`` is checked against real argparse help texts (the simulator's parser for every known
SGLang version and, when ``scripts/setup-sglang-parser.sh`` has made it, SGLang's own parser); the
image checks run ``--help`` in real containers of the simulated image (marker ``docker``).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tuner.core.errors import ConfigError, LaunchError, UnknownFlagError
from tuner.engines import sglang_flags
from tuner.engines.base import EngineProbe
from tuner.engines.sglang import ENGINE as SGLANG
from tuner.launch.docker import DockerLauncher
from tuner.launch.factory import launcher_for_space
from tuner.launch.image_check import (
    check_image,
    check_image_choices,
    check_image_flags,
    inspect_image,
    parse_help,
)
from tuner.launch.simulator import sim_image_target
from tuner.sim.cli import build_parser
from tuner.space.schema import SearchSpace
from tuner.space.targets import DockerTarget
from tuner.testing.docker import sim_image as sim_image_build
from tuner.testing.require import missing

assert SGLANG.image_probe is not None
SGLANG_PROBE = SGLANG.image_probe

REPO = Path(__file__).resolve().parents[2]
OLD_IMAGE = "sglang-tuner/sim:0.4.10"
# The python of SGLang's parser venv (scripts/setup-sglang-parser.sh prints it; setup-test-env.sh exports it).
SGLANG_PARSER_PYTHON = Path(
    os.environ.get("TUNER_SGLANG_VENV")
    or Path(os.environ.get("TUNER_CACHE") or Path.home() / ".cache" / "sglang-tuner")
    / "sglang-0.5.23-venv/bin/python"
)


def _long_options(parser_options: list[str]) -> set[str]:
    return {o[2:] for o in parser_options if o.startswith("--") and o != "--help"}


@pytest.mark.parametrize("version", sglang_flags.KNOWN_VERSIONS)
def test_parse_help_finds_every_flag_and_choice_of_an_argparse_help(version: str) -> None:
    parser = build_parser(version)
    parsed = parse_help(parser.format_help())
    assert set(parsed) - {"help"} == _long_options(list(parser._option_string_actions))
    for action in parser._actions:
        if action.choices is not None:
            for opt in action.option_strings:
                assert parsed[opt[2:]] == tuple(str(c) for c in action.choices)


def test_parse_help_reads_sglangs_own_help_text() -> None:
    py = SGLANG_PARSER_PYTHON
    if not py.exists():
        reason = f"no SGLang parser venv python at {py} (scripts/setup-sglang-parser.sh makes it)"
        missing(reason)
    code = (
        "import argparse, json; from sglang.srt.server_args import ServerArgs\n"
        "p = argparse.ArgumentParser(prog='launch_server.py'); ServerArgs.add_cli_args(p)\n"
        "shown = [s for a in p._actions if a.help != argparse.SUPPRESS for s in a.option_strings]\n"
        "print(json.dumps({'help': p.format_help(), 'shown': shown}))"
    )
    out = json.loads(
        subprocess.run([str(py), "-c", code], capture_output=True, check=True, timeout=120).stdout
    )
    parsed = parse_help(out["help"])
    assert set(parsed) - {"help"} == _long_options(out["shown"])  # hidden (SUPPRESS) flags cannot be seen
    assert "lof" in (parsed["schedule-policy"] or ())
    assert {"tp-size", "tensor-parallel-size", "cuda-graph-bs-decode"} <= set(parsed)


@pytest.fixture(scope="module")
def images(sim_image: str) -> None:
    sim_image_build(OLD_IMAGE, sglang_version="0.4.10")


@pytest.mark.docker
def test_image_check_names_the_flags_the_image_rejects_and_caches_by_image_id(
    images: None, tmp_path: Path
) -> None:
    target = sim_image_target(image=OLD_IMAGE)
    info = inspect_image(target, SGLANG_PROBE, cache_dir=tmp_path)
    assert not info.cached
    assert info.engine == "sglang" and info.engine_version == "0.4.10"
    assert info.image_id.startswith("sha256:")
    assert info.image_id == DockerLauncher(target).require_image()["Id"]
    assert {"model-path", "port", "schedule-policy", "stream-output"} <= info.flags
    assert "cuda-graph-bs-decode" not in info.flags  # came with 0.5.15
    assert "fa4" not in info.choices["attention-backend"]  # came with 0.5.0

    with pytest.raises(UnknownFlagError) as err:
        check_image_flags(
            info, ["schedule-policy", "--cuda-graph-bs-decode", "no-such-flag"], source="space.yaml"
        )
    assert err.value.flags == ["cuda-graph-bs-decode", "no-such-flag"]
    assert "space.yaml" in str(err.value) and OLD_IMAGE in str(err.value) and "0.4.10" in str(err.value)
    with pytest.raises(ConfigError, match=r"--attention-backend fa4 \(it accepts triton"):
        check_image_choices(
            info, {"attention-backend": ["triton", "fa4"], "disable-radix-cache": [True, False]}
        )

    [cache_file] = (tmp_path / "images").glob("*.json")
    assert json.loads(cache_file.read_text())["image_id"] == info.image_id
    again = inspect_image(target, SGLANG_PROBE, cache_dir=tmp_path)
    assert again.cached  # read from the cache file: no container ran
    assert again.flags == info.flags and again.engine_version == info.engine_version

    current = inspect_image(
        sim_image_target(), SGLANG_PROBE, cache_dir=tmp_path
    )  # another image id: its own entry
    assert not current.cached and current.engine_version == sglang_flags.DEFAULT_VERSION
    assert "cuda-graph-bs-decode" in current.flags and current.image_id != info.image_id


@pytest.mark.docker
@pytest.mark.exclusive("docker")  # counts every container on the daemon
def test_launcher_for_space_rejects_a_space_the_image_cannot_run_before_any_trial(
    images: None, tmp_path: Path
) -> None:
    space_file = REPO / "search_spaces" / "sglang-rtx5090-qwen3-32b-awq.yaml"
    raw = yaml.safe_load(space_file.read_text())
    target = sim_image_target(image=OLD_IMAGE).model_dump(mode="json")
    raw["target"] = {**target, "kind": "docker"}
    space = SearchSpace.model_validate(raw)
    assert isinstance(space.target, DockerTarget)
    n_before = len(DockerLauncher(space.target).containers())
    with pytest.raises(UnknownFlagError) as err:  # the field report's space uses 0.5.x flags
        launcher_for_space(space, source=str(space_file), cache_dir=tmp_path)
    assert str(space_file) in str(err.value)
    assert set(err.value.flags) <= {space.flag_of(p) for p in space.parameters} | set(space.fixed_flags)
    assert len(DockerLauncher(space.target).containers()) == n_before  # the probes left nothing behind

    raw["target"]["image"] = sim_image_target().image
    ok = launcher_for_space(SearchSpace.model_validate(raw), cache_dir=tmp_path)
    assert ok.image_info is not None and ok.image_info.engine_version == sglang_flags.DEFAULT_VERSION


@pytest.mark.docker
def test_a_failing_help_is_a_launch_error(images: None, tmp_path: Path) -> None:
    probe = EngineProbe(
        "sglang", ("python3", "-c", "import sys; sys.exit('no such module')"), ("python3", "-V")
    )
    with pytest.raises(LaunchError, match="exited 1"):
        check_image(sim_image_target(), ["port"], probe, cache_dir=tmp_path)
