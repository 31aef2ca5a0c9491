"""Helpers for end-to-end tests that run the real ``python -m tuner.study`` against the simulator."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from optuna.trial import FrozenTrial, TrialState

ROOT = Path(__file__).resolve().parents[2]
RTX5090_SPACE = ROOT / "search_spaces" / "sglang-rtx5090-qwen3-32b-awq.yaml"


def small_space(tmp_path: Path, *, seeds: list[dict[str, Any]] | None = None, **workload: Any) -> Path:
    """The RTX 5090 space with a short workload, no confirmation (and optionally other seed trials),
    written to tmp_path."""
    data = yaml.safe_load(RTX5090_SPACE.read_text())
    data = copy.deepcopy(data)
    data["workload"].update({"num_requests": 8, "warmup_requests": 1, "stall_timeout_s": 8, **workload})
    data["target"]["startup_scale"] = 0.01
    data.pop("confirm", None)  # the demo's confirmation rounds: tests that want them add their own
    if seeds is not None:
        data["seed_trials"] = seeds
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def seed(name: str, base: str = "baseline", **changes: Any) -> dict[str, Any]:
    """A seed trial: one of the shipped seeds with some parameters changed."""
    data = yaml.safe_load(RTX5090_SPACE.read_text())
    params = dict(next(s for s in data["seed_trials"] if s["name"] == base)["params"])
    params.update(changes)
    return {"name": name, "params": params}


def study_cmd(space: Path, tmp_path: Path, *extra: str, trials: int = 4, study: str = "t") -> list[str]:
    return [
        sys.executable, "-m", "tuner.study", "--space", str(space), "--storage", f"sqlite:///{tmp_path}/t.db",
        "--study", study, "--trials", str(trials), "--out", str(tmp_path / "out"), "--seed", "0", *extra,
    ]  # fmt: skip


def server_pids(study: str) -> list[int]:
    """Processes (simulated servers and their children) started for ``study``."""
    want = f"TUNER_STUDY={study}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if want in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def popen_python(script: str) -> subprocess.Popen[bytes]:
    """Run ``script`` in another Python process of this checkout, its stdout piped (a second tuner)."""
    return subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def popen_study(cmd: list[str], log: Path, *, sigint_ignored: bool = False) -> subprocess.Popen[bytes]:
    """Start the tuner with its output in ``log``.

    ``sigint_ignored`` starts it the way a non-interactive shell starts a background job (``cmd &``),
    with SIGINT inherited as ignored.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def ignore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
        preexec_fn=ignore_sigint if sigint_ignored else None,
    )


def exit_code(proc: subprocess.Popen[bytes], timeout_s: float, log: Path) -> int:
    """``proc``'s exit code; past ``timeout_s`` it is killed and the failure shows its log."""
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(
            f"still running {timeout_s} s later; its log:\n{log.read_text()[-3000:]}"
        ) from None


def assert_seeds_crashed(
    trials: list[FrozenTrial], expected: dict[str, str]
) -> dict[str | None, FrozenTrial]:
    """Each named seed trial ran the server, crashed with the expected failure kind and was recorded
    PRUNED with the crash constraint and the log lines that matched; returns the trials by seed name."""
    by_seed = {t.user_attrs.get("seed_name"): t for t in trials}
    for name, kind in expected.items():
        t = by_seed[name]
        assert t.state is TrialState.PRUNED, (name, t.state)
        assert t.user_attrs["failure_kind"] == kind, (name, t.user_attrs.get("failure"))
        assert t.constraints["crash"] == 1
        evidence = t.user_attrs["failure"]
        assert evidence["matched_lines"] and evidence["log_tail"], name  # evidence from the server's log
    return by_seed
