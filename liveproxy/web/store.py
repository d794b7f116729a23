"""The state store: single-use tokens, per-client buckets and counts, live sessions.

:class:`StateStore` is the interface every worker and host will share (``STATE_URL``); each of
its operations is one atomic step, with no lock held across an ``await``, so it can be served by
SQLite (one statement) or Redis (one script). :class:`MemoryStore` serves it in one process:
its methods never await inside, so under trio each runs whole.

Tokens are kept as a hash: the store never holds a token a reader could replay.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Protocol

import attrs

from liveproxy.bucket import TokenBucket


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


@attrs.frozen
class Rate:
    """``count`` events per ``period`` seconds, in bursts of up to ``count``."""

    count: int
    period: float


@attrs.frozen
class Limits:
    """What :meth:`StateStore.admit` enforces; 0 or None turns a limit off."""

    token_ttl: float
    max_sessions: int
    per_client: int = 0
    rate: Rate | None = None


@attrs.frozen
class Refused:
    """Why a token was not issued: the HTTP status, the error code, and when to try again."""

    status: int
    code: str
    message: str
    retry_after: int | None = None


class StateStore(Protocol):
    """Tokens, limits and live sessions, shared by everything that uses one store."""

    async def admit(self, grant: Grant, limits: Limits) -> str | Refused:
        """Issue a token for ``grant`` unless a limit refuses it (one atomic step)."""
        ...

    async def consume(self, token: str | None) -> Grant | None:
        """Spend ``token``: its grant, or None when missing, unknown, expired or used."""
        ...

    async def session_started(self, client: str) -> None: ...

    async def session_ended(self, client: str) -> None: ...


def token_key(token: str) -> str:
    """What the store keeps of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


@attrs.frozen
class _Entry:
    expires_at: float
    grant: Grant


class MemoryStore:
    """:class:`StateStore` in one process, on ``clock`` time.

    Memory is bounded by what the limits allow: expired tokens are pruned as tokens are issued
    (insertion order is expiry order, the TTL being fixed), and a client's bucket is dropped once
    it would be full again (it is then no different from a new one).
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._tokens: dict[str, _Entry] = {}
        self._tokens_of: Counter[str] = Counter()
        self._live_of: Counter[str] = Counter()
        self._buckets: OrderedDict[str, tuple[TokenBucket, float]] = OrderedDict()

    @property
    def live_sessions(self) -> int:
        return self._live_of.total()

    def valid_tokens(self) -> int:
        self._prune(self._clock())
        return len(self._tokens)

    async def admit(self, grant: Grant, limits: Limits) -> str | Refused:
        now = self._clock()
        self._prune(now)
        client = grant.client
        if limits.rate is not None:
            wait = self._bucket(client, limits.rate, now).take(now)
            self._buckets[client] = (self._buckets[client][0], now)
            self._buckets.move_to_end(client)
            if wait:
                return Refused(
                    429, "rate_limited", "too many sign-ins: try again later", _seconds(wait)
                )
        if len(self._tokens) + self.live_sessions >= limits.max_sessions:
            return Refused(503, "at_capacity", f"at capacity ({limits.max_sessions} sessions)")
        held = self._tokens_of[client] + self._live_of[client]
        if limits.per_client and held >= limits.per_client:
            return Refused(
                429,
                "too_many_sessions",
                f"this client already has {limits.per_client} sessions or tokens",
                self._retry_for(client, now, limits),
            )
        token = secrets.token_urlsafe(32)
        self._tokens[token_key(token)] = _Entry(now + limits.token_ttl, grant)
        self._tokens_of[client] += 1
        return token

    async def consume(self, token: str | None) -> Grant | None:
        if not token:
            return None
        entry = self._tokens.pop(token_key(token), None)
        if entry is None:
            return None
        self._forget_token(entry.grant.client)
        return entry.grant if entry.expires_at > self._clock() else None

    async def session_started(self, client: str) -> None:
        self._live_of[client] += 1

    async def session_ended(self, client: str) -> None:
        self._live_of[client] -= 1
        if self._live_of[client] <= 0:
            del self._live_of[client]

    def _bucket(self, client: str, rate: Rate, now: float) -> TokenBucket:
        found = self._buckets.get(client)
        if found is None:
            bucket = TokenBucket(rate.count / rate.period, capacity=rate.count)
            self._buckets[client] = (bucket, now)
            return bucket
        return found[0]

    def _retry_for(self, client: str, now: float, limits: Limits) -> int:
        """Seconds until the client's oldest token expires (or one token lifetime)."""
        for entry in self._tokens.values():
            if entry.grant.client == client:
                return _seconds(entry.expires_at - now)
        return _seconds(limits.token_ttl)

    def _forget_token(self, client: str) -> None:
        self._tokens_of[client] -= 1
        if self._tokens_of[client] <= 0:
            del self._tokens_of[client]

    def _prune(self, now: float) -> None:
        tokens = self._tokens
        while tokens:
            oldest = next(iter(tokens))
            if tokens[oldest].expires_at > now:
                break
            self._forget_token(tokens.pop(oldest).grant.client)
        buckets = self._buckets
        while buckets:
            client, (bucket, used_at) = next(iter(buckets.items()))
            if used_at + bucket.capacity / bucket.rate > now:
                break
            del buckets[client]


def _seconds(value: float) -> int:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return max(1, math.ceil(value))
