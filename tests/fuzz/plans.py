"""What one fuzz example sends, as small printable values, and the hypothesis strategies for them.

Large payloads are described (:class:`Fill`: a kind, a size, a seed) rather than drawn, so a
falsifying example prints in a few lines and hypothesis does not spend its budget on bytes.
"""

from __future__ import annotations

import enum
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import strategies as st

from tests.fuzz.server import MAX_MESSAGE_BYTES
from tests.fuzz.wire import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, encode_frame

#: The proxy's limit (MAX_MESSAGE_BYTES, also Hypercorn's own now).
LIMIT = MAX_MESSAGE_BYTES
#: Where Hypercorn used to cut frames (max(2 * MAX_MESSAGE_BYTES, 1 MiB)): still a size to try.
LARGE = 1024 * 1024

# Invalid UTF-8: a lone 0xff, an overlong '/', a UTF-16 surrogate, a truncated 3-byte sequence,
# a code point over U+10FFFF, a stray continuation byte.
BAD_UTF8 = (b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xf4\x90\x80\x80", b"\x80")
_PATTERN = bytes(range(256))
_UTF8 = "aé€😀".encode()
#: Text that would begin a log line of its own if a client's text reached the log unescaped
#: (the harness fails on any stderr line that is not a log line).
FORGED = "\n2026-01-01 INFO forged"


@dataclass(frozen=True)
class Fill:
    """``size`` bytes of one ``kind``, built when sent."""

    kind: str  # pattern | ascii | utf8 | bad_utf8 | zeros | json_text | setup_name
    size: int
    seed: int = 0

    def build(self) -> bytes:
        n, seed = self.size, self.seed
        if self.kind == "pattern":
            rotated = _PATTERN[seed % 256 :] + _PATTERN[: seed % 256]
            return (rotated * (n // 256 + 1))[:n]
        if self.kind == "zeros":
            return bytes(n)
        if self.kind == "utf8":  # valid, but a cut may fall inside a code point
            return (_UTF8 * (n // len(_UTF8) + 1))[:n]
        if self.kind == "bad_utf8":
            bad = BAD_UTF8[seed % len(BAD_UTF8)]
            at = (seed * 7919) % (n + 1)
            return (b"a" * at + bad + b"a" * n)[: max(n, at + len(bad))]
        if self.kind == "json_text":
            text = json.dumps({"type": "text", "text": ""}).encode()
            return text[:-2] + b"x" * max(0, n - len(text)) + b'"}'
        if self.kind == "setup_name":  # a setup with one unknown field: its long, forging name
            return json.dumps({"setup": {long_name(n, seed): 1}}).encode()
        return b"a" * n  # ascii


def long_name(size: int, seed: int = 0) -> str:
    """A field name of ``size`` characters with :data:`FORGED` in it (where, ``seed`` says:
    a refusal shows only a name's first characters), the rest a run of one letter."""
    at = 1 if seed % 2 == 0 else size // 2
    name = "a" * at + FORGED + "a" * size
    return name[:size]


Payload = bytes | Fill


def build(payload: Payload) -> bytes:
    return payload if isinstance(payload, bytes) else payload.build()


@dataclass(frozen=True)
class Frame:
    """One WebSocket frame from the client, valid or not."""

    opcode: int
    payload: Payload = b""
    fin: bool = True
    rsv: int = 0
    masked: bool = True
    length_form: str = "min"
    #: Declare this many bytes more than are sent (what follows is read as this frame's payload).
    short_by: int = 0
    #: Compress the payload as permessage-deflate would (and set RSV1).
    deflate: bool = False
    mask: bytes = b"\x5a\x17\xc3\x09"

    def encode(self) -> bytes:
        data = build(self.payload)
        rsv = self.rsv
        if self.deflate:
            compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
            data = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
            data = data[:-4] if data.endswith(b"\x00\x00\xff\xff") else data
            rsv |= 0x4
        return encode_frame(
            self.opcode,
            data,
            fin=self.fin,
            rsv=rsv,
            mask=self.mask if self.masked else None,
            length_form=self.length_form,
            declared_length=len(data) + self.short_by if self.short_by else None,
        )


@dataclass(frozen=True)
class Flood:
    """``count`` copies of ``frame``, in one write."""

    frame: Frame
    count: int

    def encode(self) -> bytes:
        return self.frame.encode() * self.count


Sent = Frame | Flood


def frames_bytes(frames: tuple[Sent, ...]) -> bytes:
    return b"".join(f.encode() for f in frames)


# --- payloads ---------------------------------------------------------------------------------

#: Sizes around every limit a frame meets: 7/16/64-bit lengths, the control-frame limit, the
#: proxy's MAX_MESSAGE_BYTES, and 1 MiB.
EDGE_SIZES = (
    0,
    1,
    2,
    125,
    126,
    127,
    65535,
    LIMIT - 1,
    LIMIT,
    LIMIT + 1,
    LARGE - 1,
    LARGE,
    LARGE + 1,
)

sizes = st.one_of(
    st.integers(0, 300),
    st.sampled_from(EDGE_SIZES),
    st.integers(0, 2 * LIMIT),
    st.integers(LIMIT, LARGE + 4096),
)
small_sizes = st.one_of(st.integers(0, 300), st.sampled_from(EDGE_SIZES[:7]))

fills = st.builds(
    Fill,
    kind=st.sampled_from(
        ["pattern", "ascii", "utf8", "bad_utf8", "zeros", "json_text", "setup_name"]
    ),
    size=sizes,
    seed=st.integers(0, 2**16),
)

#: Messages a browser could send, right or wrong (see the browser contract).
_MESSAGES: tuple[object, ...] = (
    {"setup": {"generation_config": {"response_modalities": ["TEXT"]}}},
    {"setup": {"generation_config": {"response_modalities": ["AUDIO"]}}},
    {"setup": {"bogus_field": 1}},
    {"setup": {"generation_config": {"temperature": "hot"}}},
    {"setup": {"tools": [{"function_declarations": [{"name": "f", "parameters": 1}]}]}},
    {"setup": None},
    {"type": "text", "text": "hello"},
    {"type": "text", "text": 'call get_weather {"location":"Tokyo"}'},
    {"type": "text"},
    {"type": "text", "text": None},
    {"type": "image", "data": "/9j/4AAQ", "mime_type": "image/jpeg"},
    {"type": "image", "data": "!!!not base64!!!"},
    {"type": "audio_stream_end"},
    {"type": "activity_start"},
    {"type": "activity_end"},
    {"type": 7},
    {"client_content": {"turns": [{"role": "user", "parts": [{"text": "hi"}]}]}},
    {"clientContent": {"turnComplete": "yes"}},
    {"realtime_input": {"audio": {"data": "AAAA", "mime_type": "audio/pcm;rate=16000"}}},
    {"realtimeInput": {"mediaChunks": [{"data": "AAAA"}]}},
    {"tool_response": {"function_responses": [{"id": "x", "name": "f", "response": {}}]}},
    {"toolResponse": []},
    {"client_content": {}, "tool_response": {}},
    [],
    "just a string",
    1e308,
    b"not json at all",
    b"{",
    b'{"type": "text", "text": "\\ud800"}',
    b'{"a":' * 2000 + b"1" + b"}" * 2000,
    b"[" * 100_000,
    b'{"session_duration": 99999999999999999999999999}',
    b"\x00",
    b"",
)
JSON_MESSAGES: tuple[bytes, ...] = tuple(
    m if isinstance(m, bytes) else json.dumps(m).encode() for m in _MESSAGES
)

#: Keys the proxy and Gemini's schema know, so random JSON reaches past the first check.
KNOWN_KEYS = (
    "setup", "type", "text", "data", "mime_type", "mimeType", "client_content", "clientContent",
    "realtime_input", "realtimeInput", "tool_response", "toolResponse", "turns", "parts", "role",
    "turn_complete", "turnComplete", "audio", "video", "media_chunks", "audio_stream_end",
    "activity_start", "activity_end", "function_responses", "id", "name", "response",
    "generation_config", "response_modalities", "tools", "function_declarations", "parameters",
    "system_instruction", "input_audio_transcription", "session_resumption", "handle", "model",
)  # fmt: skip
TYPES = ("text", "image", "audio_stream_end", "activity_start", "activity_end", "setup", "")

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=16)
    | st.sampled_from((*KNOWN_KEYS, *TYPES, FORGED)),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from((*KNOWN_KEYS, FORGED)) | st.text(max_size=8), inner, max_size=4
        )
    ),
    max_leaves=16,
)
random_messages = st.one_of(
    st.dictionaries(st.sampled_from(KNOWN_KEYS), json_values, min_size=1, max_size=2),
    st.builds(
        lambda kind, rest: {"type": kind, **rest},
        st.sampled_from(TYPES) | st.text(max_size=8),
        st.dictionaries(st.sampled_from(KNOWN_KEYS), json_values, max_size=3),
    ),
    json_values,
).map(lambda message: json.dumps(message).encode())

payloads: st.SearchStrategy[Payload] = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(JSON_MESSAGES),
    random_messages,
    fills,
)


