"""Do our load generator and SGLang's own benchmark client report the same numbers for the same server?

One real SGLang 0.5.23 server (CPU engine, the tiny random Llama of ``tuner.models.sglang_tiny``;
docs/sglang-cpu.md) is started once and measured by both clients with the same load:
- ``ours``: :func:`tuner.loadgen.run_benchmark` in this process: ``/generate``, streamed, prompts of
  exactly ``--input-len`` random token ids, ``ignore_eos``, a closed loop of ``--concurrency``
  clients, one warm-up request;
- ``theirs``: ``python -m sglang.benchmark.serving`` from the SGLang venv, as a subprocess:
  ``--backend sglang`` (``/generate``, streamed), ``--dataset-name random-ids --tokenize-prompt
  --random-range-ratio 1`` (exactly ``--input-len`` token ids; without ``--tokenize-prompt`` the
  ids are decoded to text and re-tokenized by the server: 96 ids became 96-220 tokens),
  ``ignore_eos`` (its default), ``--max-concurrency N --request-rate inf``, ``--warmup-requests 1``,
  ``--flush-cache``. Its module is imported before the round starts and ``cli_main`` (what
  ``-m`` runs) is released by a line on stdin, so that the two measured phases of a round follow
  each other within seconds instead of the 10-40 s its imports take here.
The tiny model has no EOS token, so every request of either client yields exactly ``--output-len``.
Rounds are interleaved with the order alternating (ours, theirs | theirs, ours | …) so drift of the
shared machine hits both; each round has its own seed, shared by both clients. The radix cache is
flushed before every measured phase (theirs: ``--flush-cache`` after its warm-up, whose prompt is
its first measured prompt; ours: ``POST /flush_cache`` before the run, our warm-up prompt is not
reused). The server runs with ``--enable-metrics``: its own TTFT / E2E / ITL histograms, read
before and after each run, referee whether a difference is the server's or the client's. CPU
seconds of the client, of each server process (HTTP/tokenizer manager, scheduler, detokenizer) and
of the rest of the machine come from ``/proc`` over each measured phase (ours: the run_benchmark
call, its one warm-up request included; theirs: from its warm-up's end + its 1 s pause to its
result banner).

Formula checks: SGLang's raw per-request TTFTs/ITLs (``--output-details``) through our ``stats_ms``,
and SGLang's ``calculate_metrics`` run on our own records (in the SGLang venv).

Reported per metric: both clients' medians over rounds, the median and min-max of the per-round
ratios ours/theirs, and the ratio of means with a paired (blocked) bootstrap 95 % CI
(:func:`tuner.core.stats.paired_ratio_ci`). A difference counts as beyond noise when that CI excludes 1.

    .venv/bin/python bench/metric_agreement.py        # 5-8 min; bench/results/metric_agreement.{md,json}
    .venv/bin/python bench/metric_agreement.py --rounds 2 --requests 16 --no-write   # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from bench.client_ceiling import _cpu_model  # noqa: E402
from tuner.core.net import free_port  # noqa: E402
from tuner.core.stats import paired_ratio_ci  # noqa: E402
from tuner.engines import sglang  # noqa: E402
from tuner.loadgen import BenchResult, WorkloadSpec, run_benchmark_sync  # noqa: E402
from tuner.loadgen.metrics import itl_s, stats_ms  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "metric_agreement.md"
SGLANG_PY = sglang.default_cpu_python("0.5.23")
MODEL = sglang.cpu_model_dir()
SERVER_ENV = {"SGLANG_USE_CPU_ENGINE": "1", "OMP_NUM_THREADS": "1"}
VOCAB = 8192  # the tiny model's vocabulary: our random ids are drawn below it, as random-ids does

# (label, our flat key, bench_serving's result key = its BenchmarkMetrics field)
METRICS: list[tuple[str, str, str]] = [
    ("output throughput (tok/s)", "output_throughput", "output_throughput"),
    ("request throughput (req/s)", "request_throughput", "request_throughput"),
    ("total token throughput (tok/s)", "total_token_throughput", "total_throughput"),
    ("concurrency (sum of E2E / duration)", "concurrency", "concurrency"),
    *(
        (f"{stat} {name.upper()} (ms)", f"{name}_{stat}_ms", f"{stat}_{theirs}_ms")
        for name, theirs in (("ttft", "ttft"), ("tpot", "tpot"), ("itl", "itl"), ("e2e", "e2e_latency"))
        for stat in ("mean", "median", "p99")
    ),
]
# The server's own histograms (--enable-metrics): name in /metrics -> our label
SERVER_HISTOGRAMS = {
    "ttft": "sglang:time_to_first_token_seconds",
    "e2e": "sglang:e2e_request_latency_seconds",
    "itl": "sglang:inter_token_latency_seconds",
}


@dataclass(frozen=True)
class Load:
    requests: int
    input_len: int
    output_len: int
    concurrency: int


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------
def server_argv(port: int) -> list[str]:
    """docs/sglang-cpu.md's launch command, plus --enable-metrics for the referee histograms."""
    return [
        str(SGLANG_PY), "-m", "sglang.launch_server", "--model-path", str(MODEL), "--device", "cpu",
        "--attention-backend", "torch_native", "--sampling-backend", "pytorch",
        "--cuda-graph-backend-decode", "disabled", "--cuda-graph-backend-prefill", "disabled",
        "--host", "127.0.0.1", "--port", str(port), "--mem-fraction-static", "0.1",
        "--max-total-tokens", "8192", "--dtype", "float32", "--enable-metrics",
    ]  # fmt: skip


