"""What a test does when something it needs (a daemon, a binary, a venv) is missing.

Skipped by default, so ``make test-quick`` runs anywhere; with ``TUNER_REQUIRE_ALL=1`` (``make test``,
CI) the test fails instead, so a broken set-up cannot pass as a green run.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

REQUIRE_ALL = os.environ.get("TUNER_REQUIRE_ALL") == "1"


def missing(what: str, *, allow_module_level: bool = False) -> NoReturn:
    """Skip the calling test (or module) because ``what`` is missing, or fail under ``TUNER_REQUIRE_ALL=1``."""
    if REQUIRE_ALL:
        pytest.fail(f"{what} (TUNER_REQUIRE_ALL=1)", pytrace=False)
    pytest.skip(what, allow_module_level=allow_module_level)
