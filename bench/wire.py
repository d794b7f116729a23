"""What goes on the wire: stamped PCM frames, the Live protocol's JSON, and their echoes.

Every audio frame carries a stamp in its first bytes: the session index, a sequence number, the
frame's *scheduled* send time and the time it was actually handed to the WebSocket (both
``time.perf_counter_ns`` of the load generator). The emulator in echo mode returns the same
bytes, so the receiver reads the stamp back and gets two round trips: from the actual send (the
path through proxy and emulator) and from the schedule (adding the generator's own lateness:
timer granularity, a busy event loop, or a send blocked by backpressure, so a sender that falls
behind cannot hide the delay it suffered).
"""

from __future__ import annotations

import base64
import struct
from typing import Any, Literal

import orjson

Target = Literal["proxy", "direct"]

#: Session index, sequence number, scheduled and actual send time in ns (perf_counter_ns).
STAMP = struct.Struct("<IIqq")

LIVE_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
INPUT_MIME = "audio/pcm;rate=16000"

#: The first frame a browser sends to liveproxy.
BROWSER_SETUP = orjson.dumps(
    {"setup": {"generation_config": {"response_modalities": ["AUDIO"]}}}
).decode()
#: The model the direct mode asks the emulator for (``run.py`` starts it with ``--model`` this:
#: by default the emulator serves only Google's Live model names).
LIVE_MODEL = "models/bench"
#: The first frame a Live API client sends upstream (the direct mode).
LIVE_SETUP = orjson.dumps(
    {"setup": {"model": LIVE_MODEL, "generationConfig": {"responseModalities": ["AUDIO"]}}}
).decode()

_AUDIO_HEAD = '{"realtimeInput":{"audio":{"mimeType":"' + INPUT_MIME + '","data":"'
_AUDIO_TAIL = '"}}}'


def base_frame(size: int) -> bytearray:
    """A ``size``-byte PCM16 frame (a quiet saw-tooth) with room for the stamp.

    Raises:
        ValueError: ``size`` is odd or too small for the stamp.
    """
    if size < STAMP.size or size % 2:
        raise ValueError(f"frame size must be even and >= {STAMP.size} bytes, got {size}")
    pattern = bytes(range(0, 64, 2)) * (size // 32 + 1)
    return bytearray(pattern[:size])


def stamp(frame: bytearray, session: int, seq: int, due_ns: int, sent_ns: int) -> None:
    """Write the stamp into ``frame`` in place."""
    STAMP.pack_into(frame, 0, session, seq, due_ns, sent_ns)


def read_stamp(pcm: bytes | bytearray | memoryview) -> tuple[int, int, int, int]:
    """``(session, seq, due_ns, sent_ns)`` from an echoed frame."""
    session, seq, due_ns, sent_ns = STAMP.unpack_from(pcm, 0)
    return session, seq, due_ns, sent_ns


def live_audio_message(frame: bytes | bytearray) -> str:
    """The ``realtimeInput.audio`` text frame carrying ``frame``, as a Live client sends it.

    The base64 is computed here every time, as a real client would; the JSON around it is
    constant, so it is concatenated rather than serialised (same bytes orjson would produce).
    """
    return _AUDIO_HEAD + base64.b64encode(frame).decode("ascii") + _AUDIO_TAIL


def live_audio_of(message: bytes | str) -> bytes | None:
    """The PCM of the first ``inlineData`` part of a Live ``serverContent`` message, or None
    when the message carries no audio (any other server message)."""
    body: Any = orjson.loads(message)
    try:
        data = body["serverContent"]["modelTurn"]["parts"][0]["inlineData"]["data"]
    except (KeyError, IndexError, TypeError):
        return None
    return base64.b64decode(data)


def is_setup_complete(message: bytes | str) -> bool:
    """Whether ``message`` is ``{"setupComplete": {...}}`` (text via the proxy, binary direct)."""
    try:
        body: Any = orjson.loads(message)
    except orjson.JSONDecodeError:
        return False
    return isinstance(body, dict) and "setupComplete" in body
