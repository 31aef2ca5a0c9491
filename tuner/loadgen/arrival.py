"""When requests are sent: a closed loop of N clients, Poisson arrivals at a rate, a trace's own times, or
conversations turn by turn.

The drivers know nothing about HTTP or metrics. They pull the next job with ``claim()`` (None
means "no more": count reached, duration over, or the benchmark is stopping) and run it with
``execute(job)``. Cancelling a driver cancels every request it started (TaskGroup).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

from tuner.space.workload import ClosedArrival, PoissonArrival, SessionsArrival, TraceArrival

Job = TypeVar("Job")


def poisson_offsets(rate: float, rng: random.Random) -> Iterator[float]:
    """Send times in seconds after the start: cumulative exponential gaps of mean ``1/rate``.

    Offsets are absolute, so a late wake-up does not push every later request back (SGLang
    sleeps each gap in turn, which accumulates the event loop's lateness).
    """
    t = 0.0
    while True:
        t += rng.expovariate(rate)
        yield t


async def closed_loop(
    clients: int, claim: Callable[[], Job | None], execute: Callable[[Job], Awaitable[None]]
) -> None:
    """Run ``clients`` workers; each sends its next job as soon as its previous one ends."""

    async def worker() -> None:
        while (job := claim()) is not None:
            await execute(job)

    async with asyncio.TaskGroup() as tg:
        for _ in range(clients):
            tg.create_task(worker())


def capped(
    execute: Callable[[Job], Awaitable[None]], max_concurrency: int | None
) -> Callable[[Job], Coroutine[Any, Any, None]]:
    """``execute`` with at most ``max_concurrency`` jobs inside it at once (None: no cap); the slot is
    taken inside the job's task, so the arrival times stay as the process drew them."""
    slots = asyncio.Semaphore(max_concurrency) if max_concurrency else None

    async def gated(job: Job) -> None:
        if slots is None:
            await execute(job)
            return
        async with slots:
            await execute(job)

    return gated


async def poisson(
    arrival: PoissonArrival,
    rng: random.Random,
    claim: Callable[[], Job | None],
    execute: Callable[[Job], Awaitable[None]],
) -> None:
    """Start one job at each Poisson arrival; with ``max_concurrency`` a job waits for a free slot.

    The slot is taken inside the job's task, so arrivals stay Poisson while sends are capped
    (SGLang's ``--request-rate`` with ``--max-concurrency``).
    """
    loop = asyncio.get_running_loop()
    gated = capped(execute, arrival.max_concurrency)

    start = loop.time()
    async with asyncio.TaskGroup() as tg:
        for offset in poisson_offsets(arrival.rate, rng):
            delay = start + offset - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            job = claim()
            if job is None:
                break
            tg.create_task(gated(job))


async def replay(
    arrival: TraceArrival,
    claim: Callable[[], Job | None],
    execute: Callable[[Job], Awaitable[None]],
    offset_of: Callable[[Job], float],
) -> None:
    """Start each job at its trace time (relative to the phase's first job) divided by ``speed``."""
    loop = asyncio.get_running_loop()
    gated = capped(execute, arrival.max_concurrency)

    start = loop.time()
    first: float | None = None
    async with asyncio.TaskGroup() as tg:
        while (job := claim()) is not None:
            at = offset_of(job)
            first = at if first is None else first
            delay = start + (at - first) / arrival.speed - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tg.create_task(gated(job))


async def sessions(
    arrival: SessionsArrival,
    claim: Callable[[], Job | None],
    execute: Callable[[Job], Awaitable[None]],
    session_of: Callable[[Job], int | None],
) -> None:
    """``clients`` conversations at a time: the jobs of one session (consecutive in the stream) go out
    one after another, each ``think_time_s`` after the previous one's answer ended. A conversation's
    turns are claimed when it starts (so a run cut by its request count may end one mid-way)."""
    slots = asyncio.Semaphore(arrival.clients)

    async def conversation(queue: asyncio.Queue[Job | None]) -> None:
        try:
            first = True
            while (job := await queue.get()) is not None:
                if not first:
                    await asyncio.sleep(arrival.think_time_s)
                await execute(job)
                first = False
        finally:
            slots.release()

    async with asyncio.TaskGroup() as tg:
        queue: asyncio.Queue[Job | None] | None = None
        current: int | None = None
        while (job := claim()) is not None:
            session = session_of(job)
            if queue is None or session != current or session is None:
                if queue is not None:
                    queue.put_nowait(None)
                await slots.acquire()
                queue, current = asyncio.Queue(), session
                tg.create_task(conversation(queue))
            queue.put_nowait(job)
        if queue is not None:
            queue.put_nowait(None)


async def drive(
    arrival: ClosedArrival | PoissonArrival | TraceArrival | SessionsArrival,
    seed: int,
    claim: Callable[[], Job | None],
    execute: Callable[[Job], Awaitable[None]],
    offset_of: Callable[[Job], float] | None = None,
    session_of: Callable[[Job], int | None] | None = None,
) -> None:
    """Run the arrival process the workload names until ``claim()`` returns None (``offset_of``: a
    job's trace time, for trace replay; ``session_of``: its conversation, for multi-turn sessions)."""
    if isinstance(arrival, ClosedArrival):
        await closed_loop(arrival.clients, claim, execute)
    elif isinstance(arrival, SessionsArrival):
        assert session_of is not None, "sessions need each job's conversation"
        await sessions(arrival, claim, execute, session_of)
    elif isinstance(arrival, TraceArrival):
        assert offset_of is not None, "trace replay needs each job's time"
        await replay(arrival, claim, execute, offset_of)
    else:
        # A string seed is hashed deterministically (sha512), independent of PYTHONHASHSEED.
        await poisson(arrival, random.Random(f"arrival:{seed}"), claim, execute)
