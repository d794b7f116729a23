"""How a session can fail: each error carries the browser-facing code and the close code.

A :class:`SessionError` raised anywhere in a session ends it; the route sends
``{"error": {"code", "message", "stats"}}`` and closes the browser socket with ``close_code``.
Messages are safe to show to the browser: they never contain credentials.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from liveproxy.protocol import closes


@attrs.define(eq=False)
class SessionError(Exception):
    """Base of every error that ends a session with an ``error`` message."""

    code: ClassVar[str] = "internal_error"
    close_code: ClassVar[int] = closes.INTERNAL

    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InvalidSetup(SessionError):
    code = "invalid_setup"
    close_code = closes.INVALID_PAYLOAD


class MessageTooBig(SessionError):
    code = "message_too_big"
    close_code = closes.TOO_BIG


class UpstreamUnavailable(SessionError):
    """Upstream could not be reached, or did not complete setup in time (retryable)."""

    code = "upstream_unavailable"
    close_code = closes.TRY_AGAIN_LATER


class UpstreamRejected(SessionError):
    """Upstream refused the setup: bad key, unknown model, bad field."""

    code = "upstream_rejected"
    close_code = closes.INTERNAL


class UpstreamFailed(SessionError):
    """Upstream failed mid-session and the session could not be resumed."""

    code = "upstream_error"
    close_code = closes.INTERNAL


class SlowClient(SessionError):
    code = "slow_client"
    close_code = closes.POLICY


class RateLimited(SessionError):
    """The browser sends messages faster than ``BROWSER_MESSAGE_RATE`` allows."""

    code = "rate_limited"
    close_code = closes.POLICY


class AtCapacity(SessionError):
    code = "at_capacity"
    close_code = closes.TRY_AGAIN_LATER


class StateUnavailable(SessionError):
    """The state store could not be reached to check the session's token."""

    code = "state_unavailable"
    close_code = closes.TRY_AGAIN_LATER


@attrs.define(eq=False)
class BadMessage(Exception):
    """A browser message that is refused without ending the session (``error`` ``bad_message``)."""

    code: ClassVar[str] = "bad_message"

    message: str

    def __str__(self) -> str:
        return self.message
