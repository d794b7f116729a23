""":class:`MemoryStore`: the state store of one process (``STATE_URL=memory:``)."""

from __future__ import annotations

import bisect
import secrets
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Final

import attrs

from liveproxy.bucket import TokenBucket
from liveproxy.core.budget import Charge, Charged, apply_charge
from liveproxy.store import (
    DEFAULT_LEASE_SECONDS,
    Conversation,
    Grant,
    Lease,
    Limits,
    LiveSession,
    Rate,
    Refused,
    Usage,
    UsageRecord,
    at_capacity,
    resume_until,
    token_key,
    too_many_sessions,
    usage_key_prefix,
)

#: The most usage records one process keeps (the oldest go first past it).
MAX_USAGE_RECORDS: Final = 100_000


@attrs.frozen
class _Entry:
    expires_at: float
    grant: Grant
    #: A token's sessions started so far (of ``grant.uses``; 0 uses: unlimited).
    used: int = 0


class MemoryStore:
    """:class:`~liveproxy.store.StateStore` in one process, on ``clock`` time.

    Its methods never await, so under trio each runs whole. Memory is bounded by what the
    limits allow: expired tokens are pruned as tokens are issued (insertion order is expiry
    order, the TTL being fixed), expired leases likewise (there are at most ``max_sessions``),
    and a client's bucket is dropped once it would be full again (it is then no different from
    a new one).
    """

    def __init__(
        self, clock: Callable[[], float], lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> None:
        self._clock = clock
        self._lease_seconds = lease_seconds
        self._tokens: dict[str, _Entry] = {}
        self._tokens_of: Counter[str] = Counter()
        self._leases: dict[str, _Entry] = {}
        self._buckets: OrderedDict[str, tuple[TokenBucket, float]] = OrderedDict()
        self._conversations: dict[str, tuple[float, Conversation]] = {}
        #: Ephemeral tokens that started a session, kept until :func:`resume_until` (they
        #: still resume their sessions); not counted against any limit.
        self._spent: dict[str, _Entry] = {}
        #: Live sessions' summaries by id: (expiry, summary, marked to end).
        self._live: dict[str, tuple[float, str, bool]] = {}
        #: Usage records, in key order (so in order of their ends).
        self._usage: list[UsageRecord] = []
        #: Budget counters: key -> (value, expires_at), swept of expired ones once a minute.
        self._counters: dict[str, tuple[float, float]] = {}
        self._next_sweep = 0.0

    async def take_sign_in(self, client: str, rate: Rate) -> float:
        now = self._clock()
        self._prune_buckets(now)
        wait = self._bucket(client, rate, now).take(now)
        self._buckets[client] = (self._buckets[client][0], now)
        self._buckets.move_to_end(client)
        return wait

    async def admit(self, grant: Grant, limits: Limits) -> str | Refused:
        now = self._clock()
        self._prune(now)
        refused = self._lease_refused(grant.client, limits, now)
        if refused is not None:
            return refused
        token = secrets.token_urlsafe(32)
        self._tokens[token_key(token)] = _Entry(now + limits.token_ttl, grant)
        self._tokens_of[grant.client] += 1
        return token

    async def start_session(self, token: str | None, lease_id: str) -> Lease | None:
        if not token:
            return None
        entry = self._tokens.pop(token_key(token), None)
        if entry is None:
            return None
        self._forget_token(entry.grant.client)
        now = self._clock()
        if entry.expires_at <= now:
            return None
        self._leases[lease_id] = _Entry(now + self._lease_seconds, entry.grant)
        return Lease(lease_id, entry.grant)

    async def ephemeral_grant(self, token: str) -> Grant | None:
        now = self._clock()
        key = token_key(token)
        entry = self._tokens.get(key)
        if entry is None or entry.expires_at <= now:
            entry = self._spent.get(key)
        if entry is None or entry.expires_at <= now or entry.grant.ephemeral is None:
            return None
        return entry.grant

    async def start_native(
        self, token: str | None, lease_id: str, limits: Limits, *, resuming: bool = False
    ) -> Lease | Refused | None:
        if not token:
            return None
        now = self._clock()
        self._prune(now)
        self._prune_spent(now)
        key = token_key(token)
        entry = self._tokens.get(key)
        if entry is not None and entry.grant.ephemeral is None:
            return None
        last = entry is not None and entry.used + 1 == entry.grant.uses
        if resuming:
            found = entry if entry is not None else self._spent.get(key)
            if found is None:
                return None
            grant = found.grant
        elif entry is None:
            return None
        else:
            grant = entry.grant
        if resuming or not last:
            refused = self._lease_refused(grant.client, limits, now)
            if refused is not None:
                return refused
        if not resuming and entry is not None:
            if last:
                del self._tokens[key]
                self._forget_token(grant.client)
            else:
                self._tokens[key] = attrs.evolve(entry, used=entry.used + 1)
            self._spent[key] = _Entry(resume_until(entry.expires_at, grant), grant)
        self._leases[lease_id] = _Entry(now + self._lease_seconds, grant)
        return Lease(lease_id, grant)

    def _lease_refused(self, client: str, limits: Limits, now: float) -> Refused | None:
        """Why one more token or lease for ``client`` does not fit, or None."""
        if len(self._tokens) + len(self._leases) >= limits.max_sessions:
            return at_capacity(limits)
        held = self._tokens_of[client] + sum(
            1 for lease in self._leases.values() if lease.grant.client == client
        )
        if limits.per_client and held >= limits.per_client:
            return too_many_sessions(limits, self._retry_for(client, now, limits))
        return None

    async def renew(self, leases: Collection[Lease]) -> None:
        expires_at = self._clock() + self._lease_seconds
        for lease in leases:
            self._leases[lease.id] = _Entry(expires_at, lease.grant)

    async def end_session(self, lease: Lease) -> None:
        self._leases.pop(lease.id, None)
        self._live.pop(lease.id, None)

    async def usage(self) -> Usage:
        self._prune(self._clock())
        return Usage(tokens=len(self._tokens), sessions=len(self._leases))

    async def keep_conversation(
        self, token: str, conversation: Conversation, window: float
    ) -> None:
        now = self._clock()
        self._prune_conversations(now)
        self._conversations[token_key(token)] = (now + window, conversation)

    async def take_conversation(
        self, token: str, origin: str | None, client: str
    ) -> Conversation | None:
        key = token_key(token)
        found = self._conversations.get(key)
        if found is None:
            return None
        expires_at, conversation = found
        if expires_at <= self._clock():
            del self._conversations[key]
            return None
        if (conversation.origin, conversation.client) != (origin, client):
            return None
        del self._conversations[key]
        return attrs.evolve(conversation, expires_at=expires_at)

    async def return_conversation(self, token: str, conversation: Conversation) -> None:
        now = self._clock()
        self._prune_conversations(now)
        if conversation.expires_at > now:
            self._conversations[token_key(token)] = (conversation.expires_at, conversation)

    def _prune_spent(self, now: float) -> None:
        """Drop spent tokens past their resume time (about in expiry order, as conversations)."""
        spent = self._spent
        while spent:
            oldest = next(iter(spent))
            if spent[oldest].expires_at > now:
                break
            del spent[oldest]

    async def charge(self, charges: Sequence[Charge]) -> list[Charged]:
        now = self._clock()
        counters = self._counters
        if now >= self._next_sweep:
            self._next_sweep = now + 60.0
            for key in [k for k, (_, expires_at) in counters.items() if expires_at <= now]:
                del counters[key]
        results = []
        for charge in charges:
            value, expires_at = counters.get(charge.key, (0.0, 0.0))
            charged = apply_charge(value if expires_at > now else 0.0, charge)
            if charge.add or charged.granted:  # a read writes nothing
                counters[charge.key] = (charged.value, now + charge.ttl)
            results.append(charged)
        return results

    def _prune_conversations(self, now: float) -> None:
        """Drop expired conversations (kept in insertion order, about expiry order: one kept
        back after a refused resume may wait behind younger ones until they go)."""
        kept = self._conversations
        while kept:
            oldest = next(iter(kept))
            if kept[oldest][0] > now:
                break
            del kept[oldest]

    def _bucket(self, client: str, rate: Rate, now: float) -> TokenBucket:
        found = self._buckets.get(client)
        if found is None:
            bucket = TokenBucket(rate.count / rate.period, capacity=rate.count)
            self._buckets[client] = (bucket, now)
            return bucket
        return found[0]

    def _retry_for(self, client: str, now: float, limits: Limits) -> float:
        """Seconds until the client's oldest token expires (or one token lifetime)."""
        for entry in self._tokens.values():
            if entry.grant.client == client:
                return entry.expires_at - now
        return limits.token_ttl

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
        for lease_id in [i for i, lease in self._leases.items() if lease.expires_at <= now]:
            del self._leases[lease_id]

    def _prune_buckets(self, now: float) -> None:
        buckets = self._buckets
        while buckets:
            client, (bucket, used_at) = next(iter(buckets.items()))
            if used_at + bucket.capacity / bucket.rate > now:
                break
            del buckets[client]

    async def renew_sessions(
        self, leases: Collection[Lease], summaries: Mapping[str, str]
    ) -> frozenset[str]:
        await self.renew(leases)
        now = self._clock()
        expires_at = now + self._lease_seconds
        live = self._live
        for expired in [i for i, (until, _, _) in live.items() if until <= now]:
            del live[expired]
        marked = set()
        for lease in leases:
            _, _, ending = live.get(lease.id, (0.0, "", False))
            live[lease.id] = (expires_at, summaries.get(lease.id, "{}"), ending)
            if ending:
                marked.add(lease.id)
        return frozenset(marked)

    async def live_sessions(self, after: str, limit: int) -> list[LiveSession]:
        now = self._clock()
        found = sorted(
            (i, summary)
            for i, (until, summary, _) in self._live.items()
            if until > now and i > after
        )
        return [LiveSession(i, kept) for i, kept in found[:limit]]

    async def mark_session_end(self, session_id: str) -> bool:
        found = self._live.get(session_id)
        if found is None or found[0] <= self._clock():
            return False
        self._live[session_id] = (found[0], found[1], True)
        return True

    async def keep_usage(self, record: UsageRecord, retention: float) -> None:
        records = self._usage
        del records[: self._usage_index(usage_key_prefix(self._clock() - retention))]
        if len(records) >= MAX_USAGE_RECORDS:
            del records[: len(records) - MAX_USAGE_RECORDS + 1]
        bisect.insort(records, record, key=lambda r: r.key)

    async def usage_records(
        self, client: str | None, after: str, limit: int, retention: float
    ) -> list[UsageRecord]:
        after = max(after, usage_key_prefix(self._clock() - retention))
        found: list[UsageRecord] = []
        for record in self._usage[self._usage_index(after, inclusive=False) :]:
            if len(found) >= limit:
                break
            if client is None or record.client == client:
                found.append(record)
        return found

    def _usage_index(self, key: str, *, inclusive: bool = True) -> int:
        """Where the records with keys from ``key`` (after it: ``inclusive`` False) start."""
        find = bisect.bisect_left if inclusive else bisect.bisect_right
        return find(self._usage, key, key=lambda r: r.key)
