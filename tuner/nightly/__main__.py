"""``python -m tuner.nightly``: the nightly retune job (exit codes in :mod:`tuner.nightly`).

    python -m tuner.nightly --space search_spaces/sglang-rtx5090-qwen3-32b-awq.yaml \\
        --storage sqlite:///storage/tuner.db
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tuner.core.cli import ExitCode, run_cli
from tuner.nightly.job import run_nightly
from tuner.nightly.lock import LockHeld
from tuner.nightly.model import NightlyOptions
from tuner.study.options import DEFAULT_SPACE, DEFAULT_STORAGE
from tuner.trial.objective import quiet_optuna_logs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tuner.nightly",
        description="Nightly retune: re-measure the deployed configuration (regression alarm), search "
        "within a time budget, validate the best candidates interleaved with the deployed one and promote "
        "only a significant, SLO-clean improvement. Exit codes: 0 kept, 10 promoted, 20 regression, "
        "21 deployed configuration failed/rejected, 75 another run holds the lock, 2 bad input, "
        "3 storage error, 4 launch error, 1 other failure, 130 interrupted.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--space", default=DEFAULT_SPACE, help="search-space YAML file")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help="study database URL")
    p.add_argument("--study", default=None, help="study name (default: the space's name)")
    p.add_argument(
        "--out", default="storage", help="folder for logs, artifacts, reports and the deployed file"
    )
    p.add_argument(
        "--deployed", default=None, help="deployed configuration file (default OUT/deployed/STUDY.yaml)"
    )
    p.add_argument("--lock", default=None, help="lock file (default OUT/nightly/STUDY.lock)")
    p.add_argument("--repeats", type=int, default=5, help="re-measurements of the deployed configuration")
    p.add_argument(
        "--max-trials", type=int, default=20, help="trials tonight (warm-start ones included); 0: none"
    )
    p.add_argument(
        "--budget-min", type=float, default=60.0, help="start no new trial after this many minutes"
    )
    p.add_argument("--known-top", type=int, default=3, help="best known configurations to re-measure first")
    p.add_argument("--candidates", type=int, default=2, help="best configurations of tonight to validate")
    p.add_argument(
        "--rounds", type=int, default=5, help="interleaved validation rounds (deployed, candidates…)"
    )
    p.add_argument(
        "--margin", type=float, default=0.02, help="promote only when the CI lower bound > 1 + margin"
    )
    p.add_argument(
        "--regression-margin", type=float, default=0.02, help="alarm when the CI upper bound < 1 - this"
    )
    p.add_argument("--confidence", type=float, default=0.95, help="confidence of the bootstrap intervals")
    p.add_argument("--resamples", type=int, default=4000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--sampler-seed", type=int, default=None, help="Optuna sampler seed")
    p.add_argument("--accept-current", action="store_true",
                   help="after an alarm was looked into: make tonight's repeats the deployed configuration's reference")  # fmt: skip
    return p


def options_from(parser: argparse.ArgumentParser, args: argparse.Namespace) -> NightlyOptions:
    """Validate the command line into :class:`NightlyOptions` (a bad option exits 2, as argparse does)."""
    # Below these the bootstrap intervals cannot hold their error rates (docs/nightly.md, "The statistics").
    if args.repeats < 3:
        parser.error("--repeats must be at least 3 (the regression interval needs them)")
    if args.rounds < 4:
        parser.error("--rounds must be at least 4 (with 3 rounds noise alone promotes ~5 % of the time)")
    if not 0 < args.confidence < 1:
        parser.error("--confidence must be between 0 and 1, e.g. 0.95")
    return NightlyOptions(
        space=Path(args.space), storage=args.storage, out=Path(args.out), study=args.study,
        deployed=Path(args.deployed) if args.deployed else None, lock=Path(args.lock) if args.lock else None,
        repeats=args.repeats, max_trials=args.max_trials, budget_s=args.budget_min * 60, known_top=args.known_top,
        candidates=args.candidates, rounds=args.rounds, margin=args.margin, regression_margin=args.regression_margin,
        confidence=args.confidence, resamples=args.resamples, seed=args.seed, sampler_seed=args.sampler_seed,
        accept_current=args.accept_current,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    opts = options_from(parser, parser.parse_args(argv))
    quiet_optuna_logs()
    return run_cli("tuner.nightly", lambda: _run(opts))


def _run(opts: NightlyOptions) -> int:
    try:
        run = run_nightly(opts)
    except LockHeld as e:
        print(f"tuner.nightly: {e}", file=sys.stderr)
        return ExitCode.LOCKED
    print(f"nightly {run.study}: {run.decision} (exit {int(run.exit_code)}); report {run.report_path}")
    if run.error:
        print(f"tuner.nightly: failed: {run.error.splitlines()[0]}", file=sys.stderr)
    return run.exit_code


if __name__ == "__main__":
    sys.exit(main())
