"""The operator's requests, read and bounded (sync): the bearer token, paths, query fields."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from liveproxy.store import MAX_PAGE, usage_key, usage_key_prefix
from liveproxy.web.admin_requests import (
    DEFAULT_PAGE,
    MAX_QUERY_BYTES,
    NO_SUCH_SESSION,
    NOT_FOUND,
    EndSession,
    ListSessions,
    ListUsage,
    Refused,
    authorized,
    parse_since,
    read_request,
)

TOKEN = b"t" * 32


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        (None, False),
        ("", False),
        ("Bearer " + "t" * 32, True),
        ("bearer " + "t" * 32, True),
        ("Bearer  " + "t" * 32 + " ", True),
        ("Bearer " + "t" * 31, False),
        ("Bearer " + "t" * 33, False),
        ("Basic " + "t" * 32, False),
        ("t" * 32, False),
        ("Bearer " + "é" * 16, False),
    ],
)
def test_only_the_exact_bearer_token_is_authorized(header: str | None, allowed: bool) -> None:
    assert authorized(header, TOKEN) is allowed


def test_sessions_are_listed_by_page_capped_at_the_maximum() -> None:
    assert read_request("GET", "/sessions", b"") == ListSessions("", DEFAULT_PAGE)
    assert read_request("GET", "/sessions", b"limit=7&cursor=ab12") == ListSessions("ab12", 7)
    assert read_request("GET", "/sessions", b"limit=999999") == ListSessions("", MAX_PAGE)


def test_a_session_is_ended_by_its_id_and_a_malformed_id_is_unknown() -> None:
    assert read_request("DELETE", "/sessions/0a1b2c", b"") == EndSession("0a1b2c")
    assert read_request("DELETE", "/sessions/" + "a" * 65, b"") == NO_SUCH_SESSION
    assert read_request("DELETE", "/sessions/a/b", b"") == NO_SUCH_SESSION
    assert read_request("DELETE", "/sessions/", b"") == NO_SUCH_SESSION


def test_usage_starts_after_the_later_of_since_and_the_cursor() -> None:
    since = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    cursor = usage_key(since + 60, "s1")
    assert read_request("GET", "/usage", b"client=abc&since=2026-12-01") == ListUsage(
        "abc", usage_key_prefix(since), DEFAULT_PAGE
    )
    asked = read_request("GET", "/usage", f"since=2026-12-01&cursor={cursor}".encode())
    assert asked == ListUsage(None, cursor, DEFAULT_PAGE)
    earlier = usage_key(since - 60, "s0")
    asked = read_request("GET", "/usage", f"since=2026-12-01&cursor={earlier}".encode())
    assert asked == ListUsage(None, usage_key_prefix(since), DEFAULT_PAGE)
    assert read_request("GET", "/usage", b"client=&since=") == ListUsage(None, "", DEFAULT_PAGE)


def test_since_is_an_iso_date_or_time_or_unix_seconds() -> None:
    midnight = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    assert parse_since("2026-12-01") == midnight
    assert parse_since("2026-12-01T01:00:00+01:00") == midnight
    assert parse_since(str(int(midnight))) == midnight
    for text in ("yesterday", "1e9", "-5", "9" * 13, "2026-13-01", "x" * 100):
        assert parse_since(text) is None, text


@pytest.mark.parametrize(
    ("method", "path", "query", "status"),
    [
        ("GET", "/sessions", b"limit=0", 400),
        ("GET", "/sessions", b"limit=abc", 400),
        ("GET", "/sessions", b"limit=1&limit=2", 400),
        ("GET", "/sessions", b"unknown=1", 400),
        ("GET", "/sessions", b"cursor=a%20b", 400),
        ("GET", "/sessions", b"a=1&" * 9, 400),
        ("GET", "/sessions", b"limit=1&" + b"x" * MAX_QUERY_BYTES, 400),
        ("GET", "/sessions", b"\xff", 400),
        ("GET", "/sessions", b"noequals", 400),
        ("GET", "/usage", b"cursor=1:abc", 400),
        ("GET", "/usage", b"client=" + b"a" * 65, 400),
        ("POST", "/sessions", b"", 405),
        ("GET", "/sessions/abc", b"", 405),
        ("DELETE", "/usage", b"", 405),
        ("GET", "/", b"", 404),
        ("GET", "/metrics", b"", 404),
    ],
)
def test_what_is_refused(method: str, path: str, query: bytes, status: int) -> None:
    refused = read_request(method, path, query)
    assert isinstance(refused, Refused)
    assert refused.status == status
    if status == 404:
        assert refused == NOT_FOUND
    if status == 405:
        assert refused.allow in ("GET", "DELETE")
