"""How long ``import tuner.space`` takes, and what it drags in, at two revisions side by side.

Loading a search-space file is the first thing every command does (``--check`` will do nothing else),
so the space layer should not import Docker, aiohttp or the launchers. Each revision is checked out
into a temporary worktree; rounds alternate the two (a fresh interpreter each time, the project's own
virtualenv), so the load of the machine falls on both alike. Reports per revision the median import
time, the tuner modules and third-party packages loaded, and the paired bootstrap interval of the
ratio after/before (``tuner.core.stats.paired_ratio_ci``).

    .venv/bin/python bench/import_time.py --before 7a05689 --after HEAD --rounds 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from tuner.core.stats import paired_ratio_ci  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "import_time"
PROBE = (
    "import sys, time; t = time.perf_counter(); import tuner.space; dt = time.perf_counter() - t; "
    "import json; print(json.dumps({'s': dt, 'tuner': sorted(m for m in sys.modules if m.startswith('tuner')), "
    "'heavy': sorted(m for m in ('docker', 'aiohttp', 'optuna', 'sqlalchemy', 'pandas', 'requests') "
    "if m in sys.modules)}))"
)


def measure(tree: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=tree, capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", default="7a05689", help="revision before the change")
    p.add_argument("--after", default="HEAD", help="revision after it")
    p.add_argument("--rounds", type=int, default=20, help="interleaved rounds (one import of each per round)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    revs = {}
    for label in ("before", "after"):
        rev = subprocess.run(["git", "rev-parse", "--short", getattr(args, label)], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        revs[label] = rev
    with tempfile.TemporaryDirectory() as tmp:
        trees = {}
        for label, rev in revs.items():
            trees[label] = Path(tmp) / label
            subprocess.run(
                ["git", "worktree", "add", "--detach", "-q", str(trees[label]), rev], cwd=ROOT, check=True
            )
        try:
            for tree in trees.values():  # warm the byte-code caches: the rounds measure imports, not compiles
                measure(tree)
            runs: dict[str, list[dict]] = {"before": [], "after": []}
            for i in range(args.rounds):
                order = ("before", "after") if i % 2 == 0 else ("after", "before")
                for label in order:
                    runs[label].append(measure(trees[label]))
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    secs = {k: [r["s"] for r in v] for k, v in runs.items()}
    ci = paired_ratio_ci(secs["before"], secs["after"], maximize=True)
    result = {
        "revisions": revs,
        "rounds": args.rounds,
        "python": sys.version.split()[0],
        "median_s": {k: statistics.median(v) for k, v in secs.items()},
        "seconds": secs,
        "tuner_modules": {k: len(v[0]["tuner"]) for k, v in runs.items()},
        "heavy_packages": {k: v[0]["heavy"] for k, v in runs.items()},
        "ratio_after_over_before": None
        if ci is None
        else {"estimate": ci.estimate, "low": ci.low, "high": ci.high},
    }
    lines = [
        "# `import tuner.space`, before and after the layered layout",
        "",
        f"`bench/import_time.py --before {revs['before']} --after {revs['after']} --rounds {args.rounds}`: "
        "a fresh interpreter per import, the two revisions alternating, byte-code caches warm.",
        "",
        "| revision | median | tuner modules loaded | heavy packages loaded |",
        "|---|---|---|---|",
    ]
    for label in ("before", "after"):
        heavy = ", ".join(result["heavy_packages"][label]) or "none"
        lines.append(f"| {label} ({revs[label]}) | {result['median_s'][label] * 1000:.0f} ms | "
                     f"{result['tuner_modules'][label]} | {heavy} |")  # fmt: skip
    if ci is not None:
        lines += ["", f"after / before, mean time: **{ci.estimate:.2f}×** "
                      f"[{ci.low:.2f}, {ci.high:.2f}] (95 % paired bootstrap over {args.rounds} rounds)."]  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
