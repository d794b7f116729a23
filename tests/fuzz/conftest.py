"""The long run's FUZZ_SECONDS is shared by the lanes collected (``-k`` may pick a few)."""

from __future__ import annotations

import pytest

from tests.fuzz import test_fuzz


def pytest_collection_finish(session: pytest.Session) -> None:
    picked = {item.name for item in session.items} & test_fuzz.LANE_TESTS
    test_fuzz.LANES = max(1, len(picked))
