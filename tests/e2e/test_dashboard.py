"""``python -m tuner.report.dashboard`` served for real and read by a real headless Chromium.

Chromium comes from ``scripts/setup-chromium.sh`` (Debian's ``chromium``); the test skips without it
unless ``TUNER_REQUIRE_ALL=1``. The dashboard is a React SPA: ``--dump-dom`` after a virtual-time
budget gives the DOM after its API calls, where we look for the study, a crashed trial's
``failure_kind``, its server-log artifact and the best-configuration note. The crashed trial's page
is kept as a screenshot in ``storage/test-artifacts/`` (a reference copy is in ``tests/artifacts/``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import optuna_dashboard
import pytest

from tuner.core.net import free_port
from tuner.report.dashboard import NOTE_END, NOTE_MARK, publish_best_note
from tuner.space import load_space
from tuner.store import make_optuna_storage
from tuner.testing.require import missing
from tuner.testing.store import populate_demo_study

SPACE = Path("search_spaces/sglang-rtx5090-qwen3-32b-awq.yaml")
# Each run keeps its screenshot under storage/ (not committed: it changes every run); the committed one in
# tests/artifacts/ shows what a passing run sees.
SCREENSHOT = Path("storage/test-artifacts/dashboard-crashed-trial.png")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--window-size=1400,1100",
]  # fmt: skip


def chromium_or_skip() -> str:
    path = shutil.which("chromium")
    if path:
        return path
    reason = "chromium not installed (run scripts/setup-chromium.sh)"
    missing(reason)


def browse(chromium: str, url: str, tmp: Path, *, expect: str, screenshot: Path | None = None) -> str:
    """The DOM of ``url`` once ``expect`` shows (the SPA renders after its API calls): up to 4 tries."""
    dom = ""
    for attempt in range(4):
        profile = tmp / f"profile-{time.monotonic_ns()}"  # a fresh profile: no cache between loads
        budget = f"--virtual-time-budget={5000 * (attempt + 1)}"
        run = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", budget, "--dump-dom", url],
                             capture_output=True, text=True, timeout=90)  # fmt: skip
        dom = run.stdout
        if expect in dom:
            break
    if screenshot is not None:
        profile = tmp / "profile-shot"
        subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000",
                        f"--screenshot={screenshot.resolve()}", url], capture_output=True, timeout=90, check=True)  # fmt: skip
    return dom


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[tuple[str, optuna.Study]]:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    artifacts = tmp_path / "artifacts"
    space = load_space(SPACE).model_dump(mode="json")
    study = populate_demo_study(url, "dash-demo", space=space, artifact_dir=artifacts)
    port = free_port()
    cmd = [sys.executable, "-m", "tuner.report.dashboard", "--storage", url, "--artifact-dir", str(artifacts),
           "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/studies", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"dashboard did not come up: {proc.communicate()[0]}") from None
                time.sleep(0.2)
        yield base, study
    finally:
        proc.terminate()
        proc.wait(10)


def test_dashboard_shows_study_failure_kind_artifact_and_note(dashboard, tmp_path: Path) -> None:
    chromium = chromium_or_skip()
    base, study = dashboard
    home = browse(chromium, f"{base}/dashboard", tmp_path, expect="dash-demo")
    assert "dash-demo" in home

    crashed = next(t for t in study.trials if t.user_attrs.get("failure_kind") == "cuda_oom")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page = browse(chromium, f"{base}/dashboard/studies/1/trials?numbers={crashed.number}", tmp_path,
                  expect="failure_kind", screenshot=SCREENSHOT)  # fmt: skip
    assert f"Trial {crashed.number}" in page
    assert "failure_kind cuda_oom" in page  # the user-attribute row as rendered
    assert f"server-{crashed.number}.log" in page  # the server log, from the artifact store
    assert SCREENSHOT.stat().st_size > 10_000 and SCREENSHOT.read_bytes()[:4] == b"\x89PNG"

    note = browse(chromium, f"{base}/dashboard/studies/1/note", tmp_path, expect="Best configuration")
    best = max((t for t in study.trials if t.state.name == "COMPLETE" and t.constraints["slo_ttft_p99_ms"] <= 0),
               key=lambda t: t.values[0])  # fmt: skip
    assert f"Best configuration: trial #{best.number}" in note
    assert "sglang.launch_server" in note


def test_dashboard_set_metric_names_from_space(dashboard) -> None:
    _, study = dashboard
    reloaded = optuna.load_study(study_name=study.study_name, storage=study._storage)
    assert reloaded.metric_names == ["output_throughput"]


def test_publish_best_note_keeps_a_persons_text(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'n.db'}"
    study = populate_demo_study(url, "notes")
    optuna_dashboard.save_note(study, "Tried on the spare box too.")
    assert publish_best_note(study)
    assert publish_best_note(study)  # idempotent
    note = optuna_dashboard.get_note(study)
    assert note.startswith(NOTE_MARK) and note.count(NOTE_MARK) == 1 and note.count(NOTE_END) == 1
    assert note.count("Tried on the spare box too.") == 1

    empty = optuna.create_study(study_name="empty", storage=make_optuna_storage(url))
    assert not publish_best_note(empty)


def test_dashboard_refuses_a_bad_url(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "tuner.report.dashboard", "--storage",
                          "postgresql+psycopg://u:pw@127.0.0.1:1/db"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 3 and "u:***@127.0.0.1:1/db" in run.stderr
