"""Verify a finished study that several workers shared: nothing lost, nothing doubled, GPUs kept apart.

    python bench/gpu/multiworker_check.py --storage postgresql+psycopg://… --study S --trials 10 \\
        --worker a=0 --worker b=1 [--killed a]

Checks, each printed as ``ok``/``FAIL`` with its figures (exit 1 when any fails):

- the study holds exactly ``--trials`` finished (COMPLETE or PRUNED) trials and none still RUNNING;
- no enqueued seed and no retry was measured twice; parameter sets measured twice are listed (with
  ``--strict`` they fail the check: for spaces where a sampler cannot repeat a point by chance);
- every finished trial's provenance (``tuner_provenance.extra.worker``) names one of the workers, and
  every worker finished at least one trial (a killed worker may have finished none);
- every FAIL trial left by a dead worker was retried with the same parameters by another worker;
- with GPUs given (``a=0``): each trial's NVML samples (``tuner_gpu_samples.gpu_index``) and the GPUs
  its provenance names are its own worker's GPUs.
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.store.store import TunerStore

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class Check:
    """One verified property: its name, whether it held, and the figures behind it."""

    name: str
    ok: bool
    detail: str


@dataclass
class Verdict:
    """Every check of one shared study, plus the per-trial table they were computed from."""

    checks: list[Check] = field(default_factory=list)
    rows: list[dict[str, object]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, ok, detail))

    def render(self) -> str:
        """The table of trials, then one line a check."""
        lines = ["trial  state     worker  gpus(prov)  gpus(samples)  retry_of  params_hash"]
        for r in self.rows:
            lines.append(
                f"{r['number']:>5}  {r['state']:<8}  {r['worker']!s:<6}  {r['gpu_indices']!s:<10}  "
                f"{r['sample_gpus']!s:<13}  {r['retry_of']!s:<8}  {r['params_hash']}"
            )
        lines += [f"{'ok  ' if c.ok else 'FAIL'}  {c.name}: {c.detail}" for c in self.checks]
        lines.append("ALL CHECKS PASSED" if self.ok else "SOME CHECKS FAILED")
        return "\n".join(lines)


def params_key(trial: FrozenTrial) -> str:
    """The trial's parameters as canonical JSON (the identity of a measured configuration)."""
    return json.dumps(trial.params, sort_keys=True, default=str)


def retry_of(trial: FrozenTrial) -> int | None:
    """The trial this one retries (Optuna's RetryHeartbeatStaleTrialCallback sets ``failed_trial``)."""
    value = trial.system_attrs.get("failed_trial")
    return int(value) if value is not None else None


