"""What the tuner records on Optuna's trials and studies (user attributes): the keys, and typed reads.

Written by the trial runner, the study session and the confirmation; read by the summary, the report,
the dashboard note and the nightly job. Keys are :class:`StrEnum` members, so ``t.user_attrs[TrialAttr.FLAGS]``
and ``t.user_attrs["flags"]`` are the same entry (the stored JSON keeps plain strings).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from optuna.trial import FrozenTrial

from tuner.core.failures import FailureKind


class TrialAttr(StrEnum):
    """Keys of a trial's user attributes."""

    FLAGS = "flags"  # the flag vector the server ran with {flag: value}
    COMMAND = "command"  # its argv
    DOCKER_COMMAND = "docker_command"  # the equivalent `docker run` line, secrets shown as ***
    TIMINGS = "timings"  # launch_s, ready_s, bench_s, stop_s, … (seconds)
    METRICS = "metrics"  # BenchResult.flat() plus GPU figures; None for NaN/inf
    CAPACITY = "capacity"  # a capacity search's probes and result
    REQUEST_ERRORS = "request_errors"  # {error: count} of the measured requests that failed
    FAILURE_KIND = "failure_kind"  # a FailureKind value, on a pruned (crashed) trial
    FAILURE = "failure"  # its evidence: exit, matched lines, log tail
    PRUNED_BY = "pruned_by"  # why a measured trial was stopped early (window pruner, capacity)
    SEED_NAME = "seed_name"  # the seed trial or warm-start point it was enqueued as
    SEED_NOTE = "seed_note"
    WORKER = "worker"  # the worker that ran it (known even when that worker died mid-trial)
    INTERRUPTED = "interrupted"  # True on a trial stopped by SIGINT/SIGTERM (state FAIL)
    SERVER_LOG_ARTIFACT = "server_log_artifact"  # artifact id of the server log
    WARM_START = "warm_start"  # nightly: the night that enqueued it
    REPAIR = "repair"  # on a repaired neighbour: {of: crashed trial, kind, changes, scope, why, depth}
    DUPLICATE_OF = "duplicate_of"  # a proposal equal to that trial's configuration: not measured (FAIL)
    NEIGHBOUR_OF = "neighbour_of"  # enqueued in place of a duplicate proposal of that trial
    NEAR = "near"  # a local move from that top trial, queued between sampler proposals (tuner.search.guide)
    RERUN_OF = (
        "rerun_of"  # enqueued on resume: that trial was interrupted (Ctrl-C, SIGTERM, a kill) unmeasured
    )
    LEARNED = "learned"  # pruned before launch by a learned constraint: its description
    PREDICTED_CRASH = "predicted_crash"  # the feasibility model's crash probability for this proposal
    PROBE_ANSWERS = "probe_answers"  # the quality gate's probes as this configuration answered them
    QUALITY = "quality"  # its verdict against the reference seed's answers: agreement, exact, divergences
    PROMPT_LENGTHS = "prompt_lengths"  # the server counted prompts >10 % off their intended length: its ratio


class StudyAttr(StrEnum):
    """Keys of a study's user attributes."""

    SPACE_FILE = "space_file"  # the path the study was started from
    SPACE = "space"  # the whole space, as JSON
    ENGINE = "engine"  # "sglang 0.5.23"
    IMAGE = "image"  # ImageInfo.to_attrs() of a Docker study's image
    IMAGE_DIGEST = "image_digest"  # its image id (sha256:…)
    CONFIRMATION = "confirmation"  # the re-measurement of the top candidates


def is_crash(trial: FrozenTrial) -> bool:
    """The trial started a server that failed (any failure kind but the pre-launch infeasible one)."""
    kind = trial.user_attrs.get(TrialAttr.FAILURE_KIND)
    return kind is not None and kind != FailureKind.INFEASIBLE.value


def is_infeasible(trial: FrozenTrial) -> bool:
    """The trial was rejected before a server started (a declared or learned constraint, a predicted crash)."""
    return trial.user_attrs.get(TrialAttr.FAILURE_KIND) == FailureKind.INFEASIBLE.value


def trial_flags(trial: FrozenTrial) -> dict[str, Any]:
    """The flags a trial's server ran with (empty for a trial pruned before launch)."""
    return dict(trial.user_attrs.get(TrialAttr.FLAGS) or {})


def study_image(attrs: Mapping[str, Any]) -> str | None:
    """A study's Docker image: the one the image check inspected, else the space's ``target.image``."""
    image = attrs.get(StudyAttr.IMAGE)
    if isinstance(image, dict) and isinstance(image.get("image"), str):
        return image["image"]
    target = (attrs.get(StudyAttr.SPACE) or {}).get("target") or {}
    return target.get("image") if isinstance(target.get("image"), str) else None
