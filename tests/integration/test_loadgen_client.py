"""The benchmark client against a real aiohttp SSE server with known timings.

The server runs in its own thread and event loop and speaks SGLang's ``/generate`` framing
(cumulative text, ``meta_info.completion_tokens``) and OpenAI's completions/chat streams.
Its behaviour (delays, tokens per chunk, failures, hangs) is set per test.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from tuner.core.metric_names import FLAT_METRICS
from tuner.loadgen import SLOs, WorkloadSpec, run_benchmark
from tuner.loadgen.arrival import poisson_offsets
from tuner.testing.threaded_app import ThreadedApp


@dataclass
class FakeEngine:
    """Behaviour knobs and server-side observations of the test server."""

    ttft_s: float = 0.0
    itl_s: float = 0.0
    tokens_per_chunk: int = 1
    fail_every: int = 0  # every k-th request answers HTTP 500
    hang_after_chunks: int | None = None  # stop writing (but keep the connection) after k chunks
    with_meta: bool = True
    error_after_chunks: int | None = None  # send an SGLang-style error event after k chunks
    arrivals_ns: list[int] = field(default_factory=list)
    bodies: list[dict] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.arrivals_ns.append(time.perf_counter_ns())
        self.bodies.append(body)
        n = len(self.bodies)
        if self.fail_every and n % self.fail_every == 0:
            return web.Response(status=500, text="injected failure")
        api = {"/generate": "generate", "/v1/completions": "completions"}.get(request.path, "chat")
        if api == "generate":
            out_len = body["sampling_params"]["max_new_tokens"]
            prompt_len = len(body["input_ids"]) if "input_ids" in body else len(body["text"].split())
        else:
            out_len = body["max_tokens"]
            text = body["prompt"] if api == "completions" else body["messages"][0]["content"]
            prompt_len = len(text.split())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._stream(request, api, prompt_len, out_len, body)
        except ConnectionResetError:  # the client cancelled (stall, early stop, timeout)
            return web.Response(status=499)
        finally:
            self.in_flight -= 1

    async def _stream(
        self, request: web.Request, api: str, prompt_len: int, out_len: int, body: dict
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        sent = 0
        chunks = 0
        await asyncio.sleep(self.ttft_s)
        while sent < out_len:
            if self.hang_after_chunks is not None and chunks >= self.hang_after_chunks:
                await asyncio.sleep(3600)
            if chunks:
                await asyncio.sleep(self.itl_s)
            if self.error_after_chunks is not None and chunks >= self.error_after_chunks:
                await resp.write(b'data: {"error": {"message": "CUDA error: an illegal memory access"}}\n\n')
                break
            k = min(self.tokens_per_chunk, out_len - sent)
            sent += k
            chunks += 1
            if api == "generate":
                event: dict = {"text": " ".join(["tok"] * sent)}
                if self.with_meta:
                    event["meta_info"] = {"completion_tokens": sent, "prompt_tokens": prompt_len}
            elif api == "completions":
                event = {"choices": [{"index": 0, "text": " tok" * k}], "usage": None}
            else:
                event = {"choices": [{"index": 0, "delta": {"content": " tok" * k}}], "usage": None}
            await resp.write(f"data: {json.dumps(event)}\n\n".encode())
        if api != "generate" and body.get("stream_options", {}).get("include_usage"):
            usage = {
                "prompt_tokens": prompt_len,
                "completion_tokens": sent,
                "total_tokens": prompt_len + sent,
            }
            await resp.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


class ServerThread(ThreadedApp):
    """An aiohttp.web server on 127.0.0.1 with its own event loop in a daemon thread."""

    paths = ("/generate", "/v1/completions", "/v1/chat/completions")

    def __init__(self) -> None:
        self.engine = FakeEngine()
        super().__init__()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        return await self.engine.handle(request)  # the engine is swapped between tests


@pytest.fixture(scope="module")
def server_thread() -> Iterator[ServerThread]:
    yield ServerThread()


@pytest.fixture
def server(server_thread: ServerThread) -> ServerThread:
    server_thread.engine = FakeEngine()  # fresh knobs and observations for each test
    return server_thread


def spec(**kw) -> WorkloadSpec:
    base = {
        "input_len": 16,
        "output_len": 8,
        "num_requests": 8,
        "stall_timeout_s": 5,
        "request_timeout_s": 10,
    }
    return WorkloadSpec.model_validate(base | kw)


async def test_generate_metrics_match_injected_delays(server: ServerThread) -> None:
    server.engine.ttft_s, server.engine.itl_s, server.engine.tokens_per_chunk = 0.1, 0.02, 2
    result = await run_benchmark(server.url, spec(num_requests=6, arrival={"kind": "closed", "clients": 2}))
    assert (result.completed, result.failed, result.stalled) == (6, 0, False)
    # 8 tokens in 4 chunks of 2: first at ~100 ms, then one every ~20 ms.
    assert 100 <= result.ttft.median < 130
    assert 9.5 <= result.itl.median < 15  # a 20 ms gap spread over the 2 tokens of the chunk
    assert result.itl.n == 6 * 3 * 2
    # TPOT = (E2E - TTFT) / (8 - 1) ~ 60 ms / 7
    assert 8.3 <= result.tpot.median < 12
    assert 160 <= result.e2e.median < 200
    assert result.output_tokens == 6 * 8 and result.input_tokens == 6 * 16
    r = result.records[0]
    assert r.chunk_tokens == [2, 2, 2, 2] and r.output_tokens == 8 and r.ok and r.status == 200
    flat = result.flat()
    assert list(flat) == list(FLAT_METRICS)
    assert flat["output_throughput"] == pytest.approx(48 / result.duration_s)
    # Two clients, each busy all the time: sum(E2E)/dur is close to 2.
    assert 1.6 < flat["concurrency"] <= 2.05


@pytest.mark.parametrize("api", ["completions", "chat"])
async def test_openai_streams_one_token_per_chunk_and_usage(server: ServerThread, api: str) -> None:
    server.engine.ttft_s, server.engine.itl_s = 0.05, 0.01
    result = await run_benchmark(server.url, spec(api=api, num_requests=3), model="m")
    assert (result.completed, result.failed) == (3, 0)
    r = result.records[0]
    assert r.chunk_tokens == [1] * 8 and r.output_tokens == 8 and r.prompt_tokens == 16
    assert 50 <= result.ttft.median < 80 and 10 <= result.itl.median < 20
    body = server.engine.bodies[0]
    assert body["model"] == "m" and body["stream_options"] == {"include_usage": True}
    assert body["ignore_eos"] is True and body["max_tokens"] == 8


async def test_generate_body_and_input_ids(server: ServerThread) -> None:
    result = await run_benchmark(server.url, spec(num_requests=2, random_ids_vocab=1000))
    assert result.completed == 2
    body = server.engine.bodies[0]
    assert len(body["input_ids"]) == 16 and all(0 <= i < 1000 for i in body["input_ids"])
    assert body["sampling_params"] == {"max_new_tokens": 8, "temperature": 0, "ignore_eos": True}
    assert body["stream"] is True and "text" not in body


async def test_without_meta_info_each_chunk_is_one_token(server: ServerThread) -> None:
    server.engine.with_meta = False
    result = await run_benchmark(server.url, spec(num_requests=2))
    assert result.records[0].chunk_tokens == [1] * 8 and result.output_tokens == 16


async def test_http_errors_are_recorded_not_raised(server: ServerThread) -> None:
    server.engine.fail_every = 3
    result = await run_benchmark(server.url, spec(num_requests=9))
    assert (result.completed, result.failed) == (6, 3)
    assert result.error_rate == pytest.approx(1 / 3)
    bad = [r for r in result.records if not r.ok]
    assert all(r.status == 500 and "injected failure" in (r.error or "") for r in bad)
    assert result.errors() == {"HTTP 500: injected failure": 3}


async def test_connection_refused_is_recorded() -> None:
    result = await run_benchmark("http://127.0.0.1:9", spec(num_requests=3))
    assert (result.completed, result.failed, result.error_rate) == (0, 3, 1.0)
    assert all("Connect" in (r.error or "") for r in result.records)


async def test_request_timeout(server: ServerThread) -> None:
    server.engine.ttft_s = 2.0
    t = time.monotonic()
    result = await run_benchmark(server.url, spec(num_requests=2, request_timeout_s=0.3))
    assert time.monotonic() - t < 1.5
    assert result.failed == 2 and all("timeout" in (r.error or "") for r in result.records)


async def test_stall_is_detected_and_in_flight_requests_fail(server: ServerThread) -> None:
    server.engine.hang_after_chunks = 1
    t = time.monotonic()
    result = await run_benchmark(
        server.url, spec(num_requests=4, arrival={"kind": "closed", "clients": 2}, stall_timeout_s=0.5)
    )
    assert time.monotonic() - t < 2.5
    assert result.stalled and not result.stopped_early
    assert result.failed == 2 and all("stalled" in (r.error or "") for r in result.records)


async def test_warmup_excluded_and_windows(server: ServerThread) -> None:
    seen: list[tuple[int, int | None]] = []
    result = await run_benchmark(
        server.url,
        spec(num_requests=10, warmup_requests=3, window_requests=4),
        on_progress=lambda done, total, flat: seen.append((done, total)),
    )
    assert len(result.records) == 13 and sum(r.warmup for r in result.records) == 3
    assert result.completed == 10
    assert [r.window for r in result.records if not r.warmup] == [0] * 4 + [1] * 4 + [2] * 2
    assert [w["completed"] for w in result.windows] == [4, 4, 2]
    assert (4, 10) in seen and (8, 10) in seen and seen[-1] == (10, 10)


async def test_early_stop_cancels_outstanding(server: ServerThread) -> None:
    server.engine.ttft_s = 0.05
    calls: list[int] = []

    def should_stop(window: int, partial) -> bool:
        calls.append(window)
        return window == 1 and partial.completed == 8

    result = await run_benchmark(
        server.url,
        spec(num_requests=40, window_requests=4, arrival={"kind": "closed", "clients": 3}),
        should_stop=should_stop,
    )
    assert result.stopped_early and calls == [0, 1]
    assert result.completed == 8 and result.failed == 0 and len(result.windows) == 2
    assert len(server.engine.bodies) < 14  # nothing new after the stop


async def test_closed_loop_respects_client_count(server: ServerThread) -> None:
    server.engine.ttft_s = 0.05
    await run_benchmark(server.url, spec(num_requests=20, arrival={"kind": "closed", "clients": 4}))
    assert server.engine.max_in_flight == 4


async def test_poisson_rate_and_max_concurrency(server: ServerThread) -> None:
    rate = 100.0
    result = await run_benchmark(
        server.url, spec(num_requests=300, arrival={"kind": "poisson", "rate": rate})
    )
    assert result.completed == 300
    assert len(server.engine.arrivals_ns) >= 300  # and every one of them reached the server
    # The arrival process is the schedule of send times: exponential gaps of mean 1/rate,
    # coefficient of variation 1 (300 samples: ~6 % standard error) ...
    schedule = list(itertools.islice(poisson_offsets(rate, random.Random("arrival:0")), 300))
    gaps = [b - a for a, b in itertools.pairwise([0.0, *schedule])]
    assert statistics.mean(gaps) == pytest.approx(1 / rate, rel=0.2)
    assert statistics.stdev(gaps) / statistics.mean(gaps) == pytest.approx(1.0, abs=0.25)
    # ... and the client keeps it: each request is sent at its scheduled time. The client's send
    # stamps are compared with the schedule (what the server sees adds each request's connection
    # set-up, a fresh one per request as in bench_serving). A stall of this busy machine makes a few
    # sends late, then the schedule catches up (offsets are absolute); it never sends early.
    sent = sorted(r.sent_ns / 1e9 for r in result.records if not r.warmup)
    start = min(s - o for s, o in zip(sent, schedule, strict=True))  # the least late alignment
    late_ms = sorted((s - start - o) * 1000 for s, o in zip(sent, schedule, strict=True))
    assert late_ms[len(late_ms) // 2] < 5.0, late_ms  # the median send within 5 ms of its time
    assert (sent[-1] - sent[0]) / (schedule[-1] - schedule[0]) == pytest.approx(1.0, rel=0.05)

    server.engine = type(server.engine)(ttft_s=0.1)
    capped = spec(num_requests=20, arrival={"kind": "poisson", "rate": 1000, "max_concurrency": 3})
    await run_benchmark(server.url, capped)
    assert server.engine.max_in_flight == 3


async def test_duration_run(server: ServerThread) -> None:
    server.engine.ttft_s = 0.02
    result = await run_benchmark(server.url, spec(num_requests=None, duration_s=0.5))
    assert 0.5 <= result.duration_s < 0.8
    assert 10 <= result.completed <= 30  # about 0.5 s / 20 ms with one client


async def test_goodput_counts_requests_meeting_slos(server: ServerThread) -> None:
    server.engine.ttft_s = 0.05
    result = await run_benchmark(server.url, spec(num_requests=4), slos=SLOs(ttft_p99_ms=1000))
    assert result.goodput == pytest.approx(result.request_throughput)
    strict = await run_benchmark(server.url, spec(num_requests=4), slos=SLOs(ttft_p99_ms=10))
    assert strict.goodput == 0 and strict.completed == 4


async def test_same_seed_same_prompts(server: ServerThread) -> None:
    await run_benchmark(server.url, spec(num_requests=3, seed=7))
    first = [b["text"] for b in server.engine.bodies]
    server.engine.bodies.clear()
    await run_benchmark(server.url, spec(num_requests=3, seed=7))
    assert [b["text"] for b in server.engine.bodies] == first
    server.engine.bodies.clear()
    await run_benchmark(server.url, spec(num_requests=3, seed=8))
    assert [b["text"] for b in server.engine.bodies] != first


async def test_error_event_in_stream_fails_the_request(server: ServerThread) -> None:
    server.engine.error_after_chunks = 2
    result = await run_benchmark(server.url, spec(num_requests=2))
    assert result.failed == 2 and result.completed == 0
    r = result.records[0]
    assert r.status == 200 and len(r.chunk_times_ns) == 2
    assert r.error == "error in stream: CUDA error: an illegal memory access"
