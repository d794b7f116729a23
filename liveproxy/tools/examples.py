"""An example server tool, loaded by ``make run``: the current time in a time zone."""

from __future__ import annotations

import datetime
import zoneinfo
from typing import Any

from liveproxy.tools.declare import tool


@tool("The current date and time in an IANA time zone, e.g. Europe/Paris (default UTC).")
def get_time(timezone: str = "UTC") -> dict[str, Any]:
    """The current time in ``timezone``.

    Raises:
        ValueError: ``timezone`` is not a known IANA time zone.
    """
    try:
        zone = zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {timezone!r} (expected e.g. Europe/Paris)") from None
    now = datetime.datetime.now(zone)
    return {
        "timezone": timezone,
        "iso": now.isoformat(timespec="seconds"),
        "weekday": now.strftime("%A"),
        "utc_offset": now.strftime("%z"),
    }
