"""The tuner's SGLang knowledge checked against SGLang's own argument parser (the 0.5.23 wheel).

Needs the parser venv from ``scripts/setup-sglang-parser.sh``; skipped without it unless
``TUNER_REQUIRE_ALL=1`` (CI), where a missing venv fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tuner.engines import sglang_flags
from tuner.engines.base import FlagSpec
from tuner.engines.sglang_parser import PLACEHOLDER_MODEL, ParseResult, available, parse_argvs, parser_options
from tuner.space.load import load_space
from tuner.space.vectors import check_space_flag_vectors, space_flag_vectors
from tuner.testing.require import missing

VERSION = "0.5.23"
REPO = Path(__file__).resolve().parents[2]

if not available(VERSION):
    missing("SGLang 0.5.23 parser venv missing (scripts/setup-sglang-parser.sh)", allow_module_level=True)

BASELINE = [
    "--attention-backend",
    "triton",
    "--sampling-backend",
    "pytorch",
    "--max-total-tokens",
    "3072",
    "--mem-fraction-static",
    "0.85",
    "--disable-cuda-graph",
    "--disable-custom-all-reduce",
    "--disable-radix-cache",
]
BALANCED_V2_EXTRA = [
    "--enable-torch-compile",
    "--torch-compile-max-bs",
    "6",
    "--schedule-policy",
    "lof",
    "--num-continuous-decode-steps",
    "2",
    "--triton-attention-num-kv-splits",
    "12",
    "--allow-auto-truncate",
    "--mem-fraction-static",
    "0.87",
]


def _argv(*args: str) -> list[str]:
    return ["--model-path", PLACEHOLDER_MODEL, *args]


def test_field_report_flags_parse_or_fail_as_observed() -> None:
    cases = {
        "balanced-v2": _argv(*BASELINE, *BALANCED_V2_EXTRA),
        "with --disable-flashinfer": _argv(*BASELINE, "--disable-flashinfer", *BALANCED_V2_EXTRA),
        "--cuda-graph-max-bs 4": _argv("--cuda-graph-max-bs", "4"),
        "--stream-output": _argv("--stream-output"),
        "unknown policy": _argv("--schedule-policy", "shortest-first"),
        "--cuda-graph-bs": _argv("--cuda-graph-bs", "1", "2", "4"),
    }
    got = dict(zip(cases, parse_argvs(list(cases.values()), version=VERSION), strict=True))

    assert got["balanced-v2"].ok, got["balanced-v2"].message
    assert got["balanced-v2"].values["schedule_policy"] == "'lof'"
    assert got["balanced-v2"].values["mem_fraction_static"] == "0.87"  # the later flag wins, as in the report
    # Removed flags: argparse's prefix matching makes them "ambiguous" against newer, longer names.
    assert "--disable-flashinfer" in got["with --disable-flashinfer"].message
    assert "--cuda-graph-max-bs" in got["--cuda-graph-max-bs 4"].message
    assert "--cuda-graph-bs" in got["--cuda-graph-bs"].message
    assert got["--stream-output"].message == "unrecognized arguments: --stream-output"
    assert "invalid choice: 'shortest-first'" in got["unknown policy"].message
    assert not any(r.ok for name, r in got.items() if name != "balanced-v2")


def _example_values(spec: FlagSpec) -> list[list[str]]:
    if spec.kind == "switch":
        return [[]]
    if spec.kind == "list":
        return [["1", "2", "4"]]
    if spec.choices:
        return [[c] for c in spec.choices]
    return [[{int: "4", float: "0.5"}.get(spec.type, "x")]]


def test_flag_table_agrees_with_real_parser() -> None:
    """Every flag (and each listed choice) the table says 0.5.23 accepts is accepted, every flag it says
    0.5.23 rejects is rejected, and switches/lists have the real parser's arity."""
    specs = sglang_flags.flag_specs(VERSION)
    cases: list[tuple[str, list[str]]] = []
    for name, spec in sorted(specs.items()):
        for value in _example_values(spec):
            cases.append((f"--{name} {' '.join(value)}".strip(), _argv(f"--{name}", *value)))
    removed = sorted(sglang_flags.all_flag_names() - set(specs))
    for name in removed:
        cases.append((f"removed --{name}", _argv(f"--{name}")))
    results = parse_argvs([argv for _, argv in cases], version=VERSION)

    wrongly_rejected = [
        f"{label}: {r.message}"
        for (label, _), r in zip(cases, results, strict=True)
        if not label.startswith("removed") and not r.ok
    ]
    wrongly_accepted = [
        label for (label, _), r in zip(cases, results, strict=True) if label.startswith("removed") and r.ok
    ]
    assert not wrongly_rejected, "table says 0.5.23 accepts, real parser rejects:\n" + "\n".join(
        wrongly_rejected
    )
    assert not wrongly_accepted, f"table says 0.5.23 rejects, real parser accepts: {wrongly_accepted}"

    options = parser_options(VERSION)
    arity = []
    for name, spec in specs.items():
        opt = options.get(name)
        if opt is None:  # an alias reached only through argparse's prefix matching (e.g. --tp)
            continue
        if (spec.kind == "switch") == opt.takes_value or (spec.kind == "list") != (opt.nargs in ("+", "*")):
            arity.append(f"--{name}: table {spec.kind}, parser nargs={opt.nargs!r}")
    assert not arity, "\n".join(arity)


def test_removed_flags_are_rejected_rejects_something_real() -> None:
    """Guard against a parser that accepts anything: the check above would pass vacuously."""
    results = parse_argvs([_argv("--no-such-flag"), _argv("--tp-size", "two"), []], version=VERSION)
    assert [r.ok for r in results] == [False, False, False]
    assert "invalid int value: 'two'" in results[1].message
    assert "--model-path" in results[2].message  # required


def _sglang_spaces() -> list[Path]:
    return sorted(p for p in (REPO / "search_spaces").glob("*.yaml") if load_space(p).engine == "sglang")


@pytest.mark.parametrize("space_path", _sglang_spaces(), ids=lambda p: p.name)
def test_every_vector_of_shipped_sglang_space_parses(space_path: Path) -> None:
    rejected = check_space_flag_vectors(space_path)
    assert not rejected, "\n".join(f"{v.label}: {msg}\n  {' '.join(v.argv)}" for v, msg in rejected)


def test_space_enumeration_covers_conditionals_and_both_bool_values() -> None:
    space = load_space(REPO / "search_spaces" / "sglang-rtx5090-qwen3-32b-awq.yaml")
    vectors = space_flag_vectors(space)
    argvs = [" ".join(v.argv) for v in vectors]
    # torch-compile-max-bs only exists when enable-torch-compile is on: its vectors must switch it on.
    compile_bs = [v for v in vectors if v.label.startswith("torch-compile-max-bs=")]
    assert compile_bs and all(
        "--enable-torch-compile --torch-compile-max-bs" in " ".join(v.argv) for v in compile_bs
    )
    assert any("--disable-radix-cache" in a for a in argvs) and any(
        "--disable-radix-cache" not in a for a in argvs
    )
    for choice in ("fcfs", "lpm", "lof", "random", "dfs-weight"):
        assert any(f"--schedule-policy {choice}" in a for a in argvs)


def test_parse_result_keeps_argv() -> None:
    (r,) = parse_argvs([_argv("--tp", "2")], version=VERSION)
    assert r == ParseResult(tuple(_argv("--tp", "2")), True, "", r.values)
    assert r.values["tp_size"] == "2"
