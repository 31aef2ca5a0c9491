"""Hostile search-space files end in one clear error naming the file and where in it, fast; nothing a
file says makes the loader raise anything else, hang, or write outside the output folder."""

from __future__ import annotations

import copy
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tuner.core.errors import ConfigError, TunerError, UnknownFlagError
from tuner.core.slug import slug
from tuner.space import load_space
from tuner.space.check import describe, space_size
from tuner.space.load import parse_space
from tuner.testing import ROOT
from tuner.testing.mutate import corpus

SPACE = ROOT / "search_spaces" / "sglang-rtx5090-qwen3-32b-awq.yaml"
CORPUS = 2000


def test_a_corpus_of_mutated_space_files_gives_clear_errors_only(tmp_path: Path) -> None:
    outcomes = {"accepted": 0, "rejected": 0}
    slowest = 0.0
    path = tmp_path / "space.yaml"
    for label, data in corpus(CORPUS, seed=0):
        path.write_bytes(data)
        t0 = time.perf_counter()
        try:
            space = load_space(path)
            describe(space, str(path))  # what --check prints: every accepted file can be described
            outcomes["accepted"] += 1
        except UnknownFlagError as e:  # names the flags the engine version rejects
            outcomes["rejected"] += 1
            assert str(e).startswith(f"{path}: ") and e.flags, (label, str(e))
        except ConfigError as e:
            outcomes["rejected"] += 1
            assert str(e).startswith(f"{path}: "), (label, str(e))
            # where in the file: a field, or a line, or a file-level reason
            assert (
                e.field
                or " line " in f" {e}"
                or "bytes" in str(e)
                or "nested" in str(e)
                or "mapping" in str(e)
            ), (label, str(e))
        except TunerError as e:  # unknown flags: named too
            outcomes["rejected"] += 1
            assert str(path) in str(e), (label, str(e))
        slowest = max(slowest, time.perf_counter() - t0)
    assert slowest < 2.0
    assert outcomes["accepted"] + outcomes["rejected"] == CORPUS and outcomes["rejected"] > CORPUS / 2
    print(outcomes, f"slowest {slowest:.3f} s")


@pytest.fixture
def raw() -> dict[str, Any]:
    return yaml.safe_load(SPACE.read_text())


def _error(tmp_path: Path, data: bytes | str) -> str:
    path = tmp_path / "s.yaml"
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    with pytest.raises(ConfigError) as e:
        load_space(path)
    return str(e.value).removeprefix(f"{path}: ")


