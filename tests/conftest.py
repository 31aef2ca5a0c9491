"""Suite-wide guards.

Memory: the suite starts real engines (llama-server, transformers serve, SGLang, the simulator) on
a machine with 24 GiB shared by everything CI runs. No process the suite starts, and not pytest
itself, may grow beyond :data:`RSS_LIMIT_BYTES`; the test during which the limit is first crossed
fails and names the peak. ``getrusage(RUSAGE_CHILDREN)`` covers every descendant that has exited and
been waited for (servers are always stopped and reaped by the tests); a container's processes are
not descendants, and run under their own ``mem_limit``.

Parallel runs (``make test`` runs two pytest-xdist workers, a module per worker at a time): tests
that use a shared daemon (marker ``docker`` or the ``sim_image`` fixture, marker ``postgres``) hold a
shared lock on it from their set-up to their teardown; a test marked ``exclusive("docker")`` (it kills
the daemon, or counts every container on it) holds it alone. The modules that start real engines go
out first and the unit tests last, so the workers finish together rather than one waiting on a long
module handed out at the end.
"""

from __future__ import annotations

import fcntl
import resource
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

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


# --- parallel runs ------------------------------------------------------------------------------
DAEMONS = ("docker", "postgres")
HEAVY = ("sglang_cpu", "llamacpp", "docker", "slow")  # modules with these marks go out first


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "exclusive(daemon): runs with no other test using that daemon (docker, postgres): it stops the "
        "daemon, or counts everything on it",
    )


def _daemon_use(item: pytest.Item) -> tuple[set[str], set[str]]:
    """The daemons ``item`` uses alongside other tests, and the ones it needs to itself."""
    alone = {a for m in item.iter_markers("exclusive") for a in m.args}
    shared = {d for d in DAEMONS if item.get_closest_marker(d) is not None}
    if "sim_image" in getattr(item, "fixturenames", ()):
        shared.add("docker")
    return shared - alone, alone


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[object]:
    """Under xdist, hold the daemons' locks over the test's set-up, call and teardown."""
    workerinput = getattr(item.config, "workerinput", None)
    shared, alone = _daemon_use(item)
    with ExitStack() as locks:
        if workerinput is not None:
            root = Path(tempfile.gettempdir()) / f"tuner-test-locks-{workerinput['testrunuid']}"
            root.mkdir(exist_ok=True)
            for daemon in sorted(shared | alone):  # one order everywhere: no deadlock between two
                f = locks.enter_context(open(root / daemon, "a"))
                fcntl.flock(f, fcntl.LOCK_EX if daemon in alone else fcntl.LOCK_SH)
        return (yield)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """End-to-end modules first, the ones starting real engines first among them, unit tests last
    (xdist hands out whole modules in this order: ``--dist loadscope --no-loadscope-reorder``)."""
    rank: dict[str, tuple[int, int]] = {}
    for item in items:
        path = item.nodeid.split("::")[0]
        layer = 0 if path.startswith("tests/e2e/") else 1 if path.startswith("tests/integration/") else 2
        heavy = any(item.get_closest_marker(m) is not None for m in HEAVY)
        rank[path] = min(rank.get(path, (9, 9)), (layer, 0 if heavy else 1))
    items.sort(key=lambda item: rank[item.nodeid.split("::")[0]])  # stable: a module's order kept
