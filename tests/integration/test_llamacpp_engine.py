"""The llama.cpp flag table and crash signatures checked against the real ``llama-server`` binary.

These tests only parse arguments (``llama-server <flags> --version`` exits before loading a model),
so they take milliseconds each. Skipped without the binary unless ``TUNER_REQUIRE_ALL=1``.
"""

from __future__ import annotations

import subprocess

import pytest

from tuner.core.errors import ConfigError, UnknownFlagError
from tuner.core.failures import ExitStatus, FailureKind, Phase, classify
from tuner.engines import get_engine
from tuner.engines import llamacpp as lc
from tuner.testing.require import missing

pytestmark = pytest.mark.llamacpp
VERSION = lc.DEFAULT_VERSION
BINARY = lc.find_binary()


@pytest.fixture(scope="module", autouse=True)
def _need_binary() -> None:
    if BINARY is None:
        missing("llama-server not built (scripts/build-llama-server.sh or TUNER_LLAMA_SERVER)")


def _example(spec: lc.FlagSpec) -> list[str]:
    if spec.kind == "switch":
        return []
    if spec.choices:
        return [spec.choices[0]]
    return [{int: "4", float: "0.5"}.get(spec.type, "x")]


def _canonical_specs() -> dict[str, lc.FlagSpec]:
    return {s.name: s for s in lc.flag_specs(VERSION).values()}


def test_every_table_flag_and_alias_is_accepted_by_the_binary() -> None:
    bad = []
    for key, spec in sorted(lc.flag_specs(VERSION).items()):
        value = ["/nonexistent.gguf"] if spec.name == "model" else _example(spec)  # parsing does not open it
        # The binary spells short aliases with one dash (-np, -no-kvu) and long ones with two (--predict);
        # the table only needs each key to name a real option: launch_argv always writes the long name.
        results = [lc.probe_flags([opt, *value], binary=BINARY) for opt in (f"--{key}", f"-{key}")]
        if not any(r.ok for r in results):
            bad.append(f"{key} {' '.join(value)}: {results[0].message}")
    assert not bad, "\n".join(bad)


def test_every_listed_choice_is_accepted_and_others_rejected() -> None:
    bad = []
    for spec in _canonical_specs().values():
        for choice in spec.choices or ():
            r = lc.probe_flags([f"--{spec.name}", choice], binary=BINARY)
            if not r.ok:
                bad.append(f"--{spec.name} {choice}: {r.message}")
        if spec.choices:
            r = lc.probe_flags([f"--{spec.name}", "not-a-choice"], binary=BINARY)
            if r.ok:
                bad.append(f"--{spec.name} not-a-choice was accepted")
    assert not bad, "\n".join(bad)


def test_no_switches_exist_and_rendering_uses_them() -> None:
    argv = lc.launch_argv(
        model="/m.gguf", host="127.0.0.1", port=9, flags={k: False for k in lc.NEGATIONS}, version=VERSION
    )
    flags = argv[7:]
    assert flags == [f"--{lc.NEGATIONS[k]}" for k in lc.NEGATIONS]
    assert lc.probe_flags(flags, binary=BINARY).ok


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--no-such-flag"], "error: invalid argument: --no-such-flag"),
        (["-ctk", "q9"], 'error while handling argument "-ctk": Unsupported cache type: q9'),
        (["--flash-attn", "maybe"], "unknown value for --flash-attn"),
        (["--parallel", "four"], 'error while handling argument "--parallel"'),
    ],
)
def test_rejected_flag_exits_1_and_is_classified_flag_rejected(argv: list[str], needle: str) -> None:
    # A real launch (no --version): the binary must refuse before touching the model file.
    assert BINARY is not None
    proc = subprocess.run(
        [str(BINARY), "-m", "/nonexistent.gguf", *argv],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert needle in log
    failure = classify(
        lc.SIGNATURES, phase=Phase.STARTUP, log_text=log, exit=ExitStatus(code=proc.returncode)
    )
    assert failure.kind is FailureKind.FLAG_REJECTED
    assert any(needle.split(":")[0] in line for line in failure.matched_lines)


def test_missing_model_is_a_crash_not_a_flag_problem() -> None:
    assert BINARY is not None
    proc = subprocess.run(
        [str(BINARY), "-m", "/nonexistent.gguf", "--port", "1"], capture_output=True, text=True, timeout=10
    )
    failure = classify(
        lc.SIGNATURES,
        phase=Phase.STARTUP,
        log_text=proc.stdout + proc.stderr,
        exit=ExitStatus(proc.returncode),
    )
    assert proc.returncode == 1 and failure.kind is FailureKind.CRASHED
    assert "failed to load model" in failure.matched_lines[0]


def test_engine_profile_contract() -> None:
    engine = get_engine("llamacpp")
    assert engine is lc.ENGINE and engine.request.health_path == "/health"
    engine.check_flags(["np", "--parallel", "ctk", "no-warmup"], VERSION)
    with pytest.raises(UnknownFlagError, match="mem-fraction-static"):
        engine.check_flags(["parallel", "mem-fraction-static"], VERSION)
    with pytest.raises(ConfigError, match=r"known: 0\.3\.36"):
        engine.flag_specs("9.9")
    with pytest.raises(ConfigError, match="set twice"):
        lc.canonical_flags({"np": 2, "parallel": 4}, VERSION)
