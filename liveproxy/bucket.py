"""A token bucket: bursts up to ``capacity``, refilled at ``rate`` per second. Pure and sync."""

from __future__ import annotations

import attrs


@attrs.define
class TokenBucket:
    """Allowance for events over time; the caller passes the clock's ``now`` to each call.

    Starts full. :meth:`take` spends one token if there is one and returns 0.0; otherwise it
    spends nothing and returns how many seconds until a token is back (a ``Retry-After``).
    """

    rate: float
    capacity: float
    tokens: float = attrs.field(default=attrs.Factory(lambda self: self.capacity, takes_self=True))
    updated_at: float | None = None

    def take(self, now: float) -> float:
        """Spend one token at time ``now``; 0.0 if allowed, else the seconds to wait."""
        if self.updated_at is not None and now > self.updated_at:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated_at) * self.rate)
        if self.updated_at is None or now > self.updated_at:
            self.updated_at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate
