"""Open the state store a ``STATE_URL`` names (the backends' libraries load only when used)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from liveproxy.store import StateStore
from liveproxy.store.memory import MemoryStore


@asynccontextmanager
async def open_store(url: str | None, lease_seconds: float) -> AsyncIterator[StateStore]:
    """The store for ``url`` (None or ``memory:``: this process's memory), closed on exit.

    SQLite and Redis run on the wall clock, which every process and host shares; the memory
    store on trio's clock. Opening never waits for Redis to be reachable: until it is, the
    store's operations raise :class:`~liveproxy.store.StoreUnavailable`.
    """
    if url is None or url == "memory:":
        yield MemoryStore(trio.current_time, lease_seconds)
    elif url.startswith("sqlite://"):
        from liveproxy.store.sqlite import open_sqlite_store

        async with open_sqlite_store(url.removeprefix("sqlite://"), time.time, lease_seconds) as s:
            yield s
    elif url.startswith(("redis://", "rediss://")):
        from liveproxy.store.redis import open_redis_store

        async with open_redis_store(url, time.time, lease_seconds) as r:
            yield r
    else:
        raise ValueError(f"unknown state store URL scheme: {url.partition(':')[0]!r}")