def test_damaged_files_are_refused_with_where(tmp_path: Path) -> None:
    text = SPACE.read_text()
    assert (
        _error(tmp_path, "name: a\nengine: sglang\nname: b\n")
        == "line 3: key 'name' is already set on line 1"
    )
    assert _error(tmp_path, "name: a\ndescription: caf\xe9\n".encode("latin-1")).startswith(
        "line 2, column 17: not UTF-8 (byte 0xe9)"
    )
    assert "control character" in _error(tmp_path, b"name: a\x00b\n")
    assert _error(tmp_path, "a: " + "[" * 5000 + "]" * 5000).startswith("nested 5000 levels deep")
    assert "bytes: a search-space file is a few kilobytes" in _error(tmp_path, text * 400)
    # the line where the unclosed bracket or quote began, not the line where the parser gave up
    assert _error(tmp_path, "name: [unclosed\nengine: sglang\n") == (
        "line 1, column 7: not valid YAML (expected ',' or ']', but got ':' at line 2, column 7, "
        "while parsing a flow sequence that starts here)"
    )
    assert _error(tmp_path, 'name: "open\nengine: x\n').startswith("line 1, column 7: not valid YAML")
    assert (
        _error(tmp_path, "name: a\n  bad: indent\n")
        == "line 2, column 6: not valid YAML (mapping values are not allowed here)"
    )


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [
        (lambda d: d["parameters"]["mem-fraction-static"].update(high=1.2), "parameters.mem-fraction-static.high",
         "--mem-fraction-static must be <= 1, got 1.2"),
        (lambda d: d["parameters"]["mem-fraction-static"].update(low=0), "parameters.mem-fraction-static.low",
         "--mem-fraction-static must be > 0, got 0"),
        (lambda d: d["parameters"]["mem-fraction-static"].update(step=0), "parameters.mem-fraction-static.float.step",
         "greater than 0"),
        (lambda d: d["parameters"]["mem-fraction-static"].update(step=1e-300), "parameters.mem-fraction-static.float",
         "more than 1,000,000 points"),
        (lambda d: d["parameters"]["mem-fraction-static"].update(low=float("-inf")),
         "parameters.mem-fraction-static.float.low", "finite number"),
        (lambda d: d["parameters"]["num-continuous-decode-steps"].update(high=2**40),
         "parameters.num-continuous-decode-steps.high", "must be <= 2.14748e+09"),
        (lambda d: d["parameters"]["chunked-prefill-size"]["choices"].append(-0.5),
         "parameters.chunked-prefill-size.choices", "takes an integer, got -0.5"),
        (lambda d: d["launch"].update(startup_timeout_s=-5), "launch.startup_timeout_s", "greater than 0"),
        (lambda d: d["workload"].update(stall_timeout_s=float("inf")), "workload.stall_timeout_s", "finite"),
        (lambda d: d["workload"].update(num_requests=10**12), "workload.num_requests", "less than or equal"),
        (lambda d: d["target"].update(noise=1e308), "target.simulator.noise", "less than or equal to 1"),
        (lambda d: d["launch"].update(host="256.1.1.1"), "launch.host", "not an IPv4 address"),
        (lambda d: d["launch"].update(host="not a host!"), "launch.host", "neither an IP address nor a host name"),
        (lambda d: d["launch"].update(gpu_ids=[-1]), "launch.gpu_ids.0", "greater than or equal to 0"),
        (lambda d: d.update(name="a\x00b"), "name", "control characters"),
        (lambda d: d.update(confirm={"top_k": 2, "repeats": 10**9}), "confirm.repeats", "less than or equal to 100"),
        (lambda d: d.update(warm_start=[{"schedule-conservativeness": [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4],
                                          "num-continuous-decode-steps": list(range(1, 9)),
                                          "triton-attention-num-kv-splits": list(range(4, 33, 2))}]),
         "warm_start.0", "1,200 warm-start points in all (tier 0: 10 x 8 x 15); at most 1,000"),
        (lambda d: d.update(constraints=[{"name": "c"}]), "constraints.0(c)", "needs `when`"),
        (lambda d: d.update(constraints=[{"name": "c", "expr": "True"}]), "constraints.0(c).expr",
         "names no searched parameter"),
        (lambda d: d.update(constraints=[{"name": "c", "expr": "quantization < 1"}]), "constraints.0(c).expr",
         "cannot be evaluated"),
    ],
)  # fmt: skip
def test_values_are_checked_for_their_meaning(
    raw: dict[str, Any], edit: Any, field: str, message: str
) -> None:
    data = copy.deepcopy(raw)
    edit(data)
    with pytest.raises(ConfigError) as e:
        parse_space(data, source="s.yaml")
    assert e.value.field == field and message in str(e.value), str(e.value)


