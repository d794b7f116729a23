"""The state store: single-use tokens, per-client buckets and counts, and session leases.

:class:`StateStore` is what every worker and host sharing ``STATE_URL`` agrees on. Each
operation is one atomic step (one Python call with no ``await`` inside, one SQLite transaction,
one Redis script), so two workers never spend one token twice nor both take the last place.

Capacity is counted across everything sharing the store: unexpired tokens plus unexpired
session leases. A live session's lease is renewed by its worker (:meth:`StateStore.renew`);
a worker or host that dies stops renewing, and its places come back within the lease time.

For the operator's view, each lease's renewal also keeps its session's summary and tells its
worker whether the operator marked it to end (:meth:`StateStore.renew_sessions`), and ended
sessions' usage records are kept for a retention time (:meth:`StateStore.keep_usage`).

Tokens are kept as a hash: the store never holds a token a reader could replay.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Final, Protocol

import attrs

from liveproxy.core.budget import Charge, Charged


@attrs.frozen
class Grant:
    """What a spent token entitles its WebSocket to.

    ``origin`` is the ``Origin`` of the request that minted it (None: no browser's): only a
    socket from that same origin may spend it. ``client`` is who minted it (for per-client
    limits).
    """

    session_time_limit: int
    origin: str | None = None
    client: str = ""
    #: A resumed conversation's state (see :class:`Conversation`), None for a new session.
    resume: str | None = None
    #: An ephemeral token's constraints (JSON text, opaque to the store: see
    #: :mod:`liveproxy.contract.native`), None for a session token. Such a grant is spent only
    #: on the Gemini-native endpoint.
    ephemeral: str | None = None
    #: The signed-in user's JWT claims (JSON text, opaque to the store; bounded by the token's
    #: size), None without sign-in: what the server's tools see of the user.
    claims: str | None = None
    #: How many sessions the token starts (an ephemeral token's ``uses``): 0 is unlimited
    #: until the token's TTL. A resumed session spends none (:meth:`StateStore.start_native`).
    uses: int = 1


@attrs.frozen
class Conversation:
    """A conversation whose socket ended, kept for the resume window under a resume token.

    Only a request from ``origin`` by ``client`` may take it back. ``state`` is opaque to the
    store (JSON text written by the session: the upstream handle, the setup, remaining time,
    stats, messages to replay); the store bounds nothing but its lifetime. ``expires_at`` is
    when it stops being resumable, on the store's clock: set by the store on
    :meth:`StateStore.take_conversation` (0 before).
    """

    origin: str | None
    client: str
    state: str
    expires_at: float = attrs.field(default=0.0, eq=False)


@attrs.frozen
class Lease:
    """A live session's place in the store: ``id`` names it, ``grant`` is what it was opened
    with (its client is counted against the per-client limit while the lease holds)."""

    id: str
    grant: Grant


@attrs.frozen
class Rate:
    """``count`` events per ``period`` seconds, in bursts of up to ``count``."""

    count: int
    period: float


@attrs.frozen
class Limits:
    """What :meth:`StateStore.admit` enforces; 0 turns a limit off."""

    token_ttl: float
    max_sessions: int
    per_client: int = 0


@attrs.frozen
class Refused:
    """Why a token was not issued: the HTTP status, the error code, and when to try again."""

    status: int
    code: str
    message: str
    retry_after: int | None = None


@attrs.frozen
class Usage:
    """What the store holds now: unexpired tokens and unexpired session leases."""

    tokens: int
    sessions: int


class StoreUnavailable(Exception):
    """The store could not be reached, or did not answer in time. Nothing was changed that a
    retry could not repeat safely: a token is never spent without its caller knowing."""


class StateStore(Protocol):
    """Tokens, limits and live sessions, shared by everything that uses one store.

    Every method raises :class:`StoreUnavailable` when the store cannot answer.
    """

    async def take_sign_in(self, client: str, rate: Rate) -> float:
        """Spend one sign-in from ``client``'s bucket (``rate.count`` at most, refilled at
        ``rate.count`` per ``rate.period``): 0.0, or the seconds until one is back (nothing is
        spent then)."""
        ...

    async def admit(self, grant: Grant, limits: Limits) -> str | Refused:
        """Issue a token for ``grant`` unless a limit refuses it."""
        ...

    async def start_session(self, token: str | None, lease_id: str) -> Lease | None:
        """Spend ``token`` and take a lease named ``lease_id`` for its session, in one step.

        Returns None when the token is missing, unknown, expired or already spent.
        """
        ...

    async def ephemeral_grant(self, token: str) -> Grant | None:
        """The grant of ephemeral ``token`` while it may still open a session (unspent within
        its TTL, or until its :func:`resume_until` once it started one), spending nothing; None
        otherwise. A check before :meth:`start_native`, which decides."""
        ...

    async def start_native(
        self, token: str | None, lease_id: str, limits: Limits, *, resuming: bool = False
    ) -> Lease | Refused | None:
        """Take a lease named ``lease_id`` for a session of the ephemeral ``token``, in one step.

        A new session spends one of the token's uses (the last one spends the token) and is
        refused (None) once the token is past its TTL or has no use left. A resumed session
        (``resuming``) spends none: it is accepted until the token's :func:`resume_until`, the
        token spent or not. None also for a missing or unknown token, or one that is not an
        ephemeral token's.

        A lease that adds a place must fit ``limits``, as :meth:`admit` counts them: else the
        :class:`Refused` (``at_capacity`` or ``too_many_sessions``), and nothing is spent. A
        token holds its place until its last use (or its TTL), so every lease but the last
        use's adds one (and a resume's).
        """
        ...

    async def renew(self, leases: Collection[Lease]) -> None:
        """Extend these leases by the lease time, re-creating any the store lost."""
        ...

    async def end_session(self, lease: Lease) -> None:
        """Give the lease's place back."""
        ...

    async def usage(self) -> Usage:
        """Unexpired tokens and leases (also the readiness probe: raises when unreachable)."""
        ...

    async def keep_conversation(
        self, token: str, conversation: Conversation, window: float
    ) -> None:
        """Keep ``conversation`` for ``window`` seconds under ``token`` (its hash)."""
        ...

    async def take_conversation(
        self, token: str, origin: str | None, client: str
    ) -> Conversation | None:
        """Take back the conversation kept under ``token`` if it is unexpired and was kept for
        this ``origin`` and ``client``, in one step: a token resumes one conversation once.

        Returns None otherwise (and a conversation kept for someone else stays kept). The
        conversation returned carries its ``expires_at``.
        """
        ...

    async def return_conversation(self, token: str, conversation: Conversation) -> None:
        """Keep a conversation :meth:`take_conversation` gave, under ``token`` again, until the
        ``expires_at`` it had (a resume that was then refused); nothing once that has passed."""
        ...

    async def renew_sessions(
        self, leases: Collection[Lease], summaries: Mapping[str, str]
    ) -> frozenset[str]:
        """:meth:`renew` these leases, keep each one's summary (by lease id) as long, and say
        which of them the operator has marked to end (:meth:`mark_session_end`): one step."""
        ...

    async def live_sessions(self, after: str, limit: int) -> list[LiveSession]:
        """Up to ``limit`` live sessions (unexpired summaries), by id, with ids after ``after``."""
        ...

    async def mark_session_end(self, session_id: str) -> bool:
        """Mark a live session to be ended by its worker; False when none has that id."""
        ...

    async def keep_usage(self, record: UsageRecord, retention: float) -> None:
        """Keep ``record`` for ``retention`` seconds after its end; records older are pruned
        (a bounded batch per call)."""
        ...

    async def usage_records(
        self, client: str | None, after: str, limit: int, retention: float
    ) -> list[UsageRecord]:
        """Up to ``limit`` records (``client``'s only, unless None), by key, with keys after
        ``after``, none older than ``retention`` seconds."""
        ...

    async def charge(self, charges: Sequence[Charge]) -> list[Charged]:
        """Apply ``charges`` to their budget counters in one atomic step, each by
        :func:`~liveproxy.core.budget.apply_charge`; a counter goes ``ttl`` seconds after its
        last charge. ``Charge(key, 0, 0, ...)`` only reads a counter (and writes nothing, so
        sign-ins of many clients leave no counters behind)."""
        ...


