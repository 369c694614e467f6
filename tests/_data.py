"""Where the tests find ../shared/data, and what happens when it is missing.

Outside CI a test that needs the shared data is skipped (with the reason) when
it is not there; in CI (``CI`` set, as ``.ci/run`` runs) it FAILS: a green run
must not hide tests that never ran.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(os.environ.get("MANYFOLD_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def missing(reason: str) -> None:
    """Skip (a developer's machine) or fail (CI) a test whose data is missing."""
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{reason}; CI needs the shared data (../shared/data or MANYFOLD_TEST_DATA)", pytrace=False)
    pytest.skip(reason)