def start_server(port: int, log: Path, timeout_s: float = 300.0) -> subprocess.Popen[bytes]:
    """Start the server in its own process group; return once /health answers 200."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            server_argv(port),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **SERVER_ENV},
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited {proc.returncode}; log tail:\n{_tail(log)}")
            with contextlib.suppress(OSError):
                if _http("GET", f"http://127.0.0.1:{port}/health", timeout=5)[0] == 200:
                    return proc
            time.sleep(1.0)
        raise RuntimeError(f"server not healthy after {timeout_s:.0f} s; log tail:\n{_tail(log)}")
    except BaseException:
        stop_server(proc)
        raise


def stop_server(proc: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM the main pid (graceful, exit 0); SIGKILL the group only if it does not go."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return proc.returncode


def _http(method: str, url: str, timeout: float = 60.0) -> tuple[int, bytes]:
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=timeout) as r:
        return r.status, r.read()


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:]


def server_histograms(url: str) -> dict[str, tuple[float, float]]:
    """(sum, count) of each referee histogram, summed over label sets."""
    text = _http("GET", url + "/metrics")[1].decode()
    out = {k: [0.0, 0.0] for k in SERVER_HISTOGRAMS}
    for line in text.splitlines():
        for key, name in SERVER_HISTOGRAMS.items():
            for i, suffix in enumerate(("_sum", "_count")):
                if line.startswith(name + suffix):
                    out[key][i] += float(line.rsplit(" ", 1)[1])
    return {k: (v[0], v[1]) for k, v in out.items()}


def server_means_ms(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]) -> dict:
    """The server's mean of each histogram over one run (its warm-up request included)."""
    out: dict[str, float | None] = {}
    for key in SERVER_HISTOGRAMS:
        d_sum, d_count = after[key][0] - before[key][0], after[key][1] - before[key][1]
        out[f"server_{key}_mean_ms"] = d_sum / d_count * 1000 if d_count else None
        out[f"server_{key}_count"] = d_count
    return out


_TICK = os.sysconf("SC_CLK_TCK")
_ROLES = {"sglang::sched": "scheduler", "sglang::detok": "detokenizer"}


