"""Log lines: text or JSON (``LOG_FORMAT``), each with its session and worker, none with a secret.

A session's tasks inherit :data:`SESSION_ID` (trio copies the context into every task it
starts), so every line logged on a session's behalf, by us or by a library, carries its id.
Structured fields go in ``extra=fields(...)``; the JSON formatter puts them at the top level
(the text formatter has them in its message already). Both formatters redact: the JSON one
each string value before encoding, so a redaction can never break a line's JSON.

A message can carry what a client sent (a refused field's name, a close reason), so both
formatters first cap it to :data:`MAX_MESSAGE_CHARS` (redaction then sees only that much), and
the text formatter escapes its control characters and indents tracebacks: no client can make a
line long, slow to write, or begin a line of its own.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from liveproxy.redact import SECRETS

LogFormat = Literal["text", "json"]

#: The session the current task works for (set by the ``/ws`` route).
SESSION_ID: ContextVar[str | None] = ContextVar("liveproxy_session_id", default=None)
#: The longest message a log line carries; the rest is cut, and the cut is marked.
MAX_MESSAGE_CHARS = 4096
#: C0 and C1 control characters (newlines included) and the Unicode line separators, written
#: as escapes in text lines.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_CONTROLS.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
_CONTROLS.update({0x2028: "\\u2028", 0x2029: "\\u2029"})


def capped(message: str) -> str:
    """``message`` cut to :data:`MAX_MESSAGE_CHARS` (the cut marked with its length)."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return f"{message[:MAX_MESSAGE_CHARS]}... ({len(message)} chars)"


def escaped(text: str) -> str:
    """``text`` with control characters written as escapes: it stays on one line."""
    return text.translate(_CONTROLS)


def fields(event: str, **values: Any) -> dict[str, Any]:
    """``extra=`` for a log call: a short event name and structured values."""
    return {"fields": {"event": event, **values}}


class _Context(logging.Filter):
    """Stamps every record with its session id and worker (for both formatters)."""

    def __init__(self, worker: int | None) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        session_id = SESSION_ID.get()
        record.session_id = session_id
        record.worker = self.worker
        record.context = "".join(
            (
                f" [worker {self.worker}]" if self.worker is not None else "",
                f" [session {session_id}]" if session_id else "",
            )
        )
        return True


class TextFormatter(logging.Formatter):
    """``ts LEVEL logger [worker N] [session ID]: message``, redacted: one line per record,
    with a traceback after it indented."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "context"):
            record.context = ""
        record.message = escaped(SECRETS.redact(capped(record.message)))
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        lines = super().formatException(ei).splitlines()
        return "\n".join("    | " + escaped(SECRETS.redact(capped(line))) for line in lines)

    def formatStack(self, stack_info: str) -> str:
        return "\n".join("    | " + line for line in stack_info.splitlines())


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``event``, ``message``,
    ``session_id`` and ``worker`` when known, the call's fields, ``error`` for a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        message = capped(record.getMessage())
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": message,
            "message": message,
        }
        for name in ("session_id", "worker"):
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return orjson.dumps(_redacted(line), default=str).decode()


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return SECRETS.redact(capped(value))
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return value


def configure(level: str, log_format: LogFormat, worker: int | None = None) -> None:
    """Send every logger's records (the libraries' too) to stderr in ``log_format``."""
    handler = logging.StreamHandler()
    handler.addFilter(_Context(worker))
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # coredis logs every failed reconnection attempt at ERROR with a traceback; the state store
    # reports an outage itself, once.
    logging.getLogger("coredis").setLevel(logging.CRITICAL)
