"""A browser stand-in for tests: the proxy's WebSocket API over trio-websocket."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import orjson
import trio
from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection

Frame = bytes | str


@attrs.define
class Ended:
    """How the proxy ended the session: frames received before the close, and the close."""

    frames: list[Frame]
    code: int
    reason: str | None

    @property
    def events(self) -> list[dict[str, Any]]:
        return [orjson.loads(f) for f in self.frames if isinstance(f, str)]

    @property
    def last_event(self) -> dict[str, Any]:
        return self.events[-1]


@attrs.define
class BrowserClient:
    ws: WebSocketConnection

    async def send_json(self, message: Any) -> None:
        await self.ws.send_message(orjson.dumps(message).decode())

    async def recv(self) -> Frame:
        return await self.ws.get_message()

    async def recv_json(self) -> dict[str, Any]:
        """The next text frame, decoded (binary frames before it are skipped)."""
        while True:
            frame = await self.ws.get_message()
            if isinstance(frame, str):
                decoded: dict[str, Any] = orjson.loads(frame)
                return decoded

    async def recv_until(self, done: Callable[[Frame], bool]) -> list[Frame]:
        """Frames up to and including the first one for which ``done`` is true."""
        frames: list[Frame] = []
        while True:
            frame = await self.ws.get_message()
            frames.append(frame)
            if done(frame):
                return frames

    async def wait_closed(self) -> Ended:
        """Read until the proxy closes the socket; everything received and the close."""
        frames: list[Frame] = []
        while True:
            try:
                frames.append(await self.ws.get_message())
            except ConnectionClosed as exc:
                reason: CloseReason | None = exc.reason
                assert reason is not None
                return Ended(frames, reason.code, reason.reason)


def has_key(key: str, inner: str | None = None) -> Callable[[Frame], bool]:
    """A ``recv_until`` predicate: a JSON frame with top-level ``key`` (and ``inner`` in it)."""

    def check(frame: Frame) -> bool:
        if not isinstance(frame, str):
            return False
        message = orjson.loads(frame)
        if key not in message:
            return False
        return inner is None or (isinstance(message[key], dict) and inner in message[key])

    return check


def texts(frames: list[Frame]) -> list[str]:
    """The model's text parts in ``frames``, in order."""
    found: list[str] = []
    for frame in frames:
        if isinstance(frame, str):
            turn = orjson.loads(frame).get("serverContent", {}).get("modelTurn", {})
            found.extend(part["text"] for part in turn.get("parts", []) if "text" in part)
    return found


WAIT_LIMIT = 5.0


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll ``predicate`` until it holds; fail after :data:`WAIT_LIMIT` seconds.

    For state kept by other components (the emulator's records) that offer no event to wait on.
    """
    with trio.fail_after(WAIT_LIMIT):
        while not predicate():  # noqa: ASYNC110 - nothing to wait on but the state itself
            await trio.sleep(0.001)