@dataclass(frozen=True)
class CpuSnap:
    """CPU seconds so far: the client process, each server process (``main`` = HTTP + tokenizer
    manager, ``scheduler``, ``detokenizer``) and the whole machine (all but idle and iowait)."""

    t: float
    client: float
    server: dict[str, float]
    busy: float

    @staticmethod
    def take(client_pid: int, server_pgid: int) -> CpuSnap:
        t = time.monotonic()
        client, server = 0.0, {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                pid = int(stat.parent.name)
                name, rest = stat.read_text().split(" (", 1)[1].rsplit(")", 1)
                f = rest.split()  # f[2] pgrp, f[11] utime, f[12] stime
                cpu_s = (int(f[11]) + int(f[12])) / _TICK
                if pid == client_pid:
                    client = cpu_s
                elif int(f[2]) == server_pgid:
                    # comm is cut to 15 characters: sglang::schedul, sglang::detoken
                    role = "main" if pid == server_pgid else _ROLES.get(name[:13], name)
                    server[role] = server.get(role, 0.0) + cpu_s
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return CpuSnap(t, client, server, (sum(ticks[:8]) - ticks[3] - ticks[4]) / _TICK)

    def usage_until(self, end: CpuSnap) -> dict[str, float]:
        """Cores used on average between two snapshots, by role; ``other``: the rest of the machine."""
        dt = end.t - self.t
        out = {"cpu_client_cores": (end.client - self.client) / dt}
        for role in ("main", "scheduler", "detokenizer"):
            out[f"cpu_{role}_cores"] = (end.server.get(role, 0.0) - self.server.get(role, 0.0)) / dt
        used = (end.client - self.client) + sum(end.server.values()) - sum(self.server.values())
        out["cpu_other_cores"] = (end.busy - self.busy - used) / dt
        out["cpu_window_s"] = dt
        return out


# ---------------------------------------------------------------------------------------------
# The two clients
# ---------------------------------------------------------------------------------------------
def burst_fraction(itls_s: list[float]) -> float:
    """Share of inter-token gaps under 1 ms: chunks read together with the one before (a decode step
    here takes 5 ms or more), the mark of a client (or the server's HTTP process) starved of CPU."""
    return sum(1 for x in itls_s if x < 1e-3) / len(itls_s) if itls_s else float("nan")


def run_ours(url: str, server_pid: int, load: Load, seed: int, workdir: Path, tag: str) -> dict[str, Any]:
    workload = WorkloadSpec(
        api="generate",
        input_len=load.input_len,
        output_len=load.output_len,
        random_ids_vocab=VOCAB,
        arrival={"kind": "closed", "clients": load.concurrency},
        num_requests=load.requests,
        warmup_requests=1,
        seed=seed,
        stall_timeout_s=120,
    )
    _http("POST", url + "/flush_cache?timeout=60")
    before = server_histograms(url)
    cpu0 = CpuSnap.take(os.getpid(), server_pid)
    result = run_benchmark_sync(url, workload)  # its one warm-up request is inside the CPU window
    cpu = cpu0.usage_until(CpuSnap.take(os.getpid(), server_pid))
    after = server_histograms(url)
    assert result.failed == 0 and not result.stalled, result.errors()
    measured = [r for r in result.records if not r.warmup]
    with (workdir / f"{tag}.jsonl").open("w") as f:  # the raw records, for a closer look
        f.writelines(json.dumps(r.to_row()) + "\n" for r in result.records)
    return {
        **result.flat(),
        "output_tokens": result.output_tokens,
        "window_requests": len(result.records),  # requests inside the CPU window (warm-up included)
        **server_means_ms(before, after),
        **cpu,
        "itl_burst_frac": burst_fraction([x for r in measured for x in itl_s(r)]),
        "input_lens": sorted({r.prompt_tokens for r in measured}),
        "output_lens": sorted({r.output_tokens for r in measured}),
        "_replay": replay_input(result),  # taken out by measure(), not saved
    }


def theirs_args(url: str, load: Load, seed: int, output: Path) -> list[str]:
    """``python -m sglang.benchmark.serving`` arguments matching ours (see the module docstring)."""
    return [
        "--backend", "sglang", "--base-url", url, "--model", str(MODEL), "--tokenizer", str(MODEL),
        "--dataset-name", "random-ids", "--tokenize-prompt", "--random-input-len", str(load.input_len),
        "--random-output-len", str(load.output_len), "--random-range-ratio", "1",
        "--num-prompts", str(load.requests), "--max-concurrency", str(load.concurrency),
        "--request-rate", "inf", "--warmup-requests", "1", "--flush-cache", "--seed", str(seed),
        "--disable-tqdm", "--output-file", str(output), "--output-details",
    ]  # fmt: skip


# SGLang's client, imported ahead (10-40 s on the loaded machine) and started on a line on stdin, so
# that its measured phase follows ours within seconds, as ours follows it. ``cli_main`` is exactly
# what ``python -m sglang.benchmark.serving`` runs.
_THEIRS_MAIN = (
    "import pathlib, sys; import sglang.benchmark.serving as s; pathlib.Path(sys.argv[1]).touch(); "
    "sys.stdin.readline(); sys.argv = ['sglang.benchmark.serving', *sys.argv[2:]]; s.cli_main()"
)


class Theirs:
    """One run of SGLang's client: created = started and importing; :meth:`run` releases it and
    collects its results."""

    def __init__(self, url: str, server_pid: int, load: Load, seed: int, workdir: Path, tag: str) -> None:
        self.url, self.server_pid, self.load = url, server_pid, load
        self.cpu: dict[str, float] = {}
        self.output, self.log, self.ready = (workdir / f"{tag}{ext}" for ext in (".jsonl", ".log", ".ready"))
        argv = [
            str(SGLANG_PY),
            "-c",
            _THEIRS_MAIN,
            str(self.ready),
            *theirs_args(url, load, seed, self.output),
        ]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={
                    **os.environ,
                    **SERVER_ENV,
                    "PYTHONUNBUFFERED": "1",
                },  # its log lines time the CPU window
            )

    def wait_imported(self, timeout_s: float = 300.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"SGLang's client did not get ready; log tail:\n{_tail(self.log)}")
            time.sleep(0.2)

    def run(self) -> dict[str, Any]:
        self.wait_imported()
        before = server_histograms(self.url)
        assert self.proc.stdin is not None
        watch = threading.Thread(target=self._watch_cpu, daemon=True)
        watch.start()
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.close()
        rc = self.proc.wait(600)
        watch.join(10)
        after = server_histograms(self.url)
        if rc != 0 or not self.output.exists():
            raise RuntimeError(f"sglang.benchmark.serving exited {rc}; log tail:\n{_tail(self.log)}")
        res = json.loads(self.output.read_text().splitlines()[-1])
        assert res["completed"] == self.load.requests, f"{res['completed']} of {self.load.requests} completed"
        # Formula check: their raw per-request numbers through our stats give their printed stats.
        ttft = stats_ms(res["ttfts"])
        itls = [x for per_request in res["itls"] for x in per_request]
        itl = stats_ms(itls)
        formula_gap = max(
            abs(ttft.mean - res["mean_ttft_ms"]),
            abs(ttft.p99 - res["p99_ttft_ms"]),
            abs(itl.mean - res["mean_itl_ms"]),
            abs(itl.p99 - res["p99_itl_ms"]),
        )
        keys = {k for _, _, k in METRICS} | {"duration", "completed", "total_output_tokens"}
        return {
            **{k: res[k] for k in keys},
            **server_means_ms(before, after),
            "input_lens": sorted(set(res["input_lens"])),  # the server's prompt_tokens
            "output_lens": sorted(set(res["output_lens"])),
            "stats_formula_gap_ms": formula_gap,
            "itl_burst_frac": burst_fraction(itls),
            "window_requests": res["completed"],
            **self.cpu,
        }

    def _watch_cpu(self) -> None:
        """CPU over its measured phase: from 1 s after "Warmup completed" (it flushes the cache, then
        sleeps 1 s) to its "Serving Benchmark Result" banner (tens of ms before it exits)."""
        nan = math.nan
        self.cpu = {
            f"cpu_{role}_cores": nan for role in ("client", "main", "scheduler", "detokenizer", "other")
        }
        start = None
        while self.proc.returncode is None:  # set by run()'s wait(): only that thread reaps
            text = self.log.read_text(errors="replace")
            if start is None and "Warmup completed" in text:
                time.sleep(1.0)
                start = CpuSnap.take(self.proc.pid, self.server_pid)
            elif start is not None and "Serving Benchmark Result" in text:
                self.cpu = start.usage_until(CpuSnap.take(self.proc.pid, self.server_pid))
                return
            time.sleep(0.01)


