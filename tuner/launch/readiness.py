"""Readiness: a server is ready when ``/health`` answers 200 AND one real request succeeds.

``/model_info`` and ``/v1/models`` answer before the warm-up has run, so they are not readiness
(shared/facts/sglang.md). While waiting, the server's exit status is polled every 100 ms so a
death at start-up is seen within a second, not at the start-up timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import aiohttp

from tuner.core.errors import ServerCrash
from tuner.core.failures import Failure, FailureKind, Phase, Signature, classify
from tuner.launch.base import ServerHandle

Probe = Callable[[str], Awaitable[None]]
"""One real request against ``base_url``; raises :class:`ProbeFailed` when the server answers wrongly."""


class ProbeFailed(Exception):
    """The readiness request reached the server but did not succeed (the message is the evidence)."""


POLL_S = 0.1
HEALTH_EVERY_S = 0.25
PROBE_ATTEMPTS = 3


def crash_of(
    handle: ServerHandle, signatures: Sequence[Signature], phase: Phase, detail: str = ""
) -> Failure | None:
    """The classified failure if the server has exited, else ``None``."""
    status = handle.exit_status()
    if status is None:
        return None
    return classify(signatures, phase=phase, log_text=handle.log_text(), exit=status, detail=detail)


async def wait_ready(
    handle: ServerHandle,
    *,
    health_path: str,
    probe: Probe,
    timeout_s: float,
    signatures: Sequence[Signature],
) -> float:
    """Wait until ``handle`` is ready; return the seconds it took.

    Raises :class:`ServerCrash` with kind STARTUP_TIMEOUT, HEALTHY_BUT_FAILING (``/health`` 200
    but the probe request fails :data:`PROBE_ATTEMPTS` times) or the classified crash.
    """
    t0 = time.perf_counter()
    deadline = t0 + timeout_s
    url = handle.base_url + health_path
    probe_errors: list[str] = []
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        next_health = 0.0
        while True:
            if (failure := crash_of(handle, signatures, Phase.STARTUP)) is not None:
                raise ServerCrash(failure)
            now = time.perf_counter()
            if now > deadline:
                raise ServerCrash(
                    Failure(
                        FailureKind.STARTUP_TIMEOUT,
                        Phase.STARTUP,
                        None,
                        (),
                        handle.log_text()[-4000:],
                        f"/health not 200 after {timeout_s:.0f} s",
                    )
                )
            if now >= next_health:
                next_health = now + HEALTH_EVERY_S
                healthy = await _healthy(session, url)
                if not healthy and probe_errors:
                    # it was healthy, a real request failed, and now /health fails too: either the
                    # server is going down (give it a second to exit and be classified by its log)
                    # or a worker died inside a live server (transformers serve's "CB worker is dead")
                    for _ in range(10):
                        if (failure := crash_of(handle, signatures, Phase.WARMUP)) is not None:
                            raise ServerCrash(failure)
                        await asyncio.sleep(POLL_S)
                    raise ServerCrash(
                        _healthy_but_failing(handle, probe_errors, "then /health stopped answering 200")
                    )
                if healthy:
                    try:
                        await asyncio.wait_for(probe(handle.base_url), timeout=max(5.0, deadline - now))
                        return time.perf_counter() - t0
                    except (ProbeFailed, aiohttp.ClientError, TimeoutError, OSError) as e:
                        probe_errors.append(f"{type(e).__name__}: {e}"[:300])
                        if (failure := crash_of(handle, signatures, Phase.WARMUP)) is not None:
                            raise ServerCrash(failure) from e
                        if len(probe_errors) >= PROBE_ATTEMPTS:
                            raise ServerCrash(
                                _healthy_but_failing(handle, probe_errors, f"failed {PROBE_ATTEMPTS} times")
                            ) from e
            await asyncio.sleep(POLL_S)


def _healthy_but_failing(handle: ServerHandle, errors: list[str], how: str) -> Failure:
    return Failure(
        FailureKind.HEALTHY_BUT_FAILING,
        Phase.WARMUP,
        None,
        tuple(errors),
        handle.log_text()[-4000:],
        f"/health answered 200 but the first real request {how}",
    )


async def _healthy(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url) as resp:
            return resp.status == 200
    except (TimeoutError, aiohttp.ClientError, OSError):
        return False
