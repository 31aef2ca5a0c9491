#!/usr/bin/env python3
"""Write the shipped example datasets under search_spaces/data/ (no downloads; seeded, so re-running it
gives the same bytes).

* ``sharegpt-small.json``: 200 ShareGPT-format conversations of 1-4 turns, prompt and reply lengths
  drawn from log-normal distributions shaped like ShareGPT's (many short turns, a long tail), words from
  the load generator's list (one token each on the simulator).

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
            turns.append({"from": "human", "value": " ".join(rng.choices(WORDS, k=_length(rng, 40, 1.0, 900)))})
            turns.append({"from": "gpt", "value": " ".join(rng.choices(WORDS, k=_length(rng, 100, 0.9, 1500)))})
        conversations.append({"id": f"example-{i:04d}", "conversations": turns})
    return conversations


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "sharegpt-small.json"
    path.write_text(json.dumps(sharegpt(random.Random(0))) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
