"""The output-quality gate's comparison and its space section."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tuner.core.errors import ConfigError
from tuner.objective.quality import compare
from tuner.space import load_space
from tuner.space.sections import QualitySpec
from tuner.testing import ROOT


def test_agreement_is_the_share_of_the_reference_reproduced_before_the_first_difference() -> None:
    ref = ["a b c d", "x y", "p q r s"]
    same = compare(ref, list(ref))
    assert (same.agreement, same.exact, same.n, same.divergences) == (1.0, 1.0, 3, [])
    verdict = compare(ref, ["a b c d", "x z", None])  # one word for word, one from word 1, one unanswered
    assert verdict.agreement == pytest.approx((1 + 0.5 + 0) / 3) and verdict.exact == pytest.approx(1 / 3)
    first = verdict.divergences[0]
    assert (first.probe, first.at_word, first.reference, first.answer) == (1, 1, "y", "z")
    gate = QualitySpec(reference="ref")  # min_agreement 0.9
    assert verdict.constraint(gate) > 0 and same.constraint(gate) < 0
    assert "first difference: probe 1 word 1: 'y' -> 'z'" in verdict.describe()
    longer = compare(["a b"], ["a b c"])  # says more than the reference: not word for word
    assert longer.agreement == 1.0 and longer.exact == 0.0


def test_the_reference_must_be_a_seed_trial(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "search_spaces" / "sglang-rtx5090-qwen3-32b-awq.yaml").read_text())
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**raw, "quality": {"reference": "baseline"}}))
    assert load_space(path).quality is not None
    path.write_text(yaml.safe_dump({**raw, "quality": {"reference": "nope"}}))
    with pytest.raises(ConfigError, match=r"quality\.reference: 'nope' is not a seed trial"):
        load_space(path)


def test_the_reference_runs_first_even_without_the_other_seeds() -> None:
    from tuner.space.check import describe
    from tuner.space.sample import seeds_to_enqueue

    space = load_space(ROOT / "search_spaces" / "sglang-cpu-tiny.yaml")  # reference: float32, listed second
    assert [s.name for s in space.seed_trials][:2] == ["defaults", "float32"]
    assert [s.name for s in seeds_to_enqueue(space)] == ["float32", "defaults", "triton", "small-pool"]
    assert [s.name for s in seeds_to_enqueue(space, all_seeds=False)] == ["float32"]  # --no-seed-trials
    text = "\n".join(describe(space, "sglang-cpu-tiny.yaml"))
    assert "float32  (the quality gate's reference: runs first)" in text and "exact >= 1" in text
