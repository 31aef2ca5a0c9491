"""``python -m tuner.study``: run (or resume) a tuning study.

    python -m tuner.study --trials 50
    python -m tuner.study --space search_spaces/sglang-rtx5090-qwen3-32b-awq.yaml \\
        --storage sqlite:///storage/tuner.db --study demo --trials 50 --seed 0

``--trials`` is the study's TOTAL of finished (complete or pruned) trials: re-running the same
command after an interruption resumes and stops at that total. ``--check`` validates the space file and
prints what it resolves to, starting nothing. Exit codes: ``tuner.core.cli.ExitCode``
(README, "Exit codes").
"""

from __future__ import annotations

import os
import signal
import sys


def _interrupted_while_starting(signum: int, frame: object) -> None:
    print("tuner.study: interrupted", file=sys.stderr, flush=True)
    os._exit(130)


if __name__ == "__main__":  # Ctrl-C while the imports below load (a second or two) is one line too
    signal.signal(signal.SIGINT, _interrupted_while_starting)

import argparse  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

from tuner.core.cli import run_cli  # noqa: E402
from tuner.core.errors import ConfigError  # noqa: E402
from tuner.space.check import describe  # noqa: E402
from tuner.space.load import load_space  # noqa: E402
from tuner.space.schema import name_problem  # noqa: E402
from tuner.study.options import DEFAULT_SPACE, DEFAULT_STORAGE, StudyOptions  # noqa: E402
from tuner.study.session import run_study  # noqa: E402
from tuner.trial.objective import quiet_optuna_logs  # noqa: E402


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown, but not ``(default: None)`` and not twice."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or "(default" in text:
            return text
        return super()._get_help_string(action) or text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tuner.study",
        description="Search an LLM serving engine's launch flags with Optuna. Each trial restarts the "
        "server with sampled flags, benchmarks it, and records metrics or the failure.",
        formatter_class=_Formatter,
        epilog="exit codes: 0 done; 1 failed for another reason; 2 bad space file or option; 3 storage error; "
        "4 servers cannot be started at all; 5 no trial produced a feasible measurement; 130 interrupted",
    )
    p.add_argument("--space", default=DEFAULT_SPACE, help="search-space YAML file")
    p.add_argument(
        "--check",
        action="store_true",
        help="validate the space file and print what it resolves to (parameters, size, seeds, constraints), "
        "start nothing; exit 0 when valid, 2 when not",
    )
    p.add_argument("--trials", type=int, default=50, help="finished trials the study should reach in total")
    p.add_argument(
        "--storage", default=DEFAULT_STORAGE, help="database URL (sqlite:///… or postgresql+psycopg://…)"
    )
    p.add_argument("--study", default=None, help="study name (default: the space's name)")
    p.add_argument(
        "--seed", type=int, default=None, help="sampler seed (reproducible when run by one worker)"
    )
    p.add_argument("--sampler", choices=("tpe", "random"), default="tpe", help="how to propose trials")
    p.add_argument("--prune", action="store_true", help="stop clearly worse trials early (single objective)")
    p.add_argument(
        "--no-seed-trials", action="store_true", help="do not enqueue the space's seed_trials and warm_start"
    )
    p.add_argument("--no-warm-start", action="store_true", help="do not enqueue the space's warm_start tiers")
    p.add_argument(
        "--measure-all",
        action="store_true",
        help="measure every configuration to the end (by default a throughput benchmark that runs 1.25x "
        "longer than the best trial's stops: it cannot win)",
    )
    p.add_argument(
        "--no-guide",
        action="store_true",
        help="the plain sampler: random start-up draws, no repaired neighbours after crashes, no learned "
        "constraints, duplicates measured again",
    )
    p.add_argument("--worker", default="0", help="this worker's id (several workers can share one study)")
    p.add_argument(
        "--workers", type=int, default=1, help="how many workers share the study (SQLite allows 1)"
    )
    p.add_argument(
        "--gpus", default=None, help="GPU ids this worker owns, e.g. 0 or 0,1 (overrides the space)"
    )
    p.add_argument(
        "--heartbeat", type=int, default=10, help="heartbeat seconds; a silent worker's trial is retried"
    )
    p.add_argument("--out", default="storage", help="where logs, artifacts and the best configuration go")
    p.add_argument("--timeout-min", type=float, default=None, help="stop starting new trials after this long")
    return p


def options_from(args: argparse.Namespace) -> StudyOptions:
    """The command line as :class:`StudyOptions`; a value out of its range is a ConfigError naming the option."""
    for option, value, low, high in (
        ("--trials", args.trials, 1, 1_000_000),
        ("--workers", args.workers, 1, 1024),
        ("--heartbeat", args.heartbeat, 1, 3600),
    ):
        if not low <= value <= high:
            raise ConfigError(f"{value} is outside {low}..{high}", source=option)
    if args.timeout_min is not None and not 0 < args.timeout_min < 1e7:
        raise ConfigError(f"{args.timeout_min} is not a positive number of minutes", source="--timeout-min")
    if args.study is not None and (problem := name_problem(args.study)):
        raise ConfigError(f"the study name {problem}", source="--study")
    gpus = None
    if args.gpus is not None:
        try:
            gpus = tuple(int(g) for g in args.gpus.split(",") if g.strip())
            if not gpus or min(gpus) < 0:
                raise ValueError
        except ValueError:
            raise ConfigError(
                f"{args.gpus!r} is not a list of GPU ids such as 0 or 0,1", source="--gpus"
            ) from None
    return StudyOptions(
        space=args.space, storage=args.storage, trials=args.trials, study=args.study, seed=args.seed,
        sampler=args.sampler, prune=args.prune, seed_trials=not args.no_seed_trials, warm_start=not args.no_warm_start,
        guide=not args.no_guide,
        cover_start=not args.no_guide,
        stop_slower=not args.measure_all,
        worker=args.worker,
        workers=args.workers, gpus=gpus, heartbeat=args.heartbeat, out=Path(args.out),
        timeout_min=args.timeout_min,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGINT, signal.default_int_handler)  # from here run_cli says "interrupted"
    args = build_parser().parse_args(argv)
    quiet_optuna_logs()
    if args.check:
        return run_cli("tuner.study", lambda: check(args.space))
    return run_cli("tuner.study", lambda: run_study(options_from(args)))


def check(path: str) -> int:
    """``--check``: load and describe the space (a ConfigError exits 2 through ``run_cli``)."""
    print("\n".join(describe(load_space(path), path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
