"""The search guide through ``python -m tuner.study`` and the real simulator: a crash is repaired from its
evidence and teaches a constraint; no configuration is measured twice, across restarts too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from tuner.testing.study_cli import ROOT, seed, small_space, study_cmd


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _load(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path}/t.db")


def test_out_of_memory_crash_is_repaired_from_its_evidence_and_teaches_a_constraint(tmp_path: Path) -> None:
    # the field report's "awq_marlin impossible": out of memory at mem-fraction-static 0.85 on the 5090
    space = small_space(
        tmp_path, seeds=[seed("marlin", quantization="awq_marlin", **{"mem-fraction-static": 0.85})]
    )
    proc = _run(study_cmd(space, tmp_path, trials=2))
    crash, repaired = _load(tmp_path).get_trials()[:2]
    assert crash.user_attrs["failure_kind"] == "cuda_oom"
    repair = repaired.user_attrs["repair"]
    assert repair["of"] == crash.number and repair["kind"] == "cuda_oom"
    (change,) = repair["changes"]
    # the simulator's PyTorch message gives the missing memory; the repair takes that much plus 2 points
    assert change["param"] == "mem-fraction-static" and change["old"] == 0.85 and change["new"] < 0.80
    assert repaired.params["quantization"] == "awq_marlin"
    assert repaired.state is TrialState.COMPLETE, repaired.user_attrs.get("failure")
    out = proc.stdout
    assert "repair queued: mem-fraction-static 0.85 -> " in proc.stderr
    assert "learned from crashes (1; pruned before launch from now on):" in out
    assert "mem-fraction-static >= 0.85 -> cuda_oom (crashed: trials #0; repaired and ran: #1)" in out
    # written out as a constraints block the space file accepts, covering the crash and not the repair
    learned = yaml.safe_load((tmp_path / "out" / "t" / "learned-constraints.yaml").read_text())
    (entry,) = learned["constraints"]
    assert "quantization == 'awq_marlin'" in entry["expr"] and "mem_fraction_static >= 0.85" in entry["expr"]
    # the report shows the finding with its trials, and writes the same constraints block beside it
    report = tmp_path / "report"
    _run([sys.executable, "-m", "tuner.report", "--storage", f"sqlite:///{tmp_path}/t.db", "--study", "t",
          "--out", str(report)])  # fmt: skip
    md = (report / "report.md").read_text()
    assert "## Learned from crashes" in md
    (finding,) = [line for line in md.splitlines() if "-> cuda_oom" in line]
    assert "quantization=awq_marlin" in finding
    assert finding.endswith(
        "mem-fraction-static >= 0.85 -> cuda_oom (crashed: trials #0; repaired and ran: #1)"
    )
    assert "Learned from crashes" in (report / "report.html").read_text()
    assert yaml.safe_load((report / "learned-constraints.yaml").read_text()) == learned


def _tiny_space(tmp_path: Path) -> Path:
    """Four configurations in all (two switches that never crash), no seeds, no confirmation."""
    data = yaml.safe_load(small_space(tmp_path).read_text())
    base = dict(data["seed_trials"][0]["params"])
    data["fixed_flags"].update({k: v for k, v in base.items() if v is not None})
    for switch in ("triton-attention-reduce-in-fp32", "allow-auto-truncate"):
        data["fixed_flags"].pop(switch)
    data["parameters"] = {
        k: {"type": "bool"} for k in ("triton-attention-reduce-in-fp32", "allow-auto-truncate")
    }
    data["seed_trials"] = []
    data.pop("confirm", None)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_no_configuration_is_measured_twice_across_restarts_and_a_measured_out_space_stops(
    tmp_path: Path,
) -> None:
    space = _tiny_space(tmp_path)
    _run(study_cmd(space, tmp_path, trials=2))
    _run(study_cmd(space, tmp_path, trials=3))  # restarted with the same --seed: proposes what it measured
    proc = _run(study_cmd(space, tmp_path, trials=6))  # more than the space holds
    trials = _load(tmp_path).get_trials()
    measured = [t for t in trials if t.state is TrialState.COMPLETE]
    configs = [json.dumps(t.user_attrs["flags"], sort_keys=True) for t in measured]
    assert len(configs) == 4 == len(set(configs))  # each of the four exactly once
    duplicates = [t for t in trials if t.state is TrialState.FAIL]
    assert duplicates and all("duplicate_of" in t.user_attrs for t in duplicates)  # proposed, never measured
    assert "no unmeasured neighbour is left: the space is measured out" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_clearly_slower_configuration_stops_at_its_deadline_without_exact_output_lengths(
    tmp_path: Path,
) -> None:
    # without ignore_eos a server may stop early, yet the prompts' max_tokens bound what any trial can
    # produce: past 1.25 x that bound / the best throughput a trial cannot come within 1.25x of the best
    fast = seed("fast", quantization="awq_marlin", **{"mem-fraction-static": 0.64})
    space = small_space(tmp_path, seeds=[fast, seed("slow")], ignore_eos=False, num_requests=16)
    _run(study_cmd(space, tmp_path, trials=2))
    first, second = _load(tmp_path).get_trials()
    assert first.state is TrialState.COMPLETE, first.user_attrs.get("failure")
    assert second.state is TrialState.PRUNED and second.user_attrs["pruned_by"] == "slow"
    best_tps = first.values[0]
    bound_s = 1.25 * 16 * 16 / best_tps  # num_requests x output_len / best output throughput
    assert second.user_attrs["metrics"]["duration_s"] < bound_s * 1.3


def test_a_queued_copy_of_a_measured_configuration_is_not_measured_again(tmp_path: Path) -> None:
    # Queued trials (seeds, repairs, re-runs) skip the sampler's duplicate check: they were new when
    # queued. Copies can still pile up (Optuna's heartbeat retries a dead worker's trial beside the
    # resume's re-queue); at run time the first to finish counts and a later copy ends FAIL unmeasured.
    space = small_space(tmp_path, seeds=[seed("first")])
    _run(study_cmd(space, tmp_path, trials=1))
    study = _load(tmp_path)
    (first,) = study.get_trials()
    assert first.state is TrialState.COMPLETE
    study.enqueue_trial(dict(first.params), user_attrs={"rerun_of": 0, "seed_name": "first"})
    proc = _run(study_cmd(space, tmp_path, trials=2))
    trials = _load(tmp_path).get_trials()
    again = trials[1]
    assert again.state is TrialState.FAIL and again.user_attrs["duplicate_of"] == 0
    assert "trial 1 (first): trial 0 has measured this configuration; not measured again" in proc.stderr
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 2 and 1 not in {t.number for t in finished}  # the total still reached
    assert "Traceback" not in proc.stderr