def token_key(token: str) -> str:
    """What the store keeps of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def resume_until(expires_at: float, grant: Grant) -> float:
    """Until when an ephemeral token expiring (for new sessions) at ``expires_at`` still
    resumes its sessions: Google's ``expireTime``, its TTL plus the session's time limit."""
    return expires_at + grant.session_time_limit


def retry_seconds(value: float) -> int:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return max(1, math.ceil(value))


#: A lease outlives its last renewal by this long; workers renew every third of it.
DEFAULT_LEASE_SECONDS = 30.0


def rate_limited(wait: float) -> Refused:
    return Refused(429, "rate_limited", "too many sign-ins: try again later", retry_seconds(wait))


def at_capacity(limits: Limits) -> Refused:
    return Refused(503, "at_capacity", f"at capacity ({limits.max_sessions} sessions)")


def too_many_sessions(limits: Limits, wait: float) -> Refused:
    return Refused(
        429,
        "too_many_sessions",
        f"this client already has {limits.per_client} sessions or tokens",
        retry_seconds(wait),
    )


# The operator's view (see liveproxy.web.admin_app): live sessions across the fleet, the
# operator's marks to end them, and the usage records of ended sessions.

#: How many live sessions or usage records one listing call returns at most.
MAX_PAGE: Final = 500
#: The longest id (a session id, a lease id) the operator's calls take.
MAX_ID_CHARS: Final = 64


@attrs.frozen
class LiveSession:
    """A live session as the operator sees it: its id and a summary (JSON text written by its
    worker at each renewal, opaque to the store)."""

    id: str
    summary: str


@attrs.frozen
class UsageRecord:
    """An ended session's usage record, kept for the retention time. ``key`` orders records by
    their end (see :func:`usage_key`); ``client`` is the client's hash; ``text`` the record's
    JSON (opaque to the store)."""

    key: str
    client: str
    text: str


def usage_key(ended: float, session_id: str) -> str:
    """A record's key: its end in Unix milliseconds (15 digits) then its session id, so keys
    sort as records ended; also the listing's cursor."""
    return f"{usage_key_prefix(ended)}:{session_id}"


def usage_key_prefix(ended: float) -> str:
    """What every key of a record ended at or after ``ended`` sorts after (and none before)."""
    return f"{max(0, round(ended * 1000)):015d}"