def test_flags_may_be_written_with_dashes_but_not_empty(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["parameters"]["mem-fraction-static"]["flag"] = "--mem-fraction-static"
    data["fixed_flags"]["--dtype"] = "auto"
    space = parse_space(data)
    assert (
        space.flag_of("mem-fraction-static") == "mem-fraction-static" and space.fixed_flags["dtype"] == "auto"
    )
    data["parameters"]["mem-fraction-static"]["flag"] = ""
    with pytest.raises(ConfigError, match="'' is not a flag name"):
        parse_space(data)


def test_ipv6_hosts_are_taken_and_names_become_safe_file_names(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["launch"]["host"] = "[::1]"
    data["name"] = "../../escape"
    space = parse_space(data)
    assert space.launch.host == "::1"
    assert slug(space.name) == "escape-eb794308" and "/" not in slug("/tmp/x")


def test_check_describes_the_space_and_its_size() -> None:
    space = load_space(ROOT / "search_spaces" / "transformers-h100-tiny.yaml")
    # no batching: 3 attention x 2 compile; batching: 3 x 2 graphs x 4 blocks x 5 x 5 x 7 memory shares
    assert space_size(space) == (6 + 3 * 2 * 4 * 5 * 5 * 7, True)
    proc = subprocess.run(
        [sys.executable, "-m", "tuner.study", "--check", "--space", "search_spaces/transformers-h100-tiny.yaml"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (
        "configurations: 4,206" in proc.stdout
        and "cb-use-cuda-graph: bool  when continuous-batching=True" in proc.stdout
    )


def test_check_names_the_pruner_that_prune_would_use(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["pruning"] = {"tolerance": 0.08, "p_threshold": 0.05}
    lines = describe(parse_space(data), "s.yaml")
    assert "  pruning (with --prune): wilcoxon after 2 windows, p < 0.05, a window worse only beyond 8 % of " \
        "the best trial's" in lines  # fmt: skip
    data["pruning"] = {"pruner": "patient", "patience": 3}
    assert (
        "  pruning (with --prune): patient after 2 windows, from 5 complete trials, patience 3 windows"
        in (describe(parse_space(data), "s.yaml"))
    )


def test_check_and_the_study_exit_2_with_one_line_on_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    for extra in (["--check"], ["--trials", "1", "--storage", f"sqlite:///{tmp_path}/t.db"]):
        proc = subprocess.run(
            [sys.executable, "-m", "tuner.study", "--space", str(bad), *extra],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith(f"tuner.study: error: {bad}: line 1")


def test_a_misspelt_key_or_flag_is_named_with_what_was_meant(tmp_path: Path, raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["paramters"] = data.pop("parameters")
    with pytest.raises(ConfigError) as e:
        parse_space(data, source="s.yaml")
    # the unknown key first, and not the "parameters: Field required" it causes
    assert str(e.value) == "s.yaml: paramters: unknown key 'paramters' (did you mean 'parameters'?)"
    data = copy.deepcopy(raw)
    data["workload"]["num_request"] = data["workload"].pop("num_requests")
    with pytest.raises(
        ConfigError,
        match=r"workload\.num_request: unknown key 'num_request' \(did you mean 'num_requests'\?\)",
    ):
        parse_space(data, source="s.yaml")
    # a real key in the wrong section: where it belongs, not "did you mean" the key itself
    data = copy.deepcopy(raw)
    data["workload"]["clients"] = 4
    with pytest.raises(ConfigError) as e:
        parse_space(data, source="s.yaml")
    assert str(e.value) == (
        "s.yaml: workload.clients: unknown key 'clients' in workload (it is a key of workload.arrival)"
    )
    data = copy.deepcopy(raw)
    data["parameters"]["schedule-polcy"] = data["parameters"].pop("schedule-policy")
    with pytest.raises(UnknownFlagError) as flag:
        parse_space(data, source="s.yaml")
    assert "does not accept schedule-polcy (did you mean schedule-policy?)" in str(flag.value)


def test_help_names_defaults_once_and_the_exit_codes() -> None:
    from tuner.study.__main__ import build_parser

    text = build_parser().format_help()
    assert "(default: None)" not in text and "(default: the space's name)" in text
    assert "--trials TRIALS" in text and "(default: 50)" in text
    assert "exit codes: 0 done" in " ".join(text.split()) and "130 interrupted" in " ".join(text.split())
