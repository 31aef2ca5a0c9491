"""How much load can the benchmark client itself generate on one core, and how biased is its TTFT?

A minimal HTTP/1.1 SSE server (raw asyncio protocol, no framework) runs in a separate process on
another core and answers SGLang's ``/generate`` at once: one chunk per output token, written
back to back. It stamps ``time.perf_counter_ns()`` when a request is complete on its side and
just before it writes the first chunk (CLOCK_MONOTONIC: the same clock in both processes).

The client process is pinned to one core and measured, side by side in one run:
- ``ours``: :func:`tuner.loadgen.run_benchmark` (parsing, records, hang watch, windows);
- ``bare``: the least an aiohttp streaming client can do (read the bytes, count events),
  the ceiling any aiohttp-based client shares; ``ours/bare`` is our bookkeeping's cost.
TTFT bias = client-seen first chunk − server's first-chunk stamp; send bias = server receive
stamp − client send stamp. Both are what the client adds to TTFT on top of the server.

    .venv/bin/python bench/client_ceiling.py            # prints the table, writes the results file
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuner.loadgen import WorkloadSpec, make_prompts, run_benchmark

RESULTS = Path(__file__).resolve().parent / "results" / "client_ceiling.md"
_CONTENT_LENGTH = re.compile(rb"(?i)content-length:\s*(\d+)")


# ---------------------------------------------------------------------------------------------
# The instant server (separate process)
# ---------------------------------------------------------------------------------------------
def _event(k: int) -> bytes:
    """The k-th chunk of an answer, SGLang framing (cumulative text), HTTP-chunked."""
    event = {"text": "tok " * k, "meta_info": {"completion_tokens": k, "prompt_tokens": 8}}
    payload = b"data: " + json.dumps(event).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(payload), payload)


_DONE = b"%x\r\n%s\r\n0\r\n\r\n" % (len(b"data: [DONE]\n\n"), b"data: [DONE]\n\n")
_EVENTS = [b""] + [_event(k) for k in range(1, 257)]  # built once: the server only writes


class _InstantSSE(asyncio.Protocol):
    stamps: ClassVar[dict[str, tuple[int, int]]] = {}  # prompt text -> (received_ns, first_write_ns)
    busy_ns = 0  # time spent in handlers (to show whether the server is the bottleneck)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head = self.buf[:end]
            m = _CONTENT_LENGTH.search(head)
            n = int(m.group(1)) if m else 0
            if len(self.buf) < end + 4 + n:
                return
            body, self.buf = self.buf[end + 4 : end + 4 + n], self.buf[end + 4 + n :]
            self._handle(head, body)

    def _handle(self, head: bytes, body: bytes) -> None:
        received = time.perf_counter_ns()
        path = head.split(b" ", 2)[1]
        if path == b"/stamps":
            data = json.dumps({"stamps": _InstantSSE.stamps, "busy_s": _InstantSSE.busy_ns / 1e9}).encode()
            _InstantSSE.stamps = {}
            _InstantSSE.busy_ns = 0
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data))
            return
        req = json.loads(body)
        n_out = req["sampling_params"]["max_new_tokens"]
        key = req.get("text") or ""
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        first = time.perf_counter_ns()
        write = self.transport.write
        for k in range(1, n_out + 1):
            write(_EVENTS[k])
        write(_DONE)
        _InstantSSE.stamps[key] = (received, first)
        _InstantSSE.busy_ns += time.perf_counter_ns() - received


def serve(port: int, core: int | None) -> None:
    """Run the instant server on 127.0.0.1:port (pinned to ``core`` when given)."""
    if core is not None:
        os.sched_setaffinity(0, {core})

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_InstantSSE, "127.0.0.1", port, backlog=1024)
        print("ready", flush=True)
        await server.serve_forever()

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------
# The two clients
# ---------------------------------------------------------------------------------------------
@dataclass
class Row:
    scenario: str
    client: str
    requests: int
    seconds: float
    chunks: int
    cpu_s: float
    ttft_bias_ms: tuple[float, float] | None = None  # p50, p99
    send_bias_ms: tuple[float, float] | None = None
    server_busy: float | None = None  # server handler time / wall time

    @property
    def req_s(self) -> float:
        return self.requests / self.seconds

    @property
    def chunks_s(self) -> float:
        return self.chunks / self.seconds


async def fetch_stamps(url: str) -> tuple[dict[str, tuple[int, int]], float]:
    async with aiohttp.ClientSession() as s, s.get(url + "/stamps") as r:
        data = json.loads(await r.read())
    return {k: tuple(v) for k, v in data["stamps"].items()}, data["busy_s"]  # type: ignore[misc]


async def run_ours(url: str, workload: WorkloadSpec, scenario: str) -> Row:
    await fetch_stamps(url)  # clears the server's stamps
    cpu0 = time.process_time()
    result = await run_benchmark(url, workload)
    cpu = time.process_time() - cpu0
    stamps, busy = await fetch_stamps(url)
    assert result.failed == 0 and not result.stalled, result.errors()
    prompts = [p.text for p in itertools.islice(make_prompts(workload), len(result.records))]
    ttft_bias, send_bias = [], []
    for r in result.records:
        received, first = stamps[prompts[r.index] or ""]
        assert r.first_token_ns is not None
        ttft_bias.append((r.first_token_ns - first) / 1e6)
        send_bias.append((received - r.sent_ns) / 1e6)
    chunks = sum(len(r.chunk_times_ns) for r in result.records)
    return Row(
        scenario,
        "ours",
        result.completed,
        result.duration_s,
        chunks,
        cpu,
        _p50_p99(ttft_bias),
        _p50_p99(send_bias),
        busy / result.duration_s,
    )


async def run_bare(url: str, workload: WorkloadSpec, scenario: str) -> Row:
    """The floor: aiohttp streaming with nothing but an event count."""
    assert workload.num_requests is not None and workload.arrival.kind == "closed"
    bodies = [
        {"text": p.text, "sampling_params": {"max_new_tokens": p.output_len}, "stream": True}
        for p in itertools.islice(make_prompts(workload), workload.num_requests)
    ]
    todo = iter(bodies)
    chunks = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal chunks
        for body in todo:
            async with session.post(url + "/generate", json=body) as resp:
                async for data in resp.content.iter_any():
                    chunks += data.count(b"data: {")

    await fetch_stamps(url)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(worker(session) for _ in range(workload.arrival.clients)))
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    _, busy = await fetch_stamps(url)
    return Row(scenario, "bare", len(bodies), seconds, chunks, cpu, server_busy=busy / seconds)


def _p50_p99(values: list[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(values, [50, 99])
    return float(p50), float(p99)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------
SCENARIOS: list[tuple[str, dict]] = [
    # name, workload fields: 1-token answers measure requests/s, 64-token answers chunks/s.
    (
        "1 client, 1 token",
        {"output_len": 1, "num_requests": 1500, "arrival": {"kind": "closed", "clients": 1}},
    ),
    (
        "16 clients, 1 token",
        {"output_len": 1, "num_requests": 3000, "arrival": {"kind": "closed", "clients": 16}},
    ),
    (
        "64 clients, 1 token",
        {"output_len": 1, "num_requests": 3000, "arrival": {"kind": "closed", "clients": 64}},
    ),
    (
        "1 client, 64 tokens",
        {"output_len": 64, "num_requests": 300, "arrival": {"kind": "closed", "clients": 1}},
    ),
    (
        "16 clients, 64 tokens",
        {"output_len": 64, "num_requests": 600, "arrival": {"kind": "closed", "clients": 16}},
    ),
    (
        "64 clients, 64 tokens",
        {"output_len": 64, "num_requests": 600, "arrival": {"kind": "closed", "clients": 64}},
    ),
]


def table(rows: list[Row], poisson: list[Row]) -> str:
    by = {(r.scenario, r.client): r for r in rows}
    lines = [
        "| scenario | ours req/s | bare req/s | ours/bare | ours chunks/s | bare chunks/s | ours/bare "
        "| CPU µs/chunk ours / bare | TTFT bias p50 / p99 ms | send bias p50 / p99 ms | server busy |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, _ in SCENARIOS:
        o, b = by[(name, "ours")], by[(name, "bare")]
        assert o.ttft_bias_ms and o.send_bias_ms
        lines.append(
            f"| {name} | {o.req_s:,.0f} | {b.req_s:,.0f} | {o.req_s / b.req_s:.2f} | {o.chunks_s:,.0f} "
            f"| {b.chunks_s:,.0f} | {o.chunks_s / b.chunks_s:.2f} "
            f"| {o.cpu_s / o.chunks * 1e6:.1f} / {b.cpu_s / b.chunks * 1e6:.1f} "
            f"| {o.ttft_bias_ms[0]:.2f} / {o.ttft_bias_ms[1]:.2f} "
            f"| {o.send_bias_ms[0]:.2f} / {o.send_bias_ms[1]:.2f} | {o.server_busy:.0%} |"
        )
    lines += [
        "",
        "Open loop (Poisson) at fractions of our client's 64-client, 64-token ceiling (our client only):",
        "",
        "| scenario | achieved req/s | chunks/s | TTFT bias p50 / p99 ms | send bias p50 / p99 ms | server busy |",
        "|---|---|---|---|---|---|",
    ]
    for o in poisson:
        assert o.ttft_bias_ms and o.send_bias_ms
        lines.append(
            f"| {o.scenario} | {o.req_s:,.1f} | {o.chunks_s:,.0f} "
            f"| {o.ttft_bias_ms[0]:.2f} / {o.ttft_bias_ms[1]:.2f} | {o.send_bias_ms[0]:.2f} / "
            f"{o.send_bias_ms[1]:.2f} | {o.server_busy:.0%} |"
        )
    return "\n".join(lines)


async def measure(url: str, repeat: int) -> tuple[list[Row], list[Row]]:
    base: dict[str, object] = {"input_len": 8, "stall_timeout_s": 30, "window_requests": 100}
    rows: list[Row] = []
    # Warm both paths (connections, imports, caches) before anything is timed.
    warm = WorkloadSpec.model_validate(base | {"output_len": 4, "num_requests": 200})
    await run_ours(url, warm, "warm")
    await run_bare(url, warm, "warm")
    for name, fields in SCENARIOS:
        w = WorkloadSpec.model_validate(base | fields)
        tries: dict[str, list[Row]] = {"ours": [], "bare": []}
        for i in range(repeat):
            # Interleave and alternate the order so neither client always runs on a warmer machine.
            for client in ("ours", "bare") if i % 2 == 0 else ("bare", "ours"):
                run = run_ours if client == "ours" else run_bare
                tries[client].append(await run(url, w, name))
        for client_rows in tries.values():  # keep the run with the median request rate
            rows.append(sorted(client_rows, key=lambda r: r.req_s)[len(client_rows) // 2])
    ceiling = next(r for r in rows if r.scenario == "64 clients, 64 tokens" and r.client == "ours").req_s
    poisson = []
    for frac, cap in ((0.25, None), (0.5, None), (0.5, 64), (0.75, 64)):
        rate = frac * ceiling
        arrival = {"kind": "poisson", "rate": rate, "max_concurrency": cap}
        size = {"output_len": 64, "num_requests": max(100, int(rate * 3)), "arrival": arrival}
        w = WorkloadSpec.model_validate(base | size)
        capped = f", max_concurrency {cap}" if cap else ""
        name = f"{frac:.0%} of ceiling ({rate:,.0f} req/s){capped}, 64 tokens"
        poisson.append(await run_ours(url, w, name))
    return rows, poisson


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--core", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=18431)
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; the median one is kept")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results file (markdown)")
    parser.add_argument(
        "--machine", default="this machine", help="a name for the machine, for the section title"
    )
    parser.add_argument(
        "--append", action="store_true", help="add a section to the results file, do not replace it"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; do not write the results file")
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve, args.core)
        return

    cores = sorted(os.sched_getaffinity(0))
    client_core, server_core = cores[0], (cores[1] if len(cores) > 1 else cores[0])
    cmd = [sys.executable, __file__, "--serve", str(args.port), "--core", str(server_core)]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        os.sched_setaffinity(0, {client_core})
        load = os.getloadavg()[0]
        rows, poisson = asyncio.run(measure(f"http://127.0.0.1:{args.port}", args.repeat))
    finally:
        server.terminate()
        server.wait(10)
    text = table(rows, poisson)
    cpu = _cpu_model()
    header = (
        f"Client pinned to core {client_core}, server to core {server_core} ({len(cores)} usable cores; "
        f"{cpu}); load average {load:.1f} at start; Python {sys.version.split()[0]}, aiohttp "
        f"{aiohttp.__version__}; median of {args.repeat} runs per cell; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."
    )
    print(header + "\n\n" + text)
    if not args.no_write:
        section = f"## {args.machine}\n\n{header}\n\n{text}\n"
        args.output.parent.mkdir(parents=True, exist_ok=True)
        if args.append and args.output.exists():
            args.output.write_text(args.output.read_text() + "\n" + section)
        else:
            args.output.write_text(_INTRO + "\n" + section)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


_INTRO = (
    "# Benchmark client ceiling\n\n"
    "Produced by `bench/client_ceiling.py` (method in its docstring): an instant SSE server in its own\n"
    "process and core; our client (`run_benchmark`) and a bare aiohttp streaming loop measured side by\n"
    "side in one run. `ours/bare` is the cost of our parsing and bookkeeping. TTFT bias is what the\n"
    "client adds to a TTFT measurement (client-seen first chunk minus the server's write stamp); send\n"
    "bias is the time from the client's send stamp to the server having the whole request.\n"
)


if __name__ == "__main__":
    main()
