"""``python -m tuner.store {version,upgrade} --storage URL``: show or upgrade the tuner schema."""

from __future__ import annotations

import argparse
import sys

from tuner.core.cli import run_cli
from tuner.store.migrate import database_version, ensure_schema
from tuner.store.schema import SCHEMA_VERSION
from tuner.store.urls import DEFAULT_URL, make_engine, mask_url, storage_errors


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit codes: ``tuner.core.cli.ExitCode``."""
    parser = argparse.ArgumentParser(prog="python -m tuner.store", description=__doc__)
    parser.add_argument("action", choices=["version", "upgrade"])
    parser.add_argument("--storage", default=DEFAULT_URL, help=f"database URL (default {DEFAULT_URL})")
    args = parser.parse_args(argv)
    return run_cli("tuner.store", lambda: _act(args.action, args.storage))


def _act(action: str, storage: str) -> int:
    engine = make_engine(storage)
    if action == "upgrade":
        version = ensure_schema(engine, upgrade=True)
        print(f"{mask_url(storage)}: tuner schema version {version} (current)")
    else:
        with storage_errors(storage, "reading the schema version of"), engine.connect() as conn:
            found = database_version(conn)
        print(f"{mask_url(storage)}: tuner schema version {found} (this tuner: {SCHEMA_VERSION})")
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
