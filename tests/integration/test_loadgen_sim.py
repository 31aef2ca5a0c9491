"""The benchmark client against the real simulator process (``python -m tuner.sim``)."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tuner.core.net import free_port
from tuner.loadgen import WorkloadSpec, run_benchmark
from tuner.loadgen.telemetry import ServerMemoryMonitor, fetch_server_memory


def _start_sim(*extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "tuner.sim", "--model-path", "Qwen/Qwen2.5-0.5B-Instruct"]
    cmd += ["--sim-model", "qwen2.5-0.5b", "--sim-gpu", "h100", "--sim-startup-scale", "0", "--sim-seed", "1"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"simulator exited with {proc.returncode}: {' '.join(cmd)}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    pytest.fail("simulator not ready within 60 s")


@pytest.fixture
def sim() -> Iterator[str]:
    proc, url = _start_sim()
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def metrics_sim() -> Iterator[str]:
    """A simulator with /metrics (as SGLang, only with --enable-metrics): its prefix-cache hit rate."""
    proc, url = _start_sim("--enable-metrics")
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def hanging_sim() -> Iterator[str]:
    proc, url = _start_sim("--sim-inject", "hang-under-load")
    yield url
    proc.kill()
    proc.wait(10)


def spec(**kw) -> WorkloadSpec:
    base = {
        "input_len": 32,
        "output_len": 16,
        "num_requests": 12,
        "arrival": {"kind": "closed", "clients": 3},
    }
    return WorkloadSpec.model_validate(base | kw)


async def test_generate_and_chat_against_the_simulator(sim: str) -> None:
    with ServerMemoryMonitor(sim, interval_s=0.1) as mem:
        result = await run_benchmark(sim, spec(warmup_requests=2))
    assert (result.completed, result.failed, result.stalled) == (12, 0, False), result.errors()
    assert all(r.output_tokens == 16 and sum(r.chunk_tokens) == 16 for r in result.records)
    assert all(r.prompt_tokens == 32 for r in result.records)  # the server's own count
    assert result.ttft.n == 12 and result.ttft.median > 0 and result.tpot.n == 12
    assert mem.available and mem.samples[0].source == "simulator"

    chat = await run_benchmark(sim, spec(api="chat", num_requests=4))
    assert chat.completed == 4 and chat.output_tokens == 4 * 16
    sample = fetch_server_memory(sim)
    assert sample is not None and 0 < sample.memory_used_mib <= sample.memory_total_mib


async def test_hang_under_load_is_detected_as_stall(hanging_sim: str) -> None:
    t = time.monotonic()
    result = await run_benchmark(
        hanging_sim, spec(num_requests=20, arrival={"kind": "closed", "clients": 4}, stall_timeout_s=1)
    )
    assert result.stalled and time.monotonic() - t < 10
    assert result.failed >= 1 and any("stalled" in (r.error or "") for r in result.records)


async def test_a_benchmark_past_its_deadline_stops_early_and_keeps_only_finished_requests(sim: str) -> None:
    full = await run_benchmark(sim, spec(num_requests=24, output_len=64))
    assert full.completed == 24 and not full.stopped_early
    # half the full run's measured duration: the run must stop with part of its requests done
    cut = await run_benchmark(sim, spec(num_requests=24, output_len=64), deadline_s=full.duration_s / 2)
    assert cut.stopped_early and cut.over_deadline and not cut.stalled
    assert 0 < cut.completed < 24 and cut.failed == 0  # requests cut off are dropped, not failures
    assert cut.duration_s < full.duration_s


def _cache_hit_rate(url: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        line = next(x for x in r.read().decode().splitlines() if x.startswith("sglang:cache_hit_rate"))
    return float(line.split()[-1])


async def test_sharegpt_turns_reach_the_server_with_the_lengths_intended(sim: str) -> None:
    from tuner.loadgen.prompts import make_prompts

    dataset = {"kind": "sharegpt", "path": "search_spaces/data/sharegpt-small.json", "turns": "all"}
    workload = spec(num_requests=10, arrival={"kind": "closed", "clients": 1}, dataset=dataset)
    result = await run_benchmark(sim, workload)
    assert result.completed == 10, result.errors()
    intended = [p for p, _ in zip(make_prompts(workload), range(10), strict=False)]
    # one client: the records come in the prompts' order; the simulator counts one token per word
    assert [r.prompt_tokens for r in result.records] == [p.prompt_tokens for p in intended]
    assert [r.output_tokens for r in result.records] == [p.output_len for p in intended]
    assert len({p.prompt_tokens for p in intended}) > 3  # the file's lengths, not one synthetic length


async def test_shared_system_prompts_are_what_the_prefix_cache_reuses(metrics_sim: str) -> None:
    sim = metrics_sim
    words = await run_benchmark(sim, spec(num_requests=24, input_len=16))
    assert _cache_hit_rate(sim) < 0.1  # random words share (almost) nothing
    shared = {"kind": "shared_prefix", "groups": 2, "prefix_len": 400, "share": 1.0}
    result = await run_benchmark(sim, spec(num_requests=24, input_len=16, dataset=shared))
    assert words.completed == result.completed == 24
    # after the first request of each group, 400 of 416 prompt tokens come from the cache
    assert _cache_hit_rate(sim) > 0.6


async def test_a_trace_is_replayed_at_its_own_times_scaled(metrics_sim: str, tmp_path) -> None:
    import json as _json

    rows = [(0, 40), (400, 40), (500, 40), (1600, 40), (2000, 40)]  # ms, words
    path = tmp_path / "trace.jsonl"
    path.write_text("".join(_json.dumps({"timestamp": t, "input_length": n, "output_length": 4, "hash_ids": [1]})
                            + "\n" for t, n in rows))  # fmt: skip
    workload = spec(num_requests=5, dataset={"kind": "trace", "path": str(path), "block_size": 32},
                    arrival={"kind": "trace", "speed": 2.0})  # fmt: skip
    result = await run_benchmark(metrics_sim, workload)
    hit_rate = _cache_hit_rate(metrics_sim)
    assert result.completed == 5, result.errors()
    sent = sorted(r.sent_ns for r in result.records)
    offsets = [(s - sent[0]) / 1e9 for s in sent]
    expected = [t / 1000 / 2.0 for t, _ in rows]  # twice as fast
    assert all(abs(o - e) < 0.1 for o, e in zip(offsets, expected, strict=True)), offsets
    assert hit_rate > 0.4  # every prompt opens with block 1: 32 of its 40 words come from the cache


async def test_conversations_go_turn_by_turn_with_think_time_and_reuse_their_history(
    metrics_sim: str, tmp_path
) -> None:
    import json as _json

    from tuner.loadgen.prompts import make_prompts

    def conv(i: int, turns: int) -> dict[str, object]:
        msgs = []
        for k in range(turns):
            msgs += [{"from": "human", "value": f"question {i} {k} " + "word " * 30},
                     {"from": "gpt", "value": "answer " * 6}]  # fmt: skip
        return {"conversations": msgs}

    path = tmp_path / "chats.json"
    path.write_text(_json.dumps([conv(i, 3) for i in range(4)]))
    workload = spec(num_requests=12, dataset={"kind": "sharegpt", "path": str(path), "turns": "all"},
                    arrival={"kind": "sessions", "clients": 2, "think_time_s": 0.3})  # fmt: skip
    result = await run_benchmark(metrics_sim, workload)
    hit_rate = _cache_hit_rate(metrics_sim)
    assert result.completed == 12, result.errors()
    prompts = [p for p, _ in zip(make_prompts(workload), range(12), strict=False)]
    session_of = {p.text: p.session for p in prompts}
    by_index = sorted(result.records, key=lambda r: r.index)  # the stream's order
    turns: dict[int, list] = {}
    for p, r in zip(prompts, by_index, strict=True):
        turns.setdefault(p.session, []).append(r)
    assert len(turns) == 4 and all(len(t) == 3 for t in turns.values()) and len(session_of) == 12
    for rs in turns.values():  # each turn leaves after the answer to the one before, plus the think time
        for before, after in itertools.pairwise(rs):
            assert after.sent_ns - before.done_ns >= 0.3e9 - 5e6
    # at most two conversations at a time: the third starts after one of the first two ended
    starts = sorted((rs[0].sent_ns, rs[-1].done_ns) for rs in turns.values())
    assert starts[2][0] >= min(starts[0][1], starts[1][1])
    assert hit_rate > 0.3  # a turn's prompt opens with the one before it


async def test_prompt_lengths_the_server_counts_otherwise_are_measured(sim: str, tmp_path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from tuner.loadgen.prompts import WORDS

    words = await run_benchmark(sim, spec(num_requests=6))
    assert words.prompt_len_ratio == 1.0  # the simulator counts one token per word, as the words were built
    # exact lengths in a subword tokenizer's tokens: the simulator (words) counts fewer
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    tok.train_from_iterator(
        [" ".join(WORDS)] * 5, trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>"])
    )
    tok.save(str(tmp_path / "tokenizer.json"))
    exact = await run_benchmark(sim, spec(num_requests=6, input_len=60, tokenizer=str(tmp_path)))
    assert exact.completed == 6 and exact.prompt_len_ratio < 0.7
    assert exact.flat()["prompt_len_ratio"] == exact.prompt_len_ratio
