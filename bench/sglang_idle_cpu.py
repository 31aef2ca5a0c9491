"""What an idle real SGLang server costs the CPU, with and without ``--sleep-on-idle``.

SGLang's scheduler loop polls its sockets without a timeout when it has no batch, so an idle server
keeps one core busy (sgl-project/sglang#1730); ``--sleep-on-idle`` (0.4.7+, #6026) makes it wait on
them for up to a second instead, waking when a request arrives. On a 2-core CPU host that core is the
one the load generator, the tuner and the next trial's server start-up need.

Real SGLang 0.5.23 on the CPU (``docs/sglang-cpu.md``: the tiny Llama, the test servers' flags), the
two arms interleaved, ``--repeats`` servers each: after ``/health`` 200 and one request, the CPU time
of the server's whole process group over ``--idle`` seconds of no requests, then the latency of the
first request after that idle spell and of the next ones.

    .venv/bin/python bench/sglang_idle_cpu.py   # writes bench/results/sglang_idle_cpu.md (~5 min)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tuner.study.confirm import mean_ci  # noqa: E402
from tuner.testing.sglang_servers import REAL, SLEEP_ON_IDLE, real_available, spawn  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "sglang_idle_cpu.md"
REQUEST = {"text": "The capital of France is", "sampling_params": {"max_new_tokens": 8, "temperature": 0}}


def one_server(sleep_on_idle: bool, idle_s: float, log_dir: Path) -> dict[str, float]:
    run = spawn(REAL, log_dir=log_dir, without=() if sleep_on_idle else (SLEEP_ON_IDLE,))
    try:
        run.wait_ready(300)
        assert run.post("/generate", REQUEST).status == 200
        time.sleep(2.0)  # the warm-up request's tail
        cpu0, t0 = run.cpu_seconds(), time.monotonic()
        time.sleep(idle_s)
        share = (run.cpu_seconds() - cpu0) / (time.monotonic() - t0)
        latencies = []
        for _ in range(4):
            t = time.perf_counter()
            assert run.post("/generate", REQUEST).status == 200
            latencies.append(time.perf_counter() - t)
        return {"cpu_share": share, "first_s": latencies[0], "next_s": statistics.fmean(latencies[1:])}
    finally:
        run.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--idle", type=float, default=20.0, help="seconds without requests per server")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    if (why := real_available()) is not None:
        raise SystemExit(f"bench/sglang_idle_cpu.py: {why}")
    arms: dict[str, list[dict[str, float]]] = {"without": [], "with": []}
    log_dir = Path(os.environ.get("TMPDIR", "/tmp"))
    t_all = time.monotonic()
    for r in range(args.repeats):
        order = ("without", "with") if r % 2 == 0 else ("with", "without")
        for arm in order:
            res = one_server(arm == "with", args.idle, log_dir)
            arms[arm].append(res)
            print(f"repeat {r + 1} {arm:>7} --sleep-on-idle: {res}", flush=True)
    lines = [
        "# An idle real SGLang server's CPU, with and without `--sleep-on-idle` (bench/sglang_idle_cpu.py)",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on 2 CPU cores: real SGLang 0.5.23 on the "
        f"CPU (the tiny Llama, the test servers' flags), {args.repeats} servers per arm, interleaved; "
        f"{args.idle:.0f} s without requests each; {(time.monotonic() - t_all) / 60:.1f} min in all.",
        "",
        "| `--sleep-on-idle` | idle CPU, share of one core (mean [95 % CI]) | first request after the idle spell, s | next requests, s (mean) |",
        "|---|---|---|---|",
    ]
    for arm, rows in arms.items():
        shares = [x["cpu_share"] for x in rows]
        ci = mean_ci(shares)
        share = f"{ci.mean:.2f} [{ci.low:.2f}, {ci.high:.2f}]" if ci else f"{shares[0]:.2f}"
        first = ", ".join(f"{x['first_s']:.2f}" for x in rows)
        lines.append(f"| {arm} | {share} | {first} | {statistics.fmean(x['next_s'] for x in rows):.2f} |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