# SGLang's calculate_metrics on OUR records: the formulas compared on identical timings.
_REPLAY = """
import json, sys
from types import SimpleNamespace
from sglang.benchmark.datasets import DatasetRow
from sglang.benchmark.serving import RequestFuncOutput, calculate_metrics
no_retokenize = SimpleNamespace(encode=lambda text, add_special_tokens=False: [])
out = []
for run in json.load(sys.stdin):
    outputs = [RequestFuncOutput(success=True, latency=r["e2e"], ttft=r["ttft"], itl=r["itl"],
                                 prompt_len=r["prompt_len"], output_len=r["output_len"], start_time=r["start"])
               for r in run["records"]]
    rows = [DatasetRow(prompt=[], prompt_len=r["prompt_len"], output_len=r["output_len"]) for r in run["records"]]
    metrics, _ = calculate_metrics(rows, outputs, run["duration"], no_retokenize, "sglang")
    out.append({k: float(v) for k, v in vars(metrics).items()})
print(json.dumps(out))
"""


def replay_input(result: BenchResult) -> dict[str, Any]:
    """Our measured records as SGLang's RequestFuncOutput fields (its ITL convention: each gap after
    the first chunk, split evenly over the tokens the chunk carries: our ``itl_s``)."""
    records = [
        {
            "e2e": r.e2e_s,
            "ttft": r.ttft_s,
            "itl": itl_s(r),
            "prompt_len": r.prompt_tokens,
            "output_len": r.output_tokens,
            "start": r.sent_ns / 1e9,
        }
        for r in result.records
        if not r.warmup and r.ok
    ]
    return {"duration": result.duration_s, "records": records}


