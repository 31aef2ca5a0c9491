"""The report's failure grid reads as the space does: values in the space's order, integers as
integers, outcome labels once per row."""

from __future__ import annotations

import random

import optuna
import pandas as pd
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import create_trial

from tuner.report.figures import axis_labels, failures_figure, importance_figure
from tuner.space import load_space
from tuner.testing import ROOT

SPACE = load_space(ROOT / "search_spaces" / "sglang-rtx5090-qwen3-32b-awq.yaml")


def test_categorical_values_follow_the_space_and_integers_stay_integers() -> None:
    # what pandas makes of [None, 1024, -1, 512, 2048]: floats and NaN
    column = pd.Series([None, 1024.0, -1.0, 512.0, 2048.0, float("nan")], dtype=object)
    labels, order = axis_labels(column, SPACE.parameters["chunked-prefill-size"])
    assert order == ["None", "-1", "512", "1024", "2048", "4096"]  # the space's choices, as listed
    assert labels.tolist() == ["None", "1024", "-1", "512", "2048", "None"]
    # without the space: None first, then numbers ascending, then words
    assert axis_labels(pd.Series([None, 1024.0, -1.0, "x"], dtype=object))[1] == ["None", "-1", "1024", "x"]
    assert axis_labels(pd.Series([True, False]), SPACE.parameters["disable-radix-cache"])[1] == [
        "False",
        "True",
    ]
    # a number for every trial: a numeric axis, untouched
    mem = pd.Series([0.85, 0.64, 0.9])
    assert axis_labels(mem, SPACE.parameters["mem-fraction-static"]) == (mem, None)


def test_outcome_labels_stand_on_the_left_column_only_in_one_order() -> None:
    frame = pd.DataFrame({
        "number": [0, 1, 2],
        "outcome": ["ok", "cuda_oom", "segfault"],
        "param_quantization": ["awq", "awq_marlin", "awq"],
        "param_chunked-prefill-size": [None, 1024.0, -1.0],
        "param_mem-fraction-static": [0.85, 0.7, 0.9],
        "param_enable-torch-compile": [False, True, True],
    })  # fmt: skip
    fig = failures_figure(frame, SPACE)
    assert fig is not None
    layout = fig.layout
    yaxes = [layout[k] for k in ("yaxis", "yaxis2", "yaxis3", "yaxis4")]  # the panels with a parameter
    assert [y.showticklabels for y in yaxes] == [True, False, False, True]  # 3 columns, 2 rows
    assert all(list(y.categoryarray) == ["ok", "cuda_oom", "segfault"] for y in yaxes)
    xaxes = {layout[k].anchor: layout[k] for k in layout.to_plotly_json() if k.startswith("xaxis")}
    assert list(xaxes["y2"].categoryarray) == ["None", "-1", "512", "1024", "2048", "4096"]


def _study(values: list[tuple[float, int, float]]) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    dists = {
        "mem-fraction-static": FloatDistribution(0.5, 0.95),
        "torch-compile-max-bs": IntDistribution(1, 32),
    }
    for mem, bs, v in values:
        study.add_trial(create_trial(params={"mem-fraction-static": mem, "torch-compile-max-bs": bs},
                                     distributions=dists, value=v))  # fmt: skip
    return study


def test_importance_shows_its_bootstrap_interval_and_conditional_parents() -> None:
    rng = random.Random(0)
    rows = [
        (m := rng.uniform(0.5, 0.95), rng.randint(1, 32), 10 + 20 * m + rng.gauss(0, 0.2)) for _ in range(24)
    ]
    fig, why = importance_figure(_study(rows), SPACE)
    assert fig is not None and why == ""
    (bar,) = fig.data
    assert list(bar.y) == [
        "torch-compile-max-bs (if enable-torch-compile)",
        "mem-fraction-static",
    ]  # most important last
    assert bar.x[1] > 0.8 and bar.x[0] < 0.2  # the throughput follows the memory fraction
    lows, highs = bar.error_x.arrayminus, bar.error_x.array
    assert all(lo >= 0 and hi >= 0 for lo, hi in zip(lows, highs, strict=True)) and max(highs) + max(lows) > 0
    assert "bootstrap resamples of 24 trials" in fig.layout.title.text


def test_importance_is_skipped_when_the_values_spread_within_the_confirmed_noise() -> None:
    rng = random.Random(1)
    study = _study([(rng.uniform(0.5, 0.95), rng.randint(1, 32), 27 + rng.gauss(0, 0.1)) for _ in range(20)])
    study.set_user_attr("confirmation", {"candidates": [{"ci": {"mean": 27.0, "low": 25.0, "high": 29.0}}]})
    fig, why = importance_figure(study, SPACE)
    assert fig is None and "within twice the run-to-run noise the confirmation measured (7.4 %)" in why
