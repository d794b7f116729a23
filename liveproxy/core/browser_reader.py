"""The browser -> upstream direction of a session: the setup, then every frame, in order.

The first frame is the setup (or, from older clients, ordinary input: the server's default
setup is used); it goes to the relay on the session's setup channel, and the relay connects.
Then audio frames become ``realtimeInput.audio``, text frames are checked and mapped, and both
go to the :class:`~liveproxy.core.link.UpstreamLink` in order. A refused message
(``bad_message``) is answered on the browser queue and the session goes on.

A Gemini-native client (``native``: its token's constraints) speaks Gemini's protocol instead:
its first message must be ``{"setup": ...}`` (the constraints are applied to it), every
message is one of Gemini's (JSON in a text or binary frame), and a message Gemini would refuse
ends the session (close 1007) as Gemini ends it.
"""

from __future__ import annotations

import re
from typing import Any, Final

import orjson
import trio

from liveproxy.contract.codec import encode_error
from liveproxy.contract.endings import BROWSER_CLOSED, Outcome
from liveproxy.contract.errors import BadMessage, InvalidSetup
from liveproxy.contract.native import InvalidMessage, constrained_setup
from liveproxy.contract.payloads import EphemeralRequest, ErrorEvent
from liveproxy.contract.session_setup import SetupPolicy, browser_setup, default_setup
from liveproxy.contract.translate import (
    INPUT_RATE,
    AudioAligner,
    audio_to_upstream,
    browser_text_to_upstream,
    inline_audio_bytes,
    parse_native,
)
from liveproxy.core.browser_queue import BrowserQueue
from liveproxy.core.link import UpstreamLink
from liveproxy.core.ports import BrowserGone, BrowserPort, Frame
from liveproxy.core.stats import SessionCounters
from liveproxy.protocol.closes import INVALID_ARGUMENT

#: A first frame that starts like this is a setup, even when it is not valid JSON.
_LOOKS_LIKE_SETUP: Final = re.compile(r'\s*\{\s*"setup"')

Setup = dict[str, Any]


class BrowserReader:
    """Reads one browser socket for its session: the setup, then frames to the link.

    ``setups`` is where the setup goes once the first frame (or the setup timeout) decides it;
    None when the session's setup is already known (a resumed conversation's): a setup the
    browser sends first, as it always does, is then dropped.
    """

    def __init__(
        self,
        socket: BrowserPort,
        link: UpstreamLink,
        out: BrowserQueue,
        counters: SessionCounters,
        *,
        setups: trio.MemorySendChannel[Setup] | None,
        policy: SetupPolicy,
        setup_timeout: float,
        native: EphemeralRequest | None = None,
    ) -> None:
        self.socket = socket
        self.link = link
        self.out = out
        self.counters = counters
        self._setups = setups
        self._policy = policy
        self._setup_timeout = setup_timeout
        self._native = native
        self.audio_in = AudioAligner()

    async def run(self) -> Outcome:
        """Read the browser until it leaves; returns ``browser_closed``.

        Raises:
            InvalidSetup: the first frame is a setup that is refused (a native client's: any
                first frame but a valid setup, or none in time).
            InvalidMessage: a native client sent a message Gemini would refuse.
            RateLimited, MessageTooBig: from the socket.
        """
        try:
            first: Frame | None = None
            with trio.move_on_after(self._setup_timeout):
                first = await self.socket.receive()
            if self._native is not None:
                self._start_native(first, self._native)
                while True:
                    await self._forward_native(await self.socket.receive())
            leftover = self._start(first)
            if leftover is not None:
                await self._forward(leftover)
            while True:
                await self._forward(await self.socket.receive())
        except BrowserGone:
            return BROWSER_CLOSED
        finally:
            if self._setups is not None:
                self._setups.close()  # no setup came: the relay's wait ends

    def _start(self, first: Frame | None) -> Frame | None:
        """Decide the setup from the first frame (or the default) and pass it on; return a
        frame still to forward."""
        setup: Setup | None = None
        leftover = first
        if isinstance(first, str):
            try:
                data = orjson.loads(first)
            except orjson.JSONDecodeError:
                if _LOOKS_LIKE_SETUP.match(first):
                    raise InvalidSetup("the setup message is not valid JSON") from None
                data = None
            if isinstance(data, dict) and "setup" in data:
                if len(data) != 1:
                    raise InvalidSetup("the setup message must have no other top-level key")
                leftover = None
                if self._setups is None:
                    return None
                setup = browser_setup(data["setup"], self._policy)
        if self._setups is not None:
            self._setups.send_nowait(setup if setup is not None else default_setup(self._policy))
            self._setups.close()
        return leftover

    def _start_native(self, first: Frame | None, constraints: EphemeralRequest) -> None:
        """Pass on a native client's setup, its token's constraints applied.

        Raises:
            InvalidSetup: no first frame in time, or one that is not a valid setup.
        """
        if first is None:
            raise InvalidSetup("no setup message came in time")
        data = _native_json(first)
        if not (isinstance(data, dict) and len(data) == 1 and "setup" in data):
            raise InvalidSetup(INVALID_ARGUMENT)
        if self._setups is None:
            return
        setup = browser_setup(constrained_setup(data["setup"], constraints), self._policy)
        self._setups.send_nowait(setup)
        self._setups.close()

    async def _forward_native(self, frame: Frame) -> None:
        """Check a native client's message and send it on the link.

        Raises:
            InvalidMessage: not JSON, not one of Gemini's client messages, or a second setup.
        """
        data = _native_json(frame)
        if not isinstance(data, dict):
            raise InvalidMessage(INVALID_ARGUMENT)
        try:
            kind, body = parse_native(data)
        except BadMessage as exc:
            raise InvalidMessage(exc.message) from None
        media = kind == "realtimeInput" and ("audio" in body or "video" in body)
        if kind == "realtimeInput" and "audio" in body:
            self.counters.audio_chunks_sent += 1
            self.counters.usage.audio_in_bytes += inline_audio_bytes(body["audio"], INPUT_RATE)
        await self.link.send(orjson.dumps({kind: body}).decode(), replayable=not media)

    async def _forward(self, frame: Frame) -> None:
        """Map ``frame`` and send it on the link (waits while the link's buffer is full).

        A refused message is answered ``bad_message`` on the browser queue instead.
        """
        if isinstance(frame, bytes):
            if not frame:
                self._refuse("an empty binary frame carries no audio")
                return
            pcm = self.audio_in.align(frame)
            if pcm:
                self.counters.audio_chunks_sent += 1
                self.counters.usage.audio_in_bytes += len(pcm)
                await self.link.send(audio_to_upstream(pcm))
            return
        try:
            message = browser_text_to_upstream(frame)
        except BadMessage as exc:
            self._refuse(exc.message)
            return
        await self.link.send(message, replayable=True)

    def _refuse(self, message: str) -> None:
        stats = self.counters.snapshot()
        self.out.put(encode_error(ErrorEvent(BadMessage.code, message, stats)))


def _native_json(frame: Frame) -> Any:
    """A native client's message decoded (JSON in a text or binary frame, as Gemini takes it).

    Raises:
        InvalidMessage: not UTF-8 JSON.
    """
    try:
        return orjson.loads(frame)
    except orjson.JSONDecodeError:
        raise InvalidMessage("Invalid JSON payload received.") from None
