"""``python -m tuner.store {version,upgrade} --storage URL``: show or upgrade the tuner schema."""

from __future__ import annotations

import argparse
import sys

from tuner.core.errors import TunerError
from tuner.store.migrate import database_version, ensure_schema
from tuner.store.schema import SCHEMA_VERSION
from tuner.store.urls import DEFAULT_URL, make_engine, mask_url, storage_errors


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 on a storage error)."""
    parser = argparse.ArgumentParser(prog="python -m tuner.store", description=__doc__)
    parser.add_argument("action", choices=["version", "upgrade"])
    parser.add_argument("--storage", default=DEFAULT_URL, help=f"database URL (default {DEFAULT_URL})")
    args = parser.parse_args(argv)
    try:
        engine = make_engine(args.storage)
        if args.action == "upgrade":
            version = ensure_schema(engine, upgrade=True)
            print(f"{mask_url(args.storage)}: tuner schema version {version} (current)")
        else:
            with storage_errors(args.storage, "reading the schema version of"), engine.connect() as conn:
                found = database_version(conn)
            print(f"{mask_url(args.storage)}: tuner schema version {found} (this tuner: {SCHEMA_VERSION})")
        engine.dispose()
    except TunerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
