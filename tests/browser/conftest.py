"""Fixtures of the browser tests."""

from __future__ import annotations

import pytest

from tests.browser.chromium import require_chromium


@pytest.fixture
def chromium() -> str:
    """Skip (or, under ``CI=true``, fail) unless Chromium is installed; its version line."""
    return require_chromium()
