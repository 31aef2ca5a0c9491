"""A real ``llama-server`` on a generated random-weight GGUF: readiness, exact output lengths,
several flag sets, and start-up failures classified from its real log.

Skipped without the binary unless ``TUNER_REQUIRE_ALL=1``.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tuner.core.failures import ExitStatus, FailureKind, Phase, classify
from tuner.core.net import free_port
from tuner.engines import llamacpp as lc
from tuner.models.gguf_llama import PRESETS, write
from tuner.testing.require import missing

pytestmark = pytest.mark.llamacpp
VERSION = lc.DEFAULT_VERSION
BINARY = lc.find_binary()


@pytest.fixture(scope="module")
def binary() -> Path:
    if BINARY is None:
        missing("llama-server not built (scripts/build-llama-server.sh or TUNER_LLAMA_SERVER)")
    return BINARY


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write(tmp_path_factory.mktemp("gguf") / "tiny.gguf", PRESETS["tiny"])


class Server:
    """One llama-server process, its log in a file."""

    def __init__(self, binary: Path, model: Path, flags: lc.FlagVector, log: Path) -> None:
        self.port = free_port()
        argv = lc.launch_argv(
            model=str(model),
            host="127.0.0.1",
            port=self.port,
            flags=flags,
            version=VERSION,
            program=[str(binary)],
        )
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"

    def health(self) -> int | None:
        try:
            with urllib.request.urlopen(self.url + lc.ENGINE.request.health_path, timeout=2) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return None

    def wait_ready(self, timeout: float = 30.0) -> list[int | None]:
        seen: list[int | None] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"llama-server died: {self.log.read_text()[-2000:]}"
            code = self.health()
            seen.append(code)
            if code == 200:
                return seen
            time.sleep(0.02)
        raise AssertionError(f"not ready in {timeout} s; /health answers {seen[-5:]}")

    def post(self, path: str, body: dict[str, object]) -> dict[str, object]:
        req = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            return dict(json.load(r))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def serve(binary: Path, model: Path, tmp_path: Path) -> Iterator[object]:
    servers: list[Server] = []

    def start(flags: lc.FlagVector) -> Server:
        s = Server(binary, model, flags, tmp_path / f"server{len(servers)}.log")
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


FLAG_SETS = [
    pytest.param({"parallel": 1, "ctx-size": 1024}, id="np1"),
    pytest.param(
        {
            "np": 4,
            "c": 2048,
            "cb": True,
            "b": 256,
            "ub": 128,
            "t": 2,
            "fa": "on",
            "ctk": "q8_0",
            "ctv": "q8_0",
        },
        id="np4-fa-q8kv",
    ),
    pytest.param(
        {
            "parallel": 2,
            "ctx-size": 1024,
            "cont-batching": False,
            "cache-reuse": 64,
            "metrics": True,
            "fa": "off",
        },
        id="np2-nocb-metrics",
    ),
]


@pytest.mark.parametrize("flags", FLAG_SETS)
def test_server_ready_and_ignore_eos_gives_exact_lengths(serve, flags: lc.FlagVector) -> None:  # type: ignore[no-untyped-def]
    server = serve(flags)
    seen = server.wait_ready()
    assert seen[-1] == 200
    for n in (1, 17, 40):
        out = server.post(
            "/v1/completions",
            {
                "prompt": "the quick brown fox jumps over",
                "max_tokens": n,
                "temperature": 0,
                "ignore_eos": True,
            },
        )
        usage = out["usage"]
        assert isinstance(usage, dict) and usage["completion_tokens"] == n
        assert out["choices"][0]["finish_reason"] == "length"  # type: ignore[index]
    native = server.post("/completion", {"prompt": "hello", "n_predict": 9, "ignore_eos": True})
    assert native["tokens_predicted"] == 9
    if flags.get("metrics"):
        with urllib.request.urlopen(server.url + "/metrics", timeout=5) as r:
            assert b"llamacpp:tokens_predicted_total" in r.read()


def test_health_is_503_while_loading(binary: Path, tmp_path: Path) -> None:
    # A bigger model loads slowly enough to catch the loading state (the tiny one loads in milliseconds).
    big = write(tmp_path / "medium.gguf", PRESETS["medium"])
    server = Server(binary, big, {"ctx-size": 512, "load-mode": "none"}, tmp_path / "big.log")
    try:
        seen = server.wait_ready(60)
    finally:
        server.stop()
    assert seen[-1] == 200
    assert 503 in seen, seen


@pytest.mark.parametrize(
    ("flags", "kind", "needle"),
    [
        # 50 M tokens of KV = 51 GB: refused at once. (400 M tokens instead spends 17 GB RSS and >30 s before failing.)
        ({"ctx-size": 50_000_000, "fit": "off"}, FailureKind.NOT_ENOUGH_MEMORY, "failed to allocate"),
        ({"flash-attn": "off", "cache-type-v": "q8_0"}, FailureKind.UNSUPPORTED, "requires flash_attn"),
        ({"--no-such-flag": True}, FailureKind.FLAG_REJECTED, "invalid argument: --no-such-flag"),
    ],
    ids=["kv-too-big", "quantized-v-without-fa", "unknown-flag"],
)
def test_startup_failures_are_classified(serve, flags: lc.FlagVector, kind: FailureKind, needle: str) -> None:  # type: ignore[no-untyped-def]
    server = serve(flags)
    rc = server.proc.wait(30)
    log = server.log.read_text()
    assert rc == 1, log[-2000:]
    failure = classify(lc.SIGNATURES, phase=Phase.STARTUP, log_text=log, exit=ExitStatus.from_returncode(rc))
    assert failure.kind is kind, failure.summary()
    assert any(needle in line for line in failure.matched_lines), failure.matched_lines
