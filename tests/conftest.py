"""Suite-wide guards.

Memory: the suite starts real engines (llama-server, transformers serve, SGLang, the simulator) on
a machine with 24 GiB shared by everything CI runs. No process the suite starts, and not pytest
itself, may grow beyond :data:`RSS_LIMIT_BYTES`; the test during which the limit is first crossed
fails and names the peak. ``getrusage(RUSAGE_CHILDREN)`` covers every descendant that has exited and
been waited for (servers are always stopped and reaped by the tests); a container's processes are
not descendants, and run under their own ``mem_limit``.
"""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest

RSS_LIMIT_BYTES = 4 * 1024**3


def _peaks() -> tuple[int, int]:
    """Peak resident set (bytes) of pytest and of its largest reaped descendant (ru_maxrss is KiB)."""
    return (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    )


@pytest.fixture(autouse=True)
def _bounded_memory() -> Iterator[None]:
    before = _peaks()
    yield
    after = _peaks()
    for who, old, new in zip(("pytest", "a process started by the test"), before, after, strict=True):
        if new > old and new > RSS_LIMIT_BYTES:
            pytest.fail(
                f"{who} reached {new / 1024**3:.1f} GiB resident, over the suite's "
                f"{RSS_LIMIT_BYTES / 1024**3:.0f} GiB limit (tests/conftest.py)",
                pytrace=False,
            )


@pytest.fixture(scope="session")
def sim_image() -> str:
    """The simulated SGLang image on a running Docker daemon (skipped, or failed under
    ``TUNER_REQUIRE_ALL=1``, without a daemon)."""
    from tuner.testing.docker import sim_image as build

    return build()
