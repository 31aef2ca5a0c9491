"""The end-of-study summary: the answer (best against the seed trials, confirmed where the study
confirmed), what the crashes taught, failures by kind, top trials, the best configuration as commands."""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import optuna
import yaml
from optuna.trial import FrozenTrial

from tuner.core.slug import slug
from tuner.core.stats import RatioCI
from tuner.objective.ranking import ranked_trials
from tuner.report.best import best_config
from tuner.report.learning import study_crash_halves
from tuner.report.roofline import decode_bound
from tuner.search.learned import LearnedConstraint, learned_constraints
from tuner.space.schema import SearchSpace
from tuner.store.attrs import StudyAttr, TrialAttr


def write_summary(
    study: optuna.Study,
    space: SearchSpace,
    out: Path,
    *,
    stream: TextIO,
    top: int = 5,
    gpu_name: str | None = None,
) -> bool:
    """Print the summary and write the best configuration under ``out/<study>/``. True if one exists.
    ``gpu_name``: the GPU NVML names (for the decode bound on a real GPU).

    The answer first (the best trial, against the space's seed trials - with the confirmation's
    intervals where there is one -, its share of the hardware's decode bound), then what the crashes
    taught, the failures, the confirmation's detail, the top trials and the best command."""
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    kinds = Counter(
        t.user_attrs[TrialAttr.FAILURE_KIND] for t in trials if TrialAttr.FAILURE_KIND in t.user_attrs
    )
    metrics = [o.metric for o in space.objectives]
    print(f"\nstudy {study.study_name}: {len(trials)} trials ({', '.join(f'{k} {v}' for k, v in states.items())})",
          file=stream)  # fmt: skip
    ranked = ranked_trials(study)
    confirmation = study.user_attrs.get(StudyAttr.CONFIRMATION)
    if ranked:
        for line in answer_lines(study, space, ranked, confirmation, gpu_name):
            print(line, file=stream)
    learned = learned_constraints(trials)
    if learned:
        print(f"learned from crashes ({len(learned)}; pruned before launch from now on):", file=stream)
        for c in learned:
            print(f"  {c.describe()}", file=stream)
        path = write_learned(learned, space, out / slug(study.study_name))
        print(f"  as space-file constraints: {path}", file=stream)
    if kinds:
        print("failures by kind: " + ", ".join(f"{k} {v}" for k, v in kinds.most_common()), file=stream)
        print(study_crash_halves(study).describe(), file=stream)  # did the sampler learn to avoid crashes?
    if confirmation:
        print("\n".join(confirmation_lines(confirmation, ratios=False)), file=stream)
    if not ranked:
        print("no trial produced a feasible measurement: see the failures above and the logs", file=stream)
        return False
    print(f"\ntop {min(top, len(ranked))} feasible trials ({', '.join(metrics)}):", file=stream)
    for t in ranked[:top]:
        seed = t.user_attrs.get(TrialAttr.SEED_NAME)
        vals = ", ".join(f"{v:.2f}" for v in t.values)
        print(f"  #{t.number:<4} {vals}{'  (' + seed + ')' if seed else ''}", file=stream)
    if len(space.objectives) > 1:
        front = sorted(study.best_trials, key=lambda t: t.number)  # feasible Pareto-optimal trials
        print(f"Pareto front ({len(front)} trials): " + "; ".join(
            f"#{t.number} " + ", ".join(f"{m} {v:.2f}" for m, v in zip(metrics, t.values, strict=True))
            for t in front
        ), file=stream)  # fmt: skip
    folder = out / slug(study.study_name)
    config = best_config(study, ranked[0], space)
    config.write(folder)
    print(
        f"\n{config.header}\n  {shlex.join(config.command)}\n\n  {config.docker_run}\n\nwritten to {folder}/best-*.sh and best-flags.yaml",
        file=stream,
    )
    return True


