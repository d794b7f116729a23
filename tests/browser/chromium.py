"""Launching Debian's Chromium (never a downloaded browser) for the page tests.

A missing or broken browser fails the test under ``CI=true`` and skips it elsewhere, with the
reason either way.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest
from playwright.sync_api import Browser, Page, Playwright
from playwright.sync_api import Error as PlaywrightError

#: Debian's package; ``LIVEPROXY_CHROMIUM`` points elsewhere (e.g. ``/usr/bin/chromium-browser``).
CHROMIUM = Path(os.environ.get("LIVEPROXY_CHROMIUM", "/usr/bin/chromium"))

#: Flags for a headless, offline Chromium in a container. Playwright adds its own on top (among
#: them ``--headless``, ``--no-sandbox``, ``--mute-audio`` and a fresh temporary
#: ``--user-data-dir`` for every launch; it refuses a ``--user-data-dir`` of ours).
OFFLINE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> NoReturn:
    """Fail under CI (the browser test is required there), skip elsewhere."""
    if in_ci():
        pytest.fail(f"browser test cannot run in CI: {reason}", pytrace=False)
    pytest.skip(f"{reason} (apt-get install chromium to run it)")


def require_chromium() -> str:
    """Check that the browser is installed and runs; return its version line.

    Call it outside trio (a sync fixture), so that a skip keeps its reason in pytest's report.
    """
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing")
    try:
        done = subprocess.run(
            [str(CHROMIUM), "--version"], capture_output=True, text=True, timeout=60, check=True
        )
    except (OSError, subprocess.SubprocessError) as exc:
        unavailable(f"{CHROMIUM} --version failed: {exc}")
    return done.stdout.strip()


def launch(playwright: Playwright, fake_microphone: Path) -> Browser:
    """Chromium with a fake microphone that loops ``fake_microphone`` (a WAV file)."""
    args = [
        *OFFLINE_FLAGS,
        "--use-fake-ui-for-media-stream",  # answer the permission prompt with "allow"
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={fake_microphone}",
    ]
    try:
        return playwright.chromium.launch(executable_path=str(CHROMIUM), args=args, timeout=30_000)
    except PlaywrightError as exc:
        unavailable(f"{CHROMIUM} failed to launch: {exc.message.splitlines()[0]}")


def open_page(browser: Browser, origin: str, timeout_ms: float) -> tuple[Page, list[str]]:
    """A page in a new context that may use the microphone on ``origin``, waiting at most
    ``timeout_ms`` for anything; the page's uncaught errors are appended to the list returned."""
    context = browser.new_context()
    context.grant_permissions(["microphone"], origin=origin)
    page = context.new_page()
    page.set_default_timeout(timeout_ms)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    return page, problems
