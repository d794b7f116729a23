"""Log lines carry at most a capped, escaped message, and nobody's text starts a line (sync)."""

from __future__ import annotations

import logging
import sys

from liveproxy.logs import MAX_MESSAGE_CHARS, JsonFormatter, TextFormatter


def record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError("bad\nforged line")
        except ValueError:
            info = sys.exc_info()
    return logging.LogRecord("liveproxy", logging.INFO, __file__, 1, message, args, info)


def test_a_client_newline_stays_in_its_line() -> None:
    line = TextFormatter().format(record("refused %s", 'name"\n2026-01-01 INFO forged\r\x1b[2J'))
    assert "\n" not in line
    assert line.endswith('refused name"\\n2026-01-01 INFO forged\\r\\x1b[2J')


def test_a_long_message_is_cut_and_says_so() -> None:
    text = "k" * 100_000
    line = TextFormatter().format(record("refused %s", text))
    assert len(line) < MAX_MESSAGE_CHARS + 200
    assert line.endswith(f"... ({len('refused ') + len(text)} chars)")
    json_line = JsonFormatter().format(record("refused %s", text))
    assert len(json_line) < 2 * MAX_MESSAGE_CHARS + 400


def test_every_traceback_line_is_indented() -> None:
    text = TextFormatter().format(record("failed", exc=True))
    first, *rest = text.splitlines()
    assert first.endswith("failed")
    assert rest
    assert all(line.startswith("    | ") for line in rest)
    assert "    | forged line" in rest
