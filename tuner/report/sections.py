"""The report's Markdown sections that answer the user's question: the answer itself (best against the
seed trials, confirmed where the study confirmed; the decode bound; crash findings), the output-quality
table and the workload the best was measured under; and the table renderer they share."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from tuner.objective.ranking import is_feasible
from tuner.report.roofline import DecodeBound
from tuner.report.summary import confirmation_lines
from tuner.search.learned import LearnedConstraint
from tuner.space.schema import SearchSpace
from tuner.store.attrs import StudyAttr, TrialAttr


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of ``frame`` (floats to 3 decimals)."""

    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body]) + "\n"


def answer_section(
    study: optuna.Study,
    ranked: Sequence[FrozenTrial],
    names: Sequence[str],
    learned: Sequence[LearnedConstraint],
    bound: DecodeBound | None,
) -> list[str]:
    """``## Answer``: the best trial; against the space's seed trials (confirmed, with intervals, where
    the study confirmed them; else one measurement each); its share of the hardware bound; crash findings."""
    if not ranked:
        return [
            "\n## Answer\n\nNo trial produced a feasible measurement (each crashed, or broke an SLO): see the failures and the top of the trials table below.\n"
        ]
    best = ranked[0]
    shown = ", ".join(f"{n} {v:.2f}" for n, v in zip(names, best.values, strict=True))
    seed = best.user_attrs.get(TrialAttr.SEED_NAME)
    out = ["\n## Answer\n\n", f"- Best: trial #{best.number}{f' ({seed})' if seed else ''}, {shown} "
           "(one measurement).\n"]  # fmt: skip
    confirmation = study.user_attrs.get(StudyAttr.CONFIRMATION)
    confirmed: set[str] = set()
    if confirmation:
        lines = [
            x for x in confirmation_lines(confirmation) if x.startswith(("confirmed best / ", "verdict: "))
        ]
        out += [f"- {x[0].upper()}{x[1:]}\n" for x in lines]
        confirmed = {c.get("baseline") for c in confirmation.get("candidates", []) if c.get("baseline")}
    for t in ranked:
        name = t.user_attrs.get(TrialAttr.SEED_NAME)
        if name and name not in confirmed and t.number != best.number and t.values[0]:
            out.append(f"- Best / {name} (#{t.number}): {best.values[0] / t.values[0]:.3f}x on {names[0]} "
                       "(one measurement each).\n")  # fmt: skip
    if bound is not None and (share := bound.share(best.user_attrs.get(TrialAttr.METRICS))) is not None:
        out.append(f"- Decode speed of the best: {pct(share)} % of the estimated bound {bound.formula()} "
                   "(1000 / median TPOT; an upper bound that ignores KV reads and overheads).\n")  # fmt: skip
    if learned:
        out.append(
            f"- Learned from crashes: {len(learned)} crash region(s), listed below with their trials.\n"
        )
    if confirmation and confirmation.get("candidates"):
        out.append(f"\n### Confirmation ({confirmation['repeats']} fresh measurements each, interleaved)\n\n")
        rows = [
            {"trial": c["trial"], "seed": c.get("baseline") or "",
             f"mean {confirmation['metric']}": c["ci"]["mean"] if c.get("ci") else None,
             "95 % CI low": c["ci"]["low"] if c.get("ci") else None,
             "95 % CI high": c["ci"]["high"] if c.get("ci") else None,
             "stable": "yes" if c.get("stable") else "no"}
            for c in confirmation["candidates"]
        ]  # fmt: skip
        out.append(markdown_table(pd.DataFrame(rows)))
    return out


def quality_section(study: optuna.Study, names: Sequence[str]) -> list[str]:
    """``## Output quality``: each configuration that answered the probes, its agreement with the
    reference beside its speed (the quality gate's evidence: the first different word)."""
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        q = t.user_attrs.get(TrialAttr.QUALITY)
        if not isinstance(q, dict):
            continue
        first = (q.get("divergences") or [{}])[0]
        rows.append({
            "trial": t.number, "seed": t.user_attrs.get(TrialAttr.SEED_NAME) or "", names[0]: t.values[0],
            "agreement": q.get("agreement"), "exact": q.get("exact"),
            "first difference": f"probe {first['probe']} word {first['at_word']}: {first['reference']!r} -> "
                                f"{first['answer']!r}" if first else "",
            "feasible": "yes" if is_feasible(t) else "no",
        })  # fmt: skip
    if not rows:
        return []
    text = ["\n## Output quality (greedy probes against the reference seed's answers)\n\n"]
    return [*text, markdown_table(pd.DataFrame(rows).sort_values("agreement", ascending=False))]


def workload_section(load: pd.DataFrame, space: SearchSpace | None) -> list[str]:
    """``## Workload``: where the prompts came from, how they were sent, and the lengths the best trial's
    measured requests had (the server's own prompt counts where it reports them)."""
    measured = load[~load["warmup"].astype(bool)]
    out = [f"\n## Workload (trial #{int(load['trial_number'].iloc[0])}'s measured requests)\n\n"]
    if space is not None:
        w = space.workload
        source = (
            f"dataset {w.dataset.kind}"
            + (f" `{Path(p).name}`" if (p := getattr(w.dataset, "path", None)) else "")
            if w.dataset is not None
            else f"prompts file `{Path(w.prompts_file).name}`"
            if w.prompts_file
            else "random token ids"
            if w.random_ids_vocab
            else "synthetic words"
        )
        lengths = f"lengths in the tokens of `{w.tokenizer}`" if w.tokenizer else "lengths in words"
        out.append(
            f"Prompts: {source} ({lengths}); arrival: {w.arrival.kind}; fingerprint `{w.fingerprint()}`.\n\n"
        )
    q = measured[["prompt_tokens", "max_new_tokens", "output_tokens"]].quantile([0.1, 0.5, 0.9, 1.0]).T
    q.columns = ["p10", "p50", "p90", "max"]
    out.append(markdown_table(q.reset_index().rename(columns={"index": "tokens"})))
    return out


def pct(share: float | None) -> float | None:
    return None if share is None else round(100 * share, 1)
