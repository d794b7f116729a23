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
buckets first, each :meth:`SqliteStore.keep_conversation` expired conversations.

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
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

import trio

from liveproxy.bucket import TokenBucket
from liveproxy.core.budget import Charge, Charged, apply_charge
from liveproxy.store import (
    Conversation,
    Grant,
    Lease,
    Limits,
    Rate,
    Refused,
    StoreUnavailable,
    Usage,
    at_capacity,
    token_key,
    too_many_sessions,
)

T = TypeVar("T")

#: How long an operation waits for another process's write lock before it gives up.
BUSY_TIMEOUT = 1.0
#: How many times opening waits that long, the workers of a host starting together.
OPEN_ATTEMPTS = 5

#: ``PRAGMA user_version`` once the schema is made: opening a made file writes nothing.
#: 1: tokens, leases, buckets. 2: ``tokens.resume``, and ``conversations``. 3:
#: ``tokens.ephemeral`` (an ephemeral token's constraints). 4: ``tokens.claims`` (the JWT
#: claims of a signed-in user). 5: ``budget_counters``.
SCHEMA_VERSION = 5

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

    async def renew(self, leases: Collection[Lease]) -> None:
        if leases:
            await self._run(self._renew, list(leases), self._clock() + self._lease_seconds)

    async def end_session(self, lease: Lease) -> None:
        await self._run(self._statement, "DELETE FROM leases WHERE id = ?", (lease.id,))

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
                    wait = limits.token_ttl if oldest is None else oldest - now
                    return too_many_sessions(limits, wait)
            db.execute(
                "INSERT INTO tokens"
                " (key, client, origin, session_time_limit, expires_at, resume, ephemeral,"
                " claims) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    client,
                    grant.origin,
                    grant.session_time_limit,
                    now + limits.token_ttl,
                    grant.resume,
                    grant.ephemeral,
                    grant.claims,
                ),
            )
            return None

        return self._transaction(body)

    def _start_session(self, key: str, lease_id: str, now: float) -> Lease | None:
        def body(db: sqlite3.Connection) -> Lease | None:
            found = db.execute(
                "DELETE FROM tokens WHERE key = ?"
                " RETURNING client, origin, session_time_limit, expires_at, resume, ephemeral,"
                " claims",
                (key,),
            ).fetchall()
            if not found:
                return None
            client, origin, session_time_limit, expires_at, resume, ephemeral, claims = found[0]
            if expires_at <= now:
                return None  # deleted all the same: it can never be spent
            grant = Grant(
                session_time_limit,
                origin=origin,
                client=client,
                resume=resume,
                ephemeral=ephemeral,
                claims=claims,
            )
            db.execute(
                _UPSERT_LEASE,
                (lease_id, client, origin, session_time_limit, now + self._lease_seconds),
            )
            return Lease(lease_id, grant)

        return self._transaction(body)

    def _renew(self, leases: list[Lease], expires_at: float) -> None:
        rows = [
            (
                lease.id,
                lease.grant.client,
                lease.grant.origin,
                lease.grant.session_time_limit,
                expires_at,
            )
            for lease in leases
        ]
        self._transaction(lambda db: db.executemany(_UPSERT_LEASE, rows))

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