def answer_lines(
    study: optuna.Study,
    space: SearchSpace,
    ranked: Sequence[FrozenTrial],
    confirmation: Mapping[str, Any] | None,
    gpu_name: str | None = None,
) -> list[str]:
    """``answer: best trial #14, output_throughput 47.74 (one measurement)`` and, indented, the best against
    each seed trial (confirmed with an interval, else one measurement each) and against the decode bound."""
    best = ranked[0]
    metrics = [o.metric for o in space.objectives]
    shown = ", ".join(f"{m} {v:.2f}" for m, v in zip(metrics, best.values, strict=True))
    seed = best.user_attrs.get(TrialAttr.SEED_NAME)
    lines = [f"answer: best trial #{best.number}{f' ({seed})' if seed else ''}, {shown} (one measurement)"]
    confirmed: set[str] = set()
    if confirmation:
        ratios = [line for line in confirmation_lines(confirmation) if line.startswith("confirmed best / ")]
        lines += [f"  {line}" for line in ratios]
        confirmed = {c["baseline"] for c in confirmation.get("candidates", []) if c.get("baseline")}
    for t in ranked:
        name = t.user_attrs.get(TrialAttr.SEED_NAME)
        if name and name not in confirmed and t.number != best.number and t.values[0]:
            lines.append(
                f"  best / {name}: {best.values[0] / t.values[0]:.3f}x on {metrics[0]} (one measurement each)"
            )
    if space.quality is not None:
        changed = [t.number for t in study.get_trials(deepcopy=False)
                   if (q := t.user_attrs.get(TrialAttr.QUALITY))
                   and not space.quality.accepts(q["agreement"], q.get("exact", 1.0))]  # fmt: skip
        if changed:
            lines.append(f"  quality gate: {len(changed)} configuration(s) changed the answers (against "
                         f"{space.quality.reference}, not {space.quality.threshold()}) and cannot win: "
                         + ", ".join(f"#{n}" for n in changed))  # fmt: skip
    bound = decode_bound(space, gpu_name)
    share = bound.share(best.user_attrs.get(TrialAttr.METRICS)) if bound is not None else None
    if bound is not None and share is not None:
        lines.append(f"  decode speed of the best: {100 * share:.1f} % of the estimated bound {bound.formula()}"
                     " (1000 / median TPOT)")  # fmt: skip
    return lines


def write_learned(learned: list[LearnedConstraint], space: SearchSpace, folder: Path) -> Path:
    """``learned-constraints.yaml``: a ``constraints:`` block to paste into the space file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "learned-constraints.yaml"
    header = (
        "# Constraints learned from crashes whose repaired neighbour ran (tuner.search.learned).\n"
        "# Paste under the space file's `constraints:` to prune these regions in new studies too.\n"
    )
    body = yaml.safe_dump({"constraints": [c.to_space_entry(space) for c in learned]}, sort_keys=False)
    path.write_text(header + body)
    return path


def confirmation_lines(attrs: Mapping[str, Any], *, ratios: bool = True) -> list[str]:
    """The summary lines of a stored confirmation (for reports reading the study back); ``ratios``:
    with the ``confirmed best / <baseline>`` lines (the answer shows them itself)."""
    lines = [f"confirmed top {len(attrs['candidates'])} ({attrs['repeats']} repeats, {attrs['metric']}):"]
    for c in attrs["candidates"]:
        ci = c.get("ci")
        shown = f"{ci['mean']:.2f} [{ci['low']:.2f}, {ci['high']:.2f}]" if ci else "no interval"
        name = f" ({c['baseline']})" if c.get("baseline") else ""
        lines.append(f"  #{c['trial']:<5} {shown}{name}{'' if c['stable'] else '  UNSTABLE'}")
    lines.append(f"verdict: {attrs['verdict']}")
    winner = attrs["candidates"][0]["trial"] if attrs["candidates"] else None
    for c in attrs["candidates"] if ratios else []:
        if not c.get("baseline"):
            continue
        r = c.get("vs_winner")
        if r:
            lines.append(f"confirmed best / {c['baseline']}: {RatioCI(**r).describe()}")
        else:
            why = "it is the winner" if c["trial"] == winner else "no paired rounds"
            lines.append(f"confirmed best / {c['baseline']}: no ratio ({why})")
    return lines
