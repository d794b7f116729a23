"""The SQLite store: the shared contract, plus what only a file shared by processes shows."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from liveproxy.store import (
    Conversation,
    Grant,
    Lease,
    Limits,
    Rate,
    StoreUnavailable,
    Usage,
    token_key,
)
from liveproxy.store.sqlite import (
    BUSY_TIMEOUT,
    SCHEMA_VERSION,
    SqliteStore,
    open_sqlite_store,
)
from tests.store.store_contract import LEASE_SECONDS, ROOMY, FakeClock, StoreContract, issue

REPO = Path(__file__).resolve().parents[2]


class TestSqliteStore(StoreContract):
    tmp_path: Path

    @pytest.fixture(autouse=True)
    def _stash_tmp_path(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path

    @asynccontextmanager
    async def open(
        self, clock: Callable[[], float], lease_seconds: float
    ) -> AsyncIterator[SqliteStore]:
        async with open_sqlite_store(str(self.tmp_path / "state.db"), clock, lease_seconds) as s:
            yield s


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


async def test_the_file_keeps_a_hash_not_the_token(tmp_path: Path) -> None:
    path = tmp_path / "state.db"

    def on_disk() -> bytes:
        return b"".join(p.read_bytes() for p in tmp_path.iterdir())

    async with open_sqlite_store(str(path), FakeClock(), LEASE_SECONDS) as store:
        token = await issue(store)
        spent = await issue(store)
        assert await store.start_session(spent, "s1") is not None
        assert rows(path, "SELECT key FROM tokens") == [(token_key(token),)]
        assert token.encode() not in on_disk()  # the WAL as well as the main file
        assert spent.encode() not in on_disk()
    assert token.encode() not in on_disk()  # checkpointed at close


async def test_expired_rows_and_idle_buckets_are_deleted_on_admit(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    clock = FakeClock()
    limits = Limits(token_ttl=30, max_sessions=10_000)
    rate = Rate(3, 60.0)
    async with open_sqlite_store(str(path), clock, 10.0) as store:
        await store.start_session(await issue(store, limits, rate=rate), "s1")
        expired = await issue(store, limits, rate=rate)
        for n in range(50):
            await issue(store, limits, client=f"10.0.0.{n}", rate=rate)
        assert rows(path, "SELECT COUNT(*) FROM buckets") == [(51,)]
        clock.now += 31
        assert await store.start_session(expired, "s2") is None
        assert rows(path, "SELECT COUNT(*) FROM tokens") == [(50,)]  # the expired one is gone
        clock.now += 30
        await issue(store, limits, client="late", rate=rate)
        assert rows(path, "SELECT COUNT(*) FROM tokens") == [(1,)]
        assert rows(path, "SELECT COUNT(*) FROM leases") == [(0,)]
        assert rows(path, "SELECT client FROM buckets") == [("late",)]


async def test_a_locked_database_fails_fast_then_recovers(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with open_sqlite_store(str(path), FakeClock(), LEASE_SECONDS) as store:
        token = await issue(store)
        locker = sqlite3.connect(path, isolation_level=None)
        try:
            locker.execute("BEGIN EXCLUSIVE")
            started = trio.current_time()
            with pytest.raises(StoreUnavailable, match="locked") as refused:
                await store.start_session(token, "s1")
            assert BUSY_TIMEOUT * 0.5 <= trio.current_time() - started < BUSY_TIMEOUT * 3
            assert token not in str(refused.value)
            with pytest.raises(StoreUnavailable):
                await store.admit(Grant(90), ROOMY)
            with pytest.raises(StoreUnavailable, match="locked"):
                await store.keep_conversation("r", Conversation(None, "a", "{}"), 60)
            with pytest.raises(StoreUnavailable, match="locked"):
                await store.take_conversation("r", None, "a")
            assert await store.usage() == Usage(tokens=1, sessions=0)  # WAL: reads go on
            started = trio.current_time()
            async with open_sqlite_store(str(path), FakeClock(), LEASE_SECONDS) as other:
                assert await other.usage() == Usage(tokens=1, sessions=0)
            assert trio.current_time() - started < BUSY_TIMEOUT / 2  # opening wrote nothing
        finally:
            locker.rollback()
            locker.close()
        lease = await store.start_session(token, "s1")  # the failed attempt spent nothing
        assert lease is not None
        await store.renew([lease])
        assert await store.usage() == Usage(tokens=0, sessions=1)


async def test_a_directory_is_refused_at_open(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="is a directory"):
        async with open_sqlite_store(str(tmp_path), FakeClock(), LEASE_SECONDS):
            pass


async def test_a_missing_directory_is_refused_at_open(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    for path in (tmp_path / "missing" / "state.db", tmp_path / "a-file" / "state.db"):
        with pytest.raises(StoreUnavailable, match="no directory"):
            async with open_sqlite_store(str(path), FakeClock(), LEASE_SECONDS):
                pass


async def test_a_file_that_is_not_a_database_is_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"not a database, " * 512)
    with pytest.raises(StoreUnavailable, match="cannot open"):
        async with open_sqlite_store(str(path), FakeClock(), LEASE_SECONDS):
            pass


# Real processes racing on one file: "spend" spends the tokens given, in order; "take" takes
# the conversations kept under the resume tokens given, in order (the i-th kept for client
# "c{i}"); "admit" asks for a token max_sessions / 2 times, for as many clients. Each opens the
# store once told "go"
# (so they also race to create the schema of a new file), starts once told "go" again, retries
# what StoreUnavailable refused (nothing was changed), and prints the indices of what it won.
WORKER = textwrap.dedent(
    """
    import json, sys, time
    import trio
    from liveproxy.store import Grant, Limits, StoreUnavailable
    from liveproxy.store.sqlite import open_sqlite_store

    async def retrying(call):
        for _ in range(100):
            try:
                return await call()
            except StoreUnavailable:
                pass
        raise RuntimeError("the store stayed unavailable")

    async def main(mode, path, arg):
        async with open_sqlite_store(path, time.time, 30.0) as store:
            print("open", flush=True)
            sys.stdin.readline()
            won = []
            if mode == "spend":
                for i, token in enumerate(json.loads(arg)):
                    lease_id = f"{sys.argv[4]}-{i}"
                    if await retrying(lambda: store.start_session(token, lease_id)):
                        won.append(i)
            elif mode == "native":
                limits = Limits(token_ttl=30, max_sessions=10000)
                for i, token in enumerate(json.loads(arg)):
                    lease_id = f"{sys.argv[4]}-{i}"
                    if await retrying(lambda: store.start_native(token, lease_id, limits)):
                        won.append(i)
            elif mode == "take":
                for i, token in enumerate(json.loads(arg)):
                    if await retrying(lambda: store.take_conversation(token, None, f"c{i}")):
                        won.append(i)
            else:
                limits = Limits(token_ttl=30, max_sessions=int(arg))
                for i in range(int(arg) // 2):
                    grant = Grant(90, client=f"{sys.argv[4]}-{i}")
                    if isinstance(await retrying(lambda: store.admit(grant, limits)), str):
                        won.append(i)
            print(json.dumps(won), flush=True)

    print("ready", flush=True)
    sys.stdin.readline()
    trio.run(main, *sys.argv[1:4])
    """
)


def race(mode: str, path: Path, arg: str, workers: int = 4) -> list[list[int]]:
    """Run ``workers`` processes at once (released together to open, then to race); what each
    won."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, mode, str(path), arg, f"w{n}"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(workers)
    ]
    try:
        for step in ("ready\n", "open\n"):
            for proc in procs:
                assert proc.stdout is not None
                assert proc.stdout.readline() == step
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0
            results.append(json.loads(out))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def test_processes_racing_on_the_same_tokens_spend_each_once(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with open_sqlite_store(str(path), FakeClock(), LEASE_SECONDS) as store:
        tokens = [await issue(store, client=f"c{n}") for n in range(200)]
    won = await trio.to_thread.run_sync(race, "spend", path, json.dumps(tokens))
    spent = sorted(i for each in won for i in each)
    assert spent == list(range(200))  # every token once, none twice
    assert rows(path, "SELECT COUNT(*) FROM leases") == [(200,)]
    assert rows(path, "SELECT COUNT(*) FROM tokens") == [(0,)]


async def test_processes_racing_on_multi_use_tokens_spend_each_use_once(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    grant = Grant(90, client="a", ephemeral="{}", uses=2)
    async with open_sqlite_store(str(path), FakeClock(), LEASE_SECONDS) as store:
        tokens = [await store.admit(grant, Limits(30, max_sessions=1000)) for _ in range(100)]
    won = await trio.to_thread.run_sync(race, "native", path, json.dumps(tokens))
    # 4 processes try each token once: exactly its 2 uses succeed, the last one spent once.
    for i in range(100):
        assert sum(each.count(i) for each in won) == 2
    assert rows(path, "SELECT COUNT(*) FROM leases") == [(200,)]
    assert rows(path, "SELECT COUNT(*) FROM tokens") == [(0,)]
    assert rows(path, "SELECT COUNT(*) FROM spent_tokens") == [(100,)]


async def test_processes_admitting_at_once_never_exceed_capacity(tmp_path: Path) -> None:
    path = tmp_path / "new" / "state.db"  # a new file, its schema made by the racers
    path.parent.mkdir()
    # 4 processes x 50 attempts for 100 places: they race for every place, not only the last.
    won = await trio.to_thread.run_sync(race, "admit", path, "100")
    assert sum(len(each) for each in won) == 100
    assert rows(path, "SELECT COUNT(*) FROM tokens") == [(100,)]


async def test_processes_racing_to_take_the_same_conversations_take_each_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    resume_tokens = [f"resume-{n}" for n in range(100)]
    async with open_sqlite_store(str(path), FakeClock(), LEASE_SECONDS) as store:
        for n, token in enumerate(resume_tokens):
            await store.keep_conversation(token, Conversation(None, f"c{n}", f'{{"n": {n}}}'), 60)
    won = await trio.to_thread.run_sync(race, "take", path, json.dumps(resume_tokens))
    taken = sorted(i for each in won for i in each)
    assert taken == list(range(100))  # every conversation once, none twice
    assert rows(path, "SELECT COUNT(*) FROM conversations") == [(0,)]


def on_disk(directory: Path) -> bytes:
    """Every file of the database: the main file, its WAL and shared memory."""
    return b"".join(p.read_bytes() for p in directory.iterdir())


async def test_a_conversation_is_kept_under_the_hash_of_its_resume_token(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    resume_token = "the-resume-token-kN3q8"
    taken_token = "the-taken-resume-token-Zr7"
    async with open_sqlite_store(str(path), FakeClock(), LEASE_SECONDS) as store:
        kept = Conversation("https://app.example", "a", '{"handle": "h-7"}')
        await store.keep_conversation(resume_token, kept, 60)
        await store.keep_conversation(taken_token, kept, 60)
        assert await store.take_conversation(taken_token, "https://app.example", "a") == kept
        assert rows(path, "SELECT key, origin, client, state FROM conversations") == [
            (token_key(resume_token), "https://app.example", "a", '{"handle": "h-7"}')
        ]
        for token in (resume_token, taken_token):
            assert token.encode() not in on_disk(tmp_path)
    assert resume_token.encode() not in on_disk(tmp_path)  # checkpointed at close
    assert b"h-7" in on_disk(tmp_path)  # (the search does look in the file)


async def test_a_large_state_round_trips_exactly(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    # About 1 MiB of JSON text with escapes, backslashes, non-BMP characters and a NUL.
    state = json.dumps({"replay": ['\\é"\u2028😀\x00 ' * 64] * 1024}, ensure_ascii=False)
    assert len(state.encode()) > 1 << 20
    async with open_sqlite_store(str(path), FakeClock(), LEASE_SECONDS) as store:
        grant = Grant(60, origin="https://app.example", client="a", resume=state)
        token = await store.admit(grant, ROOMY)
        assert isinstance(token, str)
        lease = await store.start_session(token, "s1")
        assert lease == Lease("s1", grant)
        await store.keep_conversation("r", Conversation(None, "a", state), 60)
        taken = await store.take_conversation("r", None, "a")
        assert taken is not None
        assert taken.state == state


async def test_expired_conversations_are_deleted_as_one_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    clock = FakeClock()
    async with open_sqlite_store(str(path), clock, LEASE_SECONDS) as store:
        for n in range(50):
            await store.keep_conversation(f"r{n}", Conversation(None, "a", "{}"), 60)
        await store.keep_conversation("long", Conversation(None, "a", "{}"), 600)
        assert await store.take_conversation("r0", None, "someone else") is None
        assert rows(path, "SELECT COUNT(*) FROM conversations") == [(51,)]  # not taken: kept
        clock.now += 60
        await store.keep_conversation("late", Conversation(None, "a", "{}"), 60)
        assert rows(path, "SELECT key FROM conversations ORDER BY expires_at") == [
            (token_key("late"),),
            (token_key("long"),),
        ]


# The schema of version 1, as the release before conversations made it.
SCHEMA_V1 = """
    CREATE TABLE tokens (
        key TEXT PRIMARY KEY, client TEXT NOT NULL, origin TEXT,
        session_time_limit INTEGER NOT NULL, expires_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX tokens_by_expiry ON tokens (expires_at);
    CREATE INDEX tokens_by_client ON tokens (client, expires_at);
    CREATE TABLE leases (
        id TEXT PRIMARY KEY, client TEXT NOT NULL, origin TEXT,
        session_time_limit INTEGER NOT NULL, expires_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX leases_by_expiry ON leases (expires_at);
    CREATE INDEX leases_by_client ON leases (client);
    CREATE TABLE buckets (
        client TEXT PRIMARY KEY, tokens REAL NOT NULL, updated_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX buckets_by_update ON buckets (updated_at);
    PRAGMA user_version = 1;
"""


def make_v1_file(path: Path, now: float) -> None:
    """A version 1 file in WAL mode holding a token ("old-token"), a lease and a bucket."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA_V1)
        db.execute(
            "INSERT INTO tokens VALUES (?, 'a', 'https://app.example', 90, ?)",
            (token_key("old-token"), now + 30),
        )
        db.execute("INSERT INTO leases VALUES ('old-lease', 'b', NULL, 90, ?)", (now + 30,))
        db.execute("INSERT INTO buckets VALUES ('a', 2.0, ?)", (now,))
    finally:
        db.close()


def user_version(path: Path) -> int:
    (version,) = rows(path, "PRAGMA user_version")[0]
    assert isinstance(version, int)
    return version


async def test_a_version_1_file_is_migrated_in_place_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    clock = FakeClock()
    make_v1_file(path, clock.now)
    async with open_sqlite_store(str(path), clock, LEASE_SECONDS) as store:
        assert user_version(path) == SCHEMA_VERSION == 7
        assert await store.usage() == Usage(tokens=1, sessions=1)  # nothing was lost
        lease = await store.start_session("old-token", "s1")  # minted by the old release
        assert lease == Lease("s1", Grant(90, origin="https://app.example", client="a"))
        resumed = Grant(90, client="a", resume='{"turns": 1}')
        token = await store.admit(resumed, ROOMY)
        assert isinstance(token, str)
        assert (await store.start_session(token, "s2")) == Lease("s2", resumed)
        ephemeral = Grant(90, client="a", ephemeral='{"uses": 1}')  # the version 3 column
        token = await store.admit(ephemeral, ROOMY)
        assert isinstance(token, str)
        assert (await store.start_session(token, "s3")) == Lease("s3", ephemeral)
        signed_in = Grant(90, client="sub:x", claims='{"sub": "u-1"}')  # the version 4 column
        token = await store.admit(signed_in, ROOMY)
        assert isinstance(token, str)
        assert (await store.start_session(token, "s4")) == Lease("s4", signed_in)
        twice = Grant(90, client="b", ephemeral='{"uses": 2}', uses=2)  # the version 5 columns
        token = await store.admit(twice, ROOMY)
        assert isinstance(token, str)
        assert await store.start_native(token, "s5", ROOMY) == Lease("s5", twice)
        assert await store.start_native(token, "s6", ROOMY) == Lease("s6", twice)
        assert await store.start_native(token, "s7", ROOMY) is None
        assert await store.start_native(token, "s8", ROOMY, resuming=True) == Lease("s8", twice)
        assert rows(path, "SELECT COUNT(*) FROM spent_tokens") == [(1,)]
        assert await store.mark_session_end("s8") is False  # the version 6 tables
        assert await store.usage_records(None, "", 10, 86400.0) == []
        await store.keep_conversation("r", Conversation(None, "a", "{}"), 60)
        assert rows(path, "SELECT client, tokens FROM buckets") == [("a", 2.0)]
    # The old release, restarted on the file, sets its version back (its tables unchanged);
    # the new one opens it again all the same.
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 1")
    async with open_sqlite_store(str(path), clock, LEASE_SECONDS) as store:
        assert user_version(path) == SCHEMA_VERSION
        assert await store.take_conversation("r", None, "a") == Conversation(None, "a", "{}")
        assert await store.usage() == Usage(tokens=0, sessions=8)


async def test_processes_migrating_a_version_1_file_at_once(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    make_v1_file(path, FakeClock().now)
    # Four processes open it together (each finding version 1), then fill its 100 places.
    won = await trio.to_thread.run_sync(race, "admit", path, "100")
    assert sum(len(each) for each in won) == 98  # the old token and lease hold two places
    assert user_version(path) == SCHEMA_VERSION
    assert rows(path, "SELECT COUNT(*) FROM tokens WHERE resume IS NULL") == [(99,)]


async def test_a_file_of_a_newer_version_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with open_sqlite_store(str(path), FakeClock(), LEASE_SECONDS) as store:
        await issue(store)
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before = path.read_bytes()
    with pytest.raises(StoreUnavailable, match="newer"):
        async with open_sqlite_store(str(path), FakeClock(), LEASE_SECONDS):
            pass
    assert path.read_bytes() == before
    assert user_version(path) == SCHEMA_VERSION + 1
