"""Every way a session ends, each with its close code: the contract's endings table in code.

A session's outcome is an :class:`Ended` (a normal ending: ``sessionEnd`` with its reason, then
its close code; ``browser_closed`` announces nothing, nobody is left to read it) or a
:class:`~liveproxy.contract.errors.SessionError` (``error`` with its code, then its close
code). Sockets refused before a session starts are closed with :data:`UNAUTHORIZED`.
"""

from __future__ import annotations

from typing import Final, TypeAlias

import attrs

from liveproxy.contract.errors import SessionError
from liveproxy.protocol import closes

#: A token missing, unknown, expired or used: the socket is accepted, then closed with this.
UNAUTHORIZED: Final = 4003


@attrs.frozen
class Ended:
    """A normal ending: its ``sessionEnd`` reason and close code."""

    reason: str
    close_code: int = closes.NORMAL
    #: Whether the browser is sent ``sessionEnd`` before the close.
    announced: bool = True


BROWSER_CLOSED: Final = Ended("browser_closed", announced=False)
TIME_LIMIT: Final = Ended("time_limit")
UPSTREAM_CLOSED: Final = Ended("upstream_closed")
SHUTDOWN: Final = Ended("shutdown", closes.GOING_AWAY)
#: The operator ended the session (``DELETE /sessions/{id}`` on the admin listener).
ENDED_BY_OPERATOR: Final = Ended("ended_by_operator")
#: The client's (or the deployment's) budget is used up (:mod:`liveproxy.core.budget`).
BUDGET_EXHAUSTED: Final = Ended("budget_exhausted")

#: How a session ended: normally, or with the error that ended it.
Outcome: TypeAlias = Ended | SessionError


def outcome_code(outcome: Outcome) -> str:
    """The ``sessionEnd`` reason or ``error`` code of ``outcome`` (for logs and metrics)."""
    return outcome.code if isinstance(outcome, SessionError) else outcome.reason
