"""Browser <-> Gemini message mapping: the proxy's hot path, kept in this one module.

Browser audio frames become ``realtimeInput.audio`` messages built by string concatenation, and
upstream audio parts become binary frames, without cattrs structuring: that is where the proxy
spends its time per frame. Everything else is checked against the Gemini schema and passed on.
"""

from __future__ import annotations

import binascii
from typing import Any, Final

import attrs
import orjson

from liveproxy.contract.codec import decode_browser_input
from liveproxy.contract.errors import BadMessage
from liveproxy.contract.payloads import ImageInput, StreamControl, TextInput
from liveproxy.protocol.b64 import decode_b64
from liveproxy.protocol.gemini_messages import parse_client_message
from liveproxy.protocol.schema import SchemaError, shown

BROWSER_AUDIO_MIME: Final = "audio/pcm;rate=16000"
_AUDIO_HEAD: Final = '{"realtimeInput":{"audio":{"mimeType":"' + BROWSER_AUDIO_MIME + '","data":"'
_AUDIO_TAIL: Final = '"}}}'

_STREAM_CONTROL: Final = {
    "audio_stream_end": '{"realtimeInput":{"audioStreamEnd":true}}',
    "activity_start": '{"realtimeInput":{"activityStart":{}}}',
    "activity_end": '{"realtimeInput":{"activityEnd":{}}}',
}
#: Gemini-native messages a browser may send (after its setup), in either casing.
_NATIVE_KINDS: Final = frozenset({"clientContent", "realtimeInput", "toolResponse"})


class AudioAligner:
    """Keeps PCM16 samples whole across frames: an odd trailing byte waits for the next frame."""

    __slots__ = ("_carry",)

    def __init__(self) -> None:
        self._carry = b""

    def align(self, data: bytes) -> bytes:
        """Return the longest even-length prefix of carry + ``data``; keep the odd byte."""
        if self._carry:
            data = self._carry + data
            self._carry = b""
        if len(data) & 1:
            self._carry = data[-1:]
            data = data[:-1]
        return data


def audio_to_upstream(pcm: bytes) -> str:
    """A ``realtimeInput.audio`` message carrying ``pcm`` (16 kHz PCM16; already aligned)."""
    return _AUDIO_HEAD + binascii.b2a_base64(pcm, newline=False).decode("ascii") + _AUDIO_TAIL


def text_turn(text: str) -> str:
    """A user turn with ``turnComplete: true``."""
    return orjson.dumps(
        {
            "clientContent": {
                "turns": [{"role": "user", "parts": [{"text": text}]}],
                "turnComplete": True,
            }
        }
    ).decode()


def browser_text_to_upstream(frame: str) -> str:
    """Map one browser text frame (not the setup) to one upstream message.

    Raises:
        BadMessage: JSON that is not an object, an unknown or ill-formed message, or a setup.
    """
    try:
        data = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return text_turn(frame)
    if not isinstance(data, dict):
        raise BadMessage("a JSON message must be an object")
    if not data:
        raise BadMessage("an empty JSON object is not a message")
    if "type" in data:
        return typed_to_upstream(data)
    if len(data) == 1:
        kind, body = parse_native(_one_response_wrapped(data))
        return orjson.dumps({kind: body}).decode()
    keys = ", ".join(repr(shown(key)) for key in sorted(data)[:5])
    raise BadMessage(f"unknown message with keys {keys}")


def _one_response_wrapped(data: dict[str, Any]) -> dict[str, Any]:
    """An older client's ``{"tool_response": {"id", "response"}}`` (one function response, not
    in a list) as Gemini's ``toolResponse.functionResponses``; any other message as it is."""
    [(key, body)] = data.items()
    if (
        key in ("tool_response", "toolResponse")
        and isinstance(body, dict)
        and "id" in body
        and not {"functionResponses", "function_responses"} & body.keys()
    ):
        return {"toolResponse": {"functionResponses": [body]}}
    return data


