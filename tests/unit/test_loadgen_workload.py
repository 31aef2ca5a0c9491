"""Workload and SLO models, prompt synthesis and prompts-file loading."""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path

import pytest
from pydantic import ValidationError

from tuner.core.errors import ConfigError
from tuner.loadgen import LengthDist, SLOs, WorkloadSpec, load_prompts_file, make_prompts
from tuner.space.workload import ClosedArrival, PoissonArrival


def test_defaults_and_arrival_kinds() -> None:
    w = WorkloadSpec(num_requests=10)
    assert w.api == "generate" and isinstance(w.arrival, ClosedArrival) and w.arrival.clients == 1
    p = WorkloadSpec.model_validate(
        {"duration_s": 5, "arrival": {"kind": "poisson", "rate": 2.5, "max_concurrency": 4}}
    )
    assert isinstance(p.arrival, PoissonArrival) and p.arrival.max_concurrency == 4


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"num_requests": 10, "num_request": 5}, "num_request"),  # typo caught
        ({}, "exactly one of num_requests and duration_s"),
        ({"num_requests": 1, "duration_s": 1}, "exactly one"),
        ({"num_requests": 1, "input_len": {"dist": "uniform", "low": 9}}, "needs high"),
        ({"num_requests": 1, "input_len": {"dist": "uniform", "low": 9, "high": 3}}, "must not exceed"),
        ({"num_requests": 1, "output_len": {"dist": "normal", "mean": 9}}, "needs std"),
        ({"num_requests": 1, "arrival": {"kind": "poisson"}}, "rate"),
        ({"num_requests": 1, "arrival": {"kind": "closed", "clients": 0}}, "clients"),
        ({"num_requests": 1, "arrival": {"kind": "burst"}}, "burst"),
        ({"num_requests": 1, "api": "chat", "random_ids_vocab": 100}, "random_ids_vocab"),
    ],
)
def test_invalid_workloads_name_the_field(fields: dict, where: str) -> None:
    with pytest.raises(ValidationError, match=where):
        WorkloadSpec.model_validate(fields)


def test_slos_forbid_unknown_keys() -> None:
    assert SLOs(ttft_p99_ms=200).tpot_p99_ms is None
    with pytest.raises(ValidationError, match="ttft_p95_ms"):
        SLOs.model_validate({"ttft_p95_ms": 200})
    with pytest.raises(ValidationError, match="error_rate"):
        SLOs(error_rate=2)


def test_fingerprint_is_stable_and_sensitive(tmp_path: Path) -> None:
    a = WorkloadSpec(num_requests=10, seed=1)
    assert a.fingerprint() == WorkloadSpec(seed=1, num_requests=10).fingerprint()
    assert a.fingerprint() != WorkloadSpec(num_requests=10, seed=2).fingerprint()
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "hello there"}\n')
    g = tmp_path / "moved.jsonl"
    g.write_text('{"prompt": "hello there"}\n')
    assert (
        WorkloadSpec(num_requests=1, prompts_file=str(f)).fingerprint()
        == WorkloadSpec(num_requests=1, prompts_file=str(g)).fingerprint()
    )
    g.write_text('{"prompt": "hello here"}\n')
    assert (
        WorkloadSpec(num_requests=1, prompts_file=str(f)).fingerprint()
        != WorkloadSpec(num_requests=1, prompts_file=str(g)).fingerprint()
    )


def test_synthetic_prompts_follow_the_distributions() -> None:
    w = WorkloadSpec(
        num_requests=1,
        input_len=LengthDist(dist="uniform", low=10, high=30),
        output_len=LengthDist(dist="normal", mean=50, std=10, low=40),
        seed=3,
    )
    prompts = list(itertools.islice(make_prompts(w), 2000))
    ins = [p.prompt_tokens for p in prompts]
    assert all(len(p.text.split()) == p.prompt_tokens for p in prompts if p.text)
    assert min(ins) == 10 and max(ins) == 30 and statistics.mean(ins) == pytest.approx(20, abs=0.5)
    outs = [p.output_len for p in prompts]
    assert min(outs) == 40 and statistics.median(outs) == pytest.approx(50, abs=1.5)
    assert [p.text for p in itertools.islice(make_prompts(w), 5)] == [p.text for p in prompts[:5]]
    fixed = next(make_prompts(WorkloadSpec(num_requests=1, input_len=7, output_len=3)))
    assert (fixed.prompt_tokens, fixed.output_len) == (7, 3)


def test_prompts_file_cycles_and_fills_output_len(tmp_path: Path) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "one two three", "output_len": 5}\n\n{"prompt": "four"}\n')
    w = WorkloadSpec(num_requests=1, prompts_file=str(f), output_len=9)
    got = [(p.text, p.prompt_tokens, p.output_len) for p in itertools.islice(make_prompts(w), 3)]
    assert got == [("one two three", 3, 5), ("four", 1, 9), ("one two three", 3, 5)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prompt": "ok"}\n{"prompt": "broken"\n', r"p\.jsonl:2: not valid JSON"),
        ('{"prompt": "ok"}\n\n["a list"]\n', r"p\.jsonl:3: each line must be a JSON object"),
        ('{"prompt": ""}\n', r"p\.jsonl:1: prompt: needs a non-empty string"),
        ('{"prompt": "x", "output_len": 0}\n', r"p\.jsonl:1: output_len: must be a positive integer"),
        ('{"prompt": "x", "max_tokens": 3}\n', r"p\.jsonl:1: unknown key\(s\) max_tokens"),
        ("\n\n", r"p\.jsonl: prompts file holds no prompts"),
    ],
)
def test_bad_prompts_file_names_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_prompts_file(f)


def test_missing_prompts_file_fails_before_any_request(tmp_path: Path) -> None:
    from tuner.loadgen import run_benchmark_sync

    w = WorkloadSpec(num_requests=1, prompts_file=str(tmp_path / "absent.jsonl"))
    # Port 9 is closed: were a request sent, it would be recorded as failed instead of raising.
    with pytest.raises(ConfigError, match=r"absent\.jsonl: cannot read prompts file"):
        run_benchmark_sync("http://127.0.0.1:9", w)
