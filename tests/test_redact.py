"""Redaction of log text: registered secrets and credential-shaped values (sync)."""

from __future__ import annotations

import pytest

from liveproxy.redact import Secrets


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("wss://h/ws?key=abc123&alt=1", "wss://h/ws?key=***&alt=1"),
        ("GET /ws?token=T0k3n HTTP/1.1", "GET /ws?token=*** HTTP/1.1"),
        ("Authorization: Bearer ya29.a0AfH6", "Authorization: Bearer ***"),
        ("bad key AIzaSyA-1234567890abcdefghijklmnopqrstu here", "bad key *** here"),
        ("API key sk-the-secret not valid", "API key *** not valid"),
        ("nothing to hide", "nothing to hide"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    secrets = Secrets()
    secrets.add("sk-the-secret", None, "")
    assert secrets.redact(text) == expected


def test_short_values_are_not_registered() -> None:
    secrets = Secrets()
    secrets.add("abc")  # would blank out ordinary words
    assert secrets.redact("abc") == "abc"


@pytest.mark.parametrize(
    "text",
    ["k" * 10_000, "a://x:" * 2_000, "bearer    !" * 2_000, "redis://u:" + "p" * 10_000],
    ids=["one-word", "schemes", "bearers", "endless-password"],
)
def test_what_a_client_might_send_is_left_as_it_is(text: str) -> None:
    assert Secrets().redact(text) == text


def test_a_password_after_a_long_word_is_still_found() -> None:
    text = "x" * 5000 + " redis://user:hunter2@host"
    assert Secrets().redact(text).endswith(" redis://user:***@host")