# --- frame sequences --------------------------------------------------------------------------

mask_keys = st.one_of(
    st.just(b"\x5a\x17\xc3\x09"), st.just(b"\x00\x00\x00\x00"), st.binary(min_size=4, max_size=4)
)
length_forms = st.sampled_from(["min", "min", "min", "16", "64"])
close_codes = st.sampled_from(
    [None, 1000, 1001, 1002, 1005, 1006, 1007, 1009, 1011, 1015, 999, 1004, 2999, 3000, 4999, 5000]
)


@st.composite
def data_frames(draw: st.DrawFn) -> list[Frame]:
    """A text or binary message, whole or fragmented (with control frames between fragments)."""
    opcode = draw(st.sampled_from([TEXT, BINARY]))
    data = build(draw(payloads))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=3)))
    parts = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    mask = draw(mask_keys)
    frames: list[Frame] = []
    for index, part in enumerate(parts):
        if index and draw(st.integers(0, 4)) == 0:
            frames.append(Frame(draw(st.sampled_from([PING, PONG])), b"between", mask=mask))
        frames.append(
            Frame(
                opcode if index == 0 else CONTINUATION,
                part,
                fin=index == len(parts) - 1,
                mask=mask,
                length_form=draw(length_forms),
            )
        )
    return frames


@st.composite
def control_frames(draw: st.DrawFn) -> list[Frame]:
    opcode = draw(st.sampled_from([PING, PONG, CLOSE]))
    if opcode == CLOSE:
        code = draw(close_codes)
        reason = draw(
            st.sampled_from([b"", b"bye", b"\xff\xfe", b"x" * 123, b"x" * 124, FORGED.encode()])
        )
        payload: Payload = b"" if code is None else code.to_bytes(2, "big") + reason
        if draw(st.integers(0, 5)) == 0:
            payload = b"\x03"  # a one-byte close payload
    else:
        payload = draw(st.one_of(st.binary(max_size=125), st.just(Fill("pattern", 126))))
    return [Frame(opcode, payload, fin=draw(st.integers(0, 6)) > 0, mask=draw(mask_keys))]


@st.composite
def odd_frames(draw: st.DrawFn) -> list[Frame]:
    """Reserved opcodes and bits, unmasked frames, stray continuations, lying lengths, deflate."""
    return [
        Frame(
            opcode=draw(st.integers(0, 15)),
            payload=draw(payloads),
            fin=draw(st.booleans()),
            rsv=draw(st.sampled_from([0, 0, 1, 2, 4, 7])),
            masked=draw(st.integers(0, 3)) > 0,
            length_form=draw(length_forms),
            short_by=draw(st.sampled_from([0, 0, 0, 1, 1000])),
            deflate=draw(st.integers(0, 3)) == 0,
            mask=draw(mask_keys),
        )
    ]


@st.composite
def deflated_frames(draw: st.DrawFn) -> list[Frame]:
    """A permessage-deflate message: meaningful when the offer was accepted (a bomb among them)."""
    payload = draw(
        st.one_of(
            st.sampled_from(JSON_MESSAGES[:8]),
            st.builds(Fill, st.just("zeros"), st.sampled_from([LIMIT + 1, LARGE + 1, 8 << 20])),
            fills,
        )
    )
    return [Frame(draw(st.sampled_from([TEXT, BINARY])), payload, deflate=True)]


#: Around BROWSER_MESSAGE_RATE (400 a second, a burst of as many): under, at, past, far past.
flood_counts = st.one_of(
    st.integers(2, 50), st.sampled_from([399, 400, 401, 1000, 5000]), st.integers(100, 5000)
)


@st.composite
def zero_byte_frames(draw: st.DrawFn) -> list[Sent]:
    """Frames that add no byte to any message: empty continuations (fin or not) after a
    fragment that may never finish, pings and pongs with or without payload; one or a flood."""
    frames: list[Sent] = []
    if draw(st.booleans()):  # a message begun, for the continuations to continue (or not)
        opcode = draw(st.sampled_from([TEXT, BINARY]))
        frames.append(
            Frame(opcode, draw(st.sampled_from([b"", b"\x00\x00", b'{"type'])), fin=False)
        )
    opcode = draw(st.sampled_from([CONTINUATION, PING, PONG]))
    if opcode == CONTINUATION:
        frame = Frame(CONTINUATION, b"", fin=draw(st.integers(0, 4)) == 0)
    else:
        frame = Frame(opcode, draw(st.sampled_from([b"", b"", b"x", bytes(125)])))
    count = draw(st.one_of(st.just(1), flood_counts))
    frames.append(frame if count == 1 else Flood(frame, count))
    return frames


frame_groups: st.SearchStrategy[Sequence[Sent]] = st.one_of(
    data_frames(), control_frames(), odd_frames(), deflated_frames(), zero_byte_frames()
)


@st.composite
def frame_sequences(draw: st.DrawFn, max_groups: int = 6) -> tuple[Sent, ...]:
    groups = draw(st.lists(frame_groups, min_size=1, max_size=max_groups))
    return tuple(frame for group in groups for frame in group)


@dataclass(frozen=True)
class SessionPlan:
    """A successful upgrade with a valid token, then ``frames``."""

    frames: tuple[Sent, ...]
    setup_first: bool = True
    deflate_offer: str | None = None
    #: ``one``: every frame in one write; ``frames``: one write per frame, 5 ms apart.
    pacing: str = "one"
    #: ``close_frame``, ``close``, ``rst`` or ``half``.
    end: str = "close"


DEFLATE_OFFERS = (
    None,
    None,
    "permessage-deflate",
    "permessage-deflate; client_max_window_bits",
    "permessage-deflate; server_max_window_bits=8",
    "permessage-deflate; server_max_window_bits=99",
    'x-unknown; a="',
)
ends = st.sampled_from(["close_frame", "close", "rst", "half"])

