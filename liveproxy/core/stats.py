"""Counters: per session (reported to the browser) and per server (gauges for tests and ops)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import trio

from liveproxy.contract.payloads import SessionStats
from liveproxy.core.usage import UsageMeter, UsageTotals


@attrs.frozen
class Totals:
    """What a session has counted so far: what a conversation carries to its next socket."""

    message_count: int = 0
    audio_chunks_sent: int = 0
    total_token_count: int = 0
    prompt_token_count: int = 0
    response_token_count: int = 0
    reconnects: int = 0
    #: The metered usage (:mod:`liveproxy.core.usage`); absent from states kept before it.
    usage: UsageTotals = attrs.Factory(UsageTotals)


@attrs.define
class SessionCounters:
    """What one session has done; spans its upstream reconnects.

    ``message_count`` counts messages received from Gemini, ``audio_chunks_sent`` the browser
    audio frames forwarded to Gemini; token counts are those of the latest ``usageMetadata``.
    ``usage`` meters every turn's tokens and the audio each way (summed, see
    :mod:`liveproxy.core.usage`).
    """

    started_at: float
    message_count: int = 0
    audio_chunks_sent: int = 0
    total_token_count: int = 0
    prompt_token_count: int = 0
    response_token_count: int = 0
    reconnects: int = 0
    usage: UsageMeter = attrs.Factory(UsageMeter)
    #: Called once, by :meth:`setup_completed` (the server's metrics).
    on_setup: Callable[[], None] | None = attrs.field(default=None, repr=False)
    #: Called for every upstream event: (it reported usage, it ended the model's turn, it
    #: carried the model's output).
    on_event: Callable[[bool, bool, bool], None] | None = attrs.field(default=None, repr=False)

    @classmethod
    def continuing(cls, totals: Totals, elapsed: float, now: float) -> SessionCounters:
        """Counters that go on from ``totals``, as if started ``elapsed`` seconds before ``now``."""
        fields = attrs.asdict(totals, recurse=False)
        fields["usage"] = UsageMeter.continuing(totals.usage)
        return cls(started_at=now - elapsed, **fields)

    def totals(self) -> Totals:
        fields = {f.name: getattr(self, f.name) for f in attrs.fields(Totals)}
        fields["usage"] = self.usage.totals()
        return Totals(**fields)

    def setup_completed(self) -> None:
        """The socket's ``setupComplete`` is on its way to the browser."""
        hook, self.on_setup = self.on_setup, None
        if hook is not None:
            hook()

    def note_usage(self, usage: dict[str, Any]) -> None:
        """Take the token counts of a ``usageMetadata`` (Developer API or Vertex names), and
        meter it."""
        self.usage.report(usage)
        self.total_token_count = _int(usage.get("totalTokenCount"), self.total_token_count)
        self.prompt_token_count = _int(usage.get("promptTokenCount"), self.prompt_token_count)
        response = usage.get("responseTokenCount", usage.get("candidatesTokenCount"))
        self.response_token_count = _int(response, self.response_token_count)

    def elapsed(self) -> float:
        return round(trio.current_time() - self.started_at, 3)

    def snapshot(self) -> SessionStats:
        return SessionStats(
            message_count=self.message_count,
            audio_chunks_sent=self.audio_chunks_sent,
            elapsed_seconds=self.elapsed(),
            total_token_count=self.total_token_count,
            prompt_token_count=self.prompt_token_count,
            response_token_count=self.response_token_count,
            usage=self.usage.totals().to_dict(),
        )

    def tool_call_stats(self) -> dict[str, Any]:
        """The camelCase ``sessionStats`` added to ``toolCall`` messages."""
        return {
            "messageCount": self.message_count,
            "audioChunksSent": self.audio_chunks_sent,
            "elapsedSeconds": self.elapsed(),
        }


def _int(value: Any, default: int) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return default


class Gauges:
    """Server-wide counts. :meth:`wait_idle` lets tests and shutdown wait for zero."""

    def __init__(self) -> None:
        self.live_sessions = 0
        self.upstream_connections = 0
        self.browser_connections = 0
        self.reconnects = 0
        self._changed = trio.Event()

    def session_started(self) -> None:
        self.live_sessions += 1
        self._notify()

    def session_ended(self) -> None:
        self.live_sessions -= 1
        self._notify()

    def upstream_opened(self, delta: int) -> None:
        self.upstream_connections += delta
        self._notify()

    def browser_opened(self, delta: int) -> None:
        self.browser_connections += delta
        self._notify()

    @property
    def idle(self) -> bool:
        return not (self.live_sessions or self.upstream_connections or self.browser_connections)

    async def wait_no_sessions(self) -> None:
        """Return once no session is live."""
        while self.live_sessions:
            await self._changed.wait()

    async def wait_idle(self) -> None:
        """Return once no session, upstream connection or browser WebSocket is left."""
        while not self.idle:
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()
