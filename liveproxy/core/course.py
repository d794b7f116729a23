"""The upstream side's decisions, as a sync state machine: when to switch, resume or give up.

A session's upstream goes through :class:`Phase` ``CONNECTING`` -> ``LIVE`` (-> ``SWITCHING``
after a ``goAway``) -> ``RESUMING`` (a switch or a drop, with back-off) -> ``LIVE`` ... until
``ENDED``. :class:`Course` holds that state and decides; it does no I/O and reads no clock
(callers pass ``now``), so every rule has a plain unit test. The session's relay
(:mod:`liveproxy.core.relay`) moves the bytes and runs the timers it asks for.

A switch is made before the old connection is broken: the new one is opened while the old keeps
serving, the browser's input moves to it, and the old is read on until it owes nothing
(:class:`Drain`): no turn of its own is under way and it has been quiet for
:data:`DRAIN_QUIET` (the answer to what it was sent last may still be on its way), or it
closes, or its ``goAway`` deadline (plus :data:`DRAIN_GRACE`) passes.
"""

from __future__ import annotations

import enum
import math
from typing import Final

import attrs

from liveproxy.contract.endings import UPSTREAM_CLOSED, Ended
from liveproxy.contract.errors import SessionError, UpstreamFailed, UpstreamRejected
from liveproxy.contract.translate import UpstreamEvent
from liveproxy.protocol import closes

#: Switch connections at the latest this long before a ``goAway`` deadline.
GO_AWAY_MARGIN: Final = 5.0
#: Back-off before the n-th attempt of a resume (seconds), capped at the last value.
RESUME_BACKOFF: Final = (0.0, 0.5, 1.0, 2.0, 4.0)
#: An old connection draining after a switch is read until its ``goAway`` deadline and this
#: much more (Gemini closes it at the deadline; one that does not is closed by us).
DRAIN_GRACE: Final = 1.0
#: ... and, between turns, until it has said nothing for this long: an answer to the last input
#: it consumed may still be coming (the new connection's output waits this long behind it).
DRAIN_QUIET: Final = 1.0


class Phase(enum.Enum):
    #: The first connection, until its ``setupComplete``.
    CONNECTING = enum.auto()
    #: A connection is up.
    LIVE = enum.auto()
    #: ``goAway`` came: move to a new connection at a turn boundary, once a handle is held.
    SWITCHING = enum.auto()
    #: Between connections (after a switch or a drop), trying the handle with back-off.
    RESUMING = enum.auto()
    #: Upstream ended the session, or it cannot go on.
    ENDED = enum.auto()


def parse_duration(text: str) -> float:
    """``"50s"`` -> 50.0; anything unparsable -> 0.0."""
    try:
        value = float(text.removesuffix("s"))
    except ValueError:
        return 0.0
    return value if math.isfinite(value) and value > 0 else 0.0


