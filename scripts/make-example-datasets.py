#!/usr/bin/env python3
"""Write the shipped example datasets under search_spaces/data/ (no downloads; seeded, so re-running it
gives the same bytes).

* ``sharegpt-small.json``: 200 ShareGPT-format conversations of 1-4 turns, prompt and reply lengths
  drawn from log-normal distributions shaped like ShareGPT's (many short turns, a long tail), words from
  the load generator's list (one token each on the simulator).
* ``trace-small.jsonl``: a 60-second request trace in the Mooncake format (``timestamp`` in ms,
  ``input_length``, ``output_length``, ``hash_ids`` of 64-token blocks): bursts of arrivals every 10 s
  over a low background rate; three quarters of the requests open with one of three shared 2-block
  system prompts (block ids 0-5), the rest of every prompt is blocks of its own.

    .venv/bin/python scripts/make-example-datasets.py
"""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tuner.loadgen.prompts import WORDS  # noqa: E402

OUT = ROOT / "search_spaces" / "data"


def _length(rng: random.Random, median: float, sigma: float, high: int) -> int:
    return max(1, min(high, round(math.exp(rng.gauss(math.log(median), sigma)))))


def sharegpt(rng: random.Random, n: int = 200) -> list[dict[str, object]]:
    conversations = []
    for i in range(n):
        turns = []
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
            turns.append(
                {"from": "human", "value": " ".join(rng.choices(WORDS, k=_length(rng, 40, 1.0, 900)))}
            )
            turns.append(
                {"from": "gpt", "value": " ".join(rng.choices(WORDS, k=_length(rng, 100, 0.9, 1500)))}
            )
        conversations.append({"id": f"example-{i:04d}", "conversations": turns})
    return conversations


def trace(rng: random.Random, seconds: float = 60.0, block: int = 64) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    t, next_id = 0.0, 6
    while t < seconds:
        burst = (t % 10.0) < 2.0  # 2 s of 6 requests/s every 10 s, 1 request/s otherwise
        t += rng.expovariate(6.0 if burst else 1.0)
        if t >= seconds:
            break
        n_in = _length(rng, 200, 0.6, 1500)
        ids = [2 * (k := rng.randrange(3)), 2 * k + 1] if rng.random() < 0.75 else []
        while len(ids) * block < n_in:
            ids.append(next_id)
            next_id += 1
        rows.append({"timestamp": round(t * 1000), "input_length": n_in,
                     "output_length": _length(rng, 60, 0.7, 500), "hash_ids": ids})  # fmt: skip
    return rows


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "sharegpt-small.json"
    path.write_text(json.dumps(sharegpt(random.Random(0))) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    path = OUT / "trace-small.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in trace(random.Random(1))))
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
