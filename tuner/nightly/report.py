"""The Markdown report of one nightly run: ``<out>/nightly/<study>-<stamp>.md``.

It says what was decided and why, with every measurement and interval behind it, so the
person paged by an alarm can judge it without opening the database.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from tuner.core.slug import slug
from tuner.nightly.decide import Verdict
from tuner.nightly.model import NightlyRun, masked_storage
from tuner.nightly.remeasure import Measurement, values
from tuner.store.attrs import TrialAttr


def write_report(run: NightlyRun, folder: Path) -> Path:
    """Render and write the report; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{slug(run.study or 'unknown')}-{run.stamp}.md"
    path.write_text(render(run))
    return path


def render(run: NightlyRun) -> str:
    """The report as Markdown."""
    o = run.options
    space = run.space
    lines = [f"# Nightly retune {run.study} — {run.stamp}", ""]
    lines += [f"**Decision: {run.decision}** (exit code {run.exit_code})", ""]
    if run.error:
        lines += ["## Error", "", "```", run.error.strip(), "```", ""]
    lines += ["## Set-up", ""]
    if space is not None:
        target = space.target
        where = target.kind + (f" {getattr(target, 'gpu', '')}" if target.kind == "simulator" else "")
        if target.kind == "docker":
            where += f" {getattr(target, 'image', '')}"
        obj = space.objectives[0]
        lines += [
            f"- space `{o.space}`, storage `{masked_storage(run)}`",
            f"- engine {space.engine} {space.engine_version}, target {where}, model {space.model}",
            f"- objective {obj.metric} ({obj.direction}); SLOs {_slos(space)}; "
            f"workload fingerprint {space.workload.fingerprint()}",
        ]
    lines += [
        f"- rules: promote when the paired {o.confidence:.0%} bootstrap CI of the {('candidate/deployed')} "
        f"ratio of means (oriented: > 1 is better) has its lower bound above {1 + o.margin:.3f} and every SLO "
        f"held on every repeat; regression when the CI of fresh/reference has its upper bound below "
        f"{1 - o.regression_margin:.3f}; {o.resamples} resamples, seed {o.seed}",
        f"- budget: {o.repeats} repeats of the deployed configuration, up to {o.max_trials} trials in "
        f"{o.budget_s / 60:.0f} min, {o.candidates} candidate(s) x {o.rounds} interleaved rounds",
        "",
    ]
    if run.notes:
        lines += ["## Notes", "", *(f"- {n}" for n in run.notes), ""]
    if run.deployed is not None:
        d = run.deployed
        lines += ["## Deployed configuration", "", f"- source: {run.deployed_origin}"]
        if d.trial_number is not None:
            lines.append(f"- trial #{d.trial_number} of study {d.study}")
        if d.reason:
            lines.append(f"- deployed because: {d.reason}")
        lines += ["", "```", _flags_line(d.flags), "```", ""]
        if run.deployed_rejected:
            lines += [f"Rejected before launch: {run.deployed_rejected}", ""]
    if run.repeats:
        lines += ["## Deployed configuration re-measured", ""]
        lines += _measurement_table(run.repeats)
        fresh = values(run.repeats)
        if fresh:
            lines.append(f"Mean {_mean(fresh):.3f} over {len(fresh)} repeats.")
        lines.append(f"Reference: {run.reference_desc}.")
        if run.reference:
            lines.append(
                f"Reference repeats: {', '.join(f'{v:.3f}' for v in run.reference)} (mean {_mean(run.reference):.3f})."
            )
        if run.regression is not None:
            lines.append(f"Regression check: **{run.regression.decision}**, fresh/reference {_ci(run.regression)}; "
                         + "; ".join(run.regression.reasons) + ".")  # fmt: skip
        lines.append("")
    if run.repeats and not run.deployed_failures:
        lines += ["## Search", ""]
        if o.max_trials <= 0:
            lines.append("Skipped (--max-trials 0).")
        elif run.warm_start:
            lines.append("Enqueued first: " + ", ".join(w.label for w in run.warm_start) + ".")
        if run.tonight:
            lines.append(f"{len(run.tonight)} trial(s) tonight in {run.search_seconds:.0f} s:")
            lines += ["", "| trial | origin | state | value | note |", "|---|---|---|---|---|"]
        for t in run.tonight:
            value = f"{t.values[0]:.3f}" if t.values else ""
            note = t.user_attrs.get(TrialAttr.FAILURE_KIND, "")
            if t.constraints and any(v > 0 for v in t.constraints.values()) and not note:
                note = "SLO violated"
            origin = (
                t.user_attrs.get(TrialAttr.WARM_START) or t.user_attrs.get(TrialAttr.SEED_NAME) or "sampled"
            )
            lines.append(f"| #{t.number} | {origin} | {t.state.name} | {value} | {note} |")
        lines.append("")
    if run.validation:
        lines += ["## Validation (interleaved rounds)", ""]
        labels = list(run.validation)
        rounds = sorted({m.round for ms in run.validation.values() for m in ms if m.round is not None})
        lines += ["| round | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        for r in rounds:
            cells = []
            for label in labels:
                m = next((m for m in run.validation[label] if m.round == r), None)
                cells.append(_cell(m))
            lines.append(f"| {r} | " + " | ".join(cells) + " |")
        lines.append("")
        for label, verdict in run.verdicts.items():
            trial = run.candidate_trials[label]
            lines += [
                f"- candidate {label}: **{verdict.decision}**, candidate/deployed {_ci(verdict)}; "
                + "; ".join(verdict.reasons),
                "  ```",
                "  " + _flags_line(trial.user_attrs.get(TrialAttr.FLAGS, {})),
                "  ```",
            ]
        lines.append("")
    failures = [m for m in (*run.repeats, *(m for ms in run.validation.values() for m in ms)) if not m.ok]
    if failures:
        lines += ["## Failures", ""]
        lines += [f"- {m.label} (run {m.run_index}): {m.failure}; log `{m.log_path}`" for m in failures]
        lines.append("")
    return "\n".join(lines)


def _measurement_table(ms: list[Measurement]) -> list[str]:
    out = ["| run | value | SLOs | failure |", "|---|---|---|---|"]
    for m in ms:
        value = f"{m.value:.3f}" if m.value is not None else ""
        slo = "ok" if m.slo_ok else ("violated: " + ", ".join(m.violated) if m.ok else "")
        out.append(f"| {m.run_index} | {value} | {slo} | {m.failure or ''} |")
    out.append("")
    return out


def _cell(m: Measurement | None) -> str:
    if m is None:
        return ""
    if not m.ok:
        return f"FAILED ({m.failure_kind})"
    return f"{m.value:.3f}" + ("" if m.slo_ok else " (SLO violated)")


def _ci(v: Verdict) -> str:
    return v.ci.describe() if v.ci is not None else "no interval"


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def _slos(space: object) -> str:
    slos = getattr(space, "slos", None)
    if slos is None:
        return "none"
    set_ = {k: v for k, v in slos.model_dump().items() if v is not None}
    return ", ".join(f"{k} ≤ {v}" for k, v in set_.items()) or "none"


def _flags_line(flags: dict) -> str:
    from tuner.engines.base import render_flags

    return shlex.join(render_flags(flags))
