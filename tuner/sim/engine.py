"""The continuous-batching engine: SGLang's scheduler loop, in real time.

Each pass the scheduler orders the waiting queue by the schedule policy, admits what fits in
the KV pool (prefill first, chunked), or runs ``num-continuous-decode-steps`` decode steps over
the running batch. Every forward sleeps the time ``perfmodel.forward_s`` gives, times the
run's noise, so a client measures real seconds. Tokens go to each request's queue as they
are produced; the HTTP layer (``server.py``) frames them.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from tuner.sim import perfmodel, policies
from tuner.sim.config import SimConfig
from tuner.sim.failures import kill_tree
from tuner.sim.logs import log
from tuner.sim.perfmodel import Batch, MemoryPlan
from tuner.sim.profiles import GpuProfile, ModelProfile
from tuner.sim.radix import BLOCK, PrefixCache

NEW_TOKEN_RATIO = 0.7  # SGLang's initial estimate of how much of max_new_tokens a request will use


@dataclass(eq=False)
class SimRequest:
    """One request inside the engine."""

    rid: str
    prompt: list[int]
    max_new: int
    ignore_eos: bool
    stop_at: int  # output length at which the simulated model emits EOS (== max_new with ignore_eos)
    arrival: float
    sample_key: str = ""  # decides the output tokens (see server._request)
    priority: int = 0
    queue: asyncio.Queue[tuple[str, str | None]] = field(default_factory=asyncio.Queue)
    output: list[int] = field(default_factory=list)
    prefilled: int = 0  # tokens of ``target`` already computed (cached prefix counts)
    recompute: int = 0  # output tokens to recompute after a retraction (they join the prefill)
    retractions: int = 0  # times it was sent back to the queue (meta_info.num_retractions)
    cached: int = 0  # prompt tokens served from the prefix cache
    pinned: list[int] = field(default_factory=list)  # prefix-cache blocks this request holds
    first_token_at: float | None = None
    last_token_at: float | None = None
    finished: str | None = None  # "length" | "stop" | "abort"

    @property
    def prompt_len(self) -> int:
        return len(self.prompt)

    @property
    def first_block(self) -> int:
        return hash(tuple(self.prompt[:BLOCK]))

    @property
    def target(self) -> int:
        """Tokens the prefill must cover: the prompt, plus the output again after a retraction."""
        return len(self.prompt) + self.recompute

    @property
    def prefill_done(self) -> bool:
        return self.prefilled >= self.target

    @property
    def context(self) -> int:
        return self.prefilled + len(self.output) - self.recompute


@dataclass
class Counters:
    """Totals and recent samples for ``/metrics``."""

    prompt_tokens: int = 0
    generation_tokens: int = 0
    cached_tokens: int = 0
    requests: int = 0
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)
    recent_tokens: list[tuple[float, int]] = field(default_factory=list)  # (time, tokens) for gen_throughput


class Engine:
    """The simulated scheduler. ``submit`` requests, ``run()`` the loop as an asyncio task.

    ``on_batch(batch)`` is called before every forward so the failure plan can crash the server
    on a given batch shape, or hang it by returning True (``tuner/sim/failures.py``); a hung
    server is killed by the watchdog after ``--watchdog-timeout`` seconds, as SGLang's is.
    """

    def __init__(
        self,
        cfg: SimConfig,
        gpu: GpuProfile,
        model: ModelProfile,
        mem: MemoryPlan,
        *,
        seed: int,
        noise_factor: float,
        jitter: float,
        on_batch: Callable[[Batch], bool] | None = None,
    ) -> None:
        self.cfg, self.gpu, self.model, self.mem = cfg, gpu, model, mem
        self.rng = random.Random(seed)
        self.noise_factor = noise_factor
        self.jitter = jitter
        self.on_batch = on_batch
        self.waiting: list[SimRequest] = []
        self.running: list[SimRequest] = []
        self.cache = PrefixCache() if cfg.radix_cache else None
        self.counters = Counters()
        self.max_running = cfg.max_running_requests or max(1, min(4096, mem.kv_pool_tokens // 2))
        self.activation_peak_gib = perfmodel.activation_gib(64, model)
        self.hung = False
        self._wake = asyncio.Event()
        self._ids = itertools.count()
        self._decode_steps = 0
        self._last_prefill_log = time.monotonic()

    # ---- queue interface -------------------------------------------------------------------------
    def submit(self, req: SimRequest) -> None:
        self.waiting.append(req)
        self._wake.set()

    def abort(self, req: SimRequest) -> None:
        """Drop a request whose client went away."""
        if req in self.waiting:
            self.waiting.remove(req)
        elif req in self.running:
            self._finish(req, "abort")

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.running

    def token_usage(self) -> float:
        return self._used_tokens() / max(1, self.mem.kv_pool_tokens)

    def flush_cache(self) -> bool:
        if not self.idle:
            return False
        if self.cache is not None:
            self.cache.clear()
        return True

    # ---- KV accounting ---------------------------------------------------------------------------
    def _private_tokens(self, r: SimRequest) -> int:
        shared = len(r.pinned) * BLOCK
        return r.context - shared

    def _used_tokens(self) -> int:
        used = sum(self._private_tokens(r) for r in self.running)
        return used + (self.cache.tokens if self.cache is not None else 0)

    def _free_tokens(self) -> int:
        evictable = self.cache.evictable_tokens if self.cache is not None else 0
        return self.mem.kv_pool_tokens - self._used_tokens() + evictable

    def _reserved_tokens(self) -> int:
        ratio = min(1.0, NEW_TOKEN_RATIO * self.cfg.schedule_conservativeness)
        return int(sum((r.max_new - len(r.output)) * ratio for r in self.running))

    def _prefix_len(self, r: SimRequest) -> int:
        if self.cache is None:
            return 0
        return len(self.cache.match(r.prompt)) * BLOCK

    # ---- scheduling ------------------------------------------------------------------------------
    def _admit(self) -> None:
        """Move waiting requests to running while the KV pool and the running cap allow."""
        if not self.waiting or len(self.running) >= self.max_running:
            return
        ordered = policies.order(
            self.waiting,
            self.cfg.schedule_policy,
            radix_cache=self.cache is not None,
            prefix_len=self._prefix_len,
            rng=self.rng,
            now=time.monotonic(),
            service_s=lambda r: r.max_new * 0.02,  # a rough decode time: hrrn only compares ratios
        )
        budget = self._free_tokens() - self._reserved_tokens()
        prefill_budget = self.cfg.max_prefill_tokens
        ratio = min(1.0, NEW_TOKEN_RATIO * self.cfg.schedule_conservativeness)
        for r in ordered:
            if len(self.running) >= self.max_running:
                break
            hit = self.cache.match(r.prompt) if self.cache is not None else []
            new = r.prompt_len - len(hit) * BLOCK
            need = new + int(r.max_new * ratio)
            if need > budget or (new > prefill_budget and self.running):
                break  # SGLang stops at the first request that does not fit (keeps the order)
            budget -= need
            prefill_budget -= new
            if self.cache is not None:
                self.cache.evict(max(0, self._used_tokens() + new - self.mem.kv_pool_tokens))
                self.cache.pin(hit)
            r.pinned = list(hit)
            r.cached = r.prefilled = len(hit) * BLOCK
            self.counters.cached_tokens += r.cached
            self.waiting.remove(r)
            self.running.append(r)

    def _retract_if_full(self) -> None:
        """Decode needs one slot per running request; when the pool is full, send the newest back."""
        while self.running and self._free_tokens() < len(self.running):
            victim = self.running.pop()
            if self.cache is not None:
                self.cache.unpin(victim.pinned)
            # It keeps its output and recomputes prompt + output when readmitted.
            victim.recompute = len(victim.output)
            victim.retractions += 1
            victim.pinned, victim.prefilled, victim.cached = [], 0, 0
            self.waiting.insert(0, victim)

    def _prefill_batch(self) -> tuple[Batch, list[tuple[SimRequest, int]]]:
        """The extend part of the next forward: prompt chunks of requests not yet prefilled."""
        limit = self.cfg.chunked_prefill_size if self.cfg.chunked_prefill_size > 0 else 1 << 30
        parts: list[tuple[SimRequest, int]] = []
        for r in self.running:
            if r.prefill_done or limit <= 0:
                continue
            n = min(r.target - r.prefilled, limit)
            parts.append((r, n))
            limit -= n
        decode = []
        if self.cfg.mixed_chunk and parts:
            decode = [r for r in self.running if r.prefill_done]
        batch = Batch(decode_ctx=[r.context for r in decode], extend=[(n, r.prefilled) for r, n in parts])
        return batch, parts

    async def _forward(self, batch: Batch, overhead_s: float) -> None:
        if self.on_batch is not None and self.on_batch(batch):
            self.hung = True
            await asyncio.sleep(self.cfg.watchdog_timeout)
            log(
                f"Scheduler watchdog timeout (self.watchdog_timeout={self.cfg.watchdog_timeout}, self.soft=False)"
            )
            kill_tree()
        self.activation_peak_gib = max(
            self.activation_peak_gib, perfmodel.activation_gib(batch.tokens, self.model)
        )
        t = perfmodel.forward_s(self.cfg, self.gpu, self.model, batch, pass_cpu_s=overhead_s)
        t *= self.noise_factor * (1.0 + self.rng.gauss(0.0, self.jitter))
        await _sleep_until(time.monotonic() + max(t, 0.0))

    def _emit(self, r: SimRequest, now: float) -> None:
        """The request produced one token: record it, stream it, finish it when due."""
        token = _token_id(r.sample_key or r.rid, len(r.output), self.model.vocab)
        r.output.append(token)
        self.counters.generation_tokens += 1
        self.counters.recent_tokens.append((now, 1))
        if r.first_token_at is None:
            r.first_token_at = now
            self.counters.ttft.append(now - r.arrival)
        elif r.last_token_at is not None:
            self.counters.itl.append(now - r.last_token_at)
        r.last_token_at = now
        done = None
        if len(r.output) >= r.stop_at:
            done = "length" if len(r.output) >= r.max_new else "stop"
        r.queue.put_nowait(("token", done))  # the last token carries its finish reason
        if done:
            self._finish(r, done)

    def _finish(self, r: SimRequest, reason: str) -> None:
        r.finished = reason
        if r in self.running:
            self.running.remove(r)
        if self.cache is not None:
            self.cache.unpin(r.pinned)
            if reason != "abort":
                # The finished sequence stays in the radix cache for later requests to reuse.
                keys = PrefixCache.keys(r.prompt + r.output)
                self.cache.evict(max(0, self._used_tokens() + len(keys) * BLOCK - self.mem.kv_pool_tokens))
                self.cache.pin(keys)
                self.cache.unpin(keys)
        if reason != "abort":
            now = time.monotonic()
            self.counters.requests += 1
            self.counters.e2e.append(now - r.arrival)
        if reason == "abort":
            r.queue.put_nowait(("abort", reason))

    async def run(self) -> None:
        """The scheduler loop (runs until cancelled)."""
        while True:
            if self.idle:
                self._wake.clear()
                await self._wake.wait()
            self._admit()
            batch, parts = self._prefill_batch()
            if parts:
                # Prefill has priority: a new request's chunk runs now, decodes wait (unless mixed).
                decoding = [r for r in self.running if r.prefill_done] if batch.decode_ctx else []
                await self._forward(batch, perfmodel.pass_overhead_s(batch.requests))
                now = time.monotonic()
                self._log_prefill(parts, now)
                for r, n in parts:
                    r.prefilled += n
                    if r.prefill_done and r.recompute:
                        r.recompute = 0  # back where it was: the next token is a decode token
                        r.prefilled = r.prompt_len
                    elif r.prefill_done:
                        self.counters.prompt_tokens += r.prompt_len - r.cached
                        if self.cache is not None:
                            keys = PrefixCache.keys(r.prompt)[len(r.pinned) :]
                            self.cache.pin(keys)
                            r.pinned += keys
                        self._emit(r, now)
                for r in decoding:
                    if r.finished is None:
                        self._emit(r, now)
                continue
            # Decode: several steps per pass; new requests are admitted only between passes.
            for step in range(self.cfg.num_continuous_decode_steps):
                self._retract_if_full()
                decoding = [r for r in self.running if r.prefill_done and r.finished is None]
                if not decoding:
                    break
                batch = Batch(decode_ctx=[r.context for r in decoding])
                overhead = perfmodel.pass_overhead_s(len(decoding)) if step == 0 else 0.0
                await self._forward(batch, overhead)
                now = time.monotonic()
                for r in decoding:
                    if r.finished is None:
                        self._emit(r, now)
                self._decode_steps += 1
                if self._decode_steps % self.cfg.decode_log_interval == 0:
                    self._log_decode(len(decoding), now)
            self._trim_samples()

    def _log_prefill(self, parts: list[tuple[SimRequest, int]], now: float) -> None:
        """SGLang 0.5.23's prefill line (scheduler_components/metrics_reporter.py)."""
        new = sum(n for _, n in parts)
        gap, self._last_prefill_log = now - self._last_prefill_log, now
        log(
            f"Prefill batch, #new-seq: {len(parts)}, #new-token: {new}, "
            f"#cached-token: {sum(r.cached for r, _ in parts)}, token usage: {self.token_usage():.2f}, "
            f"#running-req: {len(self.running) - len(parts)}, #queue-req: {len(self.waiting)}, "
            f"#pending-token: 0, cuda graph: False, input throughput (token/s): {new / max(gap, 1e-9):.2f}"
        )

    def _log_decode(self, batch: int, now: float) -> None:
        """SGLang 0.5.23's decode line, every ``--decode-log-interval`` decode steps."""
        recent = sum(n for t, n in self.counters.recent_tokens if t > now - 5.0) / 5.0
        graph = self.cfg.cuda_graph and batch <= self.cfg.cuda_graph_max_bs
        log(
            f"Decode batch, #running-req: {batch}, #token: {self._used_tokens()}, "
            f"token usage: {self.token_usage():.2f}, cuda graph: {graph}, gen throughput (token/s): {recent:.2f}, "
            f"#queue-req: {len(self.waiting)}"
        )

    def _trim_samples(self) -> None:
        c = self.counters
        for samples in (c.ttft, c.itl, c.e2e):
            if len(samples) > 20000:
                del samples[:10000]
        cutoff = time.monotonic() - 10.0
        while c.recent_tokens and c.recent_tokens[0][0] < cutoff:
            c.recent_tokens.pop(0)

    def new_rid(self) -> str:
        return f"{next(self._ids):08x}{self.rng.getrandbits(64):016x}"


async def _sleep_until(deadline: float) -> None:
    """Sleep to an absolute deadline (asyncio timers alone drift by a timer tick per step)."""
    delay = deadline - time.monotonic()
    if delay > 0.001:
        await asyncio.sleep(delay - 0.0005)
    while time.monotonic() < deadline:
        await asyncio.sleep(0)


def _token_id(key: str, index: int, vocab: int) -> int:
    return zlib.crc32(f"{key}:{index}".encode()) % vocab
