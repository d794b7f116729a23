"""What the operator's view (:mod:`liveproxy.web.admin_app`) gets from each session: a summary
while it lives, and its usage record, kept in the state store, once it has ended."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Final

import orjson
import trio

from liveproxy.store import StateStore, StoreUnavailable, UsageRecord, usage_key

log = logging.getLogger("liveproxy")

#: The longest a session's end waits for the store to keep its record (then it is dropped).
KEEP_TIMEOUT_SECONDS: Final = 5.0
SECONDS_PER_DAY: Final = 86400.0


def live_summary(
    *,
    client: str,
    conversation_id: str,
    model: str | None,
    started: float,
    usage: dict[str, Any],
) -> dict[str, Any]:
    """A live session as ``GET /sessions`` shows it (its worker adds its id and where it runs):
    ``client`` is the client's hash, ``started`` a Unix time, ``usage`` this socket's so far."""
    return {
        "client": client,
        "conversation_id": conversation_id,
        "model": model,
        "started": utc(started),
        "usage": usage,
    }


def utc(timestamp: float) -> str:
    """A Unix time as records show it (ISO 8601, UTC, milliseconds)."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


class RecordKeeper:
    """Keeps ended sessions' usage records in the store for ``retention_days``.

    Each is one store call at the session's end, within :data:`KEEP_TIMEOUT_SECONDS`: a store
    that cannot keep it loses the record (logged, once until it can again), never a session.
    """

    def __init__(self, store: StateStore, retention_days: int) -> None:
        self._store = store
        self._retention = retention_days * SECONDS_PER_DAY
        self._failing = False

    async def keep(self, record: dict[str, Any], ended: float) -> bool:
        """Keep ``record`` (a :func:`~liveproxy.web.usage_log.usage_record`, ended at the Unix
        time ``ended``); False (logged) when the store could not, in time."""
        kept = UsageRecord(
            usage_key(ended, str(record["session_id"])),
            str(record["client"]),
            orjson.dumps(record).decode(),
        )
        with trio.move_on_after(KEEP_TIMEOUT_SECONDS):
            try:
                await self._store.keep_usage(kept, self._retention)
            except StoreUnavailable as exc:
                self._failed(str(exc))
                return False
            if self._failing:
                self._failing = False
                log.info("usage records are kept in the state store again")
            return True
        self._failed("timed out")
        return False

    def _failed(self, why: str) -> None:
        if not self._failing:
            self._failing = True
            log.warning("a usage record could not be kept in the state store (%s)", why)
