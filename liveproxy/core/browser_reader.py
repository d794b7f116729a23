"""The browser -> upstream direction of a session: the setup, then every frame, in order.

The first frame is the setup (or, from older clients, ordinary input: the server's default
setup is used); :attr:`BrowserReader.setup_ready` tells the relay it can connect. Then audio
frames become ``realtimeInput.audio``, text frames are checked and mapped, and both go to the
:class:`~liveproxy.core.link.UpstreamLink` in order. A refused message (``bad_message``) is answered
on the browser queue and the session goes on.
"""

from __future__ import annotations

import re
from typing import Any, Final

import orjson
import trio

from liveproxy.config import Config
from liveproxy.contract.codec import encode_error
from liveproxy.contract.endings import BROWSER_CLOSED, Outcome
from liveproxy.contract.errors import BadMessage, InvalidSetup
from liveproxy.contract.models import ErrorEvent
from liveproxy.contract.session_setup import browser_setup, default_setup
from liveproxy.contract.translate import AudioAligner, audio_to_upstream, browser_text_to_upstream
from liveproxy.core.browser import BrowserGone, BrowserQueue
from liveproxy.core.link import UpstreamLink
from liveproxy.core.ports import BrowserPort, Frame
from liveproxy.core.stats import SessionCounters

#: A first frame that starts like this is a setup, even when it is not valid JSON.
_LOOKS_LIKE_SETUP: Final = re.compile(r'\s*\{\s*"setup"')


class BrowserReader:
    """Reads one browser socket for its session: the setup, then frames to the link."""

    def __init__(
        self,
        socket: BrowserPort,
        link: UpstreamLink,
        out: BrowserQueue,
        counters: SessionCounters,
        config: Config,
    ) -> None:
        self.socket = socket
        self.link = link
        self.out = out
        self.counters = counters
        self.config = config
        #: The session's setup, once the first frame (or the setup timeout) has decided it.
        self.setup: dict[str, Any] | None = None
        self.setup_ready = trio.Event()
        self._preset = False
        self.audio_in = AudioAligner()

    def preset(self, setup: dict[str, Any]) -> None:
        """A resumed conversation's setup: used as is, and a setup the browser sends first (as
        it always does) is dropped."""
        self.setup = setup
        self._preset = True
        self.setup_ready.set()

    async def run(self) -> Outcome:
        """Read the browser until it leaves; returns ``browser_closed``.

        Raises:
            InvalidSetup: the first frame is a setup that is refused.
            RateLimited, MessageTooBig: from the socket.
        """
        try:
            first: Frame | None = None
            with trio.move_on_after(self.config.setup_timeout_seconds):
                first = await self.socket.receive()
            leftover = self._start(first)
            if leftover is not None:
                await self._forward(leftover)
            while True:
                await self._forward(await self.socket.receive())
        except BrowserGone:
            return BROWSER_CLOSED

    def _start(self, first: Frame | None) -> Frame | None:
        """Take the setup from the first frame (or the default); return a frame still to forward."""
        setup: dict[str, Any] | None = None
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
                if self._preset:
                    return None
                setup = browser_setup(data["setup"], self.config)
        if self._preset:
            return leftover
        self.setup = setup if setup is not None else default_setup(self.config)
        self.setup_ready.set()
        return leftover

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