def replay_gap(runs: list[tuple[dict[str, Any], dict[str, Any]]]) -> float:
    """Largest relative difference, over every metric and run, between our numbers and SGLang's
    ``calculate_metrics`` fed the same records."""
    proc = subprocess.run(
        [str(SGLANG_PY), "-c", _REPLAY],
        input=json.dumps([inp for _, inp in runs]),
        capture_output=True,
        text=True,
        check=True,
    )
    gap = 0.0
    for (ours, _), theirs in zip(runs, json.loads(proc.stdout.splitlines()[-1]), strict=True):
        for _, ours_key, theirs_key in METRICS:
            a, b = ours[ours_key], theirs[theirs_key]
            gap = max(gap, abs(a - b) / abs(b) if b else abs(a))
    return gap


# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------
def compare(label: str, o: list[float], t: list[float]) -> dict[str, Any]:
    """One row: both clients over the rounds, and the per-round ratios ours/theirs (rounds where
    either value is missing are left out)."""
    kept = [(a, b) for a, b in zip(o, t, strict=True) if math.isfinite(a) and math.isfinite(b)]
    o, t = [a for a, _ in kept], [b for _, b in kept]
    ratios = [a / b if b else math.nan for a, b in zip(o, t, strict=True)]
    ci = paired_ratio_ci(t, o, maximize=True) if min(o + t) > 0 else None  # mean(ours)/mean(theirs)
    return {
        "metric": label,
        "ours": o,
        "theirs": t,
        "ours_median": statistics.median(o),
        "theirs_median": statistics.median(t),
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "ratio_of_means": ci.estimate if ci else None,
        "ci_low": ci.low if ci else None,
        "ci_high": ci.high if ci else None,
        "beyond_noise": bool(ci and (ci.low > 1 or ci.high < 1)),
    }


