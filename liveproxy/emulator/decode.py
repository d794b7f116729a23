"""Client frames -> validated messages, with a fast path for the commonest one (audio)."""

from __future__ import annotations

from typing import Any

import attrs
import orjson

from liveproxy.emulator.endings import Close
from liveproxy.protocol.b64 import decode_b64
from liveproxy.protocol.closes import INVALID_PAYLOAD
from liveproxy.protocol.gemini_messages import parse_client_message
from liveproxy.protocol.schema import SchemaError

INVALID_JSON = "Invalid JSON payload received. Unexpected token."

_REALTIME_KEYS = frozenset({"realtimeInput", "realtime_input"})
_BLOB_KEYS = {"data": "data", "mimeType": "mimeType", "mime_type": "mimeType"}


@attrs.frozen
class ClientMessage:
    """One client message: its kind (camelCase), its camelCase body, and the decoded bytes of
    ``realtimeInput.audio`` when it carries audio."""

    kind: str
    body: dict[str, Any]
    audio: bytes | None = None


def _fast_audio(message: Any) -> ClientMessage | None:
    """``{"realtimeInput": {"audio": {"data": ..., "mimeType": ...}}}`` in either casing, or
    None for anything else (including invalid input, which the full parser then refuses)."""
    if type(message) is not dict or len(message) != 1:
        return None
    ((key, body),) = message.items()
    if key not in _REALTIME_KEYS or type(body) is not dict or len(body) != 1:
        return None
    blob = body.get("audio")
    if type(blob) is not dict:
        return None
    clean: dict[str, str] = {}
    for name, value in blob.items():
        camel = _BLOB_KEYS.get(name)
        if camel is None or camel in clean or type(value) is not str:
            return None
        clean[camel] = value
    try:
        audio = decode_b64(clean.get("data", ""))
    except ValueError:
        return None
    return ClientMessage("realtimeInput", {"audio": clean}, audio)


def decode_client(frame: str | bytes) -> ClientMessage:
    """Parse and validate one client frame (text or binary, UTF-8 JSON).

    Raises:
        Close: 1007 with Google's reason when the frame is not JSON or breaks the schema.
    """
    try:
        message = orjson.loads(frame)
    except orjson.JSONDecodeError:
        raise Close(INVALID_PAYLOAD, INVALID_JSON) from None
    fast = _fast_audio(message)
    if fast is not None:
        return fast
    try:
        kind, body = parse_client_message(message)
    except SchemaError as exc:
        raise Close(INVALID_PAYLOAD, exc.reason) from None
    audio = None
    if kind == "realtimeInput" and "audio" in body:
        audio = decode_b64(body["audio"].get("data", ""))
    return ClientMessage(kind, body, audio)
