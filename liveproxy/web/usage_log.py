"""A usage record per ended session (``USAGE_LOG``), and what goes into it.

Each record is one JSON line appended to the file when the session's socket ends, written in
a worker thread (never on the event loop), one write at a time, within a bounded wait: a slow
or failing disk loses records (logged, once until the file is writable again), never a
session. The file is opened for each record, so it can be rotated under the proxy.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson
import trio

from liveproxy.core.prices import Prices
from liveproxy.core.usage import UsageTotals

log = logging.getLogger("liveproxy")

#: The longest a session's end waits for its record to be written (then it is dropped).
WRITE_TIMEOUT_SECONDS: Final = 5.0


def usage_dict(usage: UsageTotals, model: str | None, prices: Prices | None) -> dict[str, Any]:
    """``usage`` as stats and records show it, with ``cost_usd`` when it is all priced."""
    shown = usage.to_dict()
    if prices is not None and model is not None:
        cost = prices.cost(model, usage)
        if cost is not None:
            shown["cost_usd"] = cost
    return shown


def usage_record(
    *,
    session_id: str,
    conversation_id: str,
    client: str,
    model: str | None,
    started: float,
    ended: float,
    reason: str | None,
    usage: UsageTotals,
    conversation: UsageTotals | None,
    prices: Prices | None,
) -> dict[str, Any]:
    """One session's record. ``usage`` is what this socket used (records of a conversation's
    sockets add up); ``conversation`` (a resumed one's) is its total so far. ``started`` and
    ``ended`` are Unix times; ``reason`` None when the session was cancelled."""
    record: dict[str, Any] = {
        "session_id": session_id,
        "conversation_id": conversation_id,
        "client": client,
        "model": model,
        "started": _utc(started),
        "ended": _utc(ended),
        "seconds": round(max(0.0, ended - started), 3),
        "reason": reason,
        "usage": usage_dict(usage, model, prices),
    }
    if conversation is not None:
        record["conversation_usage"] = usage_dict(conversation, model, prices)
    return record


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


class UsageLog:
    """Appends records to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._limiter = trio.CapacityLimiter(1)
        self._failing = False

    async def write(self, record: dict[str, Any]) -> bool:
        """Append ``record``; False (logged) when it could not be written in time."""
        line = orjson.dumps(record) + b"\n"
        with trio.move_on_after(WRITE_TIMEOUT_SECONDS):
            try:
                await trio.to_thread.run_sync(
                    self._append, line, limiter=self._limiter, abandon_on_cancel=True
                )
            except OSError as exc:
                self._failed(str(exc))
                return False
            if self._failing:
                self._failing = False
                log.info("usage log %s is written again", self.path)
            return True
        self._failed("timed out")
        return False

    def _append(self, line: bytes) -> None:
        with self.path.open("ab") as file:
            file.write(line)

    def _failed(self, why: str) -> None:
        if not self._failing:
            self._failing = True
            log.warning("usage log %s: a record could not be written (%s)", self.path, why)


def now() -> float:
    """The wall clock (records say when, in UTC)."""
    return time.time()
