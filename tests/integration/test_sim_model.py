"""The simulator's model over HTTP: monotonic sanity, determinism under a seed, noise."""

from __future__ import annotations

import json
import threading
from typing import Any

from tuner.sim.process import SimProcess

# Llama-3.1-8B on an H100 with CUDA graphs: decode is bound by the weight reads (~6 ms a step).
H100_8B = ["--sim-gpu", "h100", "--sim-model", "llama-3.1-8b", "--attention-backend", "fa3"]
REQ: dict[str, Any] = {
    "input_ids": list(range(64)),
    "sampling_params": {"max_new_tokens": 48, "ignore_eos": True},
}


LONG: dict[str, Any] = {**REQ, "sampling_params": {"max_new_tokens": 160, "ignore_eos": True}}


def e2e(s: SimProcess, body: dict[str, Any] = REQ) -> float:
    status, raw = s.post("/generate", body)
    assert status == 200, raw
    return float(json.loads(raw)["meta_info"]["e2e_latency"])


def info(s: SimProcess) -> dict[str, Any]:
    return dict(json.loads(s.get("/server_info")[1]))


def test_more_bandwidth_is_faster() -> None:
    times = []
    for bw in ("1.0", "3.35"):
        with SimProcess([*H100_8B, "--sim-noise", "0", "--sim-bandwidth-tbs", bw]) as s:
            s.wait_ready()
            times.append(min(e2e(s) for _ in range(2)))
    assert times[1] < 0.6 * times[0], times


def test_more_mem_fraction_is_more_kv_capacity() -> None:
    tokens, used = [], []
    for mf in ("0.6", "0.75", "0.9"):
        with SimProcess([*H100_8B, "--mem-fraction-static", mf]) as s:
            s.wait_ready()
            i = info(s)
            tokens.append(i["max_total_num_tokens"])
            used.append(i["gpu_memory"]["used_mib"])
    assert tokens[0] < tokens[1] < tokens[2]
    assert used[0] < used[1] < used[2]


def test_kv_capacity_bounds_running_requests_and_queues_the_rest() -> None:
    # A 1024-token pool holds ~2 of these requests (each 200 in + 300 reserved out): the rest wait.
    flags = [*H100_8B, "--sim-noise", "0", "--max-total-tokens", "1024", "--enable-metrics"]
    body: dict[str, Any] = {
        "input_ids": list(range(200)),
        "sampling_params": {"max_new_tokens": 300, "ignore_eos": True},
    }
    with SimProcess(flags) as s:
        s.wait_ready()
        one = e2e(s, body)
        results: list[float] = []
        threads = [
            threading.Thread(
                target=lambda i=i: results.append(e2e(s, {**body, "input_ids": [i, *range(199)]}))
            )
            for i in range(6)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    # Six requests through a pool for two take about three rounds; an unbounded batch would take ~one.
    assert max(results) > 2.2 * one, (one, sorted(results))


def test_same_seed_same_run_different_seed_different_run() -> None:
    runs = []
    for seed in ("11", "11", "12"):
        with SimProcess([*H100_8B, "--sim-noise", "0.1", "--sim-seed", seed]) as s:
            s.wait_ready()
            sampled = {**REQ, "sampling_params": {"max_new_tokens": 8, "temperature": 0.7}}
            greedy = {**REQ, "sampling_params": {"max_new_tokens": 8, "temperature": 0}}
            runs.append(
                (
                    info(s)["simulator"]["noise_factor"],
                    json.loads(s.post("/generate", sampled)[1])["output_ids"],
                    json.loads(s.post("/generate", greedy)[1])["output_ids"],
                    # The simulator runs its model in real time: a busy machine only ever adds to a
                    # latency (late timer wake-ups), so the least of a few is the modelled time, and a
                    # long request (~1 s) makes the little that is left small against 5 %.
                    min(e2e(s, LONG) for _ in range(3)),
                )
            )
    (f1, s1, g1, t1), (f2, s2, g2, t2), (f3, s3, g3, t3) = runs
    assert f1 == f2 and s1 == s2 and g1 == g2
    assert abs(t1 - t2) / t1 < 0.05  # same seed: same modelled time
    assert f3 != f1 and s3 != s1 and g3 == g1  # another run: other noise and samples; greedy is greedy
    assert abs(t3 / t1 - f3 / f1) < 0.05  # the run's noise factor scales its timings
