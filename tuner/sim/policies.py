"""SGLang's schedule policies: how the waiting queue is ordered before each admission round.

Mirrors ``sglang.srt.managers.schedule_policy``: cache-aware policies (``lpm``, ``dfs-weight``)
need the radix cache and fall back to ``fcfs`` without it or when more than 128 requests wait;
``lof`` is longest *output* first; ``random`` shuffles with the server's seeded generator.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

CACHE_AWARE = frozenset({"lpm", "dfs-weight"})
LPM_FALLBACK_QUEUE = 128  # SGLang: lpm degrades to fcfs beyond this many waiting requests


class Waiting(Protocol):
    """What a policy may look at on a waiting request."""

    arrival: float
    max_new: int
    priority: int

    @property
    def prompt_len(self) -> int: ...

    @property
    def first_block(self) -> int: ...


W = TypeVar("W", bound=Waiting)


def effective_policy(policy: str, radix_cache: bool, queue_len: int) -> str:
    """The policy SGLang actually applies (cache-aware ones need the radix cache)."""
    if policy in CACHE_AWARE and (not radix_cache or queue_len > LPM_FALLBACK_QUEUE):
        return "fcfs"
    return policy


def order(
    waiting: Sequence[W],
    policy: str,
    *,
    radix_cache: bool,
    prefix_len: Callable[[W], int],
    rng: random.Random,
    now: float,
    service_s: Callable[[W], float],
) -> list[W]:
    """Return ``waiting`` in the order admission should consider them."""
    eff = effective_policy(policy, radix_cache, len(waiting))
    reqs = list(waiting)
    if eff == "lpm":
        reqs.sort(key=lambda r: (-prefix_len(r), r.arrival))
    elif eff == "dfs-weight":
        # Depth-first over the radix tree, heavier subtrees first: requests sharing a prefix run
        # together. Group by the first block of the prompt, largest group first, FIFO inside.
        groups: dict[int, int] = {}
        for r in reqs:
            groups[r.first_block] = groups.get(r.first_block, 0) + 1
        reqs.sort(key=lambda r: (-groups[r.first_block], r.first_block, -prefix_len(r), r.arrival))
    elif eff == "lof":
        reqs.sort(key=lambda r: (-r.max_new, r.arrival))
    elif eff == "random":
        rng.shuffle(reqs)
    elif eff == "priority":
        reqs.sort(key=lambda r: (-r.priority, r.arrival))
    elif eff == "shortest-prefill-first":
        reqs.sort(key=lambda r: (r.prompt_len - prefix_len(r), r.arrival))
    elif eff == "hrrn":
        # Highest response ratio next: (waiting + service) / service.
        reqs.sort(key=lambda r: (-((now - r.arrival) + service_s(r)) / max(service_s(r), 1e-6), r.arrival))
    else:  # fcfs, routing-key (one route here)
        reqs.sort(key=lambda r: r.arrival)
    return reqs