session_plans = st.builds(
    SessionPlan,
    frames=frame_sequences(),
    setup_first=st.booleans(),
    deflate_offer=st.sampled_from(DEFLATE_OFFERS),
    pacing=st.sampled_from(["one", "frames"]),
    end=ends,
)


# --- HTTP -------------------------------------------------------------------------------------

PATHS = (
    b"/api/auth",
    b"/api/health",
    b"/api/status",
    b"/ws",
    b"/ws?token=",
    b"/ws?token=abc&token=def",
    b"/",
    b"/static/app.js",
    b"/static/../../../etc/passwd",
    b"/static/%2e%2e/%2e%2e/etc/passwd",
    b"//api/auth",
    b"/api/auth?x=1",
    b"/api/health/",
    b"/%00",
    b"/%ff%fe",
    b"*",
    b"http://127.0.0.1/api/health",
    b"/" + b"a" * 20_000,
    b"/api/auth#frag",
    b"/static/%0a2026-01-01%20INFO%20forged",
    b"",
)
METHODS = (b"GET", b"POST", b"HEAD", b"PUT", b"OPTIONS", b"DELETE", b"PATCH", b"CONNECT")
VERSIONS = (b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.1x", b"")
AUTH_BODIES = (
    b"",
    b"{}",
    b'{"session_duration": 60}',
    b'{"session_duration": "60"}',
    b'{"session_duration": 1e999}',
    b'{"session_duration": -99999999999999999999999999999}',
    b'{"session_duration": 99999999999999999999999999999}',
    b'{"session_duration": true}',
    b'{"session_duration": null, "extra": [1, 2]}',
    b'{"session_duration": 60, "session_duration": "x"}',
    b"[" * 50_000,
    b'"\\ud800"',
    b"\xff\xfe{",
    b"null",
)
#: ``{len}`` stands for the body's real length.
CONTENT_LENGTHS = (
    b"{len}",
    b"{len}",
    b"0",
    b"1",
    b"-1",
    b"+5",
    b"0x10",
    b" 5 ",
    b"5, 5",
    b"5, 6",
    b"99999999999999999999",
    b"18446744073709551616",
    b"abc",
    b"",
)
TRANSFER_ENCODINGS = (
    b"chunked",
    b"CHUNKED",
    b"chunked, chunked",
    b"gzip, chunked",
    b"chunked, gzip",
    b"gzip",
    b"identity",
    b" chunked",
    b"chunked\x0b",
)
FIXED_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"Connection", b"close"),
    (b"Connection", b"keep-alive"),
    (b"Connection", b"Upgrade"),
    (b"Upgrade", b"websocket"),
    (b"Upgrade", b"h2c"),
    (b"HTTP2-Settings", b"AAMAAABkAARAAAAAAAIAAAAA"),
    (b"Expect", b"100-continue"),
    (b"Expect", b"bogus"),
    (b"Content-Type", b"application/json"),
    (b"Content-Type", b"multipart/form-data; boundary=x"),
    (b"Content-Type", b"application/x-www-form-urlencoded"),
    (b"Content-Encoding", b"gzip"),
    (b"Origin", b"http://evil.example"),
    (b"Host", b"evil.example"),
    (b"Host", b""),
    (b"Sec-WebSocket-Version", b"13"),
    (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    (b"X-Long", b"v" * 20_000),
    (b"X-Folded", b"a\r\n b"),
    (b"X-Ctl", b"\x00\x01\x7f"),
    (b"X-Latin1", b"\xe9\xff"),
    (b"", b"no name"),
    (b"Bad Name", b"x"),
    (b"Trailer", b"X-T"),
)


@dataclass(frozen=True)
class ChunkSpec:
    data: Payload
    #: The size line as sent (``None``: the real size in hex).
    size_line: bytes | None = None
    terminator: bytes = b"\r\n"