@attrs.define
class Course:
    """Where one session's upstream stands, and what it does next.

    ``reconnect_attempts`` bounds each resume (at least one attempt is made).
    """

    reconnect_attempts: int
    phase: Phase = Phase.CONNECTING
    #: The latest resumable handle (None until Gemini sends one).
    handle: str | None = None
    #: Whether the model is mid-turn or mid-interaction (no switch then).
    activity: Activity = attrs.Factory(lambda: Activity())
    #: Whether the handle was given since the model last started a turn (a switch takes one).
    fresh: bool = False
    #: When to switch at the latest after a ``goAway`` (``inf``: no switch pending).
    switch_at: float = math.inf
    #: When the connection that sent ``goAway`` will be closed (``inf``: no ``goAway``).
    go_away_end: float = math.inf
    _attempt: int = 0
    _last_failure: SessionError | None = None

    def connected(self) -> None:
        """A connection completed its setup."""
        self.phase = Phase.LIVE
        self._attempt = 0
        self._last_failure = None

    def on_event(self, event: UpstreamEvent, now: float) -> bool:
        """Take one upstream message; True when the connection should be switched now."""
        if self.activity.take(event):
            self.fresh = False
        if event.resumption_handle is not None and self.phase is not Phase.RESUMING:
            self.handle = event.resumption_handle  # a switch under way keeps the one it took
            self.fresh = True
        if event.go_away is not None and self.phase is Phase.LIVE:
            time_left = parse_duration(event.go_away)
            self.go_away_end = now + time_left
            self.switch_at = now + time_left - min(GO_AWAY_MARGIN, time_left / 2)
            self.phase = Phase.SWITCHING
        return self._switch_now()

    def begin_drain(self, now: float, *, transparent: bool) -> Drain | None:
        """The switch's new connection took the browser's input: the drain of the old one,
        which owes the answers to what it consumed. None when ``transparent``: the new
        connection was given everything the old one consumed after the handle and answers it
        itself (draining the old would answer twice). The course follows the new connection
        from here, which has said nothing yet."""
        drain = Drain(
            self.activity, deadline=self.go_away_end + DRAIN_GRACE, quiet_until=now + DRAIN_QUIET
        )
        self.activity = Activity()
        self.fresh = False
        self.go_away_end = math.inf
        return None if transparent else drain

    def deadline_reached(self) -> bool:
        """``switch_at`` passed mid-turn: True to switch now; without a handle, stay (the
        connection lasts until Gemini closes it, and a drop then is handled as one)."""
        if self.handle is not None:
            self._start_resume()
            return True
        self.switch_at = math.inf
        self.phase = Phase.LIVE
        return False

    def closed(self, code: int, reason: str) -> Ended | None:
        """The connection closed with ``code``/``reason`` (already redacted).

        Returns ``upstream_closed`` for a normal close, or None to resume (what the handle's
        state lacks must be replayed: :meth:`UpstreamLink.replay_after_drop`).

        Raises:
            UpstreamFailed: no handle is held, or the close rules out resuming.
        """
        if code == closes.NORMAL:
            self.phase = Phase.ENDED
            return UPSTREAM_CLOSED
        if self.handle is None or closes.rules_out_resuming(code, reason):
            self.phase = Phase.ENDED
            detail = f"upstream closed the connection ({code}{': ' + reason if reason else ''})"
            raise UpstreamFailed(detail)
        self._start_resume()
        return None

    def next_attempt(self) -> float | None:
        """The back-off before the next resume attempt, or None when none is left."""
        if self._attempt >= max(1, self.reconnect_attempts):
            return None
        delay = RESUME_BACKOFF[min(self._attempt, len(RESUME_BACKOFF) - 1)]
        self._attempt += 1
        return delay

    def attempt_failed(self, error: SessionError) -> None:
        """A resume attempt failed with ``error``.

        Raises:
            UpstreamFailed: Gemini refused the handle (no later attempt can succeed).
        """
        if isinstance(error, UpstreamRejected):
            self.phase = Phase.ENDED
            raise UpstreamFailed(f"the session could not be resumed: {error.message}")
        self._last_failure = error

    def gave_up(self) -> UpstreamFailed:
        """The error to end with once :meth:`next_attempt` says no attempt is left."""
        self.phase = Phase.ENDED
        detail = self._last_failure.message if self._last_failure else "no attempt made"
        attempts = max(1, self.reconnect_attempts)
        return UpstreamFailed(
            f"the session could not be resumed after {attempts} attempts: {detail}"
        )

    def stay(self) -> None:
        """No new connection could be opened beside the old one: it serves on, and a later
        drop of it is resumed as any drop (break before make)."""
        self.phase = Phase.LIVE

    def _switch_now(self) -> bool:
        """At a turn boundary (an idle interaction) with a handle given since: switch."""
        if self.phase is Phase.SWITCHING and self.fresh and not self.activity.busy:
            self._start_resume()
            return True
        return False

    def _start_resume(self) -> None:
        self.phase = Phase.RESUMING
        self.switch_at = math.inf
        self._attempt = 0
        self._last_failure = None


@attrs.define
class Activity:
    """Whether a connection's model is mid-turn, or mid-interaction: a model that reports
    ``interactionStatus`` may go on after ``turnComplete`` until ``IDLE``."""

    generating: bool = False
    in_progress: bool = False

    @property
    def busy(self) -> bool:
        return self.generating or self.in_progress

    def take(self, event: UpstreamEvent) -> bool:
        """Follow one upstream message; True when a turn or an interaction goes on with it."""
        if event.interrupted:
            self.generating = False
        started = event.generating or event.tool_call is not None
        if started:
            self.generating = True
        if event.turn_complete:
            self.generating = False
        if event.interaction_status is not None:
            self.in_progress = event.interaction_status != "IDLE"
        return started or self.in_progress


@attrs.define
class Drain:
    """What an old connection still owes once the browser's input has moved off it: the answer
    to what it consumed. It is read until :attr:`until` (then it owes nothing, or no more
    can be waited for), or until it closes."""

    #: Its model's turn or interaction under way.
    activity: Activity
    #: Its ``goAway`` deadline (and a grace): it is closed then, whatever it owes.
    deadline: float
    #: When, if it says nothing more and it is not busy, it owes nothing.
    quiet_until: float

    @property
    def until(self) -> float:
        """When to stop reading it, if it says nothing before."""
        return self.deadline if self.activity.busy else min(self.deadline, self.quiet_until)

    def on_event(self, event: UpstreamEvent, now: float) -> None:
        """Take one of its messages (received at ``now``)."""
        self.activity.take(event)
        self.quiet_until = now + DRAIN_QUIET