def summarise(rounds: list[dict[str, Any]], concurrency: int) -> dict[str, list[dict[str, Any]]]:
    """``reported``: the metrics as each client prints them. ``vs_server``: per run, each client's
    number against the server's own histogram over the same run: drift of the machine moves both
    together, so what is left is what the client adds."""
    reported = []
    for label, ours_key, theirs_key in METRICS:
        o = [r["ours"][ours_key] for r in rounds]
        t = [r["theirs"][theirs_key] for r in rounds]
        reported.append(compare(label, o, t))
    for k in SERVER_HISTOGRAMS:
        key = f"server_{k}_mean_ms"
        reported.append(
            compare(f"server's own mean {k.upper()} (ms)", *_both(rounds, lambda c, m, key=key: c[key]))
        )
    vs_server = [
        compare(
            "client mean TTFT - server mean TTFT (ms)",
            *_both(rounds, lambda c, m: c[m["mean_ttft"]] - c["server_ttft_mean_ms"]),
        ),
        compare(
            "client mean E2E - server mean E2E (ms)",
            *_both(rounds, lambda c, m: c[m["mean_e2e"]] - c["server_e2e_mean_ms"]),
        ),
        compare(
            "client mean ITL / server mean ITL",
            *_both(rounds, lambda c, m: c[m["mean_itl"]] / c["server_itl_mean_ms"]),
        ),
        compare(
            "timed span not covered by any request, per client slot (ms)",
            *_both(rounds, lambda c, m: c[m["duration"]] * (1 - c["concurrency"] / concurrency) * 1000),
        ),
        compare("CPU of the client (cores)", *_both(rounds, lambda c, m: c["cpu_client_cores"])),
        compare(
            "server main process (HTTP, tokenizer manager) CPU per request (ms)",
            *_both(
                rounds, lambda c, m: c["cpu_main_cores"] * c["cpu_window_s"] / c["window_requests"] * 1000
            ),
        ),
        compare(
            "detokenizer CPU per request (ms)",
            *_both(
                rounds,
                lambda c, m: c["cpu_detokenizer_cores"] * c["cpu_window_s"] / c["window_requests"] * 1000,
            ),
        ),
        compare(
            "scheduler CPU (cores; it spins when idle)", *_both(rounds, lambda c, m: c["cpu_scheduler_cores"])
        ),
        compare(
            "server's mean ITL x scheduler cores (scheduler CPU ms per token interval)",
            *_both(rounds, lambda c, m: c["server_itl_mean_ms"] * c["cpu_scheduler_cores"]),
        ),
        compare(
            "CPU of everything else on the machine (cores)", *_both(rounds, lambda c, m: c["cpu_other_cores"])
        ),
        compare(
            "share of ITL gaps < 1 ms (chunks read in a burst)",
            *_both(rounds, lambda c, m: c["itl_burst_frac"]),
        ),
    ]
    return {"reported": reported, "vs_server": vs_server}


_KEYS = {
    "ours": {
        "mean_ttft": "ttft_mean_ms",
        "mean_e2e": "e2e_mean_ms",
        "mean_itl": "itl_mean_ms",
        "duration": "duration_s",
        "output_tokens": "output_tokens",
    },
    "theirs": {
        "mean_ttft": "mean_ttft_ms",
        "mean_e2e": "mean_e2e_latency_ms",
        "mean_itl": "mean_itl_ms",
        "duration": "duration",
        "output_tokens": "total_output_tokens",
    },
}


def _both(
    rounds: list[dict[str, Any]], value: Callable[[dict, dict], float]
) -> tuple[list[float], list[float]]:
    """``value(client_result, key_names)`` for ours and for theirs, over the rounds."""
    return [value(r["ours"], _KEYS["ours"]) for r in rounds], [
        value(r["theirs"], _KEYS["theirs"]) for r in rounds
    ]


def _range(r: dict[str, Any], fmt: str = ".3f") -> str:
    return f"{r['ratio_median']:{fmt}} [{r['ratio_min']:{fmt}}-{r['ratio_max']:{fmt}}]"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| metric | ours (median) | theirs (median) | ours/theirs: median [min-max] of rounds "
        "| ratio of means [95 % CI] | beyond noise |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ci = (
            f"{r['ratio_of_means']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
            if r["ci_low"] is not None
            else "-"
        )
        lines.append(
            f"| {r['metric']} | {r['ours_median']:.4g} ({min(r['ours']):.4g}-{max(r['ours']):.4g}) "
            f"| {r['theirs_median']:.4g} ({min(r['theirs']):.4g}-{max(r['theirs']):.4g}) "
            f"| {_range(r)} | {ci} | {'**yes**' if r['beyond_noise'] else 'no'} |"
        )
    return "\n".join(lines)


