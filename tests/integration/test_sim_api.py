"""The simulator's command line and HTTP API, against the real process (shared/facts/sglang.md)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tuner.engines import sglang, sglang_flags
from tuner.sim.process import SimProcess

# A fast profile (tiny model on an H100: ~1 ms steps) for the framing tests.
FAST = ["--sim-gpu", "h100", "--sim-model", "qwen2.5-0.5b", "--sim-noise", "0", "--sim-seed", "7"]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimProcess]:
    with SimProcess(
        [*FAST, "--enable-metrics", "--served-model-name", "simmodel"], model_path="Qwen/Qwen2.5-0.5B"
    ) as s:
        s.wait_ready()
        yield s


def sse(body: bytes) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    events = [e for e in body.decode().split("\n\n") if e.strip()]
    assert all(e.startswith("data: ") for e in events), events
    return [e[len("data: ") :] for e in events]


def test_unknown_flag_is_an_argparse_error_with_exit_code_2() -> None:
    with SimProcess(["--disable-flashinfer"]) as s:
        assert s.wait_exit() == 2
        assert "sglang serve: error: unrecognized arguments: --disable-flashinfer" in s.log_text()


def test_flag_set_follows_the_version_profile() -> None:
    with SimProcess(["--cuda-graph-max-bs", "4"]) as s:
        assert s.wait_exit() == 2
    with SimProcess(["--sim-sglang-version", "0.3.6", "--schedule-policy", "lof"]) as s:
        assert s.wait_exit() == 2
        assert "invalid choice: 'lof'" in s.log_text()
    with SimProcess([*FAST, "--sim-sglang-version", "0.5.14", "--cuda-graph-max-bs", "4"]) as s:
        s.wait_ready()
        assert json.loads(s.get("/server_info")[1])["version"] == "0.5.14"


def test_startup_milestones_and_deprecation_warning() -> None:
    with SimProcess([*FAST, "--disable-cuda-graph"]) as s:
        s.wait_ready()
        log = s.log_text()
    assert sglang_flags.DEPRECATED["disable-cuda-graph"][1] in log
    order = [
        "Load weight begin",
        "KV Cache is allocated",
        "max_total_num_tokens=",
        "Uvicorn running",
        sglang.READY_LINE,
    ]
    positions = [log.index(m) for m in order]
    assert positions == sorted(positions)


def test_health_is_503_until_warmup_has_run() -> None:
    # The 32B model on the RTX 5090 profile decodes at ~80 ms a token: the 8-token warm-up is visible.
    flags = ["--attention-backend", "triton", "--sampling-backend", "pytorch", "--quantization", "awq"]
    with SimProcess([*flags, "--disable-cuda-graph", "--sim-noise", "0"]) as s:
        while s.status("/model_info") != 200:
            assert s.returncode is None, s.log_text()
            time.sleep(0.01)
        assert s.get("/health")[0] == 503
        assert s.get("/v1/models")[0] == 200
        s.wait_ready()
        assert s.get("/health")[0] == 200
        assert sglang.READY_LINE in s.log_text()


def test_generate_non_streamed(sim: SimProcess) -> None:
    status, body = sim.post(
        "/generate", {"text": "a b c d", "sampling_params": {"max_new_tokens": 5, "ignore_eos": True}}
    )
    assert status == 200
    out = json.loads(body)
    meta = out["meta_info"]
    assert meta["prompt_tokens"] == 4 and meta["completion_tokens"] == 5
    assert meta["finish_reason"] == {"type": "length", "length": 5}
    assert meta["e2e_latency"] > 0 and len(out["output_ids"]) == 5 and len(out["text"].split()) == 5


def test_generate_streamed_carries_cumulative_text(sim: SimProcess) -> None:
    status, body = sim.post(
        "/generate",
        {
            "input_ids": [1, 2, 3],
            "sampling_params": {"max_new_tokens": 4, "ignore_eos": True},
            "stream": True,
        },
    )
    assert status == 200
    events = sse(body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) == 4
    texts = [c["text"] for c in chunks]
    assert all(texts[i + 1].startswith(texts[i]) and len(texts[i + 1]) > len(texts[i]) for i in range(3))
    assert [c["meta_info"]["finish_reason"] for c in chunks[:-1]] == [None] * 3
    assert chunks[-1]["meta_info"]["finish_reason"]["type"] == "length"
    assert chunks[-1]["meta_info"]["prompt_tokens"] == 3


def test_completions_stream_with_usage_and_done(sim: SimProcess) -> None:
    body = {"model": "simmodel", "prompt": "one two three", "max_tokens": 6, "stream": True, "ignore_eos": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    status, raw = sim.post("/v1/completions", body)
    assert status == 200
    events = sse(raw)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 6,
        "total_tokens": 9,
        "reasoning_tokens": 0,
    }
    text_chunks = chunks[:-1]
    assert all(c["object"] == "text_completion" for c in text_chunks)
    assert "".join(c["choices"][0]["text"] for c in text_chunks).split().__len__() == 6  # deltas add up
    assert text_chunks[-1]["choices"][0]["finish_reason"] == "length"
    # Without include_usage: no usage chunk (every chunk says "usage": null, as SGLang's do).
    body.pop("stream_options")
    chunks = [json.loads(e) for e in sse(sim.post("/v1/completions", body)[1])[:-1]]
    assert all(c["usage"] is None and c["choices"] for c in chunks)


def test_chat_completions_streamed_and_not(sim: SimProcess) -> None:
    msg = {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 3, "ignore_eos": True}
    status, raw = sim.post("/v1/chat/completions", msg)
    out = json.loads(raw)
    assert status == 200 and out["object"] == "chat.completion"
    assert out["choices"][0]["message"]["role"] == "assistant" and out["usage"]["completion_tokens"] == 3
    events = sse(sim.post("/v1/chat/completions", {**msg, "stream": True})[1])
    chunks = [json.loads(e) for e in events[:-1]]
    assert events[-1] == "[DONE]" and chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_info_endpoints(sim: SimProcess) -> None:
    for path in ("/model_info", "/get_model_info"):
        status, body = sim.get(path)
        assert status == 200 and json.loads(body)["model_path"] == "Qwen/Qwen2.5-0.5B"
    for path in ("/server_info", "/get_server_info"):
        info = json.loads(sim.get(path)[1])
        assert info["version"] == sglang_flags.DEFAULT_VERSION
        assert info["schedule_policy"] == "fcfs" and info["max_total_num_tokens"] > 0
        mem = info["gpu_memory"]
        assert mem["source"] == "simulator" and 0 < mem["used_mib"] < mem["total_mib"]
    models = json.loads(sim.get("/v1/models")[1])
    assert models["object"] == "list" and models["data"][0]["id"] == "simmodel"


def test_flush_cache_and_metrics(sim: SimProcess) -> None:
    assert sim.post("/flush_cache", {})[0] == 200
    status, body = sim.get("/metrics")
    assert status == 200
    text = body.decode()
    for name in ("sglang:num_running_reqs", "sglang:num_queue_reqs", "sglang:token_usage", "sglang:gen_throughput",
                 "sglang:cache_hit_rate", "sglang:time_to_first_token_seconds_bucket",
                 "sglang:inter_token_latency_seconds_count", "sglang:e2e_request_latency_seconds_sum",
                 "sglang:prompt_tokens_total", "sglang:generation_tokens_total"):  # fmt: skip
        assert name in text, name


def test_metrics_need_the_flag() -> None:
    with SimProcess(FAST) as s:
        s.wait_ready()
        assert s.get("/metrics")[0] == 404


def test_request_longer_than_the_pool_is_rejected_unless_auto_truncate() -> None:
    long = {"input_ids": list(range(600)), "sampling_params": {"max_new_tokens": 8}}
    with SimProcess([*FAST, "--max-total-tokens", "512"]) as s:
        s.wait_ready()
        status, body = s.post("/generate", long)
        # SGLang's scheduler: max_req_input_len = min(context - 1, pool - 1) - 5 = 506
        message = json.loads(body)["error"]["message"]
        assert status == 400 and "exceeds the maximum allowed length (506 tokens)" in message
    with SimProcess([*FAST, "--max-total-tokens", "512", "--allow-auto-truncate"]) as s:
        s.wait_ready()
        status, body = s.post("/generate", long)
        assert status == 200 and json.loads(body)["meta_info"]["prompt_tokens"] == 506


def test_bad_requests_are_400(sim: SimProcess) -> None:
    assert sim.post("/generate", {"sampling_params": {}})[0] == 400
    assert sim.post("/v1/chat/completions", {"max_tokens": 3})[0] == 400
