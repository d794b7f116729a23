""":class:`SqliteStore`: the state store of one host's workers (``STATE_URL=sqlite:///path``).

Every worker process on the host opens the same database file; SQLite's file locks make each
operation atomic across them, so two workers never spend one token nor both take the last place.
It is for one host only: SQLite's locking is not to be trusted on network file systems.

- **WAL** (``journal_mode=WAL``, ``synchronous=NORMAL``): readers (:meth:`SqliteStore.usage`)
  never wait for the writer, and a commit is one append to the log: durable across a process
  crash; a power cut may undo the last commits (a token spent then is spendable again until
  its TTL ends, but the sessions that spent them died with the host).
- **BEGIN IMMEDIATE**: every operation is one statement or one transaction that takes the write
  lock before it reads. A deferred transaction that reads and then writes cannot be let through
  once another process has committed (``SQLITE_BUSY`` at once, whatever ``busy_timeout``); an
  immediate one just queues for the lock, for up to :data:`BUSY_TIMEOUT` seconds.
- **Threads**: sqlite3 blocks, so each call runs in a worker thread
  (:func:`trio.to_thread.run_sync`), one at a time on the store's one connection (a
  :class:`trio.CapacityLimiter` of 1). The clock is read on the event loop's thread just
  before; it must be the wall clock (:func:`time.time`), the one every process shares.
- **Errors**: any :class:`sqlite3.Error` (a lock held past the timeout, a disk error) rolls the
  transaction back and becomes :class:`~liveproxy.store.StoreUnavailable`: nothing was
  changed, so a token is never spent without its caller knowing.

Tokens and resume tokens are kept as :func:`~liveproxy.store.token_key` hashes. The file
stays small: each :meth:`SqliteStore.admit` deletes expired tokens, expired leases and idle
buckets first, each :meth:`SqliteStore.keep_conversation` expired conversations, each
:meth:`SqliteStore.renew_sessions` expired live sessions' summaries, and each
:meth:`SqliteStore.keep_usage` a batch of usage records past their retention.

- **Schema versions** (``PRAGMA user_version``): a file of an older version is migrated in
  place, under the write lock, keeping its tokens, leases and buckets (workers of the old and
  the new release may share the file for the length of a restart). Each step is idempotent, as
  an old release reopening the file sets its own version back. A file of a newer version is
  refused: its tables are not ours to guess at.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio

from liveproxy.bucket import TokenBucket
from liveproxy.core.budget import Charge, Charged, apply_charge
from liveproxy.store import (
    Conversation,
    Grant,
    Lease,
    Limits,
    LiveSession,
    Rate,
    Refused,
    StoreUnavailable,
    Usage,
    UsageRecord,
    at_capacity,
    resume_until,
    token_key,
    too_many_sessions,
    usage_key_prefix,
)

T = TypeVar("T")

#: How long an operation waits for another process's write lock before it gives up.
BUSY_TIMEOUT = 1.0
#: Expired usage records deleted at most per record kept (a bounded step: kept records far
#: outnumber them, so they go, a batch at a time).
USAGE_PRUNE_BATCH = 256
#: How many times opening waits that long, the workers of a host starting together.
OPEN_ATTEMPTS = 5

#: ``PRAGMA user_version`` once the schema is made: opening a made file writes nothing.
#: 1: tokens, leases, buckets. 2: ``tokens.resume``, and ``conversations``. 3:
#: ``tokens.ephemeral`` (an ephemeral token's constraints). 4: ``tokens.claims`` (the JWT
#: claims of a signed-in user). 5: ``tokens.uses`` and ``tokens.used`` (a multi-use ephemeral
#: token's), and ``spent_tokens`` (ephemeral tokens that still resume their sessions). 6:
#: ``live_sessions`` and ``usage_records`` (the operator's view). 7: ``budget_counters``.
SCHEMA_VERSION = 7

_SCHEMA = (
    # Its ``resume``, ``ephemeral`` and ``claims`` columns are added after
    # (:data:`_ADDED_COLUMNS`), as to an older file.
    """CREATE TABLE IF NOT EXISTS tokens (
        key TEXT PRIMARY KEY,
        client TEXT NOT NULL,
        origin TEXT,
        session_time_limit INTEGER NOT NULL,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS tokens_by_expiry ON tokens (expires_at)",
    "CREATE INDEX IF NOT EXISTS tokens_by_client ON tokens (client, expires_at)",
    """CREATE TABLE IF NOT EXISTS leases (
        id TEXT PRIMARY KEY,
        client TEXT NOT NULL,
        origin TEXT,
        session_time_limit INTEGER NOT NULL,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS leases_by_expiry ON leases (expires_at)",
    "CREATE INDEX IF NOT EXISTS leases_by_client ON leases (client)",
    """CREATE TABLE IF NOT EXISTS buckets (
        client TEXT PRIMARY KEY,
        tokens REAL NOT NULL,
        updated_at REAL NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS buckets_by_update ON buckets (updated_at)",
    # A rowid table: a conversation's state may be a MiB, too large a row for WITHOUT ROWID.
    """CREATE TABLE IF NOT EXISTS conversations (
        key TEXT NOT NULL UNIQUE,
        origin TEXT,
        client TEXT NOT NULL,
        state TEXT NOT NULL,
        expires_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS conversations_by_expiry ON conversations (expires_at)",
    # An ephemeral token that started a session, until it no longer resumes one (a rowid
    # table: its constraints may be 16 KiB). Counted against no limit.
    """CREATE TABLE IF NOT EXISTS spent_tokens (
        key TEXT NOT NULL UNIQUE,
        client TEXT NOT NULL,
        origin TEXT,
        session_time_limit INTEGER NOT NULL,
        ephemeral TEXT,
        claims TEXT,
        uses INTEGER,
        until REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS spent_tokens_by_expiry ON spent_tokens (until)",
    # Version 6: the operator's view.
    """CREATE TABLE IF NOT EXISTS live_sessions (
        id TEXT PRIMARY KEY,
        summary TEXT NOT NULL,
        expires_at REAL NOT NULL,
        ending INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS live_sessions_by_expiry ON live_sessions (expires_at)",
    # Each renewal reads the marked ones: a handful, whatever the number of sessions.
    "CREATE INDEX IF NOT EXISTS live_sessions_ending ON live_sessions (id) WHERE ending = 1",
    """CREATE TABLE IF NOT EXISTS usage_records (
        key TEXT PRIMARY KEY,
        client TEXT NOT NULL,
        record TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS usage_records_by_client ON usage_records (client, key)",
    # Version 7: budgets.
    """CREATE TABLE IF NOT EXISTS budget_counters (
        key TEXT PRIMARY KEY,
        value REAL NOT NULL,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS budget_counters_by_expiry ON budget_counters (expires_at)",
)

#: Columns added to an older file's tables (``ALTER TABLE ... ADD COLUMN``, if not there yet).
_ADDED_COLUMNS = (
    ("tokens", "resume", "TEXT"),
    ("tokens", "ephemeral", "TEXT"),
    ("tokens", "claims", "TEXT"),
    # NULL (a row of an older release's): one use, none used.
    ("tokens", "uses", "INTEGER"),
    ("tokens", "used", "INTEGER"),
)

_UPSERT_LEASE = """
    INSERT INTO leases (id, client, origin, session_time_limit, expires_at)
    VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (id) DO UPDATE SET
        client = excluded.client,
        origin = excluded.origin,
        session_time_limit = excluded.session_time_limit,
        expires_at = excluded.expires_at
"""


def _unavailable(exc: sqlite3.Error) -> StoreUnavailable:
    # sqlite3's messages name the failure ("database is locked"), never a bound parameter.
    return StoreUnavailable(f"sqlite state store: {exc}")


class SqliteStore:
    """:class:`~liveproxy.store.StateStore` on one SQLite connection, on ``clock`` time.

    Made by :func:`open_sqlite_store`, which owns (and closes) the connection. Every method
    raises :class:`~liveproxy.store.StoreUnavailable` on any SQLite error.
    """

    def __init__(
        self, connection: sqlite3.Connection, clock: Callable[[], float], lease_seconds: float
    ) -> None:
        self._db = connection
        self._clock = clock
        self._lease_seconds = lease_seconds
        self._limiter = trio.CapacityLimiter(1)

    async def take_sign_in(self, client: str, rate: Rate) -> float:
        return await self._run(self._take_sign_in, client, rate, self._clock())

    async def admit(self, grant: Grant, limits: Limits) -> str | Refused:
        token = secrets.token_urlsafe(32)
        answer = await self._run(self._admit, grant, limits, token_key(token), self._clock())
        return token if answer is None else answer

    async def start_session(self, token: str | None, lease_id: str) -> Lease | None:
        if not token:
            return None
        return await self._run(self._start_session, token_key(token), lease_id, self._clock())

    async def ephemeral_grant(self, token: str) -> Grant | None:
        return await self._run(self._ephemeral_grant, token_key(token), self._clock())

    async def start_native(
        self, token: str | None, lease_id: str, limits: Limits, *, resuming: bool = False
    ) -> Lease | Refused | None:
        if not token:
            return None
        return await self._run(
            self._start_native, token_key(token), lease_id, limits, resuming, self._clock()
        )

    async def renew(self, leases: Collection[Lease]) -> None:
        if leases:
            await self._run(self._renew, list(leases), self._clock() + self._lease_seconds)

    async def end_session(self, lease: Lease) -> None:
        await self._run(self._end_session, lease.id)

    async def keep_conversation(
        self, token: str, conversation: Conversation, window: float
    ) -> None:
        now = self._clock()
        await self._run(self._keep_conversation, token_key(token), conversation, now, now + window)

    async def take_conversation(
        self, token: str, origin: str | None, client: str
    ) -> Conversation | None:
        return await self._run(
            self._take_conversation, token_key(token), origin, client, self._clock()
        )

    async def return_conversation(self, token: str, conversation: Conversation) -> None:
        await self._run(self._return_conversation, token_key(token), conversation, self._clock())

    async def charge(self, charges: Sequence[Charge]) -> list[Charged]:
        return await self._run(self._charge, list(charges), self._clock())

    async def usage(self) -> Usage:
        now = self._clock()
        row = await self._run(
            self._statement,
            "SELECT (SELECT COUNT(*) FROM tokens WHERE expires_at > ?),"
            " (SELECT COUNT(*) FROM leases WHERE expires_at > ?)",
            (now, now),
        )
        assert row is not None
        return Usage(tokens=row[0], sessions=row[1])

    async def aclose(self) -> None:
        """Close the connection once any call in flight is done (even when cancelled)."""
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self._db.close, limiter=self._limiter)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    # What follows runs in a worker thread, one call at a time.

    def _statement(self, sql: str, params: tuple[object, ...]) -> tuple[int, ...] | None:
        """One statement in autocommit mode: its first row, if any."""
        try:
            row: tuple[int, ...] | None = self._db.execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            raise _unavailable(exc) from exc
        return row

    def _transaction(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """``body`` inside BEGIN IMMEDIATE ... COMMIT, rolled back if anything raises."""
        db = self._db
        try:
            if db.in_transaction:  # left open by a ROLLBACK that failed
                db.execute("ROLLBACK")
            db.execute("BEGIN IMMEDIATE")
            try:
                result = body(db)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise _unavailable(exc) from exc
        return result

    def _take_sign_in(self, client: str, rate: Rate, now: float) -> float:
        """The bucket's answer (as MemoryStore's), the bucket stored."""

        def body(db: sqlite3.Connection) -> float:
            # A bucket untouched for a period would be full again: no different from none.
            db.execute("DELETE FROM buckets WHERE updated_at <= ?", (now - rate.period,))
            bucket = TokenBucket(rate.count / rate.period, capacity=rate.count)
            found = db.execute(
                "SELECT tokens, updated_at FROM buckets WHERE client = ?", (client,)
            ).fetchone()
            if found is not None:
                bucket.tokens, bucket.updated_at = found
            wait = bucket.take(now)
            db.execute(
                "INSERT INTO buckets (client, tokens, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (client) DO UPDATE SET"
                " tokens = excluded.tokens, updated_at = excluded.updated_at",
                (client, bucket.tokens, bucket.updated_at),
            )
            return wait

        return self._transaction(body)

    def _admit(self, grant: Grant, limits: Limits, key: str, now: float) -> Refused | None:
        """Refusal, or None once the token ``key`` is stored (the checks as MemoryStore's)."""

        def body(db: sqlite3.Connection) -> Refused | None:
            db.execute("DELETE FROM tokens WHERE expires_at <= ?", (now,))
            db.execute("DELETE FROM leases WHERE expires_at <= ?", (now,))
            client = grant.client
            refused = _lease_refused(db, client, limits, now)
            if refused is not None:
                return refused
            db.execute(
                "INSERT INTO tokens"
                " (key, client, origin, session_time_limit, expires_at, resume, ephemeral,"
                " claims, uses, used) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
                (
                    key,
                    client,
                    grant.origin,
                    grant.session_time_limit,
                    now + limits.token_ttl,
                    grant.resume,
                    grant.ephemeral,
                    grant.claims,
                    grant.uses,
                ),
            )
            return None

        return self._transaction(body)

    def _start_session(self, key: str, lease_id: str, now: float) -> Lease | None:
        def body(db: sqlite3.Connection) -> Lease | None:
            found = db.execute(
                "DELETE FROM tokens WHERE key = ?"
                " RETURNING client, origin, session_time_limit, expires_at, resume, ephemeral,"
                " claims, uses",
                (key,),
            ).fetchall()
            if not found:
                return None
            expires_at = found[0][3]
            if expires_at <= now:
                return None  # deleted all the same: it can never be spent
            grant = _grant(found[0])
            db.execute(_UPSERT_LEASE, _lease_row(lease_id, grant, now + self._lease_seconds))
            return Lease(lease_id, grant)

        return self._transaction(body)

    def _ephemeral_grant(self, key: str, now: float) -> Grant | None:
        """One read (autocommit): the token, else the spent token, within its time."""
        try:
            row = self._db.execute(
                "SELECT client, origin, session_time_limit, expires_at, resume, ephemeral,"
                " claims, uses FROM tokens WHERE key = ? AND expires_at > ?"
                " UNION ALL SELECT client, origin, session_time_limit, until, NULL, ephemeral,"
                " claims, uses FROM spent_tokens WHERE key = ? AND until > ?",
                (key, now, key, now),
            ).fetchone()
        except sqlite3.Error as exc:
            raise _unavailable(exc) from exc
        if row is None or row[5] is None:
            return None
        return _grant(row)

    def _start_native(
        self, key: str, lease_id: str, limits: Limits, resuming: bool, now: float
    ) -> Lease | Refused | None:
        """As MemoryStore's: a use spent (the token deleted with its last, and remembered in
        ``spent_tokens``), or none for a resume; the lease checked against ``limits``."""

        def body(db: sqlite3.Connection) -> Lease | Refused | None:
            db.execute("DELETE FROM tokens WHERE expires_at <= ?", (now,))
            db.execute("DELETE FROM leases WHERE expires_at <= ?", (now,))
            db.execute("DELETE FROM spent_tokens WHERE until <= ?", (now,))
            row = db.execute(
                "SELECT client, origin, session_time_limit, expires_at, resume, ephemeral,"
                " claims, uses, used FROM tokens WHERE key = ?",
                (key,),
            ).fetchone()
            if row is None and resuming:
                row = db.execute(
                    "SELECT client, origin, session_time_limit, until, NULL, ephemeral, claims,"
                    " uses, NULL FROM spent_tokens WHERE key = ?",
                    (key,),
                ).fetchone()
                if row is not None:
                    row = (*row[:8], None)
                in_tokens = False
            else:
                in_tokens = row is not None
            if row is None or row[5] is None:
                return None
            grant = _grant(row)
            used = row[8] or 0
            last = in_tokens and used + 1 == grant.uses
            if resuming or not last:
                refused = _lease_refused(db, grant.client, limits, now)
                if refused is not None:
                    return refused
            if not resuming:
                if last:
                    db.execute("DELETE FROM tokens WHERE key = ?", (key,))
                else:
                    db.execute("UPDATE tokens SET used = ? WHERE key = ?", (used + 1, key))
                db.execute(
                    "INSERT INTO spent_tokens (key, client, origin, session_time_limit,"
                    " ephemeral, claims, uses, until) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (key) DO NOTHING",
                    (
                        key,
                        grant.client,
                        grant.origin,
                        grant.session_time_limit,
                        grant.ephemeral,
                        grant.claims,
                        grant.uses,
                        resume_until(row[3], grant),
                    ),
                )
            db.execute(_UPSERT_LEASE, _lease_row(lease_id, grant, now + self._lease_seconds))
            return Lease(lease_id, grant)

        return self._transaction(body)

    def _renew(self, leases: list[Lease], expires_at: float) -> None:
        rows = [_lease_row(lease.id, lease.grant, expires_at) for lease in leases]
        self._transaction(lambda db: db.executemany(_UPSERT_LEASE, rows))

    def _end_session(self, lease_id: str) -> None:
        def body(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM leases WHERE id = ?", (lease_id,))
            db.execute("DELETE FROM live_sessions WHERE id = ?", (lease_id,))

        self._transaction(body)

    def _keep_conversation(
        self, key: str, conversation: Conversation, now: float, expires_at: float
    ) -> None:
        def body(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM conversations WHERE expires_at <= ?", (now,))
            db.execute(
                "INSERT INTO conversations (key, origin, client, state, expires_at)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET"
                " origin = excluded.origin, client = excluded.client,"
                " state = excluded.state, expires_at = excluded.expires_at",
                (key, conversation.origin, conversation.client, conversation.state, expires_at),
            )

        self._transaction(body)

    def _take_conversation(
        self, key: str, origin: str | None, client: str, now: float
    ) -> Conversation | None:
        """The conversation, deleted, if it is unexpired and kept for ``origin`` and ``client``;
        an expired one is deleted, one kept for someone else is left as it is."""

        def body(db: sqlite3.Connection) -> Conversation | None:
            found = db.execute(
                "SELECT origin, client, state, expires_at FROM conversations WHERE key = ?",
                (key,),
            ).fetchone()
            if found is None:
                return None
            kept_origin, kept_client, state, expires_at = found
            if expires_at <= now:
                db.execute("DELETE FROM conversations WHERE key = ?", (key,))
                return None
            if (kept_origin, kept_client) != (origin, client):
                return None
            db.execute("DELETE FROM conversations WHERE key = ?", (key,))
            return Conversation(kept_origin, kept_client, state, expires_at)

        return self._transaction(body)

    def _return_conversation(self, key: str, conversation: Conversation, now: float) -> None:
        if conversation.expires_at > now:
            self._keep_conversation(key, conversation, now, conversation.expires_at)

    # The operator's view (schema version 6).

    async def renew_sessions(
        self, leases: Collection[Lease], summaries: Mapping[str, str]
    ) -> frozenset[str]:
        if not leases:
            return frozenset()
        now = self._clock()
        return await self._run(
            self._renew_sessions, list(leases), dict(summaries), now, now + self._lease_seconds
        )

    async def live_sessions(self, after: str, limit: int) -> list[LiveSession]:
        rows = await self._run(
            self._rows,
            "SELECT id, summary FROM live_sessions WHERE id > ? AND expires_at > ?"
            " ORDER BY id LIMIT ?",
            (after, self._clock(), limit),
        )
        return [LiveSession(str(i), str(summary)) for i, summary in rows]

    async def mark_session_end(self, session_id: str) -> bool:
        # Every row fetched: a RETURNING statement is done (and committed) once stepped to its end.
        rows = await self._run(
            self._rows,
            "UPDATE live_sessions SET ending = 1 WHERE id = ? AND expires_at > ? RETURNING id",
            (session_id, self._clock()),
        )
        return bool(rows)

    async def keep_usage(self, record: UsageRecord, retention: float) -> None:
        oldest = usage_key_prefix(self._clock() - retention)
        await self._run(self._keep_usage, record, oldest)

    async def usage_records(
        self, client: str | None, after: str, limit: int, retention: float
    ) -> list[UsageRecord]:
        after = max(after, usage_key_prefix(self._clock() - retention))
        if client is None:
            sql = "SELECT key, client, record FROM usage_records WHERE key > ? ORDER BY key LIMIT ?"
            params: tuple[object, ...] = (after, limit)
        else:
            sql = (
                "SELECT key, client, record FROM usage_records WHERE client = ? AND key > ?"
                " ORDER BY key LIMIT ?"
            )
            params = (client, after, limit)
        rows = await self._run(self._rows, sql, params)
        return [UsageRecord(str(k), str(c), str(text)) for k, c, text in rows]

    def _rows(self, sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
        """Every row of one read (in autocommit mode)."""
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _unavailable(exc) from exc

    def _renew_sessions(
        self, leases: list[Lease], summaries: dict[str, str], now: float, expires_at: float
    ) -> frozenset[str]:
        rows = [_lease_row(lease.id, lease.grant, expires_at) for lease in leases]
        live = [(lease.id, summaries.get(lease.id, "{}"), expires_at) for lease in leases]

        def body(db: sqlite3.Connection) -> frozenset[str]:
            db.executemany(_UPSERT_LEASE, rows)
            db.execute("DELETE FROM live_sessions WHERE expires_at <= ?", (now,))
            db.executemany(
                "INSERT INTO live_sessions (id, summary, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET"
                " summary = excluded.summary, expires_at = excluded.expires_at",
                live,
            )
            held = {lease.id for lease in leases}
            marked = db.execute("SELECT id FROM live_sessions WHERE ending = 1").fetchall()
            return frozenset(i for (i,) in marked if i in held)

        return self._transaction(body)

    def _keep_usage(self, record: UsageRecord, oldest: str) -> None:
        def body(db: sqlite3.Connection) -> None:
            db.execute(
                "DELETE FROM usage_records WHERE key IN"
                " (SELECT key FROM usage_records WHERE key < ? ORDER BY key LIMIT ?)",
                (oldest, USAGE_PRUNE_BATCH),
            )
            db.execute(
                "INSERT OR REPLACE INTO usage_records (key, client, record) VALUES (?, ?, ?)",
                (record.key, record.client, record.text),
            )

        self._transaction(body)

    def _charge(self, charges: list[Charge], now: float) -> list[Charged]:
        """Every counter changed in one transaction (expired counters deleted first)."""

        def body(db: sqlite3.Connection) -> list[Charged]:
            db.execute("DELETE FROM budget_counters WHERE expires_at <= ?", (now,))
            results = []
            for charge in charges:
                found = db.execute(
                    "SELECT value FROM budget_counters WHERE key = ?", (charge.key,)
                ).fetchone()
                charged = apply_charge(0.0 if found is None else found[0], charge)
                if not (charge.add or charged.granted):  # a read writes nothing
                    results.append(charged)
                    continue
                db.execute(
                    "INSERT INTO budget_counters (key, value, expires_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET"
                    " value = excluded.value, expires_at = excluded.expires_at",
                    (charge.key, charged.value, now + charge.ttl),
                )
                results.append(charged)
            return results

        return self._transaction(body)


def _grant(row: tuple[Any, ...]) -> Grant:
    """The grant of a ``tokens`` row read as (client, origin, session_time_limit, expiry,
    resume, ephemeral, claims, uses, ...); uses NULL is one (an older release's row)."""
    client, origin, session_time_limit, _, resume, ephemeral, claims, uses = row[:8]
    return Grant(
        session_time_limit,
        origin=origin,
        client=client,
        resume=resume,
        ephemeral=ephemeral,
        claims=claims,
        uses=1 if uses is None else uses,
    )


def _lease_row(lease_id: str, grant: Grant, expires_at: float) -> tuple[object, ...]:
    """The parameters of :data:`_UPSERT_LEASE` for one lease."""
    return (lease_id, grant.client, grant.origin, grant.session_time_limit, expires_at)


def _lease_refused(
    db: sqlite3.Connection, client: str, limits: Limits, now: float
) -> Refused | None:
    """Why one more token or lease for ``client`` does not fit (expired rows already deleted),
    or None."""
    (held_total,) = db.execute(
        "SELECT (SELECT COUNT(*) FROM tokens) + (SELECT COUNT(*) FROM leases)"
    ).fetchone()
    if held_total >= limits.max_sessions:
        return at_capacity(limits)
    if limits.per_client:
        (held,) = db.execute(
            "SELECT (SELECT COUNT(*) FROM tokens WHERE client = ?)"
            " + (SELECT COUNT(*) FROM leases WHERE client = ?)",
            (client, client),
        ).fetchone()
        if held >= limits.per_client:
            (oldest,) = db.execute(
                "SELECT MIN(expires_at) FROM tokens WHERE client = ?", (client,)
            ).fetchone()
            return too_many_sessions(limits, limits.token_ttl if oldest is None else oldest - now)
    return None


def _connect(path: str) -> sqlite3.Connection:
    """Open ``path`` in WAL mode with the schema in place (a connection that fails is closed).

    Workers starting together contend for the file: a lock not had within the busy timeout
    is tried for again, :data:`OPEN_ATTEMPTS` times in all.
    """
    if os.path.isdir(path):
        raise StoreUnavailable(f"sqlite state store: {path!r} is a directory")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise StoreUnavailable(f"sqlite state store: no directory {directory!r}")
    attempt = 1
    while True:
        try:
            db = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            return _set_up(db, path)
        except sqlite3.Error as exc:
            busy = (exc.sqlite_errorcode & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy or attempt >= OPEN_ATTEMPTS:
                raise StoreUnavailable(f"sqlite state store: cannot open {path!r}: {exc}") from exc
            attempt += 1


def _set_up(db: sqlite3.Connection, path: str) -> sqlite3.Connection:
    """WAL, then the schema if the file has none yet or an older one: made or migrated under the
    write lock, as every worker may do it at once (``CREATE ... IF NOT EXISTS``, columns added
    if missing, then ``user_version`` set), the version read again once the lock is held."""
    try:
        (mode,) = db.execute("PRAGMA journal_mode=WAL").fetchone()
        if mode != "wal":
            raise StoreUnavailable(f"sqlite state store: {path!r} cannot use WAL (got {mode!r})")
        db.execute("PRAGMA synchronous=NORMAL")
        if _version(db, path) != SCHEMA_VERSION:
            db.execute("BEGIN IMMEDIATE")
            try:
                if _version(db, path) != SCHEMA_VERSION:
                    _make_schema(db)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
    except BaseException:
        db.close()
        raise
    return db


def _version(db: sqlite3.Connection, path: str) -> int:
    """The file's schema version (0: none yet); StoreUnavailable if it is newer than ours."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise StoreUnavailable(
            f"sqlite state store: {path!r} has schema version {version}, newer than this"
            f" release's {SCHEMA_VERSION} (stop the newer release, or delete the file)"
        )
    assert isinstance(version, int)
    return version


def _make_schema(db: sqlite3.Connection) -> None:
    """Make the current schema, or bring an older one up to it, keeping every row."""
    for statement in _SCHEMA:
        db.execute(statement)
    for table, column, kind in _ADDED_COLUMNS:
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


@asynccontextmanager
async def open_sqlite_store(
    path: str, clock: Callable[[], float], lease_seconds: float
) -> AsyncIterator[SqliteStore]:
    """A :class:`SqliteStore` on the database file ``path`` (its directory must exist),
    created if new; its connection is closed on exit.

    Raises :class:`~liveproxy.store.StoreUnavailable` if the file cannot be opened or
    set up (a directory, an unwritable place, not a database, a schema newer than ours, a new
    or older file's schema kept locked :data:`OPEN_ATTEMPTS` times :data:`BUSY_TIMEOUT`...).
    """
    db = await trio.to_thread.run_sync(_connect, path)
    store = SqliteStore(db, clock, lease_seconds)
    try:
        yield store
    finally:
        await store.aclose()