def measure(load: Load, rounds: int, seed: int, workdir: Path) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    server = start_server(port, workdir / "server.log")
    startup_s = time.monotonic() - t0
    out: dict[str, Any] = {"server_startup_s": startup_s, "rounds": []}
    replays = []
    theirs: Theirs | None = None
    try:
        # One discarded pair first: new batch shapes, imports and page cache are warm for round 0.
        small = Load(min(8, load.requests), load.input_len, load.output_len, load.concurrency)
        run_ours(url, server.pid, small, seed - 1, workdir, "prewarm-ours")
        theirs = Theirs(url, server.pid, small, seed - 1, workdir, "prewarm-theirs")
        theirs.run()
        for i in range(rounds):
            order = ("ours", "theirs") if i % 2 == 0 else ("theirs", "ours")
            entry: dict[str, Any] = {"round": i, "seed": seed + i, "order": list(order)}
            theirs = Theirs(url, server.pid, load, seed + i, workdir, f"theirs-{i}")
            theirs.wait_imported()  # before either measured phase: its imports load the machine
            for client in order:
                c0 = time.monotonic()
                if client == "ours":
                    entry["ours"] = run_ours(url, server.pid, load, seed + i, workdir, f"ours-{i}")
                    replays.append((entry["ours"], entry["ours"].pop("_replay")))
                else:
                    entry["theirs"] = theirs.run()
                entry[client]["wall_s"] = time.monotonic() - c0
                print(
                    f"round {i} {client:6s}: {entry[client]['output_throughput']:7.1f} tok/s, "
                    f"{entry[client]['wall_s']:5.1f} s wall, load average {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
            out["rounds"].append(entry)
        # What one /server_info call costs (theirs makes it inside its timed span).
        calls = []
        for _ in range(5):
            c0 = time.perf_counter()
            _http("GET", url + "/server_info")
            calls.append((time.perf_counter() - c0) * 1000)
        out["server_info_ms"] = statistics.median(calls)
    finally:
        if theirs is not None and theirs.proc.poll() is None:  # an error left one waiting
            theirs.proc.kill()
            theirs.proc.wait()
        out["server_exit"] = stop_server(server)
    out["replay_max_rel_gap"] = replay_gap(replays)
    return out


def render(data: dict[str, Any], summary: dict[str, list[dict[str, Any]]], commands: dict[str, str]) -> str:
    load = data["load"]
    header = (
        f"Machine: {data['cores']} cores ({data['cpu']}), shared with other work; load average "
        f"{data['load_avg'][0]:.1f} at start, {data['load_avg'][1]:.1f} at the end. Server: real SGLang "
        f"0.5.23 CPU engine, tiny random Llama (`{MODEL.name}`), started once "
        f"({data['server_startup_s']:.0f} s to healthy). {load['requests']} requests per run, "
        f"{load['input_len']} input ids, {load['output_len']} output tokens, concurrency "
        f"{load['concurrency']}; {len(data['rounds'])} rounds (seeds {data['seed']}-"
        f"{data['seed'] + len(data['rounds']) - 1}, one per round, the same for both clients), order "
        f"alternating; total wall {data['wall_s'] / 60:.1f} min; {data['date']}."
    )
    lens = sorted({(tuple(r[c]["input_lens"]), tuple(r[c]["output_lens"])) for r in data["rounds"] for c in ("ours", "theirs")})  # fmt: skip
    checks = (
        f"Checks: every request of both clients had (input, output) tokens {lens} by the server's own "
        f"counts. SGLang's raw per-request TTFTs and ITLs (`--output-details`) put through our "
        f"`stats_ms` give its printed mean/p99 to {max(r['theirs']['stats_formula_gap_ms'] for r in data['rounds']):.1g} ms. "
        f"SGLang's `calculate_metrics` fed our own records gives every metric of the table within "
        f"{data['replay_max_rel_gap']:.1e} (relative) of ours. "
        f"One `/server_info` call (theirs makes one inside its timed span) takes {data['server_info_ms']:.1f} ms here."
    )
    return (
        f"{header}\n\n{checks}\n\n### As each client reports them\n\n"
        "Values: median over rounds (min-max). Ratio > 1: ours reports the larger number. The last three\n"
        "rows are the server's own histograms (`--enable-metrics`) over the same runs, warm-up request\n"
        "included: they say how fast the server really was while each client measured it.\n\n"
        f"{table(summary['reported'])}\n\n### Each client against the server, within the same run\n\n"
        "What a client adds on top of the server's own number over the same run; drift of the machine\n"
        "moves both together, so these are much steadier than the cross-run ratios above.\n\n"
        f"{table(summary['vs_server'])}\n\n"
        f"Commands (round i uses seed S = {data['seed']} + i for both clients):\n\n"
        f"```sh\n# server\n{commands['server']}\n# ours (in process)\n{commands['ours']}\n"
        f"# theirs\n{commands['theirs']}\n```\n"
    )


ANALYSIS_START, ANALYSIS_END = "<!-- analysis -->", "<!-- /analysis -->"


def write_results(md_path: Path, body: str) -> None:
    """Write the results page; a hand-written analysis between the markers is kept."""
    analysis = f"{ANALYSIS_START}\n## Analysis\n\n(not written yet)\n{ANALYSIS_END}\n"
    if md_path.exists():
        old = md_path.read_text()
        if ANALYSIS_START in old and ANALYSIS_END in old:
            analysis = old[old.index(ANALYSIS_START) : old.index(ANALYSIS_END) + len(ANALYSIS_END)] + "\n"
    md_path.write_text(f"{_INTRO}\n## Results\n\n{body}\n{analysis}")


_INTRO = (
    "# Metric agreement: our load generator vs SGLang's `bench_serving`\n\n"
    "Produced by `bench/metric_agreement.py` (method in its docstring): one real SGLang server, measured\n"
    "in interleaved rounds by `tuner.loadgen.run_benchmark` and by `python -m sglang.benchmark.serving`\n"
    "with the same request count, lengths, concurrency and warm-up. Raw per-round numbers:\n"
    "`metric_agreement.json`. Reproduce (5-8 min here): `.venv/bin/python bench/metric_agreement.py`;\n"
    "`--render-only` rebuilds this page from the JSON.\n"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1000, help="seed of round 0; round i uses seed + i")
    parser.add_argument(
        "--output", type=Path, default=RESULTS, help="results page (markdown); JSON beside it"
    )
    parser.add_argument(
        "--keep", type=Path, help="keep the raw files here (server log, both clients' per-request data)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; do not write the results")
    parser.add_argument(
        "--render-only", action="store_true", help="measure nothing: rebuild the page from the saved JSON"
    )
    args = parser.parse_args()
    if args.render_only:
        saved = json.loads(args.output.with_suffix(".json").read_text())
        data = {k: v for k, v in saved.items() if k not in ("summary", "commands")}
        return _report(data, Load(**data["load"]), args.output, write=not args.no_write)
    for path, what in ((SGLANG_PY, "SGLang venv python (scripts/setup-sglang-cpu.sh)"), (MODEL, "model (scripts/setup-sglang-cpu-model.sh)")):  # fmt: skip
        if not path.exists():
            print(f"missing {what}: {path}", file=sys.stderr)
            return 2
    load = Load(args.requests, args.input_len, args.output_len, args.concurrency)
    started = time.monotonic()
    load_avg = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="metric-agreement-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        data = measure(load, args.rounds, args.seed, workdir)
    data.update(
        load=asdict(load),
        seed=args.seed,
        wall_s=time.monotonic() - started,
        cores=os.cpu_count(),
        cpu=_cpu_model(),
        load_avg=(load_avg, os.getloadavg()[0]),
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    )
    return _report(data, load, args.output, write=not args.no_write)


def _report(data: dict[str, Any], load: Load, output: Path, *, write: bool) -> int:
    summary = summarise(data["rounds"], load.concurrency)
    env = " ".join(f"{k}={v}" for k, v in SERVER_ENV.items())
    commands = {
        "server": f"{env} setsid {' '.join(server_argv(30000))}",
        "ours": (
            f"run_benchmark(url, WorkloadSpec(api='generate', input_len={load.input_len}, "
            f"output_len={load.output_len}, random_ids_vocab={VOCAB}, arrival={{'kind': 'closed', "
            f"'clients': {load.concurrency}}}, num_requests={load.requests}, warmup_requests=1, seed=S))"
            "  # after POST /flush_cache"
        ),
        "theirs": f"{env} {SGLANG_PY} -m sglang.benchmark.serving "
        + " ".join(theirs_args("http://127.0.0.1:30000", load, 0, Path("out.jsonl"))).replace(
            "--seed 0", "--seed S"
        ),
    }
    body = render(data, summary, commands)
    print(body)
    if write:
        output.parent.mkdir(parents=True, exist_ok=True)
        write_results(output, body)
        payload = {**data, "summary": summary, "commands": commands}
        output.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
