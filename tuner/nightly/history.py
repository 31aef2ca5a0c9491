"""What is deployed and what it measured: the deployed file, the database's deployment history.

The deployed file wins over the history (it is what runs); each nightly decision appends a
deployment row whose metrics hold the repeats later nights compare against.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from tuner.core.errors import ConfigError
from tuner.core.slug import slug
from tuner.nightly.decide import Verdict
from tuner.nightly.deployed import DeployedConfig, read_deployed, same_config, write_deployed
from tuner.nightly.model import NightlyRun
from tuner.nightly.remeasure import Measurement, values
from tuner.objective.ranking import ranked_trials
from tuner.space import SearchSpace
from tuner.space.targets import DockerTarget
from tuner.store.attrs import TrialAttr
from tuner.store.models import Deployment
from tuner.store.store import TunerStore


def deployed_path(run: NightlyRun) -> Path:
    return run.options.deployed or run.options.out / "deployed" / f"{slug(run.study)}.yaml"


def resolve_deployed(run: NightlyRun, space: SearchSpace, study: optuna.Study, store: TunerStore) -> None:
    """The file wins; then the database history; then the study's best feasible trial; then a seed."""
    path = deployed_path(run)
    from_file = read_deployed(path)
    last = store.last_deployment(run.study)
    if from_file is not None:
        run.deployed, run.deployed_origin = from_file, f"file {path}"
        if from_file.engine_version and from_file.engine_version != space.engine_version:
            run.notes.append(f"{path} was written for {space.engine} {from_file.engine_version}; tonight's "
                             f"engine is {space.engine_version}")  # fmt: skip
        if last is not None and not same_config(last.flags, from_file.flags):
            run.notes.append(f"{path} differs from the last deployment recorded in the database "
                             f"({last.deployed_at:%Y-%m-%d}); the file is what runs, so the file is used")  # fmt: skip
        return
    if last is not None:
        run.deployed = DeployedConfig(dict(last.flags), dict(last.params), last.study_name, last.trial_number,
                                      last.reason, last.deployed_at.isoformat(timespec="seconds"))  # fmt: skip
        run.deployed_origin = "database history (file missing: written again)"
        write_deployed(
            path, space, run.deployed, header=f"restored from the database by nightly run {run.stamp}"
        )
        return
    ranked = ranked_trials(study)
    if ranked:
        t = ranked[0]
        flags = dict(t.user_attrs.get(TrialAttr.FLAGS, {}))
        run.deployed = DeployedConfig(
            flags, dict(t.params), run.study, t.number, "initial deployment: best known trial"
        )
        run.deployed_origin = f"nothing was deployed: deploying the study's best feasible trial #{t.number}"
    elif space.seed_trials:
        seed = space.seed_trials[0]
        from tuner.space.sample import params_to_flags

        flags = dict(params_to_flags(space, seed.params))
        run.deployed = DeployedConfig(
            flags, dict(seed.params), run.study, None, f"initial deployment: seed {seed.name}"
        )
        run.deployed_origin = (
            f"nothing was deployed and the study has no feasible trial: deploying seed {seed.name!r}"
        )
    else:
        raise ConfigError(
            f"nothing is deployed ({path} missing, no history in the database), the study has no feasible "
            "trial and the space no seed_trials: run a study first (make demo) or write the deployed file",
            source=str(run.options.space),
        )
    run.notes.append(run.deployed_origin)
    write_deployed(path, space, run.deployed, header=f"initial deployment by nightly run {run.stamp}")


def find_reference(run: NightlyRun, space: SearchSpace, store: TunerStore) -> None:
    """The repeats recorded when the deployed configuration went into service (same workload)."""
    assert run.deployed is not None
    objective = space.objectives[0].metric
    workload = space.workload.fingerprint()
    for row in reversed(store.deployments(run.study)):
        if not same_config(row.flags, run.deployed.flags):
            continue
        m = row.metrics or {}
        when = f"{row.deployed_at:%Y-%m-%d %H:%M} UTC"
        if m.get("objective") != objective or not m.get("samples"):
            run.reference_desc = (
                f"the deployment of {when} recorded no repeats of {objective}: tonight's become the reference"
            )
        elif m.get("workload_fingerprint") != workload:
            run.reference_desc = (f"the deployment of {when} was measured with another workload "
                                  f"({m.get('workload_fingerprint')} vs {workload}): tonight's repeats become the reference")  # fmt: skip
        else:
            run.reference = [float(v) for v in m["samples"]]
            run.reference_desc = (
                f"{len(run.reference)} repeats recorded at the deployment of {when} ({row.reason})"
            )
            if m.get("engine_version") and m["engine_version"] != space.engine_version:
                run.notes.append(f"engine version changed since the reference: {m['engine_version']} -> "
                                 f"{space.engine_version}")  # fmt: skip
        return
    run.reference_desc = (
        f"no history for this configuration ({run.deployed_origin}): tonight's repeats become the reference"
    )


def record_deployment(
    run: NightlyRun,
    space: SearchSpace,
    store: TunerStore,
    config: DeployedConfig,
    measurements: list[Measurement],
    *,
    reason: str,
    ci: Verdict | None = None,
) -> None:
    """Append a deployment row whose metrics hold the repeats later nights compare against."""
    from tuner.report.export import launch_command

    objective = space.objectives[0]
    samples = values(measurements)
    ok = [m for m in measurements if m.ok]
    means = {k: sum(m.metrics[k] for m in ok) / len(ok) for k in ok[0].metrics} if ok else {}
    metrics: dict[str, Any] = {
        "objective": objective.metric,
        "direction": objective.direction,
        "samples": samples,
        "mean": sum(samples) / len(samples) if samples else None,
        "workload_fingerprint": space.workload.fingerprint(),
        "engine_version": space.engine_version,
        "nightly": run.stamp,
        "means": means,
    }
    if ci is not None and ci.ci is not None:
        metrics["ratio_ci"] = {"estimate": ci.ci.estimate, "low": ci.ci.low, "high": ci.ci.high,
                               "confidence": ci.ci.confidence}  # fmt: skip
    image = space.target.image if isinstance(space.target, DockerTarget) else None
    store.record_deployment(
        Deployment(
            study_name=run.study, command=launch_command(space, config.flags), flags=dict(config.flags),
            reason=reason, params=dict(config.params), metrics=metrics, trial_number=config.trial_number,
            image=image,
        )
    )  # fmt: skip
