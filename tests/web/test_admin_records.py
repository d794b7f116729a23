"""Usage records kept in the state store: a store that cannot keep one loses the record (logged
once until it can again), and the memory store's records are bounded."""

from __future__ import annotations

import logging
import time

import pytest
import trio

from liveproxy.store import UsageRecord, usage_key
from liveproxy.store import memory as memory_store
from liveproxy.store.memory import MemoryStore
from liveproxy.store.redis import open_redis_store
from liveproxy.web.operator_records import RecordKeeper
from tests.redis_server import RedisServer


def record(session_id: str, client: str = "abc") -> dict[str, object]:
    return {"session_id": session_id, "client": client, "reason": "time_limit"}


async def test_a_record_the_store_cannot_keep_is_logged_once_and_kept_again_later(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "liveproxy")
    async with open_redis_store(redis_server.url, time.time, 30.0, io_timeout=0.2) as store:
        keeper = RecordKeeper(store, retention_days=35)
        assert await keeper.keep(record("s1"), time.time())
        redis_server.stop()
        assert not await keeper.keep(record("s2"), time.time())
        assert not await keeper.keep(record("s3"), time.time())
        assert [r.levelname for r in caplog.records] == ["WARNING"]
        redis_server.start()  # empty again
        assert await keeper.keep(record("s4"), time.time())
        assert "kept in the state store again" in caplog.records[-1].getMessage()
        kept = await store.usage_records(None, "", 10, 35 * 86400.0)
        assert [r.key.rsplit(":", 1)[1] for r in kept] == ["s4"]
        assert kept[0].client == "abc"
        assert '"reason":"time_limit"' in kept[0].text


async def test_the_memory_store_keeps_at_most_its_bound_dropping_the_oldest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(memory_store, "MAX_USAGE_RECORDS", 3)
    store = MemoryStore(trio.current_time)
    start = time.time()
    for n in range(5):
        await store.keep_usage(UsageRecord(usage_key(start + n, f"s{n}"), "c", "{}"), 1e9)
    kept = await store.usage_records(None, "", 10, 1e9)
    assert [r.key.rsplit(":", 1)[1] for r in kept] == ["s2", "s3", "s4"]


async def test_retention_prunes_records_on_trio_s_clock(autojump_clock: trio.abc.Clock) -> None:
    store = MemoryStore(trio.current_time)
    keeper = RecordKeeper(store, retention_days=1)
    await keeper.keep(record("old"), trio.current_time())
    await trio.sleep(86400 / 2)
    await keeper.keep(record("new"), trio.current_time())
    await trio.sleep(86400 / 2 + 1)
    kept = await store.usage_records(None, "", 10, 86400.0)
    assert [r.key.rsplit(":", 1)[1] for r in kept] == ["new"]
