"""The operator's view (``ADMIN_BIND``): an ASGI app over the state store, so every host's
listener sees the whole fleet.

- ``GET /sessions?limit=&cursor=``: live sessions (each worker's summaries, kept with its
  leases), by id: ``{"sessions": [...], "next_cursor": id | null}``.
- ``DELETE /sessions/{id}``: marks the session to end; its worker ends it (``sessionEnd``
  reason ``ended_by_operator``) at its next renewal. 202, or 404 for no live session.
- ``GET /usage?client=&since=&limit=&cursor=``: ended sessions' usage records (see
  ``USAGE_RECORDS``), by end: ``{"records": [...], "next_cursor": key | null}``.

Every request needs ``Authorization: Bearer <ADMIN_TOKEN>``; without it, whatever the path or
method, 401 and nothing else. Requests are read by :mod:`liveproxy.web.admin_requests`. A
store that cannot answer within :data:`STORE_TIMEOUT_SECONDS` makes a 503. Bodies are never
read; WebSockets are refused.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import orjson
import trio

from liveproxy.store import StateStore, StoreUnavailable
from liveproxy.web.admin_requests import (
    NO_SUCH_SESSION,
    UNAUTHORIZED,
    AdminRequest,
    EndSession,
    ListSessions,
    ListUsage,
    Refused,
    authorized,
    read_request,
)
from liveproxy.web.asgi import ASGIMessage, Receive, Send, answered_unless_http, header

log = logging.getLogger("liveproxy.admin")

#: The longest a request waits for the store.
STORE_TIMEOUT_SECONDS: Final = 5.0
#: Requests served at once (the rest wait their turn): the operator's view never crowds
#: the store the sessions need.
MAX_CONCURRENT: Final = 4
SECONDS_PER_DAY: Final = 86400.0


class AdminApp:
    """ASGI app: the operator's view of the fleet sharing ``store``, for holders of ``token``;
    usage records are those kept within ``retention_days``."""

    def __init__(self, store: StateStore, token: str, retention_days: int) -> None:
        self._store = store
        self._token = token.encode()
        self._retention = retention_days * SECONDS_PER_DAY
        self._limiter = trio.CapacityLimiter(MAX_CONCURRENT)

    async def __call__(self, scope: ASGIMessage, receive: Receive, send: Send) -> None:
        if await answered_unless_http(scope, receive, send):
            return
        if not authorized(header(scope, b"authorization"), self._token):
            await _refuse(send, UNAUTHORIZED)
            return
        asked = read_request(scope["method"], scope["path"], scope["query_string"])
        if isinstance(asked, Refused):
            await _refuse(send, asked)
            return
        try:
            async with self._limiter:
                with trio.fail_after(STORE_TIMEOUT_SECONDS):
                    status, body = await self._answer(asked)
        except (StoreUnavailable, trio.TooSlowError) as exc:
            log.warning("admin: the state store did not answer (%s)", exc)
            await _refuse(send, Refused(503, "state_unavailable", "the state store is unreachable"))
            return
        await _send_json(send, status, body)

    async def _answer(self, asked: AdminRequest) -> tuple[int, dict[str, Any]]:
        """The status and body answering ``asked``."""
        store = self._store
        match asked:
            case ListSessions(cursor, limit):
                live = await store.live_sessions(cursor, limit)
                sessions = [_summary(s.id, s.summary) for s in live]
                last = live[-1].id if len(live) == limit else None
                return 200, {"sessions": sessions, "next_cursor": last}
            case EndSession(session_id):
                if not await store.mark_session_end(session_id):
                    refused = NO_SUCH_SESSION
                    return refused.status, _error(refused.code, refused.message)
                log.info("admin: session %s marked to end", session_id)
                return 202, {"session_id": session_id, "ending": True}
            case ListUsage(client, after, limit):
                kept = await store.usage_records(client, after, limit, self._retention)
                records = [_record(r.text) for r in kept]
                last_key = kept[-1].key if len(kept) == limit else None
                return 200, {"records": records, "next_cursor": last_key}


def _summary(session_id: str, text: str) -> dict[str, Any]:
    """A kept summary as JSON data (its id, at least, whatever the store holds)."""
    try:
        shown = orjson.loads(text)
    except orjson.JSONDecodeError:
        shown = None
    return {**shown, "id": session_id} if isinstance(shown, dict) else {"id": session_id}


def _record(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


async def _refuse(send: Send, refused: Refused) -> None:
    headers = []
    if refused.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if refused.allow is not None:
        headers.append((b"allow", refused.allow.encode()))
    await _send_json(send, refused.status, _error(refused.code, refused.message), headers)


async def _send_json(
    send: Send,
    status: int,
    body: dict[str, Any],
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    data = orjson.dumps(body)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(data)),
        (b"cache-control", b"no-store"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
