"""One-time session tokens: minted by ``POST /api/auth``, spent by one ``/ws`` connection."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import attrs


@attrs.frozen
class Grant:
    """What a spent token entitles its WebSocket to.

    ``origin`` is the ``Origin`` of the request that minted it (None: no browser's): only a
    socket from that same origin may spend it.
    """

    session_time_limit: int
    origin: str | None = None


@attrs.frozen
class _Entry:
    expires_at: float
    grant: Grant


class TokenStore:
    """Tokens valid for ``ttl`` seconds of ``clock`` time and for exactly one use.

    Tokens carry 256 bits of randomness, URL-safe. Expired tokens are pruned whenever a token is
    minted or counted, so the store never holds more than the tokens minted within one ``ttl``.
    """

    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[str, _Entry] = {}

    def mint(self, grant: Grant) -> str:
        """Return a new token for ``grant``."""
        self._prune()
        token = secrets.token_urlsafe(32)
        self._entries[token] = _Entry(self._clock() + self._ttl, grant)
        return token

    def consume(self, token: str | None) -> Grant | None:
        """Spend ``token``: its grant, or None when it is missing, unknown, expired or used."""
        if not token:
            return None
        entry = self._entries.pop(token, None)
        if entry is None or entry.expires_at <= self._clock():
            return None
        return entry.grant

    def valid_count(self) -> int:
        """Tokens minted and neither spent nor expired."""
        self._prune()
        return len(self._entries)

    def _prune(self) -> None:
        # The ttl is fixed, so insertion order is expiry order: drop from the front only.
        now = self._clock()
        entries = self._entries
        while entries:
            oldest = next(iter(entries))
            if entries[oldest].expires_at > now:
                break
            del entries[oldest]
