"""The simulated radix (prefix) cache: shared prompt prefixes by block, pinned while a request uses them,\nevicted least-recently-used when the KV pool needs room."""

from __future__ import annotations

from collections import OrderedDict

BLOCK = 16  # prefix-cache granularity (tokens); SGLang matches per token, blocks keep this cheap


class PrefixCache:
    """A radix cache at block granularity: block key = hash of the whole prefix up to it."""

    def __init__(self) -> None:
        self._lru: OrderedDict[int, int] = OrderedDict()  # key -> pin count

    @staticmethod
    def keys(tokens: list[int]) -> list[int]:
        out, h = [], 0
        for i in range(len(tokens) // BLOCK):
            h = hash((h, tuple(tokens[i * BLOCK : (i + 1) * BLOCK])))
            out.append(h)
        return out

    def match(self, tokens: list[int]) -> list[int]:
        """Keys of the longest cached prefix of ``tokens``."""
        hit = []
        for k in self.keys(tokens):
            if k not in self._lru:
                break
            hit.append(k)
        return hit

    def pin(self, keys: list[int]) -> None:
        for k in keys:
            self._lru[k] = self._lru.get(k, 0) + 1
            self._lru.move_to_end(k)

    def unpin(self, keys: list[int]) -> None:
        for k in keys:
            if k in self._lru:
                self._lru[k] = max(0, self._lru[k] - 1)

    @property
    def tokens(self) -> int:
        return len(self._lru) * BLOCK

    @property
    def evictable_tokens(self) -> int:
        return sum(BLOCK for pins in self._lru.values() if pins == 0)

    def evict(self, tokens: int) -> None:
        """Drop least-recently-used unpinned blocks until ``tokens`` are freed."""
        for k in [k for k, pins in self._lru.items() if pins == 0]:
            if tokens <= 0:
                break
            del self._lru[k]
            tokens -= BLOCK

    def clear(self) -> None:
        self._lru = OrderedDict((k, p) for k, p in self._lru.items() if p > 0)
