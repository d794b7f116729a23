"""The operator's requests, read and bounded (sync, pure): what the admin listener
(:mod:`liveproxy.web.admin_app`) is asked, or why it refuses.

Every part of a request is the client's: the bearer token is compared in constant time, the
query is bounded in size, fields and values, ids and cursors are checked against their shapes,
and ``limit`` is capped at :data:`~liveproxy.store.MAX_PAGE`.
"""

from __future__ import annotations

import hmac
import re
from datetime import UTC, datetime
from typing import Final
from urllib.parse import parse_qsl

import attrs

from liveproxy.store import MAX_ID_CHARS, MAX_PAGE, usage_key_prefix

#: The longest query string read, and the most fields in it.
MAX_QUERY_BYTES: Final = 1024
MAX_QUERY_FIELDS: Final = 8
#: A page's length when ``limit`` is not given.
DEFAULT_PAGE: Final = 100

_ID = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_ID_CHARS}}}")
_USAGE_CURSOR = re.compile(rf"[0-9]{{15}}:[A-Za-z0-9_-]{{1,{MAX_ID_CHARS}}}")
_UNIX_TIME = re.compile(r"[0-9]{1,12}(\.[0-9]{1,6})?")


@attrs.frozen
class Refused:
    """An answer other than the one asked for: its status, error code and message."""

    status: int
    code: str
    message: str
    allow: str | None = None


UNAUTHORIZED: Final = Refused(401, "unauthorized", "a valid bearer token is required")
NOT_FOUND: Final = Refused(404, "not_found", "no such resource")
NO_SUCH_SESSION: Final = Refused(404, "not_found", "no live session has this id")


@attrs.frozen
class ListSessions:
    """``GET /sessions``: live sessions with ids after ``cursor``."""

    cursor: str
    limit: int


@attrs.frozen
class EndSession:
    """``DELETE /sessions/{id}``."""

    session_id: str


@attrs.frozen
class ListUsage:
    """``GET /usage``: records of ``client`` (None: everyone's) with keys after ``after`` (the
    later of ``since`` and the cursor)."""

    client: str | None
    after: str
    limit: int


AdminRequest = ListSessions | EndSession | ListUsage


def authorized(authorization: str | None, token: bytes) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>`` (compared in constant
    time: how much of a wrong token was right is not told by the time taken)."""
    if authorization is None:
        return False
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("latin-1"), token)


def read_request(method: str, path: str, query: bytes) -> AdminRequest | Refused:
    """The request ``method path?query`` (already authorized) asks, or why it is refused."""
    if len(query) > MAX_QUERY_BYTES:
        return Refused(400, "invalid_query", f"the query is over {MAX_QUERY_BYTES} bytes")
    if path == "/sessions":
        if method != "GET":
            return Refused(405, "method_not_allowed", "use GET", allow="GET")
        fields = _fields(query, ("limit", "cursor"))
        if isinstance(fields, Refused):
            return fields
        cursor = fields.get("cursor", "")
        if cursor and not _ID.fullmatch(cursor):
            return _invalid("cursor", "a session id")
        limit = _limit(fields.get("limit"))
        return limit if isinstance(limit, Refused) else ListSessions(cursor, limit)
    if path.startswith("/sessions/"):
        if method != "DELETE":
            return Refused(405, "method_not_allowed", "use DELETE", allow="DELETE")
        session_id = path.removeprefix("/sessions/")
        return EndSession(session_id) if _ID.fullmatch(session_id) else NO_SUCH_SESSION
    if path == "/usage":
        if method != "GET":
            return Refused(405, "method_not_allowed", "use GET", allow="GET")
        return _usage(query)
    return NOT_FOUND


def _usage(query: bytes) -> ListUsage | Refused:
    fields = _fields(query, ("client", "since", "limit", "cursor"))
    if isinstance(fields, Refused):
        return fields
    client = fields.get("client") or None
    if client is not None and not _ID.fullmatch(client):
        return _invalid("client", "a client hash, as records show it")
    cursor = fields.get("cursor", "")
    if cursor and not _USAGE_CURSOR.fullmatch(cursor):
        return _invalid("cursor", "the next_cursor of a previous page")
    since = fields.get("since")
    after = ""
    if since:
        ended = parse_since(since)
        if ended is None:
            return _invalid("since", "an ISO 8601 date or time, or Unix seconds")
        after = usage_key_prefix(ended)
    limit = _limit(fields.get("limit"))
    if isinstance(limit, Refused):
        return limit
    return ListUsage(client, max(after, cursor), limit)


def parse_since(text: str) -> float | None:
    """``since`` as a Unix time: Unix seconds, or an ISO 8601 date or time (UTC unless it
    says otherwise); None when it is neither."""
    if _UNIX_TIME.fullmatch(text):
        return float(text)
    if len(text) > 40:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _fields(query: bytes, known: tuple[str, ...]) -> dict[str, str] | Refused:
    """The query's fields, each at most once and each one of ``known``."""
    try:
        pairs = parse_qsl(
            query.decode("ascii"),
            keep_blank_values=True,
            max_num_fields=MAX_QUERY_FIELDS,
            strict_parsing=bool(query),
        )
    except (UnicodeDecodeError, ValueError):
        return Refused(400, "invalid_query", "the query is not a short list of known fields")
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name not in known or name in fields:
            return Refused(
                400, "invalid_query", f"known fields, each at most once: {', '.join(known)}"
            )
        fields[name] = value
    return fields


def _limit(text: str | None) -> int | Refused:
    if text is None:
        return DEFAULT_PAGE
    if not text.isdigit() or len(text) > 6 or int(text) < 1:
        return _invalid("limit", f"a whole number from 1 (at most {MAX_PAGE} are returned)")
    return min(int(text), MAX_PAGE)


def _invalid(field: str, expected: str) -> Refused:
    return Refused(400, "invalid_query", f"{field} must be {expected}")