@dataclass(frozen=True)
class HttpPlan:
    method: bytes
    target: bytes
    version: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: Payload = b""
    #: Send ``body`` chunked with these chunks instead (then ``last_chunk``).
    chunks: tuple[ChunkSpec, ...] | None = None
    last_chunk: bytes = b"0\r\n\r\n"
    #: Bytes after the request: a pipelined request, an HTTP/2 preface, garbage.
    trailing: bytes = b""
    #: Cut the request after this fraction (0-1000 per mille; 1000: whole).
    keep_per_mille: int = 1000
    #: Split the bytes into this many writes, 5 ms apart.
    writes: int = 1
    end: str = "close"
    #: Instead of all of the above, exactly these bytes.
    raw: bytes | None = None

    def wire(self) -> bytes:
        if self.raw is not None:
            return self.raw
        body = build(self.body)
        if self.chunks is not None:
            parts = []
            for chunk in self.chunks:
                data = build(chunk.data)
                size = b"%x" % len(data) if chunk.size_line is None else chunk.size_line
                parts.append(size + b"\r\n" + data + chunk.terminator)
            body = b"".join(parts) + self.last_chunk
        head = self.method + b" " + self.target + (b" " + self.version if self.version else b"")
        lines = [head]
        for name, value in self.headers:
            value = value.replace(b"{len}", str(len(body)).encode())
            lines.append(name + b": " + value)
        request = b"\r\n".join(lines) + b"\r\n\r\n" + body + self.trailing
        return request[: len(request) * self.keep_per_mille // 1000]


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
TRAILING = (
    b"",
    b"",
    b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /api/auth HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",
    H2_PREFACE + H2_SETTINGS,
    b"\r\n\r\n\r\n",
    b"\x00\xff" * 100,
)

chunk_specs = st.builds(
    ChunkSpec,
    data=st.one_of(st.binary(max_size=32), st.sampled_from(AUTH_BODIES), fills),
    size_line=st.one_of(
        st.none(),
        st.none(),
        st.sampled_from(
            [
                b"zz",
                b"-1",
                b"ffffffffffffffffffff",
                b" 5",
                b"5;ext=1",
                b"5 ",
                b"",
                b"0x5",
                b"7fffffff",
            ]
        ),
    ),
    terminator=st.sampled_from([b"\r\n", b"\r\n", b"\n", b"", b"XX"]),
)

header_lists = st.lists(
    st.one_of(
        st.sampled_from(FIXED_HEADERS),
        st.tuples(st.just(b"Content-Length"), st.sampled_from(CONTENT_LENGTHS)),
        st.tuples(st.just(b"Transfer-Encoding"), st.sampled_from(TRANSFER_ENCODINGS)),
        st.tuples(st.binary(min_size=1, max_size=12), st.binary(max_size=24)),
    ),
    max_size=8,
).map(tuple)


@st.composite
def http_plans(draw: st.DrawFn) -> HttpPlan:
    if draw(st.integers(0, 9)) == 0:
        raw = draw(st.binary(max_size=300))
        if draw(st.booleans()):  # HTTP/2 with prior knowledge, then garbage frames
            raw = H2_PREFACE + H2_SETTINGS + raw
        return HttpPlan(b"", b"", b"", (), raw=raw, end=draw(ends))
    headers = draw(header_lists)
    if draw(st.booleans()):
        headers = ((b"Host", b"127.0.0.1"), *headers)
    chunked = draw(st.integers(0, 3)) == 0
    return HttpPlan(
        method=draw(st.one_of(st.sampled_from(METHODS), st.binary(min_size=1, max_size=8))),
        target=draw(st.one_of(st.sampled_from(PATHS), st.binary(max_size=40))),
        version=draw(st.sampled_from(VERSIONS)),
        headers=headers,
        body=draw(st.one_of(st.sampled_from(AUTH_BODIES), st.binary(max_size=64), fills)),
        chunks=tuple(draw(st.lists(chunk_specs, max_size=4))) if chunked else None,
        last_chunk=draw(st.sampled_from([b"0\r\n\r\n", b"0\r\nX-T: 1\r\n\r\n", b"", b"0\r\n"])),
        trailing=draw(st.sampled_from(TRAILING)),
        keep_per_mille=draw(st.sampled_from([1000, 1000, 1000, 0, 1, 500, 990])),
        writes=draw(st.integers(1, 3)),
        end=draw(ends),
    )


# --- WebSocket upgrades -----------------------------------------------------------------------


SAMPLE_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's


@dataclass(frozen=True)
class UpgradePlan:
    """A (maybe broken) upgrade to /ws, data before the 101, then frames if it was accepted."""

    #: valid | missing | bogus | empty | twice | used (a token that already opened a session)
    token: str = "valid"
    path: bytes = b"/ws"
    method: bytes = b"GET"
    version: bytes = b"HTTP/1.1"
    upgrade: bytes | None = b"websocket"
    connection: bytes | None = b"Upgrade"
    key: bytes | None = SAMPLE_KEY
    ws_version: bytes | None = b"13"
    extra_headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""
    #: Sent right after the request, before the answer is read.
    early: bytes = b""
    frames: tuple[Sent, ...] = ()
    #: Send ``early`` in the same write as the request (else in a second write, at once).
    early_together: bool = True
    end: str = "close"

    def request(self, token: str | None) -> bytes:
        target = self.path
        if token is not None:
            sep = b"&" if b"?" in target else b"?"
            target += sep + b"token=" + token.encode()
            if self.token == "twice":
                target += b"&token=" + token.encode()
        lines = [self.method + b" " + target + b" " + self.version, b"Host: 127.0.0.1"]
        for name, value in (
            (b"Upgrade", self.upgrade),
            (b"Connection", self.connection),
            (b"Sec-WebSocket-Key", self.key),
            (b"Sec-WebSocket-Version", self.ws_version),
        ):
            if value is not None:
                lines.append(name + b": " + value)
        lines.extend(name + b": " + value for name, value in self.extra_headers)
        return b"\r\n".join(lines) + b"\r\n\r\n" + self.body


SETUP_FRAME = Frame(TEXT, JSON_MESSAGES[0])
TEXT_TURN_FRAME = Frame(TEXT, b'{"type": "text", "text": "hello"}')

early_data = st.one_of(
    st.just(b""),
    st.just(b""),
    st.binary(min_size=1, max_size=64),
    st.just(SETUP_FRAME.encode()),
    st.just(SETUP_FRAME.encode() + TEXT_TURN_FRAME.encode()),
    st.just(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n"),
    st.just(Fill("pattern", 70_000).build()),
)

upgrade_plans = st.builds(
    UpgradePlan,
    token=st.sampled_from(
        ["valid", "valid", "valid", "missing", "bogus", "empty", "twice", "used"]
    ),
    path=st.sampled_from([b"/ws", b"/ws", b"/ws/", b"/WS", b"//ws", b"/ws?x=1", b"/ws%3F", b"/"]),
    method=st.sampled_from([b"GET", b"GET", b"GET", b"POST", b"get", b"HEAD"]),
    version=st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0"]),
    upgrade=st.sampled_from([b"websocket", b"websocket", b"WebSocket", b"websocket, h2c", None]),
    connection=st.sampled_from([b"Upgrade", b"Upgrade", b"keep-alive, Upgrade", b"close", None]),
    key=st.sampled_from(
        [b"dGhlIHNhbXBsZSBub25jZQ==", b"dGhlIHNhbXBsZSBub25jZQ==", b"", b"x", None]
    ),
    ws_version=st.sampled_from([b"13", b"13", b"13", b"8", b"13, 8", b"", None]),
    extra_headers=st.lists(
        st.one_of(
            st.sampled_from(
                [
                    (b"Sec-WebSocket-Extensions", b"permessage-deflate"),
                    (b"Sec-WebSocket-Extensions", b"permessage-deflate; server_max_window_bits=8"),
                    (b"Sec-WebSocket-Extensions", b'x; a="'),
                    (b"Sec-WebSocket-Protocol", b"chat, superchat"),
                    (b"Sec-WebSocket-Protocol", b",,,"),
                    (b"Origin", b"http://evil.example"),
                    (b"Origin", b"null"),
                    (b"Sec-WebSocket-Key", b"AAAAAAAAAAAAAAAAAAAAAA=="),
                    (b"Content-Length", b"5"),
                    (b"Content-Length", b"100000"),
                    (b"Transfer-Encoding", b"chunked"),
                    (b"Expect", b"100-continue"),
                    (b"X-Long", b"v" * 20_000),
                ]
            ),
            st.tuples(st.binary(min_size=1, max_size=12), st.binary(max_size=24)),
        ),
        max_size=4,
    ).map(tuple),
    body=st.sampled_from([b"", b"", b"hello", b"5\r\nhello\r\n0\r\n\r\n", b"x" * 1000]),
    early=early_data,
    early_together=st.booleans(),
    frames=st.one_of(st.just(()), frame_sequences(max_groups=3)),
    end=ends,
)


# --- HTTP/2 -----------------------------------------------------------------------------------


class H2(enum.IntEnum):
    """RFC 9113's frame types."""

    DATA = 0x0
    HEADERS = 0x1
    PRIORITY = 0x2
    RST_STREAM = 0x3
    SETTINGS = 0x4
    PUSH_PROMISE = 0x5
    PING = 0x6
    GOAWAY = 0x7
    WINDOW_UPDATE = 0x8
    CONTINUATION = 0x9


#: END_STREAM (or ACK), END_HEADERS, PADDED, PRIORITY.
H2_FLAGS = (0x0, 0x1, 0x4, 0x5, 0x8, 0x20, 0x25, 0x2D, 0xFF)


def hpack_literals(headers: tuple[tuple[bytes, bytes], ...]) -> bytes:
    """A header block of literal fields without indexing (RFC 7541 6.2.2), names and values
    under 127 bytes: a valid block without an encoder."""
    block = b""
    for name, value in headers:
        block += b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value
    return block


#: Requests as an HTTP/2 client would send them (if the server spoke HTTP/2), and broken ones.
H2_HEADER_BLOCKS = (
    hpack_literals(
        ((b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/api/health"),
         (b":authority", b"127.0.0.1"))
    ),
    hpack_literals(
        ((b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/api/auth"),
         (b":authority", b"127.0.0.1"), (b"content-length", b"2"))
    ),
    # Extended CONNECT (RFC 8441): a WebSocket over HTTP/2.
    hpack_literals(
        ((b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"http"),
         (b":path", b"/ws?token=x"), (b":authority", b"127.0.0.1"),
         (b"sec-websocket-version", b"13"))
    ),
    b"\x82\x86\x84",  # indexed: GET, http, / (and no :authority)
    b"\x3f\xe1\x1f",  # a dynamic table size update past the limit
    b"\xff\xff\xff\xff\xff",  # an index that never ends
    b"\x00\x7f",  # a name longer than the block
)  # fmt: skip


@dataclass(frozen=True)
class H2Frame:
    """One HTTP/2 frame from the client, valid or not."""

    type: int
    flags: int = 0
    stream: int = 0
    payload: Payload = b""
    #: Declare this many bytes more than are sent (what follows is read as this frame's).
    short_by: int = 0

    def encode(self, stream_offset: int = 0) -> bytes:
        data = build(self.payload)
        length = min(len(data) + self.short_by, 0xFFFFFF)
        stream = (self.stream + stream_offset) & 0xFFFFFFFF
        head = (
            length.to_bytes(3, "big") + bytes([self.type, self.flags]) + stream.to_bytes(4, "big")
        )
        return head + data


@dataclass(frozen=True)
class H2Flood:
    """``frames`` ``count`` times in one write; ``new_streams``: each time on the next client
    stream (stream ids + 2), as a rapid reset does."""

    frames: tuple[H2Frame, ...]
    count: int
    new_streams: bool = False

    def encode(self) -> bytes:
        return b"".join(
            frame.encode(2 * i if self.new_streams else 0)
            for i in range(self.count)
            for frame in self.frames
        )


H2Sent = H2Frame | H2Flood

#: The first 18 bytes of the client's preface (RFC 9113 3.4) read as an HTTP/1 request.
H2_PREFACE_REQUEST = H2_PREFACE[:18]
#: SETTINGS_MAX_CONCURRENT_STREAMS 100, SETTINGS_INITIAL_WINDOW_SIZE 1 GiB, ENABLE_PUSH 0.
H2C_SETTINGS = b"AAMAAABkAARAAAAAAAIAAAAA"


@dataclass(frozen=True)
class Http2Plan:
    """HTTP/2 on the plain port: a prior-knowledge preface (``prior``) or an HTTP/1.1 request
    with ``Upgrade: h2c`` (``upgrade``), then HTTP/2 frames."""

    entry: str = "prior"
    #: prior: how many bytes of the preface (24: all of it).
    preface_bytes: int = len(H2_PREFACE)
    #: upgrade: the request.
    method: bytes = b"GET"
    path: bytes = b"/api/health"
    upgrade: bytes = b"h2c"
    connection: bytes = b"Upgrade, HTTP2-Settings"
    settings: bytes | None = H2C_SETTINGS
    body: bytes = b""
    #: upgrade: the client's preface after the request, before any answer (as an eager client).
    then_preface: bool = False
    frames: tuple[H2Sent, ...] = ()
    #: Split the bytes into this many writes, 5 ms apart.
    writes: int = 1
    end: str = "close"

    def wire(self) -> bytes:
        if self.entry == "prior":
            head = H2_PREFACE[: self.preface_bytes]
        else:
            lines = [
                self.method + b" " + self.path + b" HTTP/1.1",
                b"Host: 127.0.0.1",
                b"Upgrade: " + self.upgrade,
                b"Connection: " + self.connection,
            ]
            if self.settings is not None:
                lines.append(b"HTTP2-Settings: " + self.settings)
            if self.body:
                lines.append(b"Content-Length: %d" % len(self.body))
            head = b"\r\n".join(lines) + b"\r\n\r\n" + self.body
            if self.then_preface:
                head += H2_PREFACE
        return head + b"".join(sent.encode() for sent in self.frames)


def _settings_payload(pairs: list[tuple[int, int]]) -> bytes:
    return b"".join(key.to_bytes(2, "big") + value.to_bytes(4, "big") for key, value in pairs)


_h2_values = st.sampled_from([0, 1, 2, 100, 16384, 16777215, 16777216, 2**31 - 1, 2**32 - 1])
_h2_streams = st.one_of(st.sampled_from([0, 1, 3, 2, 2**31 - 1, 2**32 - 1]), st.integers(0, 99))


@st.composite
def h2_frames(draw: st.DrawFn) -> H2Frame:
    kind = draw(
        st.sampled_from(
            [H2.SETTINGS, H2.WINDOW_UPDATE, H2.PING, H2.HEADERS, H2.CONTINUATION, H2.RST_STREAM,
             H2.DATA, H2.PRIORITY, H2.PUSH_PROMISE, H2.GOAWAY, 0xA, 0xFF]
        )
    )  # fmt: skip
    payload: Payload
    if kind == H2.SETTINGS:
        keys = st.one_of(st.integers(1, 9), st.integers(0, 0xFFFF))
        payload = _settings_payload(draw(st.lists(st.tuples(keys, _h2_values), max_size=4)))
        payload = draw(st.sampled_from([payload, payload, payload + b"\x00"]))
    elif kind in (H2.WINDOW_UPDATE, H2.RST_STREAM):
        payload = draw(_h2_values).to_bytes(4, "big")
    elif kind == H2.PING:
        payload = draw(st.sampled_from([bytes(8), bytes(8), b"12345678", b"", bytes(9)]))
    elif kind in (H2.HEADERS, H2.CONTINUATION, H2.PUSH_PROMISE):
        payload = draw(st.one_of(st.sampled_from(H2_HEADER_BLOCKS), st.binary(max_size=64)))
    else:
        payload = draw(st.one_of(st.binary(max_size=64), fills))
    return H2Frame(
        type=kind,
        flags=draw(st.sampled_from(H2_FLAGS)),
        stream=draw(_h2_streams),
        payload=payload,
        short_by=draw(st.sampled_from([0, 0, 0, 0, 1, 16384, 0xFFFFFF])),
    )


#: Floods of one kind each, as the known HTTP/2 attacks send them: SETTINGS, PING, WINDOW_UPDATE,
#: empty CONTINUATIONs (of a HEADERS without END_HEADERS, if one came before), and HEADERS +
#: RST_STREAM (rapid reset).
H2_FLOOD_FRAMES: tuple[tuple[H2Frame, ...], ...] = (
    (H2Frame(H2.SETTINGS),),
    (H2Frame(H2.PING, payload=bytes(8)),),
    (H2Frame(H2.WINDOW_UPDATE, payload=(1).to_bytes(4, "big")),),
    (H2Frame(H2.CONTINUATION, stream=1),),
    (H2Frame(H2.HEADERS, 0x5, 1, H2_HEADER_BLOCKS[0]), H2Frame(H2.RST_STREAM, 0, 1, bytes(4))),
)

h2_floods = st.builds(
    H2Flood,
    frames=st.sampled_from(H2_FLOOD_FRAMES),
    count=flood_counts,
    new_streams=st.booleans(),
)
h2_sequences = st.lists(st.one_of(h2_frames(), h2_floods), max_size=6).map(tuple)

http2_plans = st.one_of(
    st.builds(
        Http2Plan,
        entry=st.just("prior"),
        preface_bytes=st.sampled_from([24, 24, 24, 18, 17, 20, 3]),
        frames=h2_sequences,
        writes=st.integers(1, 3),
        end=ends,
    ),
    st.builds(
        Http2Plan,
        entry=st.just("upgrade"),
        method=st.sampled_from([b"GET", b"GET", b"POST", b"OPTIONS", b"PRI"]),
        path=st.sampled_from([b"/api/health", b"/api/auth", b"/ws", b"/", b"/nowhere", b"*"]),
        upgrade=st.sampled_from(
            [b"h2c", b"h2c", b"H2C", b"h2", b"h2c, websocket", b"websocket, h2c"]
        ),
        connection=st.sampled_from(
            [b"Upgrade, HTTP2-Settings", b"Upgrade", b"HTTP2-Settings", b"close", b"keep-alive"]
        ),
        settings=st.sampled_from(
            [H2C_SETTINGS, H2C_SETTINGS, None, b"", b"!!!", b"AAAA" * 5000, b"AAMAAABk="]
        ),
        body=st.sampled_from([b"", b"", b"{}", b'{"resume": "x"}', b"x" * 5000]),
        then_preface=st.booleans(),
        frames=h2_sequences,
        writes=st.integers(1, 3),
        end=ends,
    ),
)


# --- resuming conversations -------------------------------------------------------------------

#: A page's origin (loopback origins are allowed), or none (a client that is not a browser).
ORIGINS = (None, None, "http://localhost:5173")


@dataclass(frozen=True)
class Converse:
    """Sign in as the example's owner, open a session, send the setup, read its
    ``sessionResumable`` and leave: the conversation is kept under that token."""

    origin: str | None = None
    #: A text turn (and its answer) before leaving.
    turn: bool = False
    #: close_frame | close | rst
    end: str = "close"


@dataclass(frozen=True)
class Resume:
    """``POST /api/auth {"resume": ...}`` with the token of the example's conversation number
    ``which`` (counted modulo how many it has; none yet: nothing is sent)."""

    which: int = 0
    #: same (the conversation's page) | none (no Origin) | other (another allowed page)
    origin: str = "same"
    #: From an address with no place left (MAX_SESSIONS_PER_CLIENT unused tokens): refused.
    crowded: bool = False
    #: Open the session with the token it got, then leave: a new conversation.
    use: bool = False


@dataclass(frozen=True)
class Guess:
    """``POST /api/auth`` with ``{"resume": resume}`` (a string: ``pad`` more characters),
    ``times`` times, from the guesser's address; ``near``: instead, the token of conversation
    number ``near`` with its last character changed; ``raw``: instead, exactly these bytes."""

    resume: object = None
    pad: int = 0
    near: int | None = None
    raw: bytes | None = None
    times: int = 1

    def value(self, tokens: Sequence[str]) -> object:
        """What ``resume`` says (``tokens``: the example's conversations so far)."""
        if self.near is not None and tokens:
            token = tokens[self.near % len(tokens)]
            return token[:-1] + ("A" if token[-1] != "A" else "B")
        if isinstance(self.resume, str):
            return self.resume + "A" * self.pad
        return self.resume

    def body(self, tokens: Sequence[str]) -> bytes:
        if self.raw is not None:
            return self.raw
        return json.dumps({"resume": self.value(tokens)}).encode()


Step = Converse | Resume | Guess


@dataclass(frozen=True)
class ResumePlan:
    steps: tuple[Step, ...]


_URLSAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

converse_steps = st.builds(
    Converse,
    origin=st.sampled_from(ORIGINS),
    turn=st.booleans(),
    end=st.sampled_from(["close_frame", "close", "rst"]),
)
resume_steps = st.builds(
    Resume,
    which=st.integers(0, 3),
    origin=st.sampled_from(["same", "same", "same", "none", "other"]),
    crowded=st.integers(0, 3).map(lambda n: n == 0),
    use=st.booleans(),
)
guess_steps = st.one_of(
    st.builds(
        Guess,
        resume=st.one_of(
            st.text(max_size=40),  # random strings, empty among them
            st.text(_URLSAFE, min_size=43, max_size=43),  # the right shape, unknown
            json_values,  # numbers, lists, objects, null...
        ),
        pad=st.sampled_from([0, 0, 0, 256, 257, 5000]),  # at and past the 256 chars, over 4 KiB
        times=st.sampled_from([1, 1, 1, 5, 40]),
    ),
    st.builds(Guess, near=st.integers(0, 3)),
    st.builds(
        Guess,
        raw=st.sampled_from(
            [b'{"resume": ', b'{"resume": "\\ud800"}', b'["resume"]', b'{"Resume": "x"}', b""]
        ),
    ),
)
resume_plans = st.builds(
    ResumePlan,
    st.lists(
        st.one_of(converse_steps, resume_steps, resume_steps, guess_steps), min_size=1, max_size=7
    ).map(tuple),
)


# --- the Gemini-native endpoint ---------------------------------------------------------------

NATIVE_PATH = (
    "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained"
)
NATIVE_PATHS = (
    NATIVE_PATH,
    "/" + NATIVE_PATH,  # the JS SDK's leading //
    "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent",
    "///" + NATIVE_PATH,
    NATIVE_PATH + "/",
)
NATIVE_MODEL = "models/gemini-3.1-flash-live-preview"
NATIVE_TEXT_SETUP: dict[str, object] = {
    "model": NATIVE_MODEL,
    "generationConfig": {"responseModalities": ["TEXT"]},
}
NATIVE_SETUP = json.dumps({"setup": NATIVE_TEXT_SETUP}).encode()


@dataclass(frozen=True)
class Audio:
    """A ``realtimeInput`` audio message whose base64 ``data`` is ``size`` characters."""

    size: int

    def build(self) -> bytes:
        data = ("AAAA" * (self.size // 4 + 1))[: self.size]
        return json.dumps(
            {"realtimeInput": {"audio": {"data": data, "mimeType": "audio/pcm;rate=16000"}}}
        ).encode()


@dataclass(frozen=True)
class NativePlan:
    """Mint an ephemeral token with ``ephemeral`` (``MISSING``: mint with ``{}``), open a native
    socket with it (or with a token of kind ``token``), send ``setup`` then ``frames``;
    ``again``: reconnect with the same token and the handle the first socket got, if any."""

    ephemeral: object = None
    #: minted | garbage | missing | long | spent
    token: str = "minted"
    #: access_token | key | authorization | api_key
    transport: str = "access_token"
    prefixed: bool = True
    path: str = NATIVE_PATH
    setup: bytes | Fill = NATIVE_SETUP
    frames: tuple[Sent, ...] = ()
    again: bool = False
    end: str = "close"


#: Handles a setup may ask to resume: absent, empty, the wrong type, the right shape, too long.
HANDLES: tuple[object, ...] = (
    None, "", "x", 0, True, [], {}, ["x"], {"handle": "x"}, "A" * 43, "A" * 256, "A" * 257,
    "A" * 5000, FORGED, "\ud800", "auth_tokens/x", "../..",
)  # fmt: skip
_SETUP_KEYS = (
    "model", "generationConfig", "generation_config", "systemInstruction", "tools",
    "sessionResumption", "session_resumption", "contextWindowCompression", "realtimeInputConfig",
    "inputAudioTranscription", "outputAudioTranscription", "proactivity", "bogus",
)  # fmt: skip


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@st.composite
def native_setups(draw: st.DrawFn) -> bytes | Fill:
    """A setup: the text one with a resumption ask, hostile fields, or something else entirely."""
    kind = draw(st.integers(0, 5))
    if kind == 5:
        return draw(st.one_of(st.sampled_from(JSON_MESSAGES), fills))
    setup: dict[str, object] = dict(NATIVE_TEXT_SETUP)
    if kind in (0, 1):
        asked: dict[str, object] = {}
        handle = draw(st.sampled_from(HANDLES))
        if handle is not None:
            asked = {"handle": handle}
        if draw(st.booleans()):
            asked = {**asked, "transparent": draw(st.sampled_from([True, 1, "yes"]))}
        setup[draw(st.sampled_from(["sessionResumption", "session_resumption"]))] = draw(
            st.one_of(st.just(asked), json_values)
        )
    if kind in (1, 2):
        setup.update(draw(st.dictionaries(st.sampled_from(_SETUP_KEYS), json_values, max_size=3)))
    if kind == 3:  # large: a long system instruction, deep nesting, many tools
        size = draw(st.sampled_from([1000, LIMIT - 200, LIMIT + 1, 200_000]))
        choice = draw(st.integers(0, 2))
        if choice == 0:
            setup["systemInstruction"] = {"parts": [{"text": "s" * size}]}
        elif choice == 1:  # as bytes: too deep for json.dumps and for printing
            depth = draw(st.sampled_from([50, 500, 5000]))
            head = json.dumps({"setup": setup})[:-2].encode()
            return head + b', "generationConfig": ' + b'{"a":' * depth + b"1" + b"}" * depth + b"}}"
        else:
            tool = {"functionDeclarations": [{"name": "f", "description": "d"}]}
            setup["tools"] = [tool] * (size // 60)
    if kind == 4:
        setup["model"] = draw(
            st.sampled_from(["models/other", "", "m" * 300, "models/" + FORGED, 7, None])
        )
    return json.dumps({draw(st.sampled_from(["setup", "setup", "Setup"])): setup}).encode()


#: Gemini's own client messages, right and wrong, and the browser protocol's (wrong here).
_NATIVE_MESSAGES: tuple[object, ...] = (
    {"clientContent": {"turns": [{"role": "user", "parts": [{"text": "hello"}]}],
                       "turnComplete": True}},
    {"client_content": {"turns": [{"role": "user", "parts": [{"text": FORGED}]}],
                        "turn_complete": True}},
    {"clientContent": {"turnComplete": "yes"}},
    {"clientContent": {"turns": "x"}},
    {"realtimeInput": {"audio": {"data": "AAAA", "mimeType": "audio/pcm;rate=16000"}}},
    {"realtimeInput": {"audio": {"data": "!!!", "mimeType": "audio/pcm"}}},
    {"realtimeInput": {"text": "hi"}},
    {"realtimeInput": {"activityStart": {}}},
    {"realtimeInput": {"activityEnd": {}}},
    {"realtimeInput": {"audioStreamEnd": True}},
    {"realtimeInput": {"video": {"data": "/9j/4AAQ", "mimeType": "image/jpeg"}}},
    {"realtimeInput": {"mediaChunks": [{"data": "AAAA", "mimeType": "audio/pcm"}]}},
    {"toolResponse": {"functionResponses": [{"id": "x", "name": "f", "response": {}}]}},
    {"toolResponse": {"functionResponses": "x"}},
    {"setup": NATIVE_TEXT_SETUP},
    {"clientContent": {}, "realtimeInput": {}},
    {"type": "text", "text": "hello"},
    {},
    [],
    None,
)  # fmt: skip
NATIVE_MESSAGES: tuple[bytes, ...] = tuple(json.dumps(m).encode() for m in _NATIVE_MESSAGES)
_NATIVE_KEYS = (
    "clientContent", "realtimeInput", "toolResponse", "turns", "turnComplete", "parts", "role",
    "text", "audio", "video", "data", "mimeType", "functionResponses", "id", "name", "response",
    "activityStart", "activityEnd", "audioStreamEnd", "mediaChunks",
)  # fmt: skip
native_random = st.dictionaries(
    st.sampled_from(_NATIVE_KEYS[:3]),
    st.dictionaries(st.sampled_from(_NATIVE_KEYS), json_values, max_size=3),
    min_size=1,
    max_size=2,
).map(lambda message: json.dumps(message).encode())
native_payloads: st.SearchStrategy[Payload | Audio] = st.one_of(
    st.sampled_from(NATIVE_MESSAGES),
    native_random,
    st.builds(Audio, st.sampled_from([4, 4000, LIMIT - 100, LIMIT + 1, LARGE])),
    payloads,
)


@st.composite
def native_frame_groups(draw: st.DrawFn) -> list[Sent]:
    """One native message in a text or binary frame, a flood of one, or any frame group."""
    kind = draw(st.integers(0, 5))
    if kind == 5:
        return list(draw(frame_groups))
    payload = draw(native_payloads)
    data: Payload = payload.build() if isinstance(payload, Audio) else payload
    frame = Frame(draw(st.sampled_from([TEXT, TEXT, BINARY])), data)
    if kind == 4:
        return [Flood(frame, draw(flood_counts))]
    return [frame]


#: ``POST /api/auth {"ephemeral": ...}`` constraints, right and wrong.
_EPHEMERAL_VALUES: dict[str, st.SearchStrategy[object]] = {
    "model": st.sampled_from(
        [NATIVE_MODEL, NATIVE_MODEL[7:], "models/other", "", "m" * 257, 5, None, FORGED]
    ),
    "config": st.one_of(
        st.sampled_from(
            [
                {"generationConfig": {"responseModalities": ["TEXT"]}},
                {"generationConfig": {"temperature": 0.1}, "systemInstruction": "be brief"},
                {"sessionResumption": {"handle": "x"}},
                {"model": "models/other"},
                {"systemInstruction": {"parts": [{"text": "s" * 17_000}]}},
                {"generationConfig": nested(100)},
                {"bogus": 1},
                {"tools": [{"functionDeclarations": [{"name": "f"}]}]},
            ]
        ),
        json_values,
    ),
    "lock_additional_fields": st.one_of(
        st.sampled_from(
            [
                [],
                ["temperature"],
                ["generationConfig"],
                ["systemInstruction"],
                ["x"] * 33,
                ["model"],
                [FORGED],
                ["a." * 100],
                [""],
            ]
        ),
        json_values,
    ),
    "uses": st.sampled_from([0, 1, 2, 1000, 1001, -1, "1", 1.5, True, None, 2**70]),
    "expire_seconds": st.sampled_from([1, 60, 0, -1, 1e308, 2**70, "60", None, float("nan")]),
}
_EPHEMERAL_ALIASES = {
    "lock_additional_fields": "lockAdditionalFields",
    "expire_seconds": "expireSeconds",
}


@st.composite
def ephemeral_constraints(draw: st.DrawFn) -> object:
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    constraints: dict[str, object] = {}
    for key, values in _EPHEMERAL_VALUES.items():
        if draw(st.integers(0, 2)) == 0:
            name = _EPHEMERAL_ALIASES.get(key, key) if draw(st.booleans()) else key
            constraints[name] = draw(values)
    return constraints


native_plans = st.builds(
    NativePlan,
    ephemeral=ephemeral_constraints(),
    token=st.sampled_from(["minted"] * 6 + ["garbage", "missing", "long", "spent"]),
    transport=st.sampled_from(["access_token", "key", "authorization", "api_key"]),
    prefixed=st.booleans(),
    path=st.sampled_from(NATIVE_PATHS[:3] * 3 + NATIVE_PATHS[3:]),
    setup=native_setups(),
    frames=st.lists(native_frame_groups(), max_size=4).map(
        lambda groups: tuple(frame for group in groups for frame in group)
    ),
    again=st.integers(0, 3).map(lambda n: n == 0),
    end=ends,
)


# --- the operator's listener (ADMIN_BIND) -----------------------------------------------------

ADMIN_TOKEN = "fuzz-operator-token-0123456789abcdef0123"
#: What an ``Authorization`` header may say (``{t}``: the operator's token).
ADMIN_AUTHORIZATIONS: tuple[bytes | None, ...] = (
    b"Bearer {t}", b"Bearer {t}", b"Bearer {t}", None, b"", b"Bearer", b"Bearer ",
    b"bearer {t}", b"BEARER {t}", b"Bearer  {t}", b"Bearer {t} ", b"Bearer {t}x",
    b"Bearer {p}", b"Bearer {w}", b"Basic {t}", b"Token {t}", b"{t}", b"Bearer {t}\x00",
    b"Bearer \xff{t}", b"Bearer " + b"x" * 7000, b"Bearer {t}, Bearer {t}",
)  # fmt: skip
_ADMIN_IDS = (
    b"abc", b"A" * 64, b"A" * 65, b"A" * 5000, b"", b"..", b"%2e%2e", b"a%2Fb", b"a/b", b"%00",
    b"%ff", b"\xc3\xa9", b"a b", b"a%0a2026-01-01%20INFO%20forged", b"-_-", b"0",
)  # fmt: skip
ADMIN_FIELDS = (b"limit", b"cursor", b"client", b"since", b"LIMIT", b"x", b"", b"limit[]")
ADMIN_VALUES = (
    b"", b"0", b"1", b"-1", b"500", b"501", b"99999999999999999999999", b"1e3", b"0x10", b" 5",
    b"%00", b"%ff", b"abc", b"A" * 64, b"A" * 2000, b"000000000000000:abc", b"999999999999999:A",
    b"2026-01-01", b"2026-12-05T10:00:00Z", b"2026-13-45", b"2026-01-01T00:00:00%2B99:00",
    b"1700000000.5", b"9" * 13, b"1.1234567", b"nan", b"inf", b"%0a2026-01-01%20INFO%20forged",
)  # fmt: skip


@dataclass(frozen=True)
class AdminPlan:
    """One HTTP/1.1 request (or not quite one) to the operator's listener."""

    method: bytes = b"GET"
    path: bytes = b"/sessions"
    query: tuple[tuple[bytes, bytes], ...] = ()
    #: ``None``: no query string; else the raw query after ``?`` (``query`` is appended to it).
    raw_query: bytes | None = None
    authorization: bytes | None = b"Bearer {t}"
    version: bytes = b"HTTP/1.1"
    extra_headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""
    writes: int = 1
    end: str = "close"

    def target(self) -> bytes:
        pairs = b"&".join(name + b"=" + value for name, value in self.query)
        if self.raw_query is None and not pairs:
            return self.path
        raw = self.raw_query or b""
        return self.path + b"?" + raw + (b"&" if raw and pairs else b"") + pairs

    def header_value(self) -> bytes | None:
        if self.authorization is None:
            return None
        token = ADMIN_TOKEN.encode()
        return (
            self.authorization.replace(b"{t}", token)
            .replace(b"{p}", token[:-1])
            .replace(b"{w}", token[:-1] + b"!")
        )

    def wire(self) -> bytes:
        lines = [self.method + b" " + self.target() + b" " + self.version, b"Host: 127.0.0.1"]
        value = self.header_value()
        if value is not None:
            lines.append(b"Authorization: " + value)
        lines.extend(name + b": " + value for name, value in self.extra_headers)
        if self.body:
            lines.append(b"Content-Length: %d" % len(self.body))
        return b"\r\n".join(lines) + b"\r\n\r\n" + self.body


admin_paths = st.one_of(
    st.sampled_from(
        [b"/sessions", b"/sessions", b"/usage", b"/usage", b"/sessions/", b"/usage/", b"/",
         b"//sessions", b"/Sessions", b"/metrics", b"*", b"/api/auth", b"/" + b"a" * 9000,
         b"http://127.0.0.1/sessions"]
    ),
    st.sampled_from(_ADMIN_IDS).map(lambda session_id: b"/sessions/" + session_id),
)  # fmt: skip
admin_plans = st.builds(
    AdminPlan,
    method=st.sampled_from(
        [
            b"GET",
            b"GET",
            b"GET",
            b"DELETE",
            b"DELETE",
            b"POST",
            b"HEAD",
            b"PUT",
            b"OPTIONS",
            b"get",
            b"CONNECT",
            b"G\x00T",
            b"",
        ]
    ),
    path=admin_paths,
    query=st.lists(
        st.tuples(st.sampled_from(ADMIN_FIELDS), st.sampled_from(ADMIN_VALUES)), max_size=10
    ).map(tuple),
    raw_query=st.sampled_from([None, None, None, b"", b"&&&", b"=", b"limit", b"a" * 1100]),
    authorization=st.sampled_from(ADMIN_AUTHORIZATIONS),
    version=st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0"]),
    extra_headers=st.lists(
        st.sampled_from(
            [
                (b"Authorization", b"Bearer " + ADMIN_TOKEN.encode()),
                (b"Authorization", b"x"),
                (b"Transfer-Encoding", b"chunked"),
                (b"Content-Length", b"100000"),
                (b"Connection", b"Upgrade"),
                (b"Upgrade", b"websocket"),
                (b"X-Long", b"v" * 9000),
                (b"Expect", b"100-continue"),
                (b"X-Forged", FORGED.encode()),
            ]
        ),
        max_size=3,
    ).map(tuple),
    body=st.sampled_from([b"", b"", b"{}", b"x" * 5000]),
    writes=st.integers(1, 3),
    end=ends,
)


# --- budgets and signed-in clients ------------------------------------------------------------

#: A JWT claim left out.
ABSENT = "<absent>"
BUDGET_CLAIMS: tuple[object, ...] = (
    ABSENT, "1 tokens/day", "1 minutes/day", "0 minutes/day", "0.0001 minutes/day",
    "60 minutes/day, 2000000 tokens/day", "1000000000000 tokens/month", "1000000000001 tokens/day",
    "99999999999999999999999999999999 tokens/day", "1e308 tokens/day", "nan minutes/day",
    "-1 minutes/day", "5 usd/month", "5 eur/day", "2 hours/day", "1 minutes/week",
    "1 minutes/day," * 7, "1 minutes/day, 1 minutes/day", "9" * 199 + " tokens/day", "x" * 201,
    "", " ", ",", "/", "1 /", "1 minutes / day", "\uff11 minutes/day", FORGED, "1 tokens/day\n",
    "0" * 150 + "1 tokens/day", "1." + "0" * 150 + " tokens/day", 5, 1.5, None, True, [], {},
    ["1 tokens/day"], {"tokens": 1},
)  # fmt: skip
BUDGET_SUBS: tuple[object, ...] = (
    "user-{n}", "user-{n}", "user-{n}", "", "s" * 10_000, FORGED, "\ud800", "é" * 50, 7, None,
    ["x"], ABSENT,
)  # fmt: skip


@dataclass(frozen=True)
class BudgetPlan:
    """A JWT with ``claim`` as its ``liveproxy_budget`` and ``sub`` (``{n}``: a number of the
    example's own), then ``steps``: ``auth`` (POST /api/auth), ``mint`` (an ephemeral token),
    ``usage`` (GET /api/usage) and ``talk`` (sign in, open /ws, set up, a text turn)."""

    claim: object = ABSENT
    sub: object = "user-{n}"
    #: valid | expired | forged | none | garbage
    bearer: str = "valid"
    steps: tuple[str, ...] = ("auth",)


budget_plans = st.builds(
    BudgetPlan,
    claim=st.one_of(st.sampled_from(BUDGET_CLAIMS), json_values, st.text(max_size=40)),
    sub=st.sampled_from(BUDGET_SUBS),
    bearer=st.sampled_from(["valid"] * 6 + ["expired", "forged", "none", "garbage"]),
    steps=st.lists(
        st.sampled_from(["auth", "mint", "usage", "usage", "talk", "talk"]), min_size=1, max_size=4
    ).map(tuple),
)