def parse_native(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Check a one-key Gemini-native message; return its camelCase kind and body.

    Raises:
        BadMessage: a setup (only the first frame may be one), another key, or a schema error.
    """
    try:
        kind, body = parse_client_message(data)
    except SchemaError as exc:
        raise BadMessage(exc.reason) from None
    if kind not in _NATIVE_KINDS:
        raise BadMessage("setup may only be sent once, as the first message")
    return kind, body


def typed_to_upstream(data: dict[str, Any]) -> str:
    """Map a ``{"type": ...}`` message.

    Raises:
        BadMessage: unknown type, missing fields, or image data that is not base64.
    """
    message = decode_browser_input(data)
    if isinstance(message, TextInput):
        return text_turn(message.text)
    if isinstance(message, ImageInput):
        try:
            decode_b64(message.data)
        except ValueError:
            raise BadMessage("image data must be base64") from None
        return orjson.dumps(
            {"realtimeInput": {"video": {"mimeType": message.mime_type, "data": message.data}}}
        ).decode()
    assert isinstance(message, StreamControl)
    return _STREAM_CONTROL[message.type]


@attrs.define(slots=True)
class UpstreamEvent:
    """One upstream message, translated: frames for the browser plus what the session acts on."""

    frames: list[bytes | str] = attrs.Factory(list)
    go_away: str | None = None
    resumption_handle: str | None = None
    #: With ``resumption_handle``: its ``lastConsumedClientMessageIndex`` (0 when absent, as
    #: proto3 JSON leaves 0 out; None when it is not an int64 >= 0).
    consumed_index: int | None = None
    usage: dict[str, Any] | None = None
    #: A ``toolCall`` message, decoded: the session frames it with its stats (not in ``frames``).
    tool_call: dict[str, Any] | None = None
    #: A ``toolCallCancellation`` message, decoded (not in ``frames``): the session cancels its
    #: own calls and passes the rest on.
    tool_cancellation: dict[str, Any] | None = None
    interrupted: bool = False
    generating: bool = False
    turn_complete: bool = False
    #: ``serverContent.interactionStatus`` as sent (``IN_PROGRESS``, ``IDLE``; newer models).
    interaction_status: str | None = None
    #: Bytes of 24 kHz PCM16 audio left inline for a Gemini-native client (metered, not framed).
    inline_audio_bytes: int = 0


class UpstreamDecodeError(ValueError):
    """An upstream message that is not a JSON object."""


def _decode_audio(data: str) -> bytes:
    try:
        return binascii.a2b_base64(data, strict_mode=True)  # Google's own: standard, padded
    except binascii.Error:
        return decode_b64(data)  # URL-safe or unpadded; raises ValueError if not base64


def _split_audio(parts: list[Any], aligner: AudioAligner, frames: list[bytes | str]) -> list[Any]:
    """Move audio parts to ``frames`` as binary; return the parts that stay JSON."""
    rest: list[Any] = []
    for part in parts:
        inline = part.get("inlineData") if isinstance(part, dict) else None
        mime = inline.get("mimeType", "") if isinstance(inline, dict) else ""
        if isinstance(mime, str) and mime.startswith("audio/"):
            try:
                pcm = aligner.align(_decode_audio(inline["data"]))  # type: ignore[index]
            except (KeyError, TypeError, ValueError, binascii.Error):
                raise UpstreamDecodeError(
                    "upstream sent an audio part without valid data"
                ) from None
            if pcm:
                frames.append(pcm)
        else:
            rest.append(part)
    return rest


def _upstream_object(raw: bytes | str) -> dict[str, Any]:
    """One upstream message decoded.

    Raises:
        UpstreamDecodeError: it is not JSON, or not a JSON object.
    """
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamDecodeError("upstream sent a frame that is not JSON") from None
    if not isinstance(message, dict):
        raise UpstreamDecodeError("upstream sent JSON that is not an object")
    return message


def translate_upstream(raw: bytes | str, aligner: AudioAligner) -> UpstreamEvent:
    """Translate one upstream message.

    Audio parts of ``serverContent.modelTurn`` become binary frames (never of odd length); the
    rest of the message is passed on as JSON text. A ``toolCall`` is decoded into
    ``tool_call``, for the session to split and frame with its stats; a
    ``toolCallCancellation`` into ``tool_cancellation``. ``setupComplete`` (the session sends
    the connection's first one itself), ``goAway`` and ``sessionResumptionUpdate`` belong to the
    proxy and are not passed on.

    Raises:
        UpstreamDecodeError: the message is not a JSON object, or an audio part is corrupt.
    """
    message = _upstream_object(raw)
    event = UpstreamEvent()
    frames = event.frames
    content = message.get("serverContent")
    if isinstance(content, dict):
        turn = content.get("modelTurn")
        if isinstance(turn, dict):
            event.generating = True
            parts = turn.get("parts")
            if isinstance(parts, list):
                rest = _split_audio(parts, aligner, frames)
                if len(rest) != len(parts):
                    if rest:
                        turn = dict(turn, parts=rest)
                        content = dict(content, modelTurn=turn)
                    else:
                        content = {k: v for k, v in content.items() if k != "modelTurn"}
                    message = dict(message, serverContent=content)
                    if not content:
                        del message["serverContent"]
                    if not message:
                        return event
                    try:
                        frames.append(orjson.dumps(message).decode())
                    except orjson.JSONEncodeError:  # nested deeper than orjson writes
                        raise UpstreamDecodeError("upstream sent JSON nested too deep") from None
                    _note_content(event, content)
                    _note_usage(event, message)
                    return event
        _note_content(event, content)
    _the_rest(event, message, raw)
    return event


def translate_upstream_native(raw: bytes | str) -> UpstreamEvent:
    """Translate one upstream message for a Gemini-native client: passed on as Gemini sent it
    (as text; audio stays inline base64 JSON), noted for the session as
    :func:`translate_upstream` notes it. ``toolCall`` and ``toolCallCancellation`` are decoded
    the same way (the session passes on what is not the server's, without ``sessionStats``);
    ``setupComplete``, ``goAway`` and ``sessionResumptionUpdate`` belong to the proxy.

    Raises:
        UpstreamDecodeError: the message is not a JSON object.
    """
    message = _upstream_object(raw)
    event = UpstreamEvent()
    content = message.get("serverContent")
    if isinstance(content, dict):
        turn = content.get("modelTurn")
        event.generating = isinstance(turn, dict)
        if isinstance(turn, dict) and isinstance(turn.get("parts"), list):
            for part in turn["parts"]:
                inline = part.get("inlineData") if isinstance(part, dict) else None
                event.inline_audio_bytes += inline_audio_bytes(inline, OUTPUT_RATE)
        _note_content(event, content)
    _the_rest(event, message, raw.decode() if isinstance(raw, bytes) else raw)
    return event


#: The sample rates audio is metered at (see :mod:`liveproxy.core.usage`).
INPUT_RATE: Final = 16000
OUTPUT_RATE: Final = 24000


def inline_audio_bytes(inline: Any, metered_rate: int) -> int:
    """How many bytes of PCM16 at ``metered_rate`` an inline audio blob (``{"mimeType":
    "audio/pcm;rate=N", "data": <base64>}``) holds, from its length (never decoded); 0 for
    anything else. A blob at another rate counts its duration at ``metered_rate``."""
    if not isinstance(inline, dict):
        return 0
    mime, data = inline.get("mimeType"), inline.get("data")
    if not (isinstance(mime, str) and mime.startswith("audio/") and isinstance(data, str)):
        return 0
    size = len(data.rstrip("=")) * 3 // 4
    _, found, rate_text = mime.partition("rate=")
    rate = int(rate_text) if found and rate_text.isdigit() and 0 < len(rate_text) <= 6 else 0
    return size if rate in (0, metered_rate) else size * metered_rate // rate


def _the_rest(event: UpstreamEvent, message: dict[str, Any], raw: bytes | str) -> None:
    """Note what ``message`` (without audio parts) says beyond its content, and pass ``raw``
    on unless the proxy or the session takes it."""
    frames = event.frames
    if "setupComplete" in message:
        return  # the connection's first message, consumed by upstream.open_connection
    if "goAway" in message:
        go_away = message["goAway"]
        event.go_away = str(go_away.get("timeLeft", "0s")) if isinstance(go_away, dict) else "0s"
        return
    if "sessionResumptionUpdate" in message:
        update = message["sessionResumptionUpdate"]
        if isinstance(update, dict) and update.get("resumable") and update.get("newHandle"):
            event.resumption_handle = str(update["newHandle"])
            event.consumed_index = _message_index(update.get("lastConsumedClientMessageIndex", 0))
        return
    _note_usage(event, message)
    if "toolCall" in message:
        event.tool_call = message
    elif "toolCallCancellation" in message:
        event.tool_cancellation = message
    else:
        frames.append(raw.decode() if isinstance(raw, bytes) else raw)


_INT64_MAX: Final = 2**63 - 1


def _message_index(value: Any) -> int | None:
    """An int64 message index (a number or, as proto3 JSON writes int64, a decimal string);
    None for anything else: negative, over int64, fractional, not a number."""
    if isinstance(value, str) and 0 < len(value) <= 19 and value.isascii() and value.isdigit():
        value = int(value)
    if type(value) is not int or not 0 <= value <= _INT64_MAX:
        return None
    return value


def _note_content(event: UpstreamEvent, content: Any) -> None:
    if isinstance(content, dict):
        event.interrupted = bool(content.get("interrupted"))
        event.turn_complete = bool(content.get("turnComplete"))
        status = content.get("interactionStatus")
        if isinstance(status, str):
            event.interaction_status = status


def _note_usage(event: UpstreamEvent, message: dict[str, Any]) -> None:
    usage = message.get("usageMetadata")
    if isinstance(usage, dict):
        event.usage = usage


def with_session_stats(message: dict[str, Any], stats: dict[str, Any]) -> str:
    """A decoded ``toolCall`` message as a frame with ``sessionStats`` (as the old servers did)."""
    try:
        return orjson.dumps(dict(message, sessionStats=stats)).decode()
    except orjson.JSONEncodeError:  # nested deeper than orjson writes
        raise UpstreamDecodeError("upstream sent JSON nested too deep") from None
