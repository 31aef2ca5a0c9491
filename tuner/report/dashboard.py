"""``python -m tuner.report.dashboard``: optuna-dashboard on a study database, with the trials' server logs.

    python -m tuner.report.dashboard --storage sqlite:///storage/tuner.db [--artifact-dir storage/artifacts] \\
        [--host 127.0.0.1] [--port 8080]

Before serving, every study gets its metric names (from the recorded search space when the study
has none) and a note carrying the best configuration (:func:`publish_best_note`). Each trial's
server log, uploaded by the study runner with ``optuna.artifacts.upload_artifact``, shows under the
trial's artifacts; ``failure_kind`` and the failure evidence show in its user attributes.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import optuna
import optuna_dashboard
from optuna.artifacts import FileSystemArtifactStore

from tuner.core.cli import run_cli
from tuner.objective.ranking import ranked_trials
from tuner.report.best import best_config
from tuner.store import DEFAULT_URL, make_optuna_storage, mask_url, storage_errors
from tuner.store.attrs import StudyAttr, TrialAttr

DEFAULT_ARTIFACT_DIR = "storage/artifacts"
# Our block of the study note lies between these; text a person adds in the dashboard stays below.
NOTE_MARK = "<!-- tuner:best -->"
NOTE_END = "<!-- tuner:end -->"


def best_note(study: optuna.Study) -> str | None:
    """The Markdown of the study's note: best trial, values, launch command, ``docker run`` line.

    None when the study has no feasible complete trial yet.
    """
    ranked = ranked_trials(study)
    if not ranked:
        return None
    best = best_config(study, ranked[0])
    values = ", ".join(f"**{k}** {v:.3f}" for k, v in best.values.items())
    seed = ranked[0].user_attrs.get(TrialAttr.SEED_NAME)
    return "\n".join(
        [
            NOTE_MARK,
            f"## Best configuration: trial #{best.trial_number}" + (f" ({seed})" if seed else ""),
            "",
            values,
            "",
            "Launch command:",
            "",
            "```sh",
            shlex.join(best.command),
            "```",
            "",
            "As a container:",
            "",
            "```sh",
            best.docker_run,
            "```",
            "",
            "Flags (YAML):",
            "",
            "```yaml",
            best.flags_yaml.rstrip(),
            "```",
        ]
    )


def publish_best_note(study: optuna.Study) -> bool:
    """Write (or refresh) the best-configuration note on ``study``; False when there is no best yet.

    Text a person wrote in the dashboard is kept below our block.
    Call at the end of a study (the study CLI does) or any time; it only changes the note.
    """
    body = best_note(study)
    if body is None:
        return False
    current = optuna_dashboard.get_note(study) or ""
    if NOTE_END in current:
        current = current.split(NOTE_END, 1)[1].lstrip("\n")  # drop our previous block, keep the rest
    body = f"{body}\n{NOTE_END}\n\n{current}".rstrip() + "\n"
    if body != optuna_dashboard.get_note(study):
        optuna_dashboard.save_note(study, body)
    return True


def ensure_metric_names(study: optuna.Study) -> None:
    """Set the study's metric names from its recorded search space (user attr ``space``) when unset."""
    if study.metric_names:
        return
    objectives = (study.user_attrs.get(StudyAttr.SPACE) or {}).get("objectives") or []
    names = [str(o["metric"]) for o in objectives if isinstance(o, dict) and o.get("metric")]
    if names and len(names) == len(study.directions):
        study.set_metric_names(names)


def prepare(storage_url: str) -> list[str]:
    """Metric names and best notes on every study of ``storage_url``; returns the study names."""
    storage = make_optuna_storage(storage_url)
    names = []
    with storage_errors(storage_url, "preparing the studies of"):
        for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
            study = optuna.load_study(study_name=summary.study_name, storage=storage)
            ensure_metric_names(study)
            publish_best_note(study)
            names.append(summary.study_name)
    storage.engine.dispose()
    return names


def serve(storage_url: str, *, artifact_dir: str | None, host: str, port: int) -> None:
    """Run optuna-dashboard until interrupted (blocks)."""
    storage = make_optuna_storage(storage_url)
    store = None
    if artifact_dir is not None:
        Path(artifact_dir).mkdir(parents=True, exist_ok=True)
        store = FileSystemArtifactStore(artifact_dir)
    optuna_dashboard.run_server(storage, host=host, port=port, artifact_store=store)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; exit codes: ``tuner.core.cli.ExitCode`` (0 after Ctrl-C: stopping it is how it ends)."""
    p = argparse.ArgumentParser(prog="python -m tuner.report.dashboard", description=__doc__.split("\n\n")[0])
    p.add_argument("--storage", default=DEFAULT_URL, help=f"database URL (default {DEFAULT_URL})")
    p.add_argument(
        "--artifact-dir", default=DEFAULT_ARTIFACT_DIR, help="where the runner uploads server logs"
    )
    p.add_argument("--no-artifacts", action="store_true", help="serve without the artifact store")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    args = p.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return run_cli("tuner.report.dashboard", lambda: _serve(args))


def _serve(args: argparse.Namespace) -> int:
    try:
        studies = prepare(args.storage)
        print(
            f"optuna-dashboard on {mask_url(args.storage)} ({len(studies)} studies: {', '.join(studies) or 'none'}) "
            f"at http://{args.host}:{args.port}/dashboard",
            flush=True,
        )
        serve(args.storage, artifact_dir=None if args.no_artifacts else args.artifact_dir, host=args.host,
              port=args.port)  # fmt: skip
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