def verify(
    url: str,
    study_name: str,
    *,
    total: int,
    workers: dict[str, list[int] | None],
    killed: Sequence[str] = (),
    strict: bool = False,
) -> Verdict:
    """Check the shared study ``study_name`` on ``url`` (see the module docstring for the checks).

    ``workers`` maps each worker id to the GPU ids it was given (``--gpus``), or None to skip the GPU
    checks for it; ``killed`` names workers that were killed on purpose (they may finish no trial);
    ``strict`` fails on any parameter set measured twice, sampler repeats included (for spaces with
    continuous parameters, where a repeat cannot be chance).
    """
    study = optuna.load_study(study_name=study_name, storage=url)
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in FINISHED]
    verdict = Verdict()
    with TunerStore(url) as store:
        prov = {t.number: store.read_provenance(study_name, t.number) for t in trials}
        samples = {t.number: store.read_gpu_samples(study_name, t.number) for t in finished}
    worker_of = {n: (p.extra.get("worker") if p is not None else None) for n, p in prov.items()}
    for t in trials:
        p = prov[t.number]
        verdict.rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "worker": worker_of[t.number],
                "gpu_indices": p.extra.get("gpu_indices") if p is not None else None,
                "sample_gpus": sorted({s.gpu_index for s in samples.get(t.number, ())}) or None,
                "retry_of": retry_of(t),
                "params_hash": f"{zlib.crc32(params_key(t).encode()):08x}",
            }
        )

    states = Counter(t.state.name for t in trials)
    verdict.add(
        "finished trials reach the total",
        len(finished) == total and states.get("RUNNING", 0) == 0,
        f"{len(finished)} finished of {total} wanted; states {dict(states)}",
    )

    # A trial measured twice BY THE WORKERS: an enqueued seed run twice (racing enqueues) or a failed
    # trial retried twice. A sampler proposing a point it already measured is listed apart: one
    # worker does that too (TPE's random start-up draws on a small categorical space repeat).
    seeds: dict[str, list[int]] = defaultdict(list)
    for t in finished:
        if retry_of(t) is None and t.user_attrs.get("seed_name"):
            seeds[t.user_attrs["seed_name"]].append(t.number)
    retried = Counter(retry_of(t) for t in trials if retry_of(t) is not None)
    doubled = [n for n in seeds.values() if len(n) > 1] + [[f] for f, k in retried.items() if k > 1]
    by_params: dict[str, list[FrozenTrial]] = defaultdict(list)
    for t in finished:
        by_params[params_key(t)].append(t)
    repeats = [
        [
            f"{t.number} ({t.user_attrs.get('seed_name') or 'sampled'}, worker {worker_of[t.number]})"
            for t in g
        ]
        for g in by_params.values()
        if len([t for t in g if retry_of(t) is None]) > 1
    ]
    verdict.add(
        "no seed or retry measured twice",
        not doubled,
        f"{len(seeds)} seeds, {len(retried)} retries; doubled: {doubled or 'none'}",
    )
    verdict.add(
        "parameter sets measured twice (retries aside)" + (" [strict]" if strict else " [listed]"),
        not (strict and repeats),
        f"{len(by_params)} distinct sets over {len(finished)} finished trials; repeats: {repeats or 'none'}",
    )

    unknown = [t.number for t in finished if worker_of[t.number] not in workers]
    per_worker = Counter(worker_of[t.number] for t in finished)
    idle = [w for w in workers if per_worker.get(w, 0) == 0 and w not in killed]
    verdict.add(
        "each finished trial's provenance names one worker; every live worker ran trials",
        not unknown and not idle,
        f"finished per worker {dict(per_worker)}; no/unknown worker: {unknown or 'none'}; idle: {idle or 'none'}",
    )

    failed = [t for t in trials if t.state is TrialState.FAIL]
    retries = {retry_of(t): t for t in trials if retry_of(t) is not None}
    missing, notes = [], []
    for f in failed:
        if f.user_attrs.get("interrupted") or "duplicate_of" in f.user_attrs:
            continue  # stopped by SIGINT/SIGTERM, or a duplicate proposal never measured: not stale
        r = retries.get(f.number)
        if r is None or r.state not in FINISHED or params_key(r) != params_key(f):
            missing.append(f.number)
            continue
        notes.append(
            f"trial {f.number} (worker {worker_of[f.number]}, FAIL) -> trial {r.number} "
            f"(worker {worker_of[r.number]}, {r.state.name}, same params)"
        )
        if worker_of[f.number] in killed and worker_of[r.number] == worker_of[f.number]:
            missing.append(f.number)  # the dead worker cannot have retried its own trial
    verdict.add(
        "every stale (killed) trial retried with the same params by a live worker",
        not missing and (bool(notes) or not killed),
        "; ".join(notes) or "no stale trial" + (f"; not retried: {missing}" if missing else ""),
    )

    gpu_checked = [w for w, g in workers.items() if g is not None]
    if gpu_checked:
        wrong = []
        sampled = 0
        for t in finished:
            w = worker_of[t.number]
            own = workers.get(w) if w is not None else None
            if own is None:
                continue
            p = prov[t.number]
            prov_gpus = p.extra.get("gpu_indices") if p is not None else None
            sample_gpus = {s.gpu_index for s in samples[t.number]}
            sampled += bool(sample_gpus)
            if (prov_gpus is not None and sorted(prov_gpus) != sorted(own)) or not sample_gpus <= set(own):
                wrong.append((t.number, w, prov_gpus, sorted(sample_gpus)))
        verdict.add(
            "each trial's NVML figures came from its own worker's GPUs",
            not wrong and sampled > 0,
            f"{sampled} finished trials with NVML samples; workers' GPUs "
            f"{ {w: workers[w] for w in gpu_checked} }; mismatches: {wrong or 'none'}",
        )
    return verdict


def parse_worker(text: str) -> tuple[str, list[int] | None]:
    """``a=0,1`` -> ("a", [0, 1]); ``a`` -> ("a", None)."""
    name, _, gpus = text.partition("=")
    return name, [int(g) for g in gpus.split(",")] if gpus else None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--storage", required=True, help="the study's database URL")
    p.add_argument("--study", required=True, help="study name")
    p.add_argument(
        "--trials", type=int, required=True, help="the total of finished trials the workers ran to"
    )
    p.add_argument("--worker", action="append", required=True, help="worker id, optionally =GPU ids (a=0)")
    p.add_argument("--killed", action="append", default=[], help="a worker killed on purpose")
    p.add_argument("--strict", action="store_true", help="fail on any parameter set measured twice")
    args = p.parse_args(argv)
    workers = dict(parse_worker(w) for w in args.worker)
    verdict = verify(
        args.storage, args.study, total=args.trials, workers=workers, killed=args.killed, strict=args.strict
    )
    print(verdict.render())
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
